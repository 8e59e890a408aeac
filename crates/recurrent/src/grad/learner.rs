//! Driving the online estimators: the gradient of a loss over whole
//! sequences computed forward in time (to compare with BPTT), and the
//! streaming learner that takes one input per step and updates the weights
//! as it goes, in constant memory.

use super::online::{Estimator, OnlineState};
use crate::error::{check_len, config_err, Result};
use crate::float::Float;
use crate::linalg::{gemm, sum_rows_into, Tr};
use crate::loss::{loss_forward_backward, Targets};
use crate::model::{HeadKind, Model};
use crate::network::{check_sweep, sweep, Keep, PackedNet, RnnCache, RnnState, StepScratch};
use crate::optim::{clip_grad_norm, Optimizer};
use rand_chacha::ChaCha8Rng;

/// The buffers of one step of the network, reused from step to step.
#[derive(Debug, Default)]
struct StepWork<F> {
    /// The step's cache (T = 1, every value the estimator reads).
    cache: RnnCache<F>,
    packed: PackedNet<F>,
    scratch: StepScratch<F>,
    /// Lengths: all 1 [B].
    ones: Vec<usize>,
}

/// One step of the network: `state` [L*D, B, H] is replaced by the new
/// state; returns the head's output y [B, O]; what the estimator needs is
/// left in `work.cache`. `x` [B, I].
fn step<F: Float>(
    model: &Model<F>,
    x: &[F],
    b: usize,
    state: &mut RnnState<F>,
    work: &mut StepWork<F>,
) -> Result<Vec<F>> {
    let cfg = &model.cfg.rnn;
    work.ones.clear();
    work.ones.resize(b, 1);
    check_sweep(cfg, 1, b, &work.ones, state)?;
    check_len("x", x.len(), b * cfg.input_size, || format!("[B={b}, I={}]", cfg.input_size))?;
    work.cache.prepare(cfg, 1, b, &work.ones, Keep::All);
    work.cache.inputs[0].copy_from_slice(x);
    work.packed.pack(cfg, &model.table, &model.dirs, &model.params);
    sweep::<F, ChaCha8Rng>(cfg, &work.packed, &mut work.cache, &mut work.scratch, state, None);
    let (h, o) = (cfg.hidden_size, model.cfg.out_size);
    let (w, bias) = head(model);
    let mut y = vec![F::zero(); b * o];
    for row in y.chunks_exact_mut(o) {
        row.copy_from_slice(bias);
    }
    gemm(b, h, o, F::one(), &work.cache.output, Tr::N, w, Tr::T, F::one(), &mut y);
    Ok(y)
}

fn head<F: Float>(model: &Model<F>) -> (&[F], &[F]) {
    let w = model.table.view(&model.params, model.table.find("fc.weight").expect("every model has fc.weight"));
    let b = model.table.view(&model.params, model.table.find("fc.bias").expect("every model has fc.bias"));
    (w, b)
}

/// Head backward for one step: adds dW_fc, db_fc to `grads`, returns dL/dh_top [B, H].
fn head_backward<F: Float>(model: &Model<F>, h_top: &[F], dy: &[F], b: usize, grads: &mut [F]) -> Vec<F> {
    let (h, o) = (model.cfg.rnn.hidden_size, model.cfg.out_size);
    let iw = model.table.find("fc.weight").expect("fc.weight");
    let ib = model.table.find("fc.bias").expect("fc.bias");
    {
        let [dw, db] = model.table.views_mut(grads, [iw, ib]);
        gemm(o, b, h, F::one(), dy, Tr::T, h_top, Tr::N, F::one(), dw);
        sum_rows_into(db, dy);
    }
    let mut dh = vec![F::zero(); b * h];
    gemm(b, o, h, F::one(), dy, Tr::N, head(model).0, Tr::N, F::zero(), &mut dh);
    dh
}

