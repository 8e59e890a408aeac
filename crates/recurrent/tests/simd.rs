//! The element-wise kernels compiled for the CPU's vector instructions
//! against their portable build (`simd::set_cap`): training loss, outputs,
//! gradients and an optimizer step agree. One test in its own binary, since
//! the cap is process-wide.

mod common;
use common::*;
use recurrent::optim::{Optimizer, OptimizerKind};
use recurrent::simd::{set_cap, Level};
use recurrent::{Batch, HeadKind, LossKind, Model, SeqInput, Targets};

#[test]
fn portable_and_vector_builds_agree() {
    for (n, cell) in ALL_CELLS.into_iter().enumerate() {
        let (b, i, h, t) = (5, 3, 37, 4);
        let cfg = model_cfg(cell, i, h, 2, true, HeadKind::Every, 2, LossKind::Mse);
        let model: Model<f32> = random_model(cfg, n as u64 + 40, 0.4).cast();
        let mut r = rng(n as u64 + 41);
        let x: Vec<f32> = randn_vec(&mut r, t * b * i, 1.0).iter().map(|&v| v as f32).collect();
        let y: Vec<f32> = randn_vec(&mut r, t * b * 2, 1.0).iter().map(|&v| v as f32).collect();
        let lengths: Vec<usize> = (0..b).map(|k| 1 + (k * 3) % t).collect();
        let run = |cap: Option<Level>| {
            set_cap(cap);
            let batch =
                Batch { input: SeqInput::Dense(&x), batch: b, seq_len: t, batch_first: true, lengths: Some(&lengths) };
            let mut grads = vec![0.0f32; model.num_params()];
            let (loss, out) = model.loss_and_grad::<Rng64>(&batch, Targets::Real(&y), None, &mut grads, None).unwrap();
            let pred = model.predict(&batch, None).unwrap();
            set_cap(None);
            (loss, out.y, grads, pred.y)
        };
        // The optimizer step from the same gradients: Adam divides by |g|, so
        // gradients that differ by rounding (the packed product has an FMA and
        // a portable kernel too) would give different steps where g ~ 0.
        let step = |cap: Option<Level>, grads: &[f32]| {
            set_cap(cap);
            let mut params = model.params.clone();
            let mut opt = Optimizer::new(OptimizerKind::default_for("adam", 1e-2).unwrap(), params.len()).unwrap();
            opt.step(&mut params, grads).unwrap();
            set_cap(None);
            params
        };
        let fast = run(None);
        let plain = run(Some(Level::Portable));
        let (params_fast, params_plain) = (step(None, &fast.2), step(Some(Level::Portable), &fast.2));
        let tol = 1e-5f32;
        assert!((fast.0 - plain.0).abs() <= tol * fast.0.abs().max(1.0), "{cell:?} loss {} vs {}", fast.0, plain.0);
        for (what, a, p) in [
            ("y", &fast.1, &plain.1),
            ("grads", &fast.2, &plain.2),
            ("predict", &fast.3, &plain.3),
            ("params", &params_fast, &params_plain),
        ] {
            let scale = p.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
            for (k, (u, v)) in a.iter().zip(p.iter()).enumerate() {
                assert!((u - v).abs() <= tol * scale, "{cell:?} {what}[{k}]: {u} vs {v}");
            }
        }
    }
}
