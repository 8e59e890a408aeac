//! The training loop behind `recurrent train`: epochs or a step budget,
//! seeded shuffling, validation, early stopping, the best model kept,
//! clipping and schedules, BPTT or truncated BPTT, metrics as JSON lines,
//! atomic checkpoints and exact resume.
//!
//! Files in the output folder:
//! - `config.toml`: the effective configuration;
//! - `model.safetensors`: the best model so far (PyTorch state_dict names);
//! - `last.safetensors` + `train_state.json`: where training stands, for `--resume`;
//! - `metrics.jsonl`: one JSON object per validation;
//! - `loss.<ext>`, `forecast.<ext>`: plots.

pub mod config;
pub mod task;
pub mod usage;

use crate::bptt::{Stream, Truncation};
use crate::checkpoint::{self, write_atomic};
use crate::error::{config_err, data_err, Error, Result};
use crate::loss::{loss_forward_backward, Targets, IGNORE_INDEX};
use crate::model::{Batch, InitConfig, Model, ModelConfig, SeqInput};
use crate::network::RnnConfig;
use crate::optim::{clip_grad_norm, clip_grad_value, grad_norm, Optimizer, OptimizerKind, Schedule, Scheduler};
use crate::CellKind;
pub use config::TrainConfig;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;
use task::{Examples, Inputs, Prepared, TargetSet, TaskData, TaskMeta};

/// One padded batch, batch-first.
#[derive(Clone, Debug, Default)]
pub struct BatchBuf {
    pub b: usize,
    pub t: usize,
    /// [B, T, I] real inputs (empty for tokens).
    pub x: Vec<f32>,
    /// [B, T] token ids (empty for real inputs).
    pub toks: Vec<usize>,
    pub lengths: Vec<usize>,
    /// Real targets [B, O].
    pub real: Vec<f32>,
    /// Class targets [B] or [B, T].
    pub class: Vec<i64>,
}

impl BatchBuf {
    /// The library batch view.
    pub fn batch(&self) -> Batch<'_, f32> {
        let input = if self.toks.is_empty() { SeqInput::Dense(&self.x) } else { SeqInput::Tokens(&self.toks) };
        Batch { input, batch: self.b, seq_len: self.t, batch_first: true, lengths: Some(&self.lengths) }
    }

    /// The targets view.
    pub fn targets(&self) -> Targets<'_, f32> {
        if self.class.is_empty() {
            Targets::Real(&self.real)
        } else {
            Targets::Class(&self.class)
        }
    }
}

/// Pads the examples `idx` into one batch.
pub fn make_batch(ex: &Examples, idx: &[usize]) -> BatchBuf {
    let b = idx.len();
    let lengths: Vec<usize> = idx.iter().map(|&i| ex.seq_len(i)).collect();
    let t = lengths.iter().copied().max().unwrap_or(1).max(1);
    let mut out = BatchBuf { b, t, lengths, ..Default::default() };
    match &ex.inputs {
        Inputs::Dense { width, seqs } => {
            out.x = vec![0.0; b * t * width];
            for (r, &i) in idx.iter().enumerate() {
                out.x[r * t * width..r * t * width + seqs[i].len()].copy_from_slice(&seqs[i]);
            }
        }
        Inputs::Tokens { seqs } => {
            out.toks = vec![0; b * t];
            for (r, &i) in idx.iter().enumerate() {
                out.toks[r * t..r * t + seqs[i].len()].copy_from_slice(&seqs[i]);
            }
        }
    }
    match &ex.targets {
        TargetSet::Real { rows, .. } => out.real = idx.iter().flat_map(|&i| rows[i].iter().copied()).collect(),
        TargetSet::Class(v) => out.class = idx.iter().map(|&i| v[i]).collect(),
        TargetSet::ClassSeq(v) => {
            out.class = vec![IGNORE_INDEX; b * t];
            for (r, &i) in idx.iter().enumerate() {
                out.class[r * t..r * t + v[i].len()].copy_from_slice(&v[i]);
            }
        }
    }
    out
}

/// Loss and metric of a model on a set of examples (or a stream).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Mean loss over all scored elements (nats for cross-entropy).
    pub loss: f64,
    /// The task's metric (rmse in data units, accuracy, bits per char, mse).
    pub metric: f64,
}

