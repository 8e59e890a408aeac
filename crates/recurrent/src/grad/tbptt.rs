//! Backpropagation through time: full (one forward and backward over the
//! whole sequence, `Model::loss_and_grad`) and truncated, TBPTT(k1, k2):
//! every k1 steps the parameters are updated with the gradient of the loss of
//! those k1 steps, back-propagated k2 >= k1 steps, starting from the state
//! carried along the stream and treated as a constant (PyTorch's
//! `h.detach()`, Keras' stateful training).
//!
//! A window ending at step e covers steps [e - k2, e) and scores [e - k1, e).
//! Its start state was computed by the previous window (with the parameters
//! of that time); it is stored, not recomputed. For a bidirectional network
//! the reverse direction runs inside each window from the initial state:
//! the future beyond the window is not seen.

use crate::error::{config_err, Result};
use crate::float::Float;
use crate::loss::Targets;
use crate::model::{swap_leading, Batch, HeadKind, Model, ModelCache, ModelOutput, SeqInput, TimeMajor};
use crate::network::RnnState;
use rand::Rng;
use std::ops::ControlFlow;

/// Truncation lengths: k1 steps between updates, k2 steps back-propagated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Truncation {
    /// Steps between updates.
    pub k1: usize,
    /// Steps back-propagated (>= k1).
    pub k2: usize,
}

impl Truncation {
    /// Checks 1 <= k1 <= k2.
    pub fn new(k1: usize, k2: usize) -> Result<Self> {
        if k1 == 0 {
            return Err(config_err("k1", k1, "must be at least 1"));
        }
        if k2 < k1 {
            return Err(config_err("k2", k2, format!("must be >= k1 = {k1}")));
        }
        Ok(Truncation { k1, k2 })
    }
}

/// One window of truncated BPTT: forward over [start, end), loss on [score_from, end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// First step run forward (and back-propagated through).
    pub start: usize,
    /// First step whose loss counts.
    pub score_from: usize,
    /// One past the last step.
    pub end: usize,
}

/// The windows of TBPTT(k1, k2) over `total` steps (the last one may be shorter).
pub fn windows(total: usize, tr: Truncation) -> Vec<Window> {
    let mut out = Vec::new();
    let mut e = 0;
    while e < total {
        let score_from = e;
        e = (e + tr.k1).min(total);
        out.push(Window { start: e.saturating_sub(tr.k2), score_from, end: e });
    }
    out
}

/// Targets of a whole stream, time-major.
#[derive(Clone, Debug)]
enum StreamTargets<F> {
    Real(Vec<F>),
    Class(Vec<i64>),
}

/// A batch of long streams prepared for windowed training: inputs and
/// targets copied to time-major once, validated once.
#[derive(Clone, Debug)]
pub struct Stream<F> {
    input: TimeMajor<F>,
    targets: StreamTargets<F>,
    lengths: Vec<usize>,
    batch: usize,
    seq_len: usize,
    width: usize,
}

/// What one window produced.
#[derive(Debug)]
pub struct WindowResult<F> {
    /// The window's loss (mean over its scored elements).
    pub loss: F,
    /// The model's outputs over the window.
    pub output: ModelOutput<F>,
    /// The forward pass's cache (hand it back with `Model::recycle` when done).
    pub cache: ModelCache<F>,
}