/// Loss and gradient of `model` on a batch of equal-length sequences, with
/// the parameters held fixed, computed forward in time by `method`.
/// `x` [T, B, I] time-major. Targets: for a last-step head, [B, O] real or [B]
/// classes, scored at the last step; for an every-step head, [T, B, O] or
/// [T, B]. The loss is the mean over all scored elements, as in
/// `Model::loss`, so the result is comparable with full BPTT.
#[allow(clippy::too_many_arguments)]
pub fn sequence_gradient<F: Float>(
    model: &Model<F>,
    x: &[F],
    t_len: usize,
    b: usize,
    targets: Targets<F>,
    method: Estimator,
    seed: u64,
    memory_limit: usize,
) -> Result<(F, Vec<F>)> {
    let (i, o) = (model.cfg.rnn.input_size, model.cfg.out_size);
    check_len("x", x.len(), t_len * b * i, || format!("[T={t_len}, B={b}, I={i}]"))?;
    if model.cfg.rnn.num_layers > 1 && model.cfg.rnn.dropout > 0.0 {
        return Err(config_err("dropout", model.cfg.rnn.dropout, "online estimators run without dropout"));
    }
    let every = model.cfg.head == HeadKind::Every;
    let rows_per_step = |k: usize| match targets {
        Targets::Real(_) => k * o,
        Targets::Class(_) => k,
    };
    let (tlen, need) = match targets {
        Targets::Real(v) => (v.len(), rows_per_step(if every { t_len * b } else { b })),
        Targets::Class(v) => (v.len(), rows_per_step(if every { t_len * b } else { b })),
    };
    if tlen != need {
        return Err(config_err("targets", format!("{tlen} values"), format!("expected {need}")));
    }
    // Total number of scored elements, to form the mean over the sequence.
    let count_all = |t0: usize, t1: usize| -> Result<usize> {
        let mut n = 0;
        for t in t0..t1 {
            let tg = slice_targets(targets, t, b, o, every);
            let y = vec![F::zero(); b * o];
            n += loss_forward_backward(model.cfg.loss, &y, b, o, tg, &vec![true; b])?.2;
        }
        Ok(n)
    };
    let total = if every { count_all(0, t_len)? } else { count_all(0, 1)? };
    let mut est = OnlineState::new(model, method, b, memory_limit, seed)?;
    let mut state = model.zero_state(b);
    let mut grads = vec![F::zero(); model.num_params()];
    let mut loss = 0.0f64;
    let mut work = StepWork::default();
    for t in 0..t_len {
        let y = step(model, &x[t * b * i..(t + 1) * b * i], b, &mut state, &mut work)?;
        let cache = &work.cache;
        est.update(model, cache)?;
        if every || t + 1 == t_len {
            let tg = slice_targets(targets, t, b, o, every);
            let (l, mut dy, n) = loss_forward_backward(model.cfg.loss, &y, b, o, tg, &vec![true; b])?;
            if n == 0 || total == 0 {
                continue;
            }
            // This step's share of the mean over the whole sequence.
            let share = F::of(n as f64 / total as f64);
            dy.iter_mut().for_each(|v| *v *= share);
            loss += l.to_f64().unwrap_or(f64::NAN) * n as f64 / total as f64;
            let dh = head_backward(model, &cache.output, &dy, b, &mut grads);
            est.accumulate(model, &dh, &mut grads)?;
        }
    }
    Ok((F::of(loss), grads))
}

