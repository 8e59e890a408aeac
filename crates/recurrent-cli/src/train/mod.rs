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

use recurrent::grad::tbptt::{Stream, Truncation, Window};
use recurrent::checkpoint::{self, write_atomic};
use recurrent::distributed::{agree, broadcast_bytes, shard, Comm, Single, StepReducer};
use recurrent::error::{config_err, data_err, Result};
use recurrent::loss::{loss_forward_backward, Targets, IGNORE_INDEX};
use recurrent::model::{Batch, InitConfig, Model, ModelConfig, SeqInput};
use recurrent::network::RnnConfig;
use recurrent::optim::{clip_grad_norm, clip_grad_value, grad_norm, Optimizer, OptimizerKind, Schedule, Scheduler};
use recurrent::CellKind;
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
    make_batch_padded(ex, idx, max_len(ex, idx))
}

/// The longest of the examples `idx` (at least 1).
fn max_len(ex: &Examples, idx: &[usize]) -> usize {
    idx.iter().map(|&i| ex.seq_len(i)).max().unwrap_or(1).max(1)
}

/// Pads the examples `idx` into one batch of `t` >= their lengths steps (a
/// rank's shard is padded to its whole batch's length, so truncated BPTT cuts
/// the same windows on every rank).
pub fn make_batch_padded(ex: &Examples, idx: &[usize], t: usize) -> BatchBuf {
    let b = idx.len();
    let lengths: Vec<usize> = idx.iter().map(|&i| ex.seq_len(i)).collect();
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

    /// Sums the accumulators of all ranks.
    fn reduce(&self, comm: &dyn Comm) -> Acc {
        let mine =
            [self.loss_sum, self.count as f64, self.se, self.se_n as f64, self.correct as f64, self.total as f64];
        let mut all = [0.0f64; 6];
        comm.allreduce_sum_f64(&mine, &mut all);
        // Counts are whole numbers far below 2^53: exact in f64.
        Acc {
            loss_sum: all[0],
            count: all[1] as usize,
            se: all[2],
            se_n: all[3] as usize,
            correct: all[4] as usize,
            total: all[5] as usize,
        }
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
    evaluate_on(model, ex, batch, metric, meta, &Single)
}

/// `evaluate` split across the ranks of `comm`: each scores its contiguous
/// shard of the examples, the sums behind loss and metric are added up.
pub fn evaluate_on(
    model: &Model<f32>,
    ex: &Examples,
    batch: usize,
    metric: &str,
    meta: &TaskMeta,
    comm: &dyn Comm,
) -> Result<Evaluation> {
    let scale = meta.target_norm.as_ref().map(|n| n.std.clone());
    let idx: Vec<usize> = shard(ex.len(), comm.rank(), comm.size()).collect();
    let local = (|| {
        let mut acc = Acc::new();
        for chunk in idx.chunks(batch.max(1)) {
            let bb = make_batch(ex, chunk);
            let (out, cache) = model.forward::<ChaCha8Rng>(&bb.batch(), None, None)?;
            acc.add(model, &out.y, bb.targets(), &model.counted_rows(&cache), scale.as_deref())?;
        }
        Ok(acc)
    })();
    Ok(agree(comm, local)?.reduce(comm).finish(metric))
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

/// The parallel streams `rows` of a stream batch (a rank's share).
fn stream_rows(bb: &BatchBuf, rows: std::ops::Range<usize>) -> BatchBuf {
    let t = bb.t;
    BatchBuf {
        b: rows.len(),
        t,
        toks: bb.toks[rows.start * t..rows.end * t].to_vec(),
        class: bb.class[rows.start * t..rows.end * t].to_vec(),
        lengths: bb.lengths[rows.clone()].to_vec(),
        ..Default::default()
    }
}

/// Evaluates a language model on a token stream, carrying the state across windows of `k` steps.
pub fn evaluate_stream(model: &Model<f32>, ids: &[usize], b: usize, k: usize) -> Result<Evaluation> {
    evaluate_stream_on(model, ids, b, k, &Single)
}

/// `evaluate_stream` split across the ranks of `comm`: the parallel streams
/// are shared out contiguously, each rank carries the state of its own.
pub fn evaluate_stream_on(
    model: &Model<f32>,
    ids: &[usize],
    b: usize,
    k: usize,
    comm: &dyn Comm,
) -> Result<Evaluation> {
    let all = stream_batch(ids, b.min(ids.len().saturating_sub(1)).max(1))?;
    let rows = shard(all.b, comm.rank(), comm.size());
    let local = if comm.size() == 1 {
        stream_acc(model, &all, k)
    } else if rows.is_empty() {
        Ok(Acc::new())
    } else {
        stream_acc(model, &stream_rows(&all, rows), k)
    };
    Ok(agree(comm, local)?.reduce(comm).finish("bpc"))
}

/// Loss sums of a language model over the parallel streams of `bb`.
fn stream_acc(model: &Model<f32>, bb: &BatchBuf, k: usize) -> Result<Acc> {
    let stream = Stream::new(model, &bb.batch(), bb.targets())?;
    let mut acc = Acc::new();
    let mut state = model.zero_state(bb.b);
    let init = state.clone();
    for w in recurrent::grad::tbptt::windows(stream.seq_len(), Truncation::new(k, k)?) {
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
    Ok(acc)
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
    train_with(cfg, resume, rep, &Single)
}

/// `train` as one rank of a data-parallel run over `comm` (see
/// `recurrent::distributed`): every rank reads the data and holds the model, takes
/// its contiguous shard of each batch (the first B mod N ranks one example
/// more) and of the validation data; rank 0 alone writes files and should be
/// the only one given a talking reporter. With `Single` this is `train`.
pub fn train_with(cfg: &TrainConfig, resume: bool, rep: &mut dyn Reporter, comm: &dyn Comm) -> Result<Summary> {
    cfg.validate()?;
    let threads = if cfg.train.threads == 0 {
        // Ranks on the same host share its cores.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores / comm.local_size().max(1)).max(1)
    } else {
        cfg.train.threads
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| config_err("train.threads", threads, e.to_string()))?;
    pool.install(|| train_inner(cfg, resume, rep, comm))
}

fn train_inner(cfg: &TrainConfig, resume: bool, rep: &mut dyn Reporter, comm: &dyn Comm) -> Result<Summary> {
    let (rank, size) = (comm.rank(), comm.size());
    let lead = rank == 0;
    let out = cfg.out_dir();
    // Rank 0 alone touches the output folder (the other hosts may not even see it).
    lead_writes(comm, || {
        std::fs::create_dir_all(&out).map_err(|e| data_err(&out, None, format!("cannot create the output folder: {e}")))
    })?;
    // Every rank reads all the data and takes its shards from it; one that cannot stops them all.
    let prep = agree(comm, task::prepare(cfg))?;
    if size > 1 {
        agree(comm, same_data(comm, cfg, &prep.data))?;
    }
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
        // Rank 0 reads where the run stands and sends it to the others, so a run
        // resumes with any number of processes.
        let saved = agree(comm, if lead { read_saved(&out, &model, &opt).map(Some) } else { Ok(None) })?;
        let mut state_bytes = Vec::new();
        let saved_state = saved.map(|(st, last, slots)| {
            model = last;
            opt.slots = slots;
            st
        });
        if size > 1 {
            if let Some(st) = &saved_state {
                state_bytes = serde_json::to_vec(st).map_err(|e| data_err(&state_path, None, e.to_string()))?;
            }
            broadcast_bytes(comm, 0, &mut state_bytes);
            comm.broadcast_f32(0, &mut model.params);
            for slot in &mut opt.slots {
                comm.broadcast_f32(0, slot);
            }
        }
        let st: TrainState = match saved_state {
            Some(st) => st,
            None => serde_json::from_slice(&state_bytes).map_err(|e| data_err(&state_path, None, e.to_string()))?,
        };
        opt.step = st.optimizer_step;
        opt.lr = st.optimizer_lr;
        sched = st.scheduler;
        let wp: u128 = st.rng_word_pos.parse().map_err(|_| data_err(&state_path, None, "bad rng_word_pos"))?;
        rng = rng_at(st.rng_seed, st.rng_stream, wp);
        (epoch0, step, best_val, bad, metrics_lines) =
            (st.epoch, st.step, st.best_val.unwrap_or(f64::INFINITY), st.bad_epochs, st.metrics_lines);
        // Drop metric lines written after the saved state (an interrupted epoch).
        lead_writes(comm, || match std::fs::read_to_string(&metrics_path) {
            Ok(text) => {
                let kept: String = text.lines().take(metrics_lines).map(|l| format!("{l}\n")).collect();
                write_atomic(&metrics_path, kept.as_bytes())
            }
            Err(_) => Ok(()),
        })?;
        if st.stopped_early {
            epoch0 = cfg.train.epochs;
        }
    } else {
        lead_writes(comm, || {
            let _ = std::fs::remove_file(&metrics_path);
            let toml = toml::to_string(cfg).map_err(|e| config_err("config", "", e.to_string()))?;
            write_atomic(&out.join("config.toml"), toml.as_bytes())
        })?;
        // Identical on every rank already (same seed); sent anyway so that the
        // start is rank 0's model whatever the initialisation does.
        comm.broadcast_f32(0, &mut model.params);
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
    let online = recurrent::grad::online::Estimator::parse(&cfg.train.estimator)?;
    if online.is_online() {
        if let TaskData::Stream { .. } = prep.data {
            return Err(config_err(
                "train.estimator",
                &cfg.train.estimator,
                "online estimators take real-valued inputs; this task embeds tokens",
            ));
        }
        // Fail early, naming the need and the limit, rather than in the first batch.
        recurrent::grad::online::OnlineState::<f32>::new(&model, online, cfg.train.batch, cfg.train.memory_limit_mb << 20, 0)?;
        let need = recurrent::grad::online::OnlineState::<f32>::memory_needed(&model, online, cfg.train.batch)?;
        rep.info(&format!(
            "{}: the estimator's state for batch {} needs {:.2} MiB (limit {} MiB)",
            cfg.train.estimator,
            cfg.train.batch,
            need as f64 / 1048576.0,
            cfg.train.memory_limit_mb
        ));
    }
    let est_cfg = recurrent::grad::EstimatorConfig {
        method: if estimator == "tbptt" { recurrent::grad::online::Estimator::Tbptt } else { online },
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
            TaskData::Examples { val, .. } => evaluate_on(model, val, cfg.train.batch, &metric, &prep.meta, comm),
            TaskData::Stream { val, .. } => evaluate_stream_on(model, val, cfg.train.batch, cfg.train.k1, comm),
        }
    };
    // The gradient allreduce of every step (identity in one process).
    let mut reducer = StepReducer::new();
    let np = model.num_params();
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
            // Each rank holds its weighted shares of the batch losses: their sum is the mean loss.
            let mut train_loss = [0.0f64];
            comm.allreduce_sum_f64(&[loss_sum], &mut train_loss);
            let line = metrics_line(
                step,
                $epoch + 1,
                train_loss[0] / loss_n.max(1) as f64,
                last_val,
                &metric,
                opt.lr,
                (gsum, gmax, clipped, nsteps),
                tokens,
                t_last,
                watch.borrow_mut().take(),
            );
            lead_writes(comm, || append_line(&metrics_path, &line))?;
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
                    // This rank's contiguous shard of the batch, padded to the whole batch's
                    // length so that truncated BPTT cuts the same windows on every rank.
                    let t_all = max_len(train, chunk);
                    let part = &chunk[shard(chunk.len(), rank, size)];
                    let bb = make_batch_padded(train, part, t_all);
                    let ntok: usize = chunk.iter().map(|&i| train.seq_len(i)).sum();
                    // The batch's gradient updates (one, or one per truncated-BPTT window), the same
                    // on every rank, and this rank's weight in each.
                    let ws = match est_cfg.method {
                        recurrent::grad::online::Estimator::Tbptt => recurrent::grad::tbptt::windows(t_all, tr),
                        _ => vec![Window { start: 0, score_from: 0, end: t_all }],
                    };
                    let weights = if size == 1 { vec![1.0; ws.len()] } else { shard_weights(train, chunk, part, &ws) };
                    let mut own_rng;
                    let batch_rng = if size == 1 {
                        &mut rng
                    } else {
                        own_rng = rank_rng(train_seed, rank, step);
                        &mut own_rng
                    };
                    let mut inner: Result<()> = Ok(());
                    let mut k = 0;
                    let mut update = |m: &mut Model<f32>, g: &mut [f32], loss: f64| {
                        // An update that fails (NaN, another rank's error) ends the batch; the
                        // error is returned below.
                        if inner.is_ok() {
                            let w = weights[k];
                            k += 1;
                            let loss = if loss.is_nan() { 0.0 } else { loss };
                            if size > 1 {
                                g.iter_mut().for_each(|v| *v *= w as f32);
                            }
                            inner = reducer
                                .reduce(comm, g, loss * w)
                                .and_then(|loss| apply(m, &mut opt, g, loss, &mut gs, rep).map(|_| ()));
                        }
                        inner.clone()
                    };
                    let losses = if part.is_empty() {
                        // No example here (a batch smaller than the number of ranks): take part
                        // in each update with nothing to add.
                        grads.resize(np, 0.0);
                        ws.iter()
                            .try_for_each(|_| {
                                grads.iter_mut().for_each(|g| *g = 0.0);
                                update(&mut model, &mut grads, 0.0)
                            })
                            .map(|_| Vec::new())
                    } else {
                        recurrent::grad::train_batch(
                            &mut model,
                            &bb.batch(),
                            bb.targets(),
                            &est_cfg,
                            batch_rng,
                            &mut grads,
                            &mut update,
                        )
                    };
                    inner?;
                    // A failure of this rank's own shard: the others wait in the step's allreduce.
                    let losses = losses.map_err(|e| reducer.fail(comm, np, e))?;
                    debug_assert!(losses.is_empty() || losses.len() == weights.len());
                    // This rank's weighted share of the batch loss (all of it in one process).
                    let l = losses.iter().zip(&weights).map(|(l, w)| l * w).sum::<f64>() / losses.len().max(1) as f64;
                    loss_sum += l;
                    loss_n += 1;
                    tokens += ntok;
                    step += 1;
                    let shown = losses.iter().sum::<f64>() / losses.len().max(1) as f64;
                    rep.step(shown, tokens as f64 / t_last.elapsed().as_secs_f64().max(1e-9));
                    if cfg.train.val_every > 0 && step % cfg.train.val_every as u64 == 0 {
                        validate_and_log!(gs, epoch);
                    }
                }
            }
            TaskData::Stream { train, .. } => {
                let all = stream_batch(train, cfg.train.batch)?;
                // This rank's contiguous share of the parallel streams: it carries their state
                // from window to window; every window scores as many steps in each stream, so
                // the rank's weight is its share of the streams.
                let rows = shard(all.b, rank, size);
                let share = rows.len() as f64 / all.b as f64;
                let (total_b, seq_len) = (all.b, all.t);
                let bb = if size == 1 { all } else { stream_rows(&all, rows) };
                let stream =
                    if bb.b > 0 { Some(Stream::new(&model, &bb.batch(), bb.targets())) } else { None }.transpose();
                let stream = stream.map_err(|e| reducer.fail(comm, np, e))?;
                let ws = recurrent::grad::tbptt::windows(seq_len, tr);
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
                    let mut own_rng;
                    let window_rng = if size == 1 {
                        &mut rng
                    } else {
                        own_rng = rank_rng(train_seed, rank, step);
                        &mut own_rng
                    };
                    let local = match &stream {
                        Some(stream) => {
                            stream.window(&model, w, Some(&state), Some(&mut grads), Some(window_rng)).map(|r| {
                                let next = ws.get(k + 1).map_or(w.end, |n| n.start);
                                state = stream.state_at(&model, w, &r.cache, next, &init);
                                r.loss as f64
                            })
                        }
                        None => Ok(0.0),
                    };
                    let loss = local.map_err(|e| reducer.fail(comm, np, e))?;
                    if size > 1 {
                        grads.iter_mut().for_each(|v| *v *= share as f32);
                    }
                    let global = reducer.reduce(comm, &mut grads, loss * share)?;
                    apply(&mut model, &mut opt, &mut grads, global, &mut gs, rep)?;
                    loss_sum += loss * share;
                    loss_n += 1;
                    tokens += (w.end - w.score_from) * total_b;
                    step += 1;
                    rep.step(loss, tokens as f64 / t_last.elapsed().as_secs_f64().max(1e-9));
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
            lead_writes(comm, || checkpoint::save(&best_path, &model, task_json(&prep.meta)))?;
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
        lead_writes(comm, || {
            checkpoint::save(&last_path, &model, task_json(&prep.meta))?;
            let slots: Vec<(String, Vec<usize>, Vec<u8>)> = opt
                .slots
                .iter()
                .enumerate()
                .map(|(k, s)| (format!("slot{k}"), vec![s.len()], s.iter().flat_map(|v| v.to_le_bytes()).collect()))
                .collect();
            write_atomic(
                &out.join("optimizer.safetensors"),
                &checkpoint::serialize_tensors(&slots, Default::default())?,
            )?;
            write_json(&state_path, &st)
        })?;
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
    // Report on the best model: rank 0 reads it, every rank evaluates its shard.
    let loaded = if lead {
        if !best_path.exists() {
            Err(data_err(&best_path, None, "no epoch ended with a finite validation loss, so no model was saved"))
        } else {
            checkpoint::load::<f32>(&best_path).and_then(|(b, _)| {
                if b.cfg == model.cfg {
                    Ok(Some(b))
                } else {
                    Err(data_err(&best_path, None, "was written by a different model configuration"))
                }
            })
        }
    } else {
        Ok(None)
    };
    let mut best = agree(comm, loaded)?.unwrap_or_else(|| model.clone());
    comm.broadcast_f32(0, &mut best.params);
    let (best_eval, test) = match &prep.data {
        TaskData::Examples { val, test, .. } => (
            evaluate_on(&best, val, cfg.train.batch, &metric, &prep.meta, comm)?,
            (!test.is_empty())
                .then(|| evaluate_on(&best, test, cfg.train.batch, &metric, &prep.meta, comm))
                .transpose()?,
        ),
        TaskData::Stream { val, test, .. } => (
            evaluate_stream_on(&best, val, cfg.train.batch, cfg.train.k1, comm)?,
            (test.len() > cfg.train.batch + 1)
                .then(|| evaluate_stream_on(&best, test, cfg.train.batch, cfg.train.k1, comm))
                .transpose()?,
        ),
    };
    let loss_plot = out.join("loss.svg");
    let forecast = match (&prep.data, &prep.meta.target_norm) {
        (TaskData::Examples { val, .. }, Some(norm)) => Some((out.join("forecast.svg"), val, norm)),
        _ => None,
    };
    lead_writes(comm, || {
        crate::plot::plot_metrics(&metrics_path, &loss_plot)?;
        if let Some((p, val, norm)) = &forecast {
            let (actual, series) = usage::forecast_series(&best, val, norm, cfg.train.batch)?;
            crate::plot::plot_forecast(
                p,
                &format!("{} ({}): validation, one step ahead", prep.meta.target_columns[0], cfg.task),
                &actual,
                &series,
            )?;
        }
        Ok(())
    })?;
    let mut plots = vec![loss_plot];
    plots.extend(forecast.map(|(p, _, _)| p));
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

/// Runs `write` (files of the run) on rank 0 only; every rank learns whether it worked.
fn lead_writes(comm: &dyn Comm, write: impl FnOnce() -> Result<()>) -> Result<()> {
    agree(comm, if comm.rank() == 0 { write() } else { Ok(()) })
}

/// Reads what `--resume` continues from: the training state, the model after
/// the last epoch (checked against `model`'s configuration) and the optimizer slots.
fn read_saved(out: &Path, model: &Model<f32>, opt: &Optimizer<f32>) -> Result<(TrainState, Model<f32>, Vec<Vec<f32>>)> {
    let state_path = out.join("train_state.json");
    let last_path = out.join("last.safetensors");
    let text =
        std::fs::read_to_string(&state_path).map_err(|e| data_err(&state_path, None, format!("cannot resume: {e}")))?;
    let st: TrainState =
        serde_json::from_str(&text).map_err(|e| data_err(&state_path, None, format!("corrupt training state: {e}")))?;
    let (last, _) = checkpoint::load::<f32>(&last_path)?;
    if last.cfg != model.cfg {
        return Err(data_err(&last_path, None, "was written by a different model configuration"));
    }
    let (slots, _) = checkpoint::read_tensors(&out.join("optimizer.safetensors"))?;
    if slots.len() != opt.slots.len() || slots.iter().any(|(_, _, v)| v.len() != last.num_params()) {
        return Err(data_err(
            out.join("optimizer.safetensors"),
            None,
            "optimizer state does not match the model and optimizer",
        ));
    }
    let slots = slots.into_iter().map(|(_, _, v)| v.into_iter().map(|x| x as f32).collect()).collect();
    Ok((st, last, slots))
}

/// Rank `rank`'s random numbers at step `step` of a run of several processes
/// (dropout masks, the online estimators' random signs): a stream of its own,
/// keyed by (rank, step), so the shared training RNG (the shuffling) advances
/// identically on every rank and a resumed run draws the same numbers.
fn rank_rng(seed: u64, rank: usize, step: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed ^ 0xd15e_a5ed_0000_0000);
    r.set_stream(((rank as u64 + 1) << 48) ^ step);
    r
}

/// The elements the loss scores (the denominator of its mean) among the
/// examples `idx`, in each window: a last-step target counts in the window
/// holding its sequence's last step, an every-step target in the window
/// scoring its step; ignored classes (`IGNORE_INDEX`) do not count.
fn scored(ex: &Examples, idx: &[usize], ws: &[Window]) -> Vec<usize> {
    ws.iter()
        .map(|w| {
            let scores = |s: usize| (w.score_from..w.end).contains(&s);
            idx.iter()
                .map(|&i| {
                    let last = ex.seq_len(i).saturating_sub(1);
                    match &ex.targets {
                        TargetSet::Real { width, .. } => usize::from(scores(last)) * width,
                        TargetSet::Class(v) => usize::from(scores(last) && v[i] != IGNORE_INDEX),
                        TargetSet::ClassSeq(v) => (w.score_from..w.end.min(last + 1))
                            .filter(|&s| v[i].get(s).is_some_and(|&c| c != IGNORE_INDEX))
                            .count(),
                    }
                })
                .sum()
        })
        .collect()
}

/// This rank's weight in each update of a batch: its scored elements over the
/// whole batch's. The engine returns the gradient of the shard's *mean* loss;
/// weighted so, the ranks' gradients sum to the gradient of the whole batch's
/// mean loss, exactly as one process computes it, whatever the shard sizes
/// and masks.
fn shard_weights(ex: &Examples, all: &[usize], part: &[usize], ws: &[Window]) -> Vec<f64> {
    let (mine, total) = (scored(ex, part, ws), scored(ex, all, ws));
    mine.iter().zip(&total).map(|(&m, &t)| if t == 0 { 0.0 } else { m as f64 / t as f64 }).collect()
}

/// FNV-1a over the prepared data, to check that every rank read the same.
fn fingerprint(data: &TaskData) -> u64 {
    fn examples(ex: &Examples, eat: &mut impl FnMut(u64)) {
        eat(ex.len() as u64);
        match &ex.inputs {
            Inputs::Dense { seqs, .. } => seqs.iter().flatten().for_each(|v| eat(u64::from(v.to_bits()))),
            Inputs::Tokens { seqs } => seqs.iter().flatten().for_each(|&v| eat(v as u64)),
        }
        match &ex.targets {
            TargetSet::Real { rows, .. } => rows.iter().flatten().for_each(|v| eat(u64::from(v.to_bits()))),
            TargetSet::Class(v) => v.iter().for_each(|&c| eat(c as u64)),
            TargetSet::ClassSeq(v) => v.iter().flatten().for_each(|&c| eat(c as u64)),
        }
    }
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let mut eat = |v: u64| {
        for b in v.to_le_bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    match data {
        TaskData::Examples { train, val, test } => [train, val, test].into_iter().for_each(|ex| examples(ex, &mut eat)),
        TaskData::Stream { train, val, test } => [train, val, test].into_iter().flatten().for_each(|&v| eat(v as u64)),
    }
    h
}

/// Checks that this rank read the same data as rank 0 (on several hosts each
/// reads its own copy of the files).
fn same_data(comm: &dyn Comm, cfg: &TrainConfig, data: &TaskData) -> Result<()> {
    let mine = fingerprint(data).to_le_bytes();
    let mut root = mine;
    comm.broadcast_u8(0, &mut root);
    if root == mine {
        return Ok(());
    }
    let what = cfg.data.path.as_ref().map_or_else(|| format!("the {} data", cfg.task), |p| p.display().to_string());
    Err(data_err(what, None, "differs from rank 0's copy: every process must read the same data"))
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
