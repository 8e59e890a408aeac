//! The Trainer: epochs (or a step budget) over a data source with any
//! gradient method, clipping, a schedule, validation after every epoch (and
//! every `val_every` steps), early stopping and a goal, the best model kept,
//! and observers told about every step, validation and epoch. Its whole
//! resumable state is one [`RunState`] value.
//!
//! One optimizer step: a batch (or, for truncated BPTT, a window of it) ->
//! gradients by the configured estimator (`crate::grad::train_batch`) ->
//! allreduce across processes (`StepReducer`, identity in one process) ->
//! NaN policy -> clip by norm, then by value -> optimizer step. After every
//! epoch: validation, schedule step, best model, early stop, observers.
//!
//! In a run of several processes (`fit_on` with a [`Comm`] of size > 1)
//! every rank holds the whole model and takes its contiguous shard of each
//! batch; shards are weighted by their share of the scored elements, so the
//! summed gradient is the one process's gradient of the whole batch. Errors
//! (a rank's bad shard, an observer's failed write) are agreed on, so every
//! rank stops with the same message.

use super::config::{OnNan, TrainerConfig};
use super::data::{stream_batch, stream_rows, BatchBuf, DataSource, TrainData};
use super::eval::{evaluate_data, Evaluation};
use super::observe::{EpochEnd, MetricsLine, Observer, StepInfo, Watch};
use super::state::{Counters, RngPosition, RunState};
use crate::distributed::{agree, shard, Comm, Single, StepReducer};
use crate::error::{config_err, Error, Result};
use crate::grad::online::OnlineState;
use crate::grad::tbptt::{tbptt_until, windows, Stream, Window, WindowStep};
use crate::grad::{train_batch, Estimator, EstimatorConfig};
use crate::model::Model;
use crate::optim::{clip_grad_norm, clip_grad_value, grad_norm, Optimizer, Scheduler};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::ops::ControlFlow;
use std::time::Instant;

/// Trains one model; holds everything a resumed run continues from.
pub struct Trainer {
    cfg: TrainerConfig,
    opt: Optimizer<f32>,
    core: Core,
}

/// What a run carries from epoch to epoch besides its settings and its
/// optimizer (apart, so that a `fit` borrows the optimizer and the rest
/// at once).
struct Core {
    model: Model<f32>,
    sched: Scheduler,
    rng: ChaCha8Rng,
    rng_seed: u64,
    counters: Counters,
    best: Option<Vec<f32>>,
}

impl Core {
    /// The whole resumable state, with the optimizer `opt`.
    fn state(&self, opt: &Optimizer<f32>) -> RunState {
        RunState {
            params: self.model.params.clone(),
            slots: opt.slots.clone(),
            optimizer_step: opt.step,
            optimizer_lr: opt.lr,
            scheduler: self.sched.clone(),
            rng: RngPosition::of(self.rng_seed, &self.rng),
            counters: self.counters.clone(),
            best: self.best.clone(),
        }
    }
}

/// What a call to [`Trainer::fit`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct FitReport {
    /// Epochs run by this call.
    pub epochs_run: usize,
    /// Optimizer steps of the whole run so far.
    pub steps: u64,
    /// The last epoch's validation (None when no epoch ran).
    pub last: Option<Evaluation>,
    /// Best validation loss of the whole run (None: none was finite).
    pub best_val: Option<f64>,
    /// Whether patience or the goal ended the run.
    pub stopped_early: bool,
}

impl Trainer {
    /// A fresh run of `model` (already initialised) as `cfg` says; the
    /// training RNG (shuffling, dropout, the online estimators' signs) starts
    /// from `cfg.seed`.
    pub fn new(model: Model<f32>, cfg: TrainerConfig) -> Result<Self> {
        cfg.validate()?;
        let opt = Optimizer::new(cfg.optimizer.clone(), model.num_params())?;
        let sched = Scheduler::new(cfg.schedule.clone(), cfg.optimizer.lr())?;
        let core = Core {
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            rng_seed: cfg.seed,
            model,
            sched,
            counters: Counters::default(),
            best: None,
        };
        Ok(Trainer { cfg, opt, core })
    }