/// Accumulates loss and metric over batches.
struct Acc {
    loss_sum: f64,
    count: usize,
    se: f64,
    se_n: usize,
    correct: usize,
    total: usize,
}

impl Acc {
    fn new() -> Self {
        Acc { loss_sum: 0.0, count: 0, se: 0.0, se_n: 0, correct: 0, total: 0 }
    }

    fn add(
        &mut self,
        model: &Model<f32>,
        y: &[f32],
        targets: Targets<f32>,
        counted: &[bool],
        scale: Option<&[f64]>,
    ) -> Result<()> {
        let o = model.cfg.out_size;
        let (l, _, n) = loss_forward_backward(model.cfg.loss, y, counted.len(), o, targets, counted)?;
        self.loss_sum += l as f64 * n as f64;
        self.count += n;
        match targets {
            Targets::Class(c) => {
                for (r, &k) in c.iter().enumerate() {
                    if counted[r] && k != IGNORE_INDEX {
                        let row = &y[r * o..(r + 1) * o];
                        let arg = row.iter().enumerate().fold(0, |best, (j, v)| if *v > row[best] { j } else { best });
                        self.correct += usize::from(arg as i64 == k);
                        self.total += 1;
                    }
                }
            }
            Targets::Real(t) => {
                for r in (0..counted.len()).filter(|&r| counted[r]) {
                    for j in 0..o {
                        // Errors in data units: undo the target normalisation.
                        let s = scale.map_or(1.0, |s| s[j % s.len()]);
                        let e = (y[r * o + j] - t[r * o + j]) as f64 * s;
                        self.se += e * e;
                        self.se_n += 1;
                    }
                }
            }
        }
        Ok(())
    }

    fn finish(&self, metric: &str) -> Evaluation {
        let loss = if self.count > 0 { self.loss_sum / self.count as f64 } else { f64::NAN };
        let metric = match metric {
            "accuracy" => self.correct as f64 / self.total.max(1) as f64,
            "rmse" => (self.se / self.se_n.max(1) as f64).sqrt(),
            "bpc" => loss / std::f64::consts::LN_2,
            _ => loss,
        };
        Evaluation { loss, metric }
    }
}

/// Evaluates `model` on examples (no dropout), in batches of `batch`.
pub fn evaluate(model: &Model<f32>, ex: &Examples, batch: usize, metric: &str, meta: &TaskMeta) -> Result<Evaluation> {
    let mut acc = Acc::new();
    let scale = meta.target_norm.as_ref().map(|n| n.std.clone());
    let idx: Vec<usize> = (0..ex.len()).collect();
    for chunk in idx.chunks(batch.max(1)) {
        let bb = make_batch(ex, chunk);
        let (out, cache) = model.forward::<ChaCha8Rng>(&bb.batch(), None, None)?;
        acc.add(model, &out.y, bb.targets(), &model.counted_rows(&cache), scale.as_deref())?;
    }
    Ok(acc.finish(metric))
}

/// Cuts a token stream into `b` parallel streams: inputs [B, L] and next-token targets [B, L].
pub fn stream_batch(ids: &[usize], b: usize) -> Result<BatchBuf> {
    let l = ids.len().saturating_sub(1) / b;
    if l == 0 {
        return Err(config_err(
            "batch",
            b,
            format!("a stream of {} tokens is too short for that many parallel streams", ids.len()),
        ));
    }
    let mut bb = BatchBuf { b, t: l, lengths: vec![l; b], ..Default::default() };
    for r in 0..b {
        bb.toks.extend_from_slice(&ids[r * l..r * l + l]);
        bb.class.extend(ids[r * l + 1..r * l + l + 1].iter().map(|&v| v as i64));
    }
    Ok(bb)
}

/// Evaluates a language model on a token stream, carrying the state across windows of `k` steps.
pub fn evaluate_stream(model: &Model<f32>, ids: &[usize], b: usize, k: usize) -> Result<Evaluation> {
    let bb = stream_batch(ids, b.min(ids.len().saturating_sub(1)).max(1))?;
    let stream = Stream::new(model, &bb.batch(), bb.targets())?;
    let mut acc = Acc::new();
    let mut state = model.zero_state(bb.b);
    let init = state.clone();
    for w in crate::bptt::windows(stream.seq_len(), Truncation::new(k, k)?) {
        let r = stream.window::<ChaCha8Rng>(model, w, Some(&state), None, None)?;
        let rows = w.start * bb.b..w.end * bb.b;
        // Window targets, time-major as the window's output.
        let tm: Vec<i64> = (w.start..w.end)
            .flat_map(|t| (0..bb.b).map(move |r| (t, r)))
            .map(|(t, r)| bb.class[r * bb.t + t])
            .collect();
        debug_assert_eq!(tm.len(), rows.len());
        acc.add(model, &r.output.y, Targets::Class(&tm), &model.counted_rows(&r.cache), None)?;
        state = stream.state_at(model, w, &r.cache, w.end, &init);
    }
    Ok(acc.finish("bpc"))
}

