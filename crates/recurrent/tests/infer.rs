//! The forward-only path (`Model::predict`, `Runner::step`: weights packed
//! once, no cache) against the training forward pass (`Model::forward`) on
//! edge shapes, in f64 and f32, and a stream of steps that allocates
//! nothing after its first step.

mod common;
use common::*;
use recurrent::{Batch, CellKind, HeadKind, LossKind, Model, RnnState, SeqInput};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Counts allocations per thread (tests run in parallel), to show a stream
/// of steps allocates nothing.
struct Counting;
thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.with(|a| a.set(a.get() + 1));
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
}

#[global_allocator]
static A: Counting = Counting;

/// (B, I, H, T): batch 1, hidden 1, odd sizes, one step, a panel and a half of gates.
const SHAPES: [(usize, usize, usize, usize); 6] =
    [(1, 1, 1, 1), (1, 2, 1, 7), (5, 1, 1, 1), (3, 5, 7, 4), (9, 3, 13, 3), (17, 9, 33, 6)];

fn close(what: &str, a: &[f64], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    for (k, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol * scale, "{what}[{k}]: {x} vs {y}");
    }
}

#[test]
fn predict_matches_forward_on_edge_shapes() {
    let mut n = 0;
    for cell in ALL_CELLS {
        for &(b, i, h, t) in &SHAPES {
            for layers in [1, 2] {
                for bidir in [false, true] {
                    for (ragged, head) in [(false, HeadKind::Last), (true, HeadKind::Every), (true, HeadKind::Last)] {
                        n += 1;
                        let cfg = model_cfg(cell, i, h, layers, bidir, head, 3, LossKind::Mse);
                        let model = random_model(cfg, n, (1.5 / (h as f64).sqrt()).min(0.9));
                        let mut r = rng(n + 500);
                        let x = randn_vec(&mut r, b * t * i, 1.0);
                        let lengths: Vec<usize> =
                            (0..b).map(|k| if ragged { 1 + (k * 5 + 3) % t } else { t }).collect();
                        let sl = layers * if bidir { 2 } else { 1 } * b * h;
                        let st = RnnState {
                            h: randn_vec(&mut r, sl, 0.5),
                            c: if cell == CellKind::Lstm { randn_vec(&mut r, sl, 0.5) } else { vec![] },
                        };
                        let batch = Batch {
                            input: SeqInput::Dense(&x),
                            batch: b,
                            seq_len: t,
                            batch_first: true,
                            lengths: Some(&lengths),
                        };
                        let what =
                            format!("{cell:?} B{b} I{i} H{h} T{t} L{layers} bidir {bidir} ragged {ragged} {head:?}");
                        let (want, _) = model.forward::<Rng64>(&batch, Some(&st), None).unwrap();
                        let got = model.predict(&batch, Some(&st)).unwrap();
                        // f64: the same function, products summed in another order.
                        close(&format!("{what} y"), &got.y, &want.y, 1e-12);
                        close(&format!("{what} out"), &got.out, &want.out, 1e-12);
                        close(&format!("{what} h_n"), &got.state.h, &want.state.h, 1e-12);
                        close(&format!("{what} c_n"), &got.state.c, &want.state.c, 1e-12);
                        // f32 (the AVX-512 kernels where the CPU has them).
                        let m32: Model<f32> = model.cast();
                        let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
                        let st32 = RnnState {
                            h: st.h.iter().map(|&v| v as f32).collect(),
                            c: st.c.iter().map(|&v| v as f32).collect(),
                        };
                        let b32 = Batch { input: SeqInput::Dense(&x32), ..batch_f32(&batch) };
                        let got32 = m32.predict(&b32, Some(&st32)).unwrap();
                        let f = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
                        let tol = 50.0 * f32::EPSILON as f64 * ((h + i) as f64).sqrt();
                        close(&format!("{what} f32 y"), &f(&got32.y), &want.y, tol);
                        close(&format!("{what} f32 h_n"), &f(&got32.state.h), &want.state.h, tol);
                    }
                }
            }
        }
    }
}

/// The sizes and lengths of a batch with another element type.
fn batch_f32<'a>(b: &Batch<'a, f64>) -> Batch<'a, f32> {
    Batch {
        input: SeqInput::Tokens(&[]),
        batch: b.batch,
        seq_len: b.seq_len,
        batch_first: b.batch_first,
        lengths: b.lengths,
    }
}