    /// Continues the run saved in `state`: `model` gives the configuration
    /// (its parameters are replaced by the state's), `cfg` the settings of
    /// the epochs still to run; the optimizer's slots, the schedule, the RNG
    /// and the counters come from the state.
    pub fn resume(model: Model<f32>, cfg: TrainerConfig, state: RunState) -> Result<Self> {
        let mut t = Trainer::new(model, cfg)?;
        let p = t.core.model.num_params();
        if state.params.len() != p {
            return Err(config_err("state.params", state.params.len(), format!("the model has {p} parameters")));
        }
        if state.slots.len() != t.opt.slots.len() || state.slots.iter().any(|s| s.len() != p) {
            return Err(config_err(
                "state.optimizer",
                state.slots.len(),
                format!("{} needs {} slots of {p} values", t.cfg.optimizer.name(), t.opt.slots.len()),
            ));
        }
        if state.best.as_ref().is_some_and(|b| b.len() != p) {
            return Err(config_err("state.best", "size", format!("the model has {p} parameters")));
        }
        t.core.model.params = state.params;
        t.opt.slots = state.slots;
        t.opt.step = state.optimizer_step;
        t.opt.lr = state.optimizer_lr;
        t.core.sched = state.scheduler;
        t.core.rng = state.rng.rng();
        t.core.rng_seed = state.rng.seed;
        t.core.counters = state.counters;
        t.core.best = state.best;
        Ok(t)
    }

    /// The whole resumable state, as it stands.
    pub fn state(&self) -> RunState {
        self.core.state(&self.opt)
    }

    /// The model as trained so far.
    pub fn model(&self) -> &Model<f32> {
        &self.core.model
    }

    /// The settings.
    pub fn config(&self) -> &TrainerConfig {
        &self.cfg
    }

    /// Epochs, steps, best loss, patience.
    pub fn counters(&self) -> &Counters {
        &self.core.counters
    }

    /// The model with the best validation loss of the run (None before the
    /// first finite validation loss).
    pub fn best_model(&self) -> Option<Model<f32>> {
        self.core.best.as_ref().map(|p| {
            let mut m = self.core.model.clone();
            m.params.clone_from(p);
            m
        })
    }

    /// Trains on `train`, validating on `val`, until the epochs, the step
    /// budget, patience or the goal end the run. Call again after raising
    /// `epochs` (see [`Trainer::set_epochs`]) to continue.
    pub fn fit(&mut self, train: TrainData, val: TrainData, obs: &mut dyn Observer) -> Result<FitReport> {
        self.fit_on(train, val, obs, &Single)
    }

    /// Sets the number of epochs the run ends after (a resumed run may go further).
    pub fn set_epochs(&mut self, epochs: usize) -> Result<()> {
        let mut cfg = self.cfg.clone();
        cfg.epochs = epochs;
        cfg.validate()?;
        self.cfg = cfg;
        Ok(())
    }

    /// `fit` as one rank of a data-parallel run over `comm` (every rank
    /// calls it with the same data and settings).
    pub fn fit_on(
        &mut self,
        train: TrainData,
        val: TrainData,
        obs: &mut dyn Observer,
        comm: &dyn Comm,
    ) -> Result<FitReport> {
        self.cfg.validate()?;
        let threads = match self.cfg.threads {
            // Ranks on the same host share its cores.
            0 => (std::thread::available_parallelism().map_or(1, |n| n.get()) / comm.local_size().max(1)).max(1),
            n => n,
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| config_err("threads", threads, e.to_string()))?;
        pool.install(|| self.fit_inner(train, val, obs, comm))
    }

