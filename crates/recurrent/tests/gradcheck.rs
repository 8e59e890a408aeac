//! Finite-difference checks in f64 of every gradient (parameters, inputs,
//! initial states) for each cell x {1, 2 layers} x {1, 2 directions} x
//! {last-step, every-step head} x {equal, ragged lengths} x {full, truncated BPTT}.
//! Criterion: max |a - b| / max(|a|, |b|, 1e-12) below 1e-6.

mod common;
use common::*;
use recurrent::grad::tbptt::{tbptt, windows, Stream, Truncation};
use recurrent::{Batch, CellKind, HeadKind, LossKind, Model, RnnState, SeqInput, Targets};

const TOL: f64 = 1e-6;
const H_FD: f64 = 2e-3;

struct Case {
    cell: CellKind,
    layers: usize,
    bidir: bool,
    head: HeadKind,
    ragged: bool,
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    for cell in ALL_CELLS {
        for layers in [1, 2] {
            for bidir in [false, true] {
                for head in [HeadKind::Last, HeadKind::Every] {
                    for ragged in [false, true] {
                        v.push(Case { cell, layers, bidir, head, ragged });
                    }
                }
            }
        }
    }
    v
}

fn name(c: &Case) -> String {
    format!(
        "{:?} L{} D{} {:?} {}",
        c.cell,
        c.layers,
        if c.bidir { 2 } else { 1 },
        c.head,
        if c.ragged { "ragged" } else { "equal" }
    )
}

/// Worst relative error over a gradient vector and where it is; coordinates
/// whose stencil crossed a ReLU kink (`None`) are skipped.
fn worst(analytic: &[f64], fd: &[Option<f64>]) -> (f64, usize) {
    assert_eq!(analytic.len(), fd.len());
    analytic
        .iter()
        .zip(fd)
        .enumerate()
        .filter_map(|(k, (a, b))| b.map(|b| (rel_err(*a, b), k)))
        .fold((0.0, 0), |m, x| if x.0 > m.0 { x } else { m })
}

/// Finite differences of `f` along every coordinate of `x`.
fn fd_all(x: &[f64], mut f: impl FnMut(&[f64]) -> (f64, u64)) -> Vec<Option<f64>> {
    let mut x = x.to_vec();
    (0..x.len()).map(|k| fd5_smooth(&mut x, k, H_FD, &mut f)).collect()
}

/// Counts coordinates skipped for kinks; fails if they are more than a few.
fn skipped(fd: &[Option<f64>], total: &mut (usize, usize)) {
    total.0 += fd.iter().filter(|v| v.is_none()).count();
    total.1 += fd.len();
}

struct Setup {
    model: Model<f64>,
    x: Vec<f64>,
    lengths: Vec<usize>,
    state: RnnState<f64>,
    real: Vec<f64>,
    class: Vec<i64>,
    b: usize,
    t: usize,
    batch_first: bool,
}

fn setup(c: &Case, seed: u64) -> Setup {
    setup_bias(c, seed, true)
}

fn setup_bias(c: &Case, seed: u64, bias: bool) -> Setup {
    let (i, h, b, t, o) = (3, 3, 3, 5, 3);
    // Every-step heads use cross-entropy, last-step heads MSE (and BCE for the Elman cells).
    let loss = match (c.head, c.cell) {
        (HeadKind::Every, _) => LossKind::CrossEntropy,
        (HeadKind::Last, CellKind::RnnTanh | CellKind::RnnRelu) => LossKind::BceWithLogits,
        _ => LossKind::Mse,
    };
    let mut cfg = model_cfg(c.cell, i, h, c.layers, c.bidir, c.head, o, loss);
    cfg.rnn.bias = bias;
    let model = random_model(cfg, seed, 0.8);
    let mut r = rng(seed + 1);
    let nd = if c.bidir { 2 } else { 1 };
    let x = randn_vec(&mut r, b * t * i, 1.0);
    let lengths = if c.ragged { vec![t, 2, 4] } else { vec![t; b] };
    let sl = c.layers * nd * b * h;
    let state = RnnState {
        h: randn_vec(&mut r, sl, 0.5),
        c: if c.cell == CellKind::Lstm { randn_vec(&mut r, sl, 0.5) } else { vec![] },
    };
    let rows = if c.head == HeadKind::Every { b * t } else { b };
    let real: Vec<f64> = if loss == LossKind::BceWithLogits {
        (0..rows * o).map(|k| (k % 2) as f64).collect()
    } else {
        randn_vec(&mut r, rows * o, 1.0)
    };
    let class: Vec<i64> = (0..rows).map(|k| ((k * 7 + 1) % o) as i64).collect();
    Setup { model, x, lengths, state, real, class, b, t, batch_first: seed % 2 == 0 }
}