/// One line of metrics.jsonl.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsLine {
    pub step: u64,
    pub epoch: usize,
    pub train_loss: f64,
    pub val_loss: f64,
    pub val_metric: f64,
    pub metric: String,
    pub lr: f64,
    /// Global gradient L2 norm before clipping (mean over the steps since the last line).
    pub grad_norm: f64,
    /// Largest gradient norm before clipping since the last line.
    pub grad_norm_max: f64,
    /// Fraction of steps whose gradient was clipped.
    pub clip_fraction: f64,
    pub tokens_per_s: f64,
    /// Exploding gradients, skipped steps, non-finite validation since the last line.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Where training stands: saved after every epoch for `--resume`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainState {
    pub epoch: usize,
    pub step: u64,
    /// Best validation loss so far (None before the first, or when it was not finite).
    pub best_val: Option<f64>,
    pub bad_epochs: usize,
    pub scheduler: Scheduler,
    pub optimizer_step: u64,
    pub optimizer_lr: f64,
    /// Training RNG position: seed, stream, word position (decimal string: u128).
    pub rng_seed: u64,
    pub rng_stream: u64,
    pub rng_word_pos: String,
    /// Lines of metrics.jsonl written so far.
    pub metrics_lines: usize,
    pub stopped_early: bool,
}

/// What `train` reports at the end.
#[derive(Clone, Debug)]
pub struct Summary {
    pub out_dir: PathBuf,
    pub best_val: Evaluation,
    pub test: Option<Evaluation>,
    pub metric: String,
    pub baseline: Option<(String, f64)>,
    /// The same baseline on the test part.
    pub test_baseline: Option<(String, f64)>,
    pub epochs_run: usize,
    pub steps: u64,
    pub plots: Vec<PathBuf>,
}

/// How the trainer talks to the user (progress bar or plain lines).
pub trait Reporter: Send {
    /// Start of an epoch of `batches` optimizer steps.
    fn epoch_start(&mut self, epoch: usize, epochs: usize, batches: u64);
    /// After each optimizer step.
    fn step(&mut self, loss: f64, tokens_per_s: f64);
    /// A validation result line.
    fn line(&mut self, m: &MetricsLine);
    /// A warning (clipping storms, NaN skips).
    fn warn(&mut self, msg: &str);
    /// Information worth a line (memory an estimator needs).
    fn info(&mut self, _msg: &str) {}
}

/// A reporter that prints nothing (tests).
pub struct Silent;
impl Reporter for Silent {
    fn epoch_start(&mut self, _: usize, _: usize, _: u64) {}
    fn step(&mut self, _: f64, _: f64) {}
    fn line(&mut self, _: &MetricsLine) {}
    fn warn(&mut self, _: &str) {}
}

/// The model configuration a training config and task imply.
pub fn model_config(cfg: &TrainConfig, p: &Prepared) -> Result<ModelConfig> {
    let cell = CellKind::parse(&cfg.model.cell)
        .ok_or_else(|| config_err("model.cell", &cfg.model.cell, "expected rnn, rnn_relu, lstm or gru"))?;
    Ok(ModelConfig {
        rnn: RnnConfig {
            cell,
            input_size: p.shape.input_size,
            hidden_size: cfg.model.hidden,
            num_layers: cfg.model.layers,
            bidirectional: cfg.model.bidirectional,
            bias: cfg.model.bias,
            dropout: cfg.model.dropout,
        },
        vocab: p.shape.vocab,
        head: p.shape.head,
        out_size: p.shape.out_size,
        loss: p.shape.loss,
    })
}