    /// The estimator a data kind trains with: a stream has no sequence
    /// ends, so BPTT means truncated BPTT; the online estimators take
    /// real-valued examples only.
    fn estimator(&self, train: &TrainData) -> Result<EstimatorConfig> {
        let method = match (self.cfg.method, train) {
            (Estimator::Bptt, TrainData::Stream(_)) => Estimator::Tbptt,
            (m, TrainData::Stream(_)) if m.is_online() => {
                return Err(config_err(
                    "estimator",
                    m,
                    "online estimators take real-valued inputs; this task embeds tokens",
                ))
            }
            (m, _) => m,
        };
        Ok(EstimatorConfig { method, truncation: self.cfg.truncation, memory_limit: self.cfg.memory_limit })
    }

    fn fit_inner(
        &mut self,
        train: TrainData,
        val: TrainData,
        obs: &mut dyn Observer,
        comm: &dyn Comm,
    ) -> Result<FitReport> {
        let est = self.estimator(&train)?;
        if val.is_empty() {
            return Err(config_err(
                "validation data",
                "empty",
                "the best model, early stopping and the schedule are decided on validation: give at least one example",
            ));
        }
        if est.method.is_online() {
            // Fail early, naming the need and the limit, rather than in the first batch.
            let b = self.cfg.batch;
            OnlineState::<f32>::new(&self.core.model, est.method, b, est.memory_limit, 0)?;
            let need = OnlineState::<f32>::memory_needed(&self.core.model, est.method, b)?;
            obs.info(&format!(
                "{}: the estimator's state for batch {b} needs {:.2} MiB (limit {} MiB)",
                est.method,
                need as f64 / 1048576.0,
                est.memory_limit >> 20
            ));
        }
        let (cfg, c) = (&self.cfg, &mut self.core);
        let mut run = Run {
            cfg,
            opt: &mut self.opt,
            obs,
            comm,
            reducer: StepReducer::new(),
            grads: vec![0.0; c.model.num_params()],
            since: Since::new(),
            watch: Watch::default(),
            est,
            budget: cfg.max_steps.unwrap_or(u64::MAX),
            rng_seed: c.rng_seed,
        };
        let mut report = FitReport {
            epochs_run: 0,
            steps: c.counters.step,
            last: None,
            best_val: c.counters.best_val,
            stopped_early: c.counters.stopped_early,
        };
        let first = if c.counters.stopped_early { cfg.epochs } else { c.counters.epoch };
        for epoch in first..cfg.epochs {
            if c.counters.step >= run.budget {
                break;
            }
            run.opt.lr = c.sched.lr;
            report.epochs_run += 1;
            match train {
                TrainData::Examples(src) => {
                    run.examples_epoch(&mut c.model, &mut c.rng, &mut c.counters, src, val, epoch)?
                }
                TrainData::Stream(ids) => {
                    run.stream_epoch(&mut c.model, &mut c.rng, &mut c.counters, ids, val, epoch)?
                }
            }
            let ev = run.validate(&c.model, &mut c.counters, val, epoch)?;
            report.last = Some(ev);
            c.sched.step(Some(ev.loss));
            let improved = c.counters.best_val.is_none_or(|b| ev.loss < b) && ev.loss.is_finite();
            if improved {
                c.counters.best_val = Some(ev.loss);
                c.counters.bad_epochs = 0;
                c.best = Some(c.model.params.clone());
            } else {
                c.counters.bad_epochs += 1;
            }
            let reached = cfg.stop_at.is_some_and(|goal| cfg.metric.reaches(ev.metric, goal));
            let patience_out = cfg.patience.is_some_and(|p| c.counters.bad_epochs >= p);
            c.counters.epoch = epoch + 1;
            c.counters.stopped_early = reached || patience_out;
            let state = c.state(run.opt);
            let end = EpochEnd { epoch: epoch + 1, improved, state: &state, model: &c.model };
            agree(comm, run.obs.epoch_end(&end))?;
            if reached {
                let goal = cfg.stop_at.unwrap_or(f64::NAN);
                run.obs.info(&format!(
                    "stop: validation {} {:.5} reached the goal {goal}",
                    cfg.metric.name(),
                    ev.metric
                ));
                break;
            }
            if patience_out {
                run.obs.warn(&format!("early stop: no validation improvement for {} epochs", c.counters.bad_epochs));
                break;
            }
        }
        report.steps = c.counters.step;
        report.best_val = c.counters.best_val;
        report.stopped_early = c.counters.stopped_early;
        Ok(report)
    }
}