#[test]
fn streaming_steps_match_a_sequence_and_allocate_nothing() {
    for (n, cell) in ALL_CELLS.into_iter().enumerate() {
        for &(b, i, h, t) in &SHAPES {
            let cfg = model_cfg(cell, i, h, 2, false, HeadKind::Every, 1, LossKind::Mse);
            let model: Model<f32> = random_model(cfg, n as u64 + 7, 0.5).cast();
            let x: Vec<f32> = randn_vec(&mut rng(n as u64 + 70), t * b * i, 1.0).iter().map(|&v| v as f32).collect();
            let batch = Batch { input: SeqInput::Dense(&x), batch: b, seq_len: t, batch_first: false, lengths: None };
            let want = model.predict(&batch, None).unwrap();
            let mut runner = model.runner().unwrap();
            let mut state = model.zero_state(b);
            runner.step(&x[..b * i], &mut state).unwrap();
            let before = ALLOCS.with(|a| a.get());
            for s in 1..t {
                runner.step(&x[s * b * i..(s + 1) * b * i], &mut state).unwrap();
            }
            let allocs = ALLOCS.with(|a| a.get()) - before;
            assert_eq!(allocs, 0, "{cell:?} B{b}: {allocs} allocations in {} steps", t - 1);
            let out = runner.step(&x[(t - 1) * b * i..t * b * i], &mut model.zero_state(b)).map(|o| o.len()).unwrap();
            assert_eq!(out, b * h);
            for (k, (p, q)) in state.h.iter().zip(&want.state.h).enumerate() {
                assert!((p - q).abs() <= 1e-5, "{cell:?} B{b} H{h} T{t}: h[{k}] {p} vs {q}");
            }
        }
    }
}

#[test]
fn runner_rejects_wrong_shapes() {
    let cfg = model_cfg(CellKind::Gru, 3, 4, 1, false, HeadKind::Last, 1, LossKind::Mse);
    let model: Model<f32> = random_model(cfg, 1, 0.5).cast();
    let mut runner = model.runner().unwrap();
    let mut state = model.zero_state(2);
    let e = runner.step(&[0.0; 5], &mut state).unwrap_err().to_string();
    assert!(e.contains("I=3") && e.contains('5'), "{e}");
    let e = runner.step(&[0.0; 3], &mut state).unwrap_err().to_string();
    assert!(e.contains("state.h") && e.contains('8') && e.contains('4'), "{e}");
}

/// Sequence batches big enough run their rows on separate threads: the same
/// outputs and final states with 1, 2 and 3 threads (ragged, bidirectional).
#[test]
fn predict_is_the_same_on_any_number_of_threads() {
    for (n, cell) in ALL_CELLS.into_iter().enumerate() {
        let (b, i, h, t) = (19, 4, 48, 5);
        let cfg = model_cfg(cell, i, h, 2, true, HeadKind::Every, 2, LossKind::Mse);
        let model = random_model(cfg, n as u64 + 90, 0.3);
        let x = randn_vec(&mut rng(n as u64 + 91), b * t * i, 1.0);
        let lengths: Vec<usize> = (0..b).map(|k| 1 + (k * 3 + 1) % t).collect();
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
                model.predict(&batch, None).unwrap()
            })
        };
        let one = run(1);
        for threads in [2, 3] {
            let got = run(threads);
            let what = format!("{cell:?} {threads} threads");
            close(&format!("{what} y"), &got.y, &one.y, 1e-13);
            close(&format!("{what} h_n"), &got.state.h, &one.state.h, 1e-13);
            close(&format!("{what} c_n"), &got.state.c, &one.state.c, 1e-13);
        }
    }
}

