//! The gradient instruments: per-step norms equal independently computed
//! BPTT gradients with respect to the states, decay and growth are
//! geometric at the expected rate, spectral measures are right.

mod common;
use common::*;
use recurrent::diagnose::{diagnose, max_singular, spectral_radius};
use recurrent::{Batch, CellKind, HeadKind, LossKind, RnnState, SeqInput, Targets};

#[test]
fn per_step_norms_equal_gradients_with_respect_to_the_states() {
    for cell in ALL_CELLS {
        let (i, h, b, t, o) = (3, 5, 3, 6, 2);
        let model = random_model(model_cfg(cell, i, h, 1, false, HeadKind::Last, o, LossKind::Mse), 70, 0.7);
        let mut r = rng(71);
        let x = randn_vec(&mut r, t * b * i, 1.0);
        let y = randn_vec(&mut r, b * o, 1.0);
        let batch = Batch { input: SeqInput::Dense(&x), batch: b, seq_len: t, batch_first: false, lengths: None };
        let d = diagnose(&model, &batch, Targets::Real(&y)).unwrap();
        for s in 0..t - 1 {
            // Independently: run the prefix to get the state after step s, then the suffix from that
            // state; the suffix's gradient with respect to its initial state is dL/dh_s.
            let pre = Batch {
                input: SeqInput::Dense(&x[..(s + 1) * b * i]),
                batch: b,
                seq_len: s + 1,
                batch_first: false,
                lengths: None,
            };
            let (po, _) = model.forward::<Rng64>(&pre, None, None).unwrap();
            let suf = Batch {
                input: SeqInput::Dense(&x[(s + 1) * b * i..]),
                batch: b,
                seq_len: t - s - 1,
                batch_first: false,
                lengths: None,
            };
            let st = RnnState { h: po.state.h.clone(), c: po.state.c.clone() };
            let (so, sc) = model.forward::<Rng64>(&suf, Some(&st), None).unwrap();
            let (_, dy) = model.loss(&so.y, Targets::Real(&y), &sc).unwrap();
            let mut g = vec![0.0; model.num_params()];
            let ig = model.backward(&sc, &dy, None, &mut g, false).unwrap();
            let want: f64 =
                (0..b).map(|r| ig.dh0[r * h..(r + 1) * h].iter().map(|v| v * v).sum::<f64>().sqrt()).sum::<f64>()
                    / b as f64;
            let got = d.layers[0].grad_norms[s];
            assert!(rel_err(got, want) < 1e-10, "{cell:?} step {s}: {got} vs {want}");
        }
    }
}

#[test]
fn norms_decay_and_grow_geometrically_with_the_recurrent_scale() {
    // Zero inputs, zero state, no biases: h stays 0, tanh' = 1, so dL/dh_t = Wᵀ dL/dh_{t+1}
    // exactly, and with W = a Q (Q orthogonal) each step back scales the norm by a.
    for a in [0.5, 1.5] {
        let h = 6;
        let mut cfg = model_cfg(CellKind::RnnTanh, 2, h, 1, false, HeadKind::Last, 1, LossKind::Mse);
        cfg.rnn.bias = false;
        let mut model = random_model(cfg, 80, 0.5);
        let q = recurrent::init::orthogonal(h, &mut rng(81));
        let w = model.table.index_of("rnn.weight_hh_l0").unwrap();
        for (dst, src) in model.table.view_mut(&mut model.params, w).iter_mut().zip(&q) {
            *dst = a * src;
        }
        let t = 12;
        let x = vec![0.0; t * 2];
        let batch = Batch { input: SeqInput::Dense(&x), batch: 1, seq_len: t, batch_first: true, lengths: None };
        let d = diagnose(&model, &batch, Targets::Real(&[1.0])).unwrap();
        let n = &d.layers[0].grad_norms;
        for s in 0..t - 1 {
            assert!(rel_err(n[s] / n[s + 1], a) < 1e-10, "a={a} step {s}: {}", n[s] / n[s + 1]);
        }
        assert!(rel_err(d.layers[0].ratio_first_last, a.powi(t as i32 - 1)) < 1e-9);
        assert!(rel_err(d.layers[0].spectral_radius[0], a) < 1e-6, "{}", d.layers[0].spectral_radius[0]);
        assert!(rel_err(d.layers[0].max_singular[0], a) < 1e-6);
    }
}

#[test]
fn spectral_measures_of_known_matrices() {
    // A rotation by 90 degrees scaled by 2: complex eigenvalues of modulus 2.
    let w = [0.0, -2.0, 2.0, 0.0];
    assert!(rel_err(spectral_radius(&w, 2), 2.0) < 1e-9);
    assert!(rel_err(max_singular(&w, 2), 2.0) < 1e-9);
    // Upper triangular: spectral radius 0.5, largest singular value larger.
    let u = [0.5, 3.0, 0.0, 0.25];
    assert!(rel_err(spectral_radius(&u, 2), 0.5) < 1e-3);
    assert!(max_singular(&u, 2) > 3.0);
}

#[test]
fn saturation_is_measured_per_step() {
    // Huge input weights saturate every tanh unit; tiny ones none.
    for (scale, want) in [(50.0, 1.0), (1e-4, 0.0)] {
        let cfg = model_cfg(CellKind::RnnTanh, 2, 4, 1, false, HeadKind::Last, 1, LossKind::Mse);
        let mut model = random_model(cfg, 90, 1.0);
        for p in model.params.iter_mut() {
            *p = if *p > 0.0 { scale } else { -scale };
        }
        let x = vec![1.0; 5 * 2];
        let batch = Batch { input: SeqInput::Dense(&x), batch: 1, seq_len: 5, batch_first: true, lengths: None };
        let d = diagnose(&model, &batch, Targets::Real(&[0.0])).unwrap();
        assert!(d.layers[0].saturation.iter().all(|&s| s == want), "{:?}", d.layers[0].saturation);
    }
}