/// A rank's part of the parallel streams of a token stream.
#[derive(Clone, Copy)]
struct StreamShare {
    /// The fraction of the streams this rank carries (its weight in each window).
    share: f64,
    /// B: all the parallel streams.
    streams: usize,
}

/// Statistics since the last metrics line.
struct Since {
    /// This rank's weighted shares of the step losses.
    loss_sum: f64,
    /// Steps counted in `loss_sum`.
    loss_n: usize,
    /// Sum and maximum of the gradient norms before clipping.
    grad_sum: f64,
    grad_max: f64,
    /// Updates whose gradient was clipped, and all updates.
    clipped: usize,
    updates: usize,
    /// Input steps trained.
    tokens: usize,
    start: Instant,
}

impl Since {
    fn new() -> Self {
        Since {
            loss_sum: 0.0,
            loss_n: 0,
            grad_sum: 0.0,
            grad_max: 0.0,
            clipped: 0,
            updates: 0,
            tokens: 0,
            start: Instant::now(),
        }
    }

    fn tokens_per_s(&self) -> f64 {
        self.tokens as f64 / self.start.elapsed().as_secs_f64().max(1e-9)
    }
}

/// One `fit` call's working state: what the steps of an epoch share.
struct Run<'a> {
    cfg: &'a TrainerConfig,
    opt: &'a mut Optimizer<f32>,
    obs: &'a mut dyn Observer,
    comm: &'a dyn Comm,
    /// The gradient allreduce of every step.
    reducer: StepReducer,
    /// [P]
    grads: Vec<f32>,
    since: Since,
    /// Exploding gradients, skipped steps.
    watch: Watch,
    est: EstimatorConfig,
    /// Stop after this many steps in all.
    budget: u64,
    rng_seed: u64,
}

/// The optimizer update of one gradient, after the allreduce.
struct Update<'r> {
    cfg: &'r TrainerConfig,
    opt: &'r mut Optimizer<f32>,
    since: &'r mut Since,
    watch: &'r mut Watch,
    obs: &'r mut dyn Observer,
}

impl Update<'_> {
    /// Applies the NaN policy, clipping and one optimizer step to `g` [P]
    /// with the step's loss `loss`; Ok(false) when the step was skipped.
    fn apply(&mut self, model: &mut Model<f32>, g: &mut [f32], loss: f64) -> Result<bool> {
        let norm = grad_norm(g);
        if !loss.is_finite() || !norm.is_finite() {
            if self.cfg.on_nan == OnNan::Skip {
                let msg = format!("step skipped: loss {loss}, gradient norm {norm}");
                self.obs.warn(&msg);
                self.watch.note(msg);
                return Ok(false);
            }
            let what = if loss.is_finite() { format!("gradient norm {norm}") } else { format!("loss {loss}") };
            return Err(Error::Diverged(format!(
                "{what} is not finite; stopped, the last good state is kept (on_nan = skip skips such steps)"
            )));
        }
        if let Some(max) = self.cfg.clip.norm {
            clip_grad_norm(g, max);
            self.since.clipped += usize::from(norm > max);
        }
        if let Some(v) = self.cfg.clip.value {
            clip_grad_value(g, v);
        }
        self.since.grad_sum += norm;
        self.since.grad_max = self.since.grad_max.max(norm);
        self.since.updates += 1;
        if let Some(msg) = self.watch.observe(norm) {
            self.obs.warn(&msg);
        }
        self.opt.step(&mut model.params, g)?;
        Ok(true)
    }
}