fn optimizer_kind(cfg: &TrainConfig) -> Result<OptimizerKind> {
    let mut k = OptimizerKind::default_for(&cfg.train.optimizer, cfg.train.lr)?;
    match &mut k {
        OptimizerKind::Sgd { momentum, weight_decay, .. } | OptimizerKind::Rmsprop { momentum, weight_decay, .. } => {
            *momentum = cfg.train.momentum;
            *weight_decay = cfg.train.weight_decay;
        }
        OptimizerKind::Adagrad { weight_decay, .. } | OptimizerKind::Adam { weight_decay, .. } => {
            *weight_decay = cfg.train.weight_decay
        }
        OptimizerKind::Adamw { weight_decay, .. } => {
            if cfg.train.weight_decay > 0.0 {
                *weight_decay = cfg.train.weight_decay;
            }
        }
    }
    if cfg.train.momentum != 0.0 && !matches!(k, OptimizerKind::Sgd { .. } | OptimizerKind::Rmsprop { .. }) {
        return Err(config_err(
            "train.momentum",
            cfg.train.momentum,
            format!("applies to sgd and rmsprop, not {}", cfg.train.optimizer),
        ));
    }
    Ok(k)
}

fn schedule(cfg: &TrainConfig) -> Schedule {
    let t = &cfg.train;
    match t.schedule.as_str() {
        "step" => Schedule::Step { step_size: t.step_size, gamma: t.gamma },
        "exponential" => Schedule::Exponential { gamma: t.gamma },
        "cosine" => {
            Schedule::CosineWarmup { warmup_epochs: t.warmup, start_factor: 0.1, total_epochs: t.epochs, eta_min: 0.0 }
        }
        "plateau" => {
            Schedule::Plateau { factor: t.gamma, patience: t.step_size, threshold: 1e-4, cooldown: 0, min_lr: 0.0 }
        }
        _ => Schedule::Constant,
    }
}

/// The training RNG at a saved position.
fn rng_at(seed: u64, stream: u64, word_pos: u128) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(stream);
    r.set_word_pos(word_pos);
    r
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let s = serde_json::to_string_pretty(v).map_err(|e| data_err(path, None, e.to_string()))?;
    write_atomic(path, s.as_bytes())
}

/// Checkpoint metadata's `task` object.
fn task_json(meta: &TaskMeta) -> serde_json::Value {
    serde_json::to_value(meta).unwrap_or(serde_json::Value::Null)
}

/// Reads the truncated-BPTT lengths of a config.
fn truncation(cfg: &TrainConfig) -> Result<Truncation> {
    Truncation::new(cfg.train.k1, cfg.train.k2)
}

/// Trains as `cfg` says; with `resume`, continues the run in that folder.
pub fn train(cfg: &TrainConfig, resume: bool, rep: &mut dyn Reporter) -> Result<Summary> {
    cfg.validate()?;
    let threads = if cfg.train.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        cfg.train.threads
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| config_err("train.threads", threads, e.to_string()))?;
    pool.install(|| train_inner(cfg, resume, rep))
}