impl<F: Float> Stream<F> {
    /// Validates `batch` and `targets` against `model` and copies them.
    /// Targets are laid out like the model's output for the whole batch:
    /// [B, O] / [B] for a last-step head, [B, T, O] / [B, T] (or time-major) for every step.
    pub fn new(model: &Model<F>, batch: &Batch<F>, targets: Targets<F>) -> Result<Self> {
        // A dry validation through the model's own checks.
        let lengths = match batch.lengths {
            Some(l) => {
                crate::network::check_lengths(l, batch.batch, batch.seq_len)?;
                l.to_vec()
            }
            None => vec![batch.seq_len; batch.batch],
        };
        let (b, t) = (batch.batch, batch.seq_len);
        let i = model.cfg.rnn.input_size;
        let o = model.cfg.out_size;
        model.check_input(batch)?;
        let input = match batch.input {
            SeqInput::Dense(x) => {
                TimeMajor::Dense(if batch.batch_first { swap_leading(x, b, t, i) } else { x.to_vec() })
            }
            SeqInput::Tokens(x) => {
                TimeMajor::Tokens(if batch.batch_first { swap_leading(x, b, t, 1) } else { x.to_vec() })
            }
        };
        let every = model.cfg.head == HeadKind::Every;
        let rows = if every { t * b } else { b };
        let tm = |w: usize| if every && batch.batch_first { Some(w) } else { None };
        let targets = match targets {
            Targets::Real(v) => {
                crate::error::check_len("targets", v.len(), rows * o, || format!("[{rows} rows x O={o}]"))?;
                StreamTargets::Real(match tm(o) {
                    Some(w) => swap_leading(v, b, t, w),
                    None => v.to_vec(),
                })
            }
            Targets::Class(v) => {
                crate::error::check_len("targets", v.len(), rows, || format!("[{rows} rows]"))?;
                StreamTargets::Class(match tm(1) {
                    Some(w) => swap_leading(v, b, t, w),
                    None => v.to_vec(),
                })
            }
        };
        let width = match &input {
            TimeMajor::Dense(_) => i,
            TimeMajor::Tokens(_) => 1,
        };
        Ok(Stream { input, targets, lengths, batch: b, seq_len: t, width })
    }

    /// T of the whole stream.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// Forward, loss and (when `grads` is given) backward of one window,
    /// starting from `state` (treated as a constant).
    pub fn window<R: Rng>(
        &self,
        model: &Model<F>,
        w: Window,
        state: Option<&RnnState<F>>,
        grads: Option<&mut [F]>,
        dropout_rng: Option<&mut R>,
    ) -> Result<WindowResult<F>> {
        let (b, len) = (self.batch, w.end - w.start);
        let rows = w.start * b..w.end * b;
        let input = match &self.input {
            TimeMajor::Dense(x) => SeqInput::Dense(&x[rows.start * self.width..rows.end * self.width]),
            TimeMajor::Tokens(x) => SeqInput::Tokens(&x[rows.clone()]),
        };
        let lengths: Vec<usize> = self.lengths.iter().map(|&l| l.saturating_sub(w.start).min(len)).collect();
        // The last-step head scores sequence r in the window that holds its last step.
        let last: Vec<Option<usize>> = self
            .lengths
            .iter()
            .map(|&l| if l - 1 >= w.score_from && l - 1 < w.end { Some(l - 1 - w.start) } else { None })
            .collect();
        let every = model.cfg.head == HeadKind::Every;
        let o = model.cfg.out_size;
        let (output, cache) =
            model.forward_tm(input, false, len, b, &lengths, last, w.score_from - w.start, state, dropout_rng)?;
        let targets = match (&self.targets, every) {
            (StreamTargets::Real(v), true) => Targets::Real(&v[rows.start * o..rows.end * o]),
            (StreamTargets::Real(v), false) => Targets::Real(&v[..]),
            (StreamTargets::Class(v), true) => Targets::Class(&v[rows.clone()]),
            (StreamTargets::Class(v), false) => Targets::Class(&v[..]),
        };
        let (loss, dy) = model.loss(&output.y, targets, &cache)?;
        if let Some(g) = grads {
            model.backward(&cache, &dy, None, g, false)?;
        }
        Ok(WindowResult { loss, output, cache })
    }