impl Setup {
    fn targets(&self) -> Targets<'_, f64> {
        if self.model.cfg.loss == LossKind::CrossEntropy {
            Targets::Class(&self.class)
        } else {
            Targets::Real(&self.real)
        }
    }
    fn batch<'a>(&'a self, x: &'a [f64]) -> Batch<'a, f64> {
        Batch {
            input: SeqInput::Dense(x),
            batch: self.b,
            seq_len: self.t,
            batch_first: self.batch_first,
            lengths: Some(&self.lengths),
        }
    }
    fn loss(&self, params: &[f64], x: &[f64], state: &RnnState<f64>) -> (f64, u64) {
        let mut m = self.model.clone();
        m.params.copy_from_slice(params);
        let (out, cache) = m.forward::<Rng64>(&self.batch(x), Some(state), None).unwrap();
        (m.loss(&out.y, self.targets(), &cache).unwrap().0, relu_pattern(&m, &cache))
    }
}

#[test]
fn full_bptt_gradients_match_finite_differences() {
    let mut failures = Vec::new();
    let mut skip = (0, 0);
    for (n, c) in cases().iter().enumerate() {
        let s = setup(c, 100 + n as u64);
        let mut grads = vec![0.0; s.model.num_params()];
        let (out, cache) = s.model.forward::<Rng64>(&s.batch(&s.x), Some(&s.state), None).unwrap();
        let (_, dy) = s.model.loss(&out.y, s.targets(), &cache).unwrap();
        let g = s.model.backward(&cache, &dy, None, &mut grads, true).unwrap();

        let fdp = fd_all(&s.model.params, |p| s.loss(p, &s.x, &s.state));
        let fdx = fd_all(&s.x, |x| s.loss(&s.model.params, x, &s.state));
        let fdh =
            fd_all(&s.state.h, |h| s.loss(&s.model.params, &s.x, &RnnState { h: h.to_vec(), c: s.state.c.clone() }));
        let fdc =
            fd_all(&s.state.c, |c| s.loss(&s.model.params, &s.x, &RnnState { h: s.state.h.clone(), c: c.to_vec() }));
        for (what, a, b) in [("params", &grads, &fdp), ("x", &g.dx, &fdx), ("h0", &g.dh0, &fdh), ("c0", &g.dc0, &fdc)] {
            assert_eq!(a.len(), b.len(), "{} {what}", name(c));
            skipped(b, &mut skip);
            let (e, k) = worst(a, b);
            if e > TOL {
                failures.push(format!("{}: d{what}[{k}] analytic {} vs fd {:?} (rel {e:.2e})", name(c), a[k], b[k]));
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
    assert!(skip.0 * 50 < skip.1, "too many coordinates at ReLU kinks: {skip:?}");
}

/// Networks without biases (`bias: false`, no `bias_*` tensors), with the
/// model's buffers first used at another shape (a shorter, smaller batch), so
/// the backward pass runs in reused workspaces: every gradient against
/// finite differences.
#[test]
fn no_bias_gradients_match_finite_differences_in_reused_buffers() {
    let mut failures = Vec::new();
    let mut skip = (0, 0);
    for (n, c) in cases().iter().filter(|c| c.ragged && c.layers == 2).enumerate() {
        let s = setup_bias(c, 700 + n as u64, false);
        assert!(!s.model.table.specs().iter().any(|p| p.name.contains("bias_ih") || p.name.contains("bias_hh")));
        // Another shape first: 2 sequences of 4 steps, then the test's batch.
        let (b2, t2) = (2, 4);
        let x2 = randn_vec(&mut rng(n as u64), b2 * t2 * 3, 1.0);
        let batch2 = Batch { input: SeqInput::Dense(&x2), batch: b2, seq_len: t2, batch_first: false, lengths: None };
        let (o2, cache2) = s.model.forward::<Rng64>(&batch2, None, None).unwrap();
        let dy2 = vec![1.0; o2.y.len()];
        let mut g2 = vec![0.0; s.model.num_params()];
        s.model.backward(&cache2, &dy2, None, &mut g2, true).unwrap();
        s.model.recycle(cache2);
        let mut grads = vec![0.0; s.model.num_params()];
        let (out, cache) = s.model.forward::<Rng64>(&s.batch(&s.x), Some(&s.state), None).unwrap();
        let (_, dy) = s.model.loss(&out.y, s.targets(), &cache).unwrap();
        let g = s.model.backward(&cache, &dy, None, &mut grads, true).unwrap();
        let fdp = fd_all(&s.model.params, |p| s.loss(p, &s.x, &s.state));
        let fdx = fd_all(&s.x, |x| s.loss(&s.model.params, x, &s.state));
        let fdh =
            fd_all(&s.state.h, |h| s.loss(&s.model.params, &s.x, &RnnState { h: h.to_vec(), c: s.state.c.clone() }));
        for (what, a, b) in [("params", &grads, &fdp), ("x", &g.dx, &fdx), ("h0", &g.dh0, &fdh)] {
            assert_eq!(a.len(), b.len(), "{} {what}", name(c));
            skipped(b, &mut skip);
            let (e, k) = worst(a, b);
            if e > TOL {
                failures.push(format!(
                    "{} no bias: d{what}[{k}] analytic {} vs fd {:?} (rel {e:.2e})",
                    name(c),
                    a[k],
                    b[k]
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
    assert!(skip.0 * 50 < skip.1, "too many coordinates at ReLU kinks: {skip:?}");
}

#[test]
fn truncated_bptt_window_gradients_match_finite_differences() {
    let tr = Truncation::new(2, 3).unwrap();
    let mut failures = Vec::new();
    let mut skip = (0, 0);
    for (n, c) in cases().iter().enumerate() {
        let mut s = setup(c, 500 + n as u64);
        s.batch_first = false; // windows are time-major slices
        let stream = Stream::new(&s.model, &s.batch(&s.x), s.targets()).unwrap();
        // Run TBPTT without updating, recording each window's start state and gradients.
        let mut model = s.model.clone();
        let mut seen: Vec<Vec<f64>> = Vec::new();
        tbptt::<f64, Rng64>(&mut model, &stream, tr, Some(&s.state), None, |_, g| {
            seen.push(g.to_vec());
            Ok(())
        })
        .unwrap();
        let ws = windows(s.t, tr);
        assert_eq!(seen.len(), ws.len());
        // Replay to get the start state of each window (carried, detached).
        let mut state = s.state.clone();
        for (k, &w) in ws.iter().enumerate() {
            let mut grads = vec![0.0; s.model.num_params()];
            let r = stream.window::<Rng64>(&s.model, w, Some(&state), Some(&mut grads), None).unwrap();
            assert_eq!(grads, seen[k], "{}: window {k} replay differs", name(c));
            let win = |m: &Model<f64>, st: &Stream<f64>, state: &RnnState<f64>| {
                let r = st.window::<Rng64>(m, w, Some(state), None, None).unwrap();
                (r.loss, relu_pattern(m, &r.cache))
            };
            let fdp = fd_all(&s.model.params, |p| {
                let mut m = s.model.clone();
                m.params.copy_from_slice(p);
                win(&m, &stream, &state)
            });
            skipped(&fdp, &mut skip);
            let (e, j) = worst(&grads, &fdp);
            if e > TOL {
                failures.push(format!(
                    "{} window {w:?}: dparam[{j}] analytic {} vs fd {:?} (rel {e:.2e})",
                    name(c),
                    grads[j],
                    fdp[j]
                ));
            }
            // Gradient of the window loss with respect to its (detached) start state.
            let dy = s.model.loss(&r.output.y, window_targets(&s, &stream, w), &r.cache).unwrap().1;
            let mut g2 = vec![0.0; s.model.num_params()];
            let ig = s.model.backward(&r.cache, &dy, None, &mut g2, true).unwrap();
            let fdh = fd_all(&state.h, |h| win(&s.model, &stream, &RnnState { h: h.to_vec(), c: state.c.clone() }));
            skipped(&fdh, &mut skip);
            let (e, j) = worst(&ig.dh0, &fdh);
            if e > TOL {
                failures.push(format!(
                    "{} window {w:?}: dh_start[{j}] analytic {} vs fd {:?} (rel {e:.2e})",
                    name(c),
                    ig.dh0[j],
                    fdh[j]
                ));
            }
            // Gradient with respect to the window's inputs (time-major slice of x).
            let (i, b) = (s.model.cfg.rnn.input_size, s.b);
            let off = w.start * b * i;
            let mut x = s.x.clone();
            let fdx: Vec<Option<f64>> = (0..ig.dx.len())
                .map(|j| {
                    fd5_smooth(&mut x, off + j, H_FD, |x| {
                        let st2 = Stream::new(&s.model, &s.batch(x), s.targets()).unwrap();
                        win(&s.model, &st2, &state)
                    })
                })
                .collect();
            skipped(&fdx, &mut skip);
            let (e, j) = worst(&ig.dx, &fdx);
            if e > TOL {
                failures.push(format!(
                    "{} window {w:?}: dx[{j}] analytic {} vs fd {:?} (rel {e:.2e})",
                    name(c),
                    ig.dx[j],
                    fdx[j]
                ));
            }
            let next = ws.get(k + 1).map_or(w.end, |nw| nw.start);
            state = stream.state_at(&s.model, w, &r.cache, next, &s.state);
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
    assert!(skip.0 * 50 < skip.1, "too many coordinates at ReLU kinks: {skip:?}");
}

/// The targets slice a window scores (time-major layout).
fn window_targets<'a>(s: &'a Setup, _stream: &Stream<f64>, w: recurrent::grad::tbptt::Window) -> Targets<'a, f64> {
    let o = s.model.cfg.out_size;
    match (s.model.cfg.head, s.targets()) {
        (HeadKind::Every, Targets::Real(v)) => Targets::Real(&v[w.start * s.b * o..w.end * s.b * o]),
        (HeadKind::Every, Targets::Class(v)) => Targets::Class(&v[w.start * s.b..w.end * s.b]),
        (_, t) => t,
    }
}

#[test]
fn truncated_bptt_with_one_window_equals_full_bptt() {
    for (n, c) in cases().iter().enumerate().filter(|(_, c)| c.layers == 2) {
        let mut s = setup(c, 900 + n as u64);
        s.batch_first = false;
        let mut full = vec![0.0; s.model.num_params()];
        let (lf, _) =
            s.model.loss_and_grad::<Rng64>(&s.batch(&s.x), s.targets(), Some(&s.state), &mut full, None).unwrap();
        let stream = Stream::new(&s.model, &s.batch(&s.x), s.targets()).unwrap();
        let mut model = s.model.clone();
        let mut got = Vec::new();
        let rep = tbptt::<f64, Rng64>(
            &mut model,
            &stream,
            Truncation::new(s.t, s.t).unwrap(),
            Some(&s.state),
            None,
            |_, g| {
                got = g.to_vec();
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(rep.losses.len(), 1);
        assert!(rel_err(rep.losses[0], lf) < 1e-14, "{}", name(c));
        let (e, k) = worst(&got, &full.iter().map(|v| Some(*v)).collect::<Vec<_>>());
        assert!(e < 1e-12, "{}: grad[{k}] {} vs {}", name(c), got[k], full[k]);
    }
}

#[test]
fn truncation_windows_cover_the_stream() {
    let ws = windows(10, Truncation::new(3, 5).unwrap());
    let ends: Vec<_> = ws.iter().map(|w| (w.start, w.score_from, w.end)).collect();
    assert_eq!(ends, vec![(0, 0, 3), (1, 3, 6), (4, 6, 9), (5, 9, 10)]);
    assert!(Truncation::new(4, 3).is_err());
    assert!(Truncation::new(0, 3).is_err());
}

#[test]
fn dropout_gradients_match_finite_differences_with_a_fixed_mask() {
    for cell in ALL_CELLS {
        let mut cfg = model_cfg(cell, 3, 4, 3, true, HeadKind::Every, 2, LossKind::Mse);
        cfg.rnn.dropout = 0.4;
        let model = random_model(cfg, 42, 0.8);
        let mut r = rng(43);
        let (b, t) = (2, 4);
        let x = randn_vec(&mut r, b * t * 3, 1.0);
        let y = randn_vec(&mut r, b * t * 2, 1.0);
        let batch =
            Batch { input: SeqInput::Dense(&x), batch: b, seq_len: t, batch_first: true, lengths: Some(&[4, 3]) };
        let loss_at = |p: &[f64]| {
            let mut m = model.clone();
            m.params.copy_from_slice(p);
            let (out, cache) = m.forward(&batch, None, Some(&mut rng(7))).unwrap();
            (m.loss(&out.y, Targets::Real(&y), &cache).unwrap().0, relu_pattern(&m, &cache))
        };
        let mut grads = vec![0.0; model.num_params()];
        model.loss_and_grad(&batch, Targets::Real(&y), None, &mut grads, Some(&mut rng(7))).unwrap();
        let fd = fd_all(&model.params, loss_at);
        let (e, k) = worst(&grads, &fd);
        assert!(e < TOL, "{cell:?}: grad[{k}] {} vs {:?}", grads[k], fd[k]);
        // minGRU / minLSTM: the candidate's g has a kink at 0 in every unit of
        // every step of 3 layers x 2 directions, so more stencils cross one (about 9%).
        let kinks = fd.iter().filter(|v| v.is_none()).count();
        let most = if cell.recurrent() { fd.len() / 20 } else { fd.len() / 5 };
        assert!(kinks < most, "{cell:?}: too many kinks ({kinks} of {})", fd.len());
        // Dropout is active (training output differs from evaluation) and seeded (same seed, same output).
        let (o1, _) = model.forward(&batch, None, Some(&mut rng(7))).unwrap();
        let (o2, _) = model.forward(&batch, None, Some(&mut rng(7))).unwrap();
        let (o3, _) = model.forward::<Rng64>(&batch, None, None).unwrap();
        assert_eq!(o1.y, o2.y);
        assert_ne!(o1.y, o3.y);
    }
}