fn train_inner(cfg: &TrainConfig, resume: bool, rep: &mut dyn Reporter) -> Result<Summary> {
    let out = cfg.out_dir();
    std::fs::create_dir_all(&out).map_err(|e| data_err(&out, None, format!("cannot create the output folder: {e}")))?;
    let prep = task::prepare(cfg)?;
    let mcfg = model_config(cfg, &prep)?;
    let init = InitConfig {
        orthogonal_recurrent: cfg.model.orthogonal,
        xavier_input: cfg.model.xavier,
        forget_bias: cfg.model.forget_bias,
    };
    let mut model = Model::<f32>::new(mcfg.clone(), &init, &mut ChaCha8Rng::seed_from_u64(cfg.seed))?;
    let mut opt = Optimizer::<f32>::new(optimizer_kind(cfg)?, model.num_params())?;
    let mut sched = Scheduler::new(schedule(cfg), cfg.train.lr)?;
    let train_seed = cfg.seed.wrapping_add(1);
    let mut rng = ChaCha8Rng::seed_from_u64(train_seed);
    let (mut epoch0, mut step, mut best_val, mut bad, mut metrics_lines) =
        (0usize, 0u64, f64::INFINITY, 0usize, 0usize);
    let metrics_path = out.join("metrics.jsonl");
    let state_path = out.join("train_state.json");
    let last_path = out.join("last.safetensors");
    let best_path = out.join("model.safetensors");
    if resume {
        let text = std::fs::read_to_string(&state_path)
            .map_err(|e| data_err(&state_path, None, format!("cannot resume: {e}")))?;
        let st: TrainState = serde_json::from_str(&text)
            .map_err(|e| data_err(&state_path, None, format!("corrupt training state: {e}")))?;
        let (last, _) = checkpoint::load::<f32>(&last_path)?;
        if last.cfg != model.cfg {
            return Err(data_err(&last_path, None, "was written by a different model configuration"));
        }
        model = last;
        let (slots, _) = checkpoint::read_tensors(&out.join("optimizer.safetensors"))?;
        if slots.len() != opt.slots.len() || slots.iter().any(|(_, _, v)| v.len() != model.num_params()) {
            return Err(data_err(
                out.join("optimizer.safetensors"),
                None,
                "optimizer state does not match the model and optimizer",
            ));
        }
        for (k, (_, _, v)) in slots.into_iter().enumerate() {
            opt.slots[k] = v.into_iter().map(|x| x as f32).collect();
        }
        opt.step = st.optimizer_step;
        opt.lr = st.optimizer_lr;
        sched = st.scheduler;
        let wp: u128 = st.rng_word_pos.parse().map_err(|_| data_err(&state_path, None, "bad rng_word_pos"))?;
        rng = rng_at(st.rng_seed, st.rng_stream, wp);
        (epoch0, step, best_val, bad, metrics_lines) =
            (st.epoch, st.step, st.best_val.unwrap_or(f64::INFINITY), st.bad_epochs, st.metrics_lines);
        // Drop metric lines written after the saved state (an interrupted epoch).
        if let Ok(text) = std::fs::read_to_string(&metrics_path) {
            let kept: String = text.lines().take(metrics_lines).map(|l| format!("{l}\n")).collect();
            write_atomic(&metrics_path, kept.as_bytes())?;
        }
        if st.stopped_early {
            epoch0 = cfg.train.epochs;
        }
    } else {
        let _ = std::fs::remove_file(&metrics_path);
        let toml = toml::to_string(cfg).map_err(|e| config_err("config", "", e.to_string()))?;
        write_atomic(&out.join("config.toml"), toml.as_bytes())?;
    }
    let metric = prep.shape.metric.to_string();
    let tr = truncation(cfg)?;
    let estimator = match (cfg.train.estimator.as_str(), &prep.data) {
        ("bptt", TaskData::Stream { .. }) => "tbptt",
        (e, _) => {
            if e == "tbptt" {
                "tbptt"
            } else {
                "bptt"
            }
        }
    };
    let online = crate::online::Estimator::parse(&cfg.train.estimator)?;
    if online.is_online() {
        if let TaskData::Stream { .. } = prep.data {
            return Err(config_err(
                "train.estimator",
                &cfg.train.estimator,
                "online estimators take real-valued inputs; this task embeds tokens",
            ));
        }
        // Fail early, naming the need and the limit, rather than in the first batch.
        crate::online::OnlineState::<f32>::new(&model, online, cfg.train.batch, cfg.train.memory_limit_mb << 20, 0)?;
        let need = crate::online::OnlineState::<f32>::memory_needed(&model, online, cfg.train.batch)?;
        rep.info(&format!(
            "{}: the estimator's state for batch {} needs {:.2} MiB (limit {} MiB)",
            cfg.train.estimator,
            cfg.train.batch,
            need as f64 / 1048576.0,
            cfg.train.memory_limit_mb
        ));
    }
    let est_cfg = crate::estimator::EstimatorConfig {
        method: if estimator == "tbptt" { crate::online::Estimator::Tbptt } else { online },
        truncation: tr,
        memory_limit: cfg.train.memory_limit_mb << 20,
    };
    let mut grads = vec![0.0f32; model.num_params()];
    let mut epochs_run = 0;
    // Statistics since the last metrics line.
    let (mut loss_sum, mut loss_n, mut gsum, mut gmax, mut clipped, mut nsteps, mut tokens) =
        (0.0f64, 0usize, 0.0f64, 0.0f64, 0usize, 0usize, 0usize);
    let mut t_last = Instant::now();
    let budget = if cfg.train.max_steps > 0 { cfg.train.max_steps as u64 } else { u64::MAX };
    let evaluate_val = |model: &Model<f32>| -> Result<Evaluation> {
        match &prep.data {
            TaskData::Examples { val, .. } => evaluate(model, val, cfg.train.batch, &metric, &prep.meta),
            TaskData::Stream { val, .. } => evaluate_stream(model, val, cfg.train.batch, cfg.train.k1),
        }
    };
    // Watches the gradient norm for explosions and counts NaN skips; read into each metrics line.
    let watch = std::cell::RefCell::new(Watch::default());
    // One optimizer update from the gradients in `g`; returns false when the step was skipped.
    let apply = |model: &mut Model<f32>,
                 opt: &mut Optimizer<f32>,
                 g: &mut [f32],
                 loss: f64,
                 gs: &mut (f64, f64, usize, usize),
                 rep: &mut dyn Reporter|
     -> Result<bool> {
        let norm = grad_norm(g);
        if !loss.is_finite() || !norm.is_finite() {
            if cfg.train.on_nan == "skip" {
                let msg = format!("step skipped: loss {loss}, gradient norm {norm}");
                rep.warn(&msg);
                watch.borrow_mut().note(msg);
                return Ok(false);
            }
            return Err(config_err("loss", loss, format!("is not finite (gradient norm {norm}); stopped, the last good checkpoint is kept (use --on-nan skip to skip such steps)")));
        }
        if cfg.train.clip_norm > 0.0 {
            clip_grad_norm(g, cfg.train.clip_norm);
            gs.2 += usize::from(norm > cfg.train.clip_norm);
        }
        if cfg.train.clip_value > 0.0 {
            clip_grad_value(g, cfg.train.clip_value);
        }
        gs.0 += norm;
        gs.1 = gs.1.max(norm);
        gs.3 += 1;
        if let Some(msg) = watch.borrow_mut().observe(norm) {
            rep.warn(&msg);
        }
        opt.step(&mut model.params, g)?;
        Ok(true)
    };
    let mut last_val: Evaluation;
    // A validation and a metrics line: at the end of every epoch, and every --val-every steps.
    macro_rules! validate_and_log {
        ($gs:ident, $epoch:ident) => {
            last_val = evaluate_val(&model)?;
            if !last_val.loss.is_finite() {
                watch.borrow_mut().note(format!("validation loss is {}", last_val.loss));
            }
            let g = std::mem::replace(&mut $gs, (0.0, 0.0, 0, 0));
            (gsum, gmax, clipped, nsteps) = (gsum + g.0, gmax.max(g.1), clipped + g.2, nsteps + g.3);
            let line = metrics_line(
                step,
                $epoch + 1,
                loss_sum / loss_n.max(1) as f64,
                last_val,
                &metric,
                opt.lr,
                (gsum, gmax, clipped, nsteps),
                tokens,
                t_last,
                watch.borrow_mut().take(),
            );
            append_line(&metrics_path, &line)?;
            metrics_lines += 1;
            rep.line(&line);
            (loss_sum, loss_n, gsum, gmax, clipped, nsteps, tokens) = (0.0, 0, 0.0, 0.0, 0, 0, 0);
            t_last = Instant::now();
        };
    }
    for epoch in epoch0..cfg.train.epochs {
        if step >= budget {
            break;
        }
        opt.lr = sched.lr;
        epochs_run += 1;
        let mut gs = (0.0, 0.0, 0usize, 0usize);
        match &prep.data {
            TaskData::Examples { train, .. } => {
                let mut order: Vec<usize> = (0..train.len()).collect();
                order.shuffle(&mut rng);
                let nb = order.len().div_ceil(cfg.train.batch) as u64;
                rep.epoch_start(epoch + 1, cfg.train.epochs, nb.min(budget - step));
                for chunk in order.chunks(cfg.train.batch) {
                    if step >= budget {
                        break;
                    }
                    let bb = make_batch(train, chunk);
                    let ntok: usize = bb.lengths.iter().sum();
                    let mut inner: Result<()> = Ok(());
                    let losses = crate::estimator::train_batch(
                        &mut model,
                        &bb.batch(),
                        bb.targets(),
                        &est_cfg,
                        &mut rng,
                        &mut grads,
                        |m, g, loss| {
                            // An update that fails (NaN) ends the batch; the error is returned below.
                            if inner.is_ok() {
                                if let Err(e) =
                                    apply(m, &mut opt, g, if loss.is_nan() { 0.0 } else { loss }, &mut gs, rep)
                                {
                                    inner = Err(e);
                                }
                            }
                            inner.clone()
                        },
                    );
                    inner?;
                    let losses = losses?;
                    let l = losses.iter().sum::<f64>() / losses.len().max(1) as f64;
                    loss_sum += l;
                    loss_n += 1;
                    tokens += ntok;
                    step += 1;
                    rep.step(l, tokens as f64 / t_last.elapsed().as_secs_f64().max(1e-9));
                    if cfg.train.val_every > 0 && step % cfg.train.val_every as u64 == 0 {
                        validate_and_log!(gs, epoch);
                    }
                }
            }
            TaskData::Stream { train, .. } => {
                let bb = stream_batch(train, cfg.train.batch)?;
                let stream = Stream::new(&model, &bb.batch(), bb.targets())?;
                let ws = crate::bptt::windows(stream.seq_len(), tr);
                rep.epoch_start(epoch + 1, cfg.train.epochs, (ws.len() as u64).min(budget - step));
                // Truncated BPTT over the parallel streams, one optimizer step per window; the
                // state is carried (detached) from window to window, as `bptt::tbptt` does.
                let init = model.zero_state(bb.b);
                let mut state = init.clone();
                for (k, &w) in ws.iter().enumerate() {
                    if step >= budget {
                        break;
                    }
                    grads.iter_mut().for_each(|g| *g = 0.0);
                    let r = stream.window(&model, w, Some(&state), Some(&mut grads), Some(&mut rng))?;
                    let next = ws.get(k + 1).map_or(w.end, |n| n.start);
                    state = stream.state_at(&model, w, &r.cache, next, &init);
                    apply(&mut model, &mut opt, &mut grads, r.loss as f64, &mut gs, rep)?;
                    loss_sum += r.loss as f64;
                    loss_n += 1;
                    tokens += (w.end - w.score_from) * bb.b;
                    step += 1;
                    rep.step(r.loss as f64, tokens as f64 / t_last.elapsed().as_secs_f64().max(1e-9));
                    if cfg.train.val_every > 0 && step % cfg.train.val_every as u64 == 0 {
                        validate_and_log!(gs, epoch);
                    }
                }
            }
        }
        validate_and_log!(gs, epoch);
        sched.step(Some(last_val.loss));
        if last_val.loss < best_val {
            best_val = last_val.loss;
            bad = 0;
            checkpoint::save(&best_path, &model, task_json(&prep.meta))?;
        } else {
            bad += 1;
        }
        let reached = cfg.train.stop_at.is_some_and(|goal| {
            if metric == "accuracy" {
                last_val.metric >= goal
            } else {
                last_val.metric <= goal
            }
        });
        let stopped_early = (cfg.train.patience > 0 && bad >= cfg.train.patience) || reached;
        // Save where training stands (model, optimizer, schedule, RNG) for --resume.
        checkpoint::save(&last_path, &model, task_json(&prep.meta))?;
        let slots: Vec<(String, Vec<usize>, Vec<u8>)> = opt
            .slots
            .iter()
            .enumerate()
            .map(|(k, s)| (format!("slot{k}"), vec![s.len()], s.iter().flat_map(|v| v.to_le_bytes()).collect()))
            .collect();
        write_atomic(&out.join("optimizer.safetensors"), &checkpoint::serialize_tensors(&slots, Default::default())?)?;
        let st = TrainState {
            epoch: epoch + 1,
            step,
            best_val: best_val.is_finite().then_some(best_val),
            bad_epochs: bad,
            scheduler: sched.clone(),
            optimizer_step: opt.step,
            optimizer_lr: opt.lr,
            rng_seed: train_seed,
            rng_stream: rng.get_stream(),
            rng_word_pos: rng.get_word_pos().to_string(),
            metrics_lines,
            stopped_early,
        };
        write_json(&state_path, &st)?;
        if reached {
            rep.info(&format!(
                "stop: validation {metric} {:.5} reached the goal {}",
                last_val.metric,
                cfg.train.stop_at.unwrap_or(f64::NAN)
            ));
            break;
        }
        if stopped_early {
            rep.warn(&format!("early stop: no validation improvement for {bad} epochs"));
            break;
        }
    }
    if !best_path.exists() {
        return Err(data_err(&best_path, None, "no epoch ended with a finite validation loss, so no model was saved"));
    }
    // Report on the best model.
    let (best, _) = checkpoint::load::<f32>(&best_path)?;
    let (best_eval, test) = match &prep.data {
        TaskData::Examples { val, test, .. } => (
            evaluate(&best, val, cfg.train.batch, &metric, &prep.meta)?,
            (!test.is_empty()).then(|| evaluate(&best, test, cfg.train.batch, &metric, &prep.meta)).transpose()?,
        ),
        TaskData::Stream { val, test, .. } => (
            evaluate_stream(&best, val, cfg.train.batch, cfg.train.k1)?,
            (test.len() > cfg.train.batch + 1)
                .then(|| evaluate_stream(&best, test, cfg.train.batch, cfg.train.k1))
                .transpose()?,
        ),
    };
    let mut plots = Vec::new();
    let loss_plot = out.join("loss.svg");
    crate::plot::plot_metrics(&metrics_path, &loss_plot)?;
    plots.push(loss_plot);
    if let (TaskData::Examples { val, .. }, Some(norm)) = (&prep.data, &prep.meta.target_norm) {
        let p = out.join("forecast.svg");
        let (actual, forecast) = usage::forecast_series(&best, val, norm, cfg.train.batch)?;
        crate::plot::plot_forecast(
            &p,
            &format!("{} ({}): validation, one step ahead", prep.meta.target_columns[0], cfg.task),
            &actual,
            &forecast,
        )?;
        plots.push(p);
    }
    Ok(Summary {
        out_dir: out,
        best_val: best_eval,
        test,
        metric,
        baseline: prep.baseline,
        test_baseline: prep.test_baseline,
        epochs_run,
        steps: step,
        plots,
    })
}