    /// The state at step `at` (start <= at <= end) of a window just run:
    /// forward direction from the window's cache, reverse direction reset to
    /// `init` (the stream's initial state).
    pub fn state_at(
        &self,
        model: &Model<F>,
        w: Window,
        cache: &ModelCache<F>,
        at: usize,
        init: &RnnState<F>,
    ) -> RnnState<F> {
        let cfg = &model.cfg.rnn;
        let (b, h, nd) = (self.batch, cfg.hidden_size, cfg.dirs());
        let mut s = init.clone();
        let k = at - w.start;
        for l in 0..cfg.num_layers {
            let dc = &cache.rnn.dirs[l * nd];
            let o = l * nd * b * h;
            s.h[o..o + b * h].copy_from_slice(&dc.h[k * b * h..(k + 1) * b * h]);
            if cfg.cell.has_c() {
                s.c[o..o + b * h].copy_from_slice(&dc.c[k * b * h..(k + 1) * b * h]);
            }
        }
        s
    }
}

/// Summary of a truncated-BPTT pass over a stream.
#[derive(Clone, Debug)]
pub struct TbpttReport<F> {
    /// Loss of each window (mean over its scored elements).
    pub losses: Vec<F>,
    /// State after the last step, to carry into the next stream chunk.
    pub final_state: RnnState<F>,
}

/// One window's update, as the TBPTT driver hands it to its caller.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowStep {
    /// Index of the window in the pass.
    pub index: usize,
    /// The window.
    pub window: Window,
    /// Its loss (mean over its scored elements).
    pub loss: f64,
}

/// Runs TBPTT(k1, k2) over `stream`, calling `update(model, grads)` after each
/// window with that window's gradients (zeroed before each window). The
/// closure typically clips and takes an optimizer step.
pub fn tbptt<F: Float, R: Rng>(
    model: &mut Model<F>,
    stream: &Stream<F>,
    tr: Truncation,
    state0: Option<&RnnState<F>>,
    dropout_rng: Option<&mut R>,
    mut update: impl FnMut(&mut Model<F>, &mut [F]) -> Result<()>,
) -> Result<TbpttReport<F>> {
    tbptt_until(model, stream, tr, state0, dropout_rng, |m, g, _| update(m, g).map(|_| ControlFlow::Continue(())))
}

/// The truncated-BPTT driver: `tbptt` whose `update` also sees each
/// window's index, bounds and loss, and may end the pass early by returning
/// `ControlFlow::Break` (a step budget reached); the windows after it are
/// not computed. The state is carried, detached, from window to window.
pub fn tbptt_until<F: Float, R: Rng>(
    model: &mut Model<F>,
    stream: &Stream<F>,
    tr: Truncation,
    state0: Option<&RnnState<F>>,
    mut dropout_rng: Option<&mut R>,
    mut update: impl FnMut(&mut Model<F>, &mut [F], &WindowStep) -> Result<ControlFlow<()>>,
) -> Result<TbpttReport<F>> {
    let init = match state0 {
        Some(s) => {
            model.check_state(s, stream.batch)?;
            s.clone()
        }
        None => model.zero_state(stream.batch),
    };
    let ws = windows(stream.seq_len, tr);
    let mut grads = vec![F::zero(); model.num_params()];
    let mut state = init.clone();
    let mut losses = Vec::with_capacity(ws.len());
    for (k, &w) in ws.iter().enumerate() {
        grads.iter_mut().for_each(|g| *g = F::zero());
        let r = stream.window(model, w, Some(&state), Some(&mut grads), dropout_rng.as_deref_mut())?;
        losses.push(r.loss);
        // The next window starts inside this one (k2 >= k1): keep its state, detached.
        let next = ws.get(k + 1).map_or(w.end, |n| n.start);
        state = stream.state_at(model, w, &r.cache, next, &init);
        model.recycle(r.cache);
        let step = WindowStep { index: k, window: w, loss: r.loss.to_f64().unwrap_or(f64::NAN) };
        if update(model, &mut grads, &step)?.is_break() {
            break;
        }
    }
    Ok(TbpttReport { losses, final_state: state })
}