impl Run<'_> {
    fn update(&mut self) -> Update<'_> {
        Update { cfg: self.cfg, opt: self.opt, since: &mut self.since, watch: &mut self.watch, obs: self.obs }
    }

    /// Rank `rank`'s random numbers at step `step` of a run of several
    /// processes (dropout masks, the online estimators' signs): a stream of
    /// its own keyed by (rank, step), so the shared training RNG (the
    /// shuffling) advances identically on every rank and a resumed run draws
    /// the same numbers.
    fn rank_rng(&self, step: u64) -> ChaCha8Rng {
        let mut r = ChaCha8Rng::seed_from_u64(self.rng_seed ^ 0xd15e_a5ed_0000_0000);
        r.set_stream(((self.comm.rank() as u64 + 1) << 48) ^ step);
        r
    }

    /// This rank's weight in each update of a batch: its scored elements
    /// over the whole batch's. The engine returns the gradient of the
    /// shard's *mean* loss; weighted so, the ranks' gradients sum to the
    /// gradient of the whole batch's mean loss, whatever the shard sizes.
    fn shard_weights(&self, part: &BatchBuf, ws: &[Window]) -> Vec<f64> {
        if self.comm.size() == 1 {
            return vec![1.0; ws.len()];
        }
        let mine: Vec<f64> = part.scored(ws).into_iter().map(|n| n as f64).collect();
        let mut total = vec![0.0; ws.len()];
        self.comm.allreduce_sum_f64(&mine, &mut total);
        mine.iter().zip(&total).map(|(&m, &t)| if t == 0.0 { 0.0 } else { m / t }).collect()
    }

    /// One pass over shuffled examples, one optimizer step per batch (per
    /// window for truncated BPTT).
    fn examples_epoch(
        &mut self,
        model: &mut Model<f32>,
        rng: &mut ChaCha8Rng,
        counters: &mut Counters,
        src: &dyn DataSource,
        val: TrainData,
        epoch: usize,
    ) -> Result<()> {
        let (rank, size) = (self.comm.rank(), self.comm.size());
        let mut order: Vec<usize> = (0..src.len()).collect();
        order.shuffle(rng);
        let batches = order.len().div_ceil(self.cfg.batch) as u64;
        self.obs.epoch_start(epoch + 1, self.cfg.epochs, batches.min(self.budget - counters.step));
        for chunk in order.chunks(self.cfg.batch) {
            if counters.step >= self.budget {
                break;
            }
            // This rank's contiguous shard of the batch, padded to the whole batch's
            // length so that truncated BPTT cuts the same windows on every rank.
            let t_all = src.max_len(chunk);
            let part = &chunk[shard(chunk.len(), rank, size)];
            let bb = src.batch(part, t_all);
            let ws = match self.est.method {
                Estimator::Tbptt => windows(t_all, self.est.truncation),
                _ => vec![Window { start: 0, score_from: 0, end: t_all }],
            };
            let weights = self.shard_weights(&bb, &ws);
            let mut own_rng;
            let batch_rng = if size == 1 {
                &mut *rng
            } else {
                own_rng = self.rank_rng(counters.step);
                &mut own_rng
            };
            let losses = self.batch_step(model, &bb, &weights, batch_rng)?;
            // This rank's weighted share of the batch loss (all of it in one process).
            let share = losses.iter().zip(&weights).map(|(l, w)| l * w).sum::<f64>() / losses.len().max(1) as f64;
            self.since.loss_sum += share;
            self.since.loss_n += 1;
            self.since.tokens += chunk.iter().map(|&i| src.seq_len(i)).sum::<usize>();
            counters.step += 1;
            let shown = losses.iter().sum::<f64>() / losses.len().max(1) as f64;
            self.obs.step(&StepInfo { step: counters.step, loss: shown, tokens_per_s: self.since.tokens_per_s() });
            self.after_step()?;
            if self.cfg.val_every.is_some_and(|k| counters.step.is_multiple_of(k)) {
                self.validate(model, counters, val, epoch)?;
            }
        }
        Ok(())
    }

    /// The observers' check after a step (one-process runs only: in a
    /// distributed run only rank 0 has observers, and a per-step agreement
    /// would cost a collective every step).
    fn after_step(&mut self) -> Result<()> {
        if self.comm.size() == 1 {
            self.obs.after_step()?;
        }
        Ok(())
    }

    /// The updates of one batch (one, or one per truncated-BPTT window),
    /// each reduced across ranks; returns this rank's loss of each.
    fn batch_step(
        &mut self,
        model: &mut Model<f32>,
        bb: &BatchBuf,
        weights: &[f64],
        rng: &mut ChaCha8Rng,
    ) -> Result<Vec<f64>> {
        let (comm, size, p) = (self.comm, self.comm.size(), model.num_params());
        let mut inner: Result<()> = Ok(());
        let mut k = 0;
        let mut grads = std::mem::take(&mut self.grads);
        let mut reducer = std::mem::take(&mut self.reducer);
        let est = self.est;
        let mut upd = self.update();
        let mut each = |m: &mut Model<f32>, g: &mut [f32], loss: f64| {
            // An update that fails (NaN, another rank's error) ends the batch.
            if inner.is_ok() {
                let w = weights[k];
                k += 1;
                let loss = if loss.is_nan() { 0.0 } else { loss };
                if size > 1 {
                    g.iter_mut().for_each(|v| *v *= w as f32);
                }
                inner = reducer.reduce(comm, g, loss * w).and_then(|loss| upd.apply(m, g, loss).map(|_| ()));
            }
            inner.clone()
        };
        let losses = if bb.b == 0 {
            // No example here (a batch smaller than the number of ranks): take part
            // in each update with nothing to add.
            grads.resize(p, 0.0);
            (0..weights.len())
                .try_for_each(|_| {
                    grads.iter_mut().for_each(|g| *g = 0.0);
                    each(model, &mut grads, 0.0)
                })
                .map(|_| Vec::new())
        } else {
            train_batch(model, &bb.batch(), bb.targets(), &est, rng, &mut grads, &mut each)
        };
        inner?;
        // A failure of this rank's own shard: the others wait in the step's allreduce.
        let losses = losses.map_err(|e| reducer.fail(comm, p, e));
        self.grads = grads;
        self.reducer = reducer;
        losses
    }

    /// Truncated BPTT over the parallel streams of a token stream, one
    /// optimizer step per window, through the one truncated-BPTT driver
    /// (`grad::tbptt::tbptt_until`: the state carried, detached, from window
    /// to window).
    #[allow(clippy::too_many_arguments)]
    fn stream_epoch(
        &mut self,
        model: &mut Model<f32>,
        rng: &mut ChaCha8Rng,
        counters: &mut Counters,
        ids: &[usize],
        val: TrainData,
        epoch: usize,
    ) -> Result<()> {
        let (rank, size, p) = (self.comm.rank(), self.comm.size(), model.num_params());
        let all = stream_batch(ids, self.cfg.batch)?;
        // This rank's contiguous share of the parallel streams; every window scores as
        // many steps in each stream, so the rank's weight is its share of the streams.
        let rows = shard(all.b, rank, size);
        let share = StreamShare { share: rows.len() as f64 / all.b as f64, streams: all.b };
        let seq_len = all.t;
        let bb = if size == 1 { all } else { stream_rows(&all, rows) };
        let ws = windows(seq_len, self.est.truncation);
        self.obs.epoch_start(epoch + 1, self.cfg.epochs, (ws.len() as u64).min(self.budget - counters.step));
        let mut own_rng;
        let rng = if size == 1 {
            rng
        } else {
            own_rng = self.rank_rng(counters.step);
            &mut own_rng
        };
        if bb.b == 0 {
            // No stream here (more ranks than streams): take part in each window's update
            // with nothing to add.
            let mut g = vec![0.0f32; p];
            for (index, &window) in ws.iter().enumerate() {
                g.iter_mut().for_each(|v| *v = 0.0);
                let step = WindowStep { index, window, loss: 0.0 };
                if self.window_update(model, &mut g, &step, share, counters, val, epoch)?.is_break() {
                    break;
                }
            }
            return Ok(());
        }
        let stream = Stream::new(model, &bb.batch(), bb.targets()).map_err(|e| self.reducer.fail(self.comm, p, e))?;
        // Whether an error came from an update (already agreed by every rank) or from
        // this rank's own window (the others wait in that window's allreduce).
        let mut agreed = false;
        let tr = self.est.truncation;
        let result = tbptt_until(model, &stream, tr, None, Some(rng), |m, g, step| {
            let r = self.window_update(m, g, step, share, counters, val, epoch);
            agreed = r.is_err();
            r
        });
        match result {
            Ok(_) => Ok(()),
            Err(e) if agreed => Err(e),
            Err(e) => Err(self.reducer.fail(self.comm, p, e)),
        }
    }

    /// One window's optimizer step: this rank's gradient `g` [P] weighted by
    /// its share, reduced across ranks, then the update; Break once the step
    /// budget is reached.
    #[allow(clippy::too_many_arguments)]
    fn window_update(
        &mut self,
        model: &mut Model<f32>,
        g: &mut [f32],
        step: &WindowStep,
        share: StreamShare,
        counters: &mut Counters,
        val: TrainData,
        epoch: usize,
    ) -> Result<ControlFlow<()>> {
        if self.comm.size() > 1 {
            g.iter_mut().for_each(|v| *v *= share.share as f32);
        }
        let global = self.reducer.reduce(self.comm, g, step.loss * share.share)?;
        self.update().apply(model, g, global)?;
        self.since.loss_sum += step.loss * share.share;
        self.since.loss_n += 1;
        self.since.tokens += (step.window.end - step.window.score_from) * share.streams;
        counters.step += 1;
        self.obs.step(&StepInfo { step: counters.step, loss: step.loss, tokens_per_s: self.since.tokens_per_s() });
        self.after_step()?;
        if self.cfg.val_every.is_some_and(|k| counters.step.is_multiple_of(k)) {
            self.validate(model, counters, val, epoch)?;
        }
        Ok(if counters.step >= self.budget { ControlFlow::Break(()) } else { ControlFlow::Continue(()) })
    }

    /// A validation and a metrics line: after every epoch and every
    /// `val_every` steps.
    fn validate(
        &mut self,
        model: &Model<f32>,
        counters: &mut Counters,
        val: TrainData,
        epoch: usize,
    ) -> Result<Evaluation> {
        let ev = evaluate_data(model, val, self.cfg.batch, self.cfg.truncation.k1, &self.cfg.metric, self.comm)?;
        if !ev.loss.is_finite() {
            self.watch.note(format!("validation loss is {}", ev.loss));
        }
        // Each rank holds its weighted shares of the step losses: their sum is the mean loss.
        let mut train_loss = [0.0f64];
        self.comm.allreduce_sum_f64(&[self.since.loss_sum], &mut train_loss);
        let s = &self.since;
        let line = MetricsLine {
            step: counters.step,
            epoch: epoch + 1,
            train_loss: train_loss[0] / s.loss_n.max(1) as f64,
            val_loss: ev.loss,
            val_metric: ev.metric,
            metric: self.cfg.metric.name().into(),
            lr: self.opt.lr,
            grad_norm: s.grad_sum / s.updates.max(1) as f64,
            grad_norm_max: s.grad_max,
            clip_fraction: s.clipped as f64 / s.updates.max(1) as f64,
            tokens_per_s: s.tokens_per_s(),
            warnings: self.watch.take(),
        };
        agree(self.comm, self.obs.validation(&line))?;
        counters.validations += 1;
        self.since = Since::new();
        Ok(ev)
    }
}