#[allow(clippy::too_many_arguments)]
fn metrics_line(
    step: u64,
    epoch: usize,
    train_loss: f64,
    val: Evaluation,
    metric: &str,
    lr: f64,
    g: (f64, f64, usize, usize),
    tokens: usize,
    since: Instant,
    warnings: Vec<String>,
) -> MetricsLine {
    let (gsum, gmax, clipped, n) = g;
    MetricsLine {
        step,
        epoch,
        train_loss,
        val_loss: val.loss,
        val_metric: val.metric,
        metric: metric.into(),
        lr,
        grad_norm: gsum / n.max(1) as f64,
        grad_norm_max: gmax,
        clip_fraction: clipped as f64 / n.max(1) as f64,
        tokens_per_s: tokens as f64 / since.elapsed().as_secs_f64().max(1e-9),
        warnings,
    }
}

/// Watches the gradient norm step by step: a norm 100 times its recent
/// average (exponential, factor 0.9, after 5 steps) is an explosion worth a
/// warning; warnings are kept for the next metrics line (at most 5 each).
#[derive(Default)]
struct Watch {
    ema: Option<f64>,
    seen: usize,
    warnings: Vec<String>,
}

impl Watch {
    fn observe(&mut self, norm: f64) -> Option<String> {
        self.seen += 1;
        let msg = match self.ema {
            Some(avg) if self.seen > 5 && norm > 100.0 * avg.max(1e-12) => Some(format!(
                "gradient norm {norm:.3e} is {:.0}x its recent average {avg:.3e}: exploding gradients (see --clip-norm)",
                norm / avg.max(1e-12)
            )),
            _ => None,
        };
        self.ema = Some(self.ema.map_or(norm, |a| 0.9 * a + 0.1 * norm));
        if let Some(m) = &msg {
            self.note(m.clone());
        }
        msg
    }

    fn note(&mut self, msg: String) {
        if self.warnings.len() < 5 {
            self.warnings.push(msg);
        }
    }

    fn take(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }
}

fn append_line(path: &Path, line: &MetricsLine) -> Result<()> {
    use std::io::Write;
    let s = serde_json::to_string(line).map_err(|e| data_err(path, None, e.to_string()))?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| data_err(path, None, format!("cannot write: {e}")))?;
    writeln!(f, "{s}").map_err(|e| data_err(path, None, format!("cannot write: {e}")))
}

/// Maps library errors that are the user's to fix (bad data, bad config).
pub fn is_user_error(e: &Error) -> bool {
    matches!(
        e,
        Error::Data { .. }
            | Error::Config { .. }
            | Error::Shape { .. }
            | Error::Length { .. }
            | Error::Token { .. }
            | Error::Class { .. }
            | Error::Param { .. }
    )
}