fn slice_targets<F: Float>(targets: Targets<'_, F>, t: usize, b: usize, o: usize, every: bool) -> Targets<'_, F> {
    match (targets, every) {
        (Targets::Real(v), true) => Targets::Real(&v[t * b * o..(t + 1) * b * o]),
        (Targets::Class(v), true) => Targets::Class(&v[t * b..(t + 1) * b]),
        (tg, false) => tg,
    }
}

/// Learns from an unbounded stream: one input (and optionally a target) per
/// step; the weights are updated every `k` steps (k = 1 is fully online)
/// with the mean gradient of the steps since the last update. Memory is
/// fixed when the learner is made and does not grow with the stream.
pub struct OnlineLearner<F: Float> {
    /// The model being trained.
    pub model: Model<F>,
    /// Its optimizer.
    pub optimizer: Optimizer<F>,
    est: OnlineState<F>,
    state: RnnState<F>,
    grads: Vec<F>,
    work: StepWork<F>,
    /// Steps between updates.
    pub k: usize,
    /// Clip the gradient's global norm before each update (0: off).
    pub clip_norm: f64,
    since_update: usize,
    scored_since_update: usize,
    /// Exponential moving average of the per-step loss (factor 0.99).
    running: Option<f64>,
    steps: u64,
    updates: u64,
}

impl<F: Float> OnlineLearner<F> {
    /// A learner over `batch` parallel streams.
    pub fn new(
        model: Model<F>,
        optimizer: Optimizer<F>,
        method: Estimator,
        k: usize,
        batch: usize,
        seed: u64,
        memory_limit: usize,
    ) -> Result<Self> {
        if k == 0 {
            return Err(config_err("k", 0, "must be at least 1"));
        }
        if model.cfg.rnn.dropout > 0.0 && model.cfg.rnn.num_layers > 1 {
            return Err(config_err("dropout", model.cfg.rnn.dropout, "online estimators run without dropout"));
        }
        let est = OnlineState::new(&model, method, batch, memory_limit, seed)?;
        let state = model.zero_state(batch);
        let grads = vec![F::zero(); model.num_params()];
        Ok(OnlineLearner {
            model,
            optimizer,
            est,
            state,
            grads,
            work: StepWork::default(),
            k,
            clip_norm: 0.0,
            since_update: 0,
            scored_since_update: 0,
            running: None,
            steps: 0,
            updates: 0,
        })
    }

    /// One step: `x` [B, I]; with a target ([B, O] real or [B] classes) the
    /// step's loss is returned and its gradient accumulated.
    pub fn step(&mut self, x: &[F], target: Option<Targets<F>>) -> Result<Option<f64>> {
        let b = self.est.b;
        let i = self.model.cfg.rnn.input_size;
        check_len("x", x.len(), b * i, || format!("[B={b}, I={i}]"))?;
        let y = step(&self.model, x, b, &mut self.state, &mut self.work)?;
        let cache = &self.work.cache;
        self.est.update(&self.model, cache)?;
        self.steps += 1;
        let mut out = None;
        if let Some(tg) = target {
            let o = self.model.cfg.out_size;
            let (l, dy, n) = loss_forward_backward(self.model.cfg.loss, &y, b, o, tg, &vec![true; b])?;
            if n > 0 {
                let lf = l.to_f64().unwrap_or(f64::NAN);
                if !lf.is_finite() {
                    return Err(config_err(
                        "loss",
                        lf,
                        "is not finite; the stream stopped before updating the weights",
                    ));
                }
                let dh = head_backward(&self.model, &cache.output, &dy, b, &mut self.grads);
                self.est.accumulate(&self.model, &dh, &mut self.grads)?;
                self.running = Some(self.running.map_or(lf, |r| 0.99 * r + 0.01 * lf));
                self.scored_since_update += 1;
                out = Some(lf);
            }
        }
        self.since_update += 1;
        if self.since_update >= self.k {
            if self.scored_since_update > 0 {
                let scale = F::of(1.0 / self.scored_since_update as f64);
                self.grads.iter_mut().for_each(|g| *g *= scale);
                if self.clip_norm > 0.0 {
                    clip_grad_norm(&mut self.grads, self.clip_norm);
                }
                self.optimizer.step(&mut self.model.params, &self.grads)?;
                self.updates += 1;
            }
            self.grads.iter_mut().for_each(|g| *g = F::zero());
            self.since_update = 0;
            self.scored_since_update = 0;
        }
        Ok(out)
    }

    /// Exponential moving average of the per-step loss (None before the first target).
    pub fn running_loss(&self) -> Option<f64> {
        self.running
    }

    /// Steps taken and weight updates made.
    pub fn counts(&self) -> (u64, u64) {
        (self.steps, self.updates)
    }

    /// The current recurrent state.
    pub fn state(&self) -> &RnnState<F> {
        &self.state
    }

    /// Bytes held by the estimator (constant over the stream).
    pub fn estimator_bytes(&self) -> usize {
        self.est.memory_bytes()
    }
}