/// The one forward sweep, run for inference (`Model::predict`, keeping the
/// latest state only) and for training (`Model::forward`, keeping every
/// step), against the plain reference, on edge shapes: batch 1, hidden 1,
/// odd sizes, length 1, one and two layers, bidirectional, with and without
/// biases, equal and variable lengths. One model per configuration runs every
/// shape in turn, so each call reuses buffers sized by a call at another
/// shape: the results must not depend on what those held (checked bit for
/// bit against a fresh clone of the model).
#[test]
fn one_sweep_serves_inference_and_training_on_edge_shapes() {
    use recurrent::reference::rnn_forward_reference;
    let mut n = 0;
    for cell in ALL_CELLS {
        for layers in [1, 2] {
            for bidir in [false, true] {
                for bias in [true, false] {
                    n += 1;
                    let (i, h) = (3, if n % 2 == 0 { 1 } else { 7 });
                    let mut cfg = model_cfg(cell, i, h, layers, bidir, HeadKind::Every, 2, LossKind::Mse);
                    cfg.rnn.bias = bias;
                    let model = random_model(cfg, n, 0.8);
                    let nb = model.params.len();
                    assert_eq!(
                        model.table.specs().iter().any(|s| s.name.starts_with("rnn.") && s.name.contains("bias")),
                        bias
                    );
                    // Shapes in an order that grows and shrinks every buffer: (B, T, ragged).
                    for (k, &(b, t, ragged)) in
                        [(5, 4, true), (1, 1, false), (3, 7, true), (1, 6, false), (17, 2, true), (2, 1, false)]
                            .iter()
                            .enumerate()
                    {
                        let mut r = rng(n * 100 + k as u64);
                        let x = randn_vec(&mut r, t * b * i, 1.0);
                        let lengths: Vec<usize> =
                            (0..b).map(|q| if ragged { 1 + (q * 5 + 3) % t } else { t }).collect();
                        let sl = layers * if bidir { 2 } else { 1 } * b * h;
                        let st = RnnState {
                            h: randn_vec(&mut r, sl, 0.5),
                            c: if cell == CellKind::Lstm { randn_vec(&mut r, sl, 0.5) } else { vec![] },
                        };
                        let batch = Batch {
                            input: SeqInput::Dense(&x),
                            batch: b,
                            seq_len: t,
                            batch_first: false,
                            lengths: Some(&lengths),
                        };
                        let what = format!("{cell:?} L{layers} bidir {bidir} bias {bias} B{b} T{t} H{h}");
                        let (train, _) = model.forward::<Rng64>(&batch, Some(&st), None).unwrap();
                        let infer = model.predict(&batch, Some(&st)).unwrap();
                        let (ro, rh, rc) = rnn_forward_reference(&model, &x, t, b, &lengths, &st.h, &st.c);
                        for (name, got) in [("train", &train), ("infer", &infer)] {
                            close(&format!("{what} {name} out"), &got.out, &ro, 1e-12);
                            close(&format!("{what} {name} h_n"), &got.state.h, &rh, 1e-12);
                            close(&format!("{what} {name} c_n"), &got.state.c, &rc, 1e-12);
                        }
                        close(&format!("{what} y"), &infer.y, &train.y, 1e-12);
                        // Reused buffers give what fresh ones give, bit for bit.
                        let fresh = model.clone();
                        let (again, _) = fresh.forward::<Rng64>(&batch, Some(&st), None).unwrap();
                        assert!(again.out == train.out && again.state == train.state, "{what}: train reuse");
                        let again = fresh.predict(&batch, Some(&st)).unwrap();
                        assert!(again.out == infer.out && again.state == infer.state, "{what}: infer reuse");
                        // Gradients as well: a reused cache and backward workspace.
                        let y = randn_vec(&mut r, t * b * 2, 1.0);
                        let grad = |m: &Model<f64>| {
                            let mut g = vec![0.0; nb];
                            m.loss_and_grad::<Rng64>(&batch, recurrent::Targets::Real(&y), Some(&st), &mut g, None)
                                .unwrap();
                            g
                        };
                        assert!(grad(&model) == grad(&model.clone()), "{what}: gradient reuse");
                    }
                }
            }
        }
    }
}

/// Streaming one step at a time through `Runner::step` (a ring of two
/// states per layer) ends where one sequence call of the training sweep
/// does, with and without biases, for stacked bidirectional-free networks.
#[test]
fn streaming_steps_match_the_training_sweep() {
    for (n, cell) in ALL_CELLS.into_iter().enumerate() {
        for bias in [true, false] {
            let (b, i, h, t) = (3, 2, 5, 6);
            let mut cfg = model_cfg(cell, i, h, 2, false, HeadKind::Every, 1, LossKind::Mse);
            cfg.rnn.bias = bias;
            let model = random_model(cfg, n as u64 + 300, 0.7);
            let x = randn_vec(&mut rng(n as u64 + 301), t * b * i, 1.0);
            let batch = Batch { input: SeqInput::Dense(&x), batch: b, seq_len: t, batch_first: false, lengths: None };
            let (want, _) = model.forward::<Rng64>(&batch, None, None).unwrap();
            let mut runner = model.runner().unwrap();
            let mut state = model.zero_state(b);
            for s in 0..t {
                let out = runner.step(&x[s * b * i..(s + 1) * b * i], &mut state).unwrap();
                close(&format!("{cell:?} bias {bias} step {s}"), out, &want.out[s * b * h..(s + 1) * b * h], 1e-12);
            }
            close(&format!("{cell:?} bias {bias} h_n"), &state.h, &want.state.h, 1e-12);
            close(&format!("{cell:?} bias {bias} c_n"), &state.c, &want.state.c, 1e-12);
        }
    }
}
