//! The fast paths (fused GEMMs, masked batches) against the plain
//! reference (one sequence, one unit at a time) on edge shapes: batch 1,
//! hidden 1, odd sizes, length-1 sequences, ragged batches.

mod common;
use common::*;
use recurrent::reference::rnn_forward_reference;
use recurrent::{Batch, CellKind, HeadKind, LossKind, Model, RnnState, SeqInput};

struct Shape {
    b: usize,
    i: usize,
    h: usize,
    t: usize,
}

const SHAPES: [Shape; 6] = [
    Shape { b: 1, i: 1, h: 1, t: 1 },
    Shape { b: 1, i: 2, h: 1, t: 7 },
    Shape { b: 5, i: 1, h: 1, t: 1 },
    Shape { b: 3, i: 5, h: 7, t: 4 },
    Shape { b: 1, i: 3, h: 13, t: 3 },
    Shape { b: 17, i: 9, h: 33, t: 6 },
];

#[test]
fn fast_path_matches_plain_reference_on_edge_shapes() {
    let mut n = 0;
    for cell in ALL_CELLS {
        for (si, s) in SHAPES.iter().enumerate() {
            for layers in [1, 2, 3] {
                for bidir in [false, true] {
                    for ragged in [false, true] {
                        n += 1;
                        let cfg = model_cfg(cell, s.i, s.h, layers, bidir, HeadKind::Every, 2, LossKind::Mse);
                        // Weights a bit above PyTorch's default scale: saturating, but not exploding.
                        let model = random_model(cfg, n, (1.5 / (s.h as f64).sqrt()).min(0.9));
                        let mut r = rng(n + 1000);
                        let x = randn_vec(&mut r, s.t * s.b * s.i, 1.0);
                        let lengths: Vec<usize> =
                            (0..s.b).map(|k| if ragged { 1 + (k * 5 + 3) % s.t } else { s.t }).collect();
                        let sl = layers * if bidir { 2 } else { 1 } * s.b * s.h;
                        let h0 = randn_vec(&mut r, sl, 0.5);
                        let c0 = if cell == CellKind::Lstm { randn_vec(&mut r, sl, 0.5) } else { vec![] };
                        let (ro, rh, rc) = rnn_forward_reference(&model, &x, s.t, s.b, &lengths, &h0, &c0);
                        let batch = Batch {
                            input: SeqInput::Dense(&x),
                            batch: s.b,
                            seq_len: s.t,
                            batch_first: false,
                            lengths: Some(&lengths),
                        };
                        let st = RnnState { h: h0.clone(), c: c0.clone() };
                        let (out, _) = model.forward::<Rng64>(&batch, Some(&st), None).unwrap();
                        let what = format!("{cell:?} shape {si} L{layers} bidir {bidir} ragged {ragged}");
                        for (name, a, b) in
                            [("out", &out.out, &ro), ("h_n", &out.state.h, &rh), ("c_n", &out.state.c, &rc)]
                        {
                            assert_eq!(a.len(), b.len(), "{what} {name}");
                            for (k, (x, y)) in a.iter().zip(b.iter()).enumerate() {
                                assert!(
                                    (x - y).abs() <= 1e-13 * (1.0 + y.abs()) * (s.h + s.i) as f64,
                                    "{what} {name}[{k}]: {x} vs {y}"
                                );
                            }
                        }
                        // The f32 path agrees with the f64 reference to f32 precision.
                        let m32: Model<f32> = model.cast();
                        let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
                        let st32 = RnnState {
                            h: h0.iter().map(|&v| v as f32).collect(),
                            c: c0.iter().map(|&v| v as f32).collect(),
                        };
                        let b32 = Batch {
                            input: SeqInput::Dense(&x32),
                            batch: s.b,
                            seq_len: s.t,
                            batch_first: false,
                            lengths: Some(&lengths),
                        };
                        let (o32, _) = m32.forward::<Rng64>(&b32, Some(&st32), None).unwrap();
                        // Rounding grows with the length of the dot products, the steps and the layers.
                        let tol = f32::EPSILON as f64 * ((s.i + s.h) * s.t * layers) as f64;
                        for (x, y) in o32.out.iter().zip(&ro) {
                            assert!(
                                (*x as f64 - y).abs() <= tol * (1.0 + y.abs()),
                                "{what} f32: {x} vs {y} (tol {tol:.1e})"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn streaming_steps_equal_a_whole_sequence() {
    for cell in ALL_CELLS {
        let cfg = model_cfg(cell, 4, 6, 2, false, HeadKind::Every, 1, LossKind::Mse);
        let model = random_model(cfg, 77, 0.7);
        let mut r = rng(78);
        let (b, t) = (2, 5);
        let x = randn_vec(&mut r, t * b * 4, 1.0);
        let batch = Batch { input: SeqInput::Dense(&x), batch: b, seq_len: t, batch_first: false, lengths: None };
        let (whole, _) = model.forward::<Rng64>(&batch, None, None).unwrap();
        let mut st = model.zero_state(b);
        for s in 0..t {
            st = model.step(&x[s * b * 4..(s + 1) * b * 4], &st).unwrap();
        }
        // The streaming path (packed weights, no cache) sums the products in
        // another order than the training forward: equal to rounding.
        for (name, a, w) in [("h", &st.h, &whole.state.h), ("c", &st.c, &whole.state.c)] {
            assert_eq!(a.len(), w.len(), "{cell:?} {name}");
            for (p, q) in a.iter().zip(w.iter()) {
                assert!((p - q).abs() <= 1e-13, "{cell:?} {name}: {p} vs {q}");
            }
        }
    }
}

/// Rows of a batch run on separate threads when the pool has several: the
/// loss, outputs and every gradient are the same with 1, 2 and 3 threads
/// (ragged, bidirectional, 2 layers; B not a multiple of the row blocks).
#[test]
fn row_blocks_on_threads_give_the_same_results() {
    use recurrent::Targets;
    for (n, cell) in ALL_CELLS.into_iter().enumerate() {
        let (b, i, h, t) = (19, 5, 40, 6);
        let cfg = model_cfg(cell, i, h, 2, true, HeadKind::Every, 2, LossKind::Mse);
        let model = random_model(cfg, n as u64 + 300, 0.3);
        let mut r = rng(n as u64 + 301);
        let x = randn_vec(&mut r, t * b * i, 1.0);
        let y = randn_vec(&mut r, t * b * 2, 1.0);
        let lengths: Vec<usize> = (0..b).map(|k| 1 + (k * 7 + 2) % t).collect();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let batch = Batch {
                    input: SeqInput::Dense(&x),
                    batch: b,
                    seq_len: t,
                    batch_first: true,
                    lengths: Some(&lengths),
                };
                let mut grads = vec![0.0; model.num_params()];
                let (loss, out) =
                    model.loss_and_grad::<Rng64>(&batch, Targets::Real(&y), None, &mut grads, None).unwrap();
                (loss, out.y, grads)
            })
        };
        let (l1, y1, g1) = run(1);
        for threads in [2, 3] {
            let (l, yv, g) = run(threads);
            assert!((l - l1).abs() <= 1e-14 * l1.abs(), "{cell:?} {threads} threads: loss {l} vs {l1}");
            for (what, a, w) in [("y", &yv, &y1), ("grads", &g, &g1)] {
                let scale = w.iter().fold(1e-300f64, |m, v| m.max(v.abs()));
                for (k, (p, q)) in a.iter().zip(w.iter()).enumerate() {
                    assert!((p - q).abs() <= 1e-13 * scale, "{cell:?} {threads} threads: {what}[{k}] {p} vs {q}");
                }
            }
        }
    }
}
