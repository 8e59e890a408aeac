//! `recurrent train`: the task's data and the typed settings handed to the
//! library's [`Trainer`], with the command line's observers (metrics file,
//! run files, progress), then the summary on the best model.
//!
//! Files in the output folder:
//! - `config.toml`: the effective configuration;
//! - `state.safetensors`: the whole resumable state in one file (parameters,
//!   optimizer slots, schedule, RNG, counters, best model), for `--resume`;
//! - `model.safetensors`: the best model so far (PyTorch state_dict names);
//! - `metrics.jsonl`: one JSON object per validation;
//! - `loss.<ext>`, `forecast.<ext>`: plots.

pub mod config;
pub mod task;
pub mod usage;

pub use config::TrainConfig;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use recurrent::checkpoint::{self, write_atomic};
use recurrent::distributed::{agree, broadcast_bytes, Comm, Single};
use recurrent::error::{config_err, data_err, Result};
use recurrent::grad::tbptt::Truncation;
use recurrent::memory::{self, Workload};
use recurrent::model::{InitConfig, Model, ModelConfig};
use recurrent::network::RnnConfig;
use recurrent::optim::{Optimizer, OptimizerKind, Schedule, ScheduleName};
pub use recurrent::train::{
    evaluate, evaluate_data, make_batch, BatchBuf, DataSource, EpochEnd, Evaluation, MetricsLine, Observer, Silent,
};
use recurrent::train::{Clipping, RunState, TrainData, Trainer, TrainerConfig};
use std::path::{Path, PathBuf};
use task::{Prepared, TaskData, TaskMeta};

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

/// The model configuration a training config and task imply.
pub fn model_config(cfg: &TrainConfig, p: &Prepared) -> Result<ModelConfig> {
    let cell = cfg.model.cell;
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
    let mut k = OptimizerKind::defaults(cfg.train.optimizer, cfg.train.lr);
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
    match t.schedule {
        ScheduleName::Step => Schedule::Step { step_size: t.step_size, gamma: t.gamma },
        ScheduleName::Exponential => Schedule::Exponential { gamma: t.gamma },
        ScheduleName::Cosine => {
            Schedule::CosineWarmup { warmup_epochs: t.warmup, start_factor: 0.1, total_epochs: t.epochs, eta_min: 0.0 }
        }
        ScheduleName::Plateau => {
            Schedule::Plateau { factor: t.gamma, patience: t.step_size, threshold: 1e-4, cooldown: 0, min_lr: 0.0 }
        }
        ScheduleName::Constant => Schedule::Constant,
    }
}

/// The Trainer's settings a training config implies. The training RNG is
/// seeded with `seed + 1` (the initialisation uses `seed`).
pub fn trainer_config(cfg: &TrainConfig, p: &Prepared) -> Result<TrainerConfig> {
    let t = &cfg.train;
    let positive = |v: f64| (v > 0.0).then_some(v);
    let some = |v: usize| (v > 0).then_some(v as u64);
    Ok(TrainerConfig {
        optimizer: optimizer_kind(cfg)?,
        schedule: schedule(cfg),
        clip: Clipping { norm: positive(t.clip_norm), value: positive(t.clip_value) },
        method: t.estimator,
        truncation: Truncation::new(t.k1, t.k2)?,
        memory_limit: t.memory_limit_mb.checked_mul(1 << 20).ok_or_else(|| {
            config_err("train.memory_limit_mb", t.memory_limit_mb, "is larger than this machine can address")
        })?,
        epochs: t.epochs,
        max_steps: some(t.max_steps),
        batch: t.batch,
        patience: (t.patience > 0).then_some(t.patience),
        stop_at: t.stop_at,
        on_nan: t.on_nan,
        val_every: some(t.val_every),
        metric: task::metric_of(cfg.task, p.meta.target_norm.as_ref()),
        seed: cfg.seed.wrapping_add(1),
        threads: t.threads,
    })
}

/// The freshly initialised model of a config (the same on every rank).
pub fn init_model(cfg: &TrainConfig, p: &Prepared) -> Result<Model<f32>> {
    let init = InitConfig {
        orthogonal_recurrent: cfg.model.orthogonal,
        xavier_input: cfg.model.xavier,
        forget_bias: cfg.model.forget_bias,
    };
    Model::<f32>::new(model_config(cfg, p)?, &init, &mut ChaCha8Rng::seed_from_u64(cfg.seed))
}

/// The data a prepared task trains and validates on.
fn train_val(data: &TaskData) -> (TrainData<'_>, TrainData<'_>) {
    match data {
        TaskData::Examples { train, val, .. } => (TrainData::Examples(train), TrainData::Examples(val)),
        TaskData::Stream { train, val, .. } => (TrainData::Stream(train), TrainData::Stream(val)),
    }
}

/// How a run treats its output folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A new run. A folder that holds another run is refused (without an
    /// explicit --out, the next free `runs/<task>-N` is taken instead).
    Fresh,
    /// A new run that replaces the run in its folder (`--overwrite`), once
    /// it has finished its first epoch with a finite validation loss.
    Replace,
    /// Continue the run in the folder (`--resume`).
    Resume,
}

/// The files that mark a folder as holding a run.
const RUN_FILES: [&str; 3] = ["state.safetensors", "model.safetensors", "config.toml"];

/// Whether `dir` holds a run.
pub fn holds_run(dir: &Path) -> bool {
    RUN_FILES.iter().any(|f| dir.join(f).exists())
}

/// Settles the output folder of a run before anything is written: a fresh
/// run without --out into a default folder that holds a run takes the next
/// free `runs/<task>-N`; with an explicit --out it is refused.
pub fn settle_out(cfg: &mut TrainConfig, mode: Mode) -> Result<()> {
    if mode != Mode::Fresh || !holds_run(&cfg.out_dir()) {
        return Ok(());
    }
    if cfg.out.is_none() {
        let base = cfg.out_dir();
        let free = (2..10_000).map(|n| PathBuf::from(format!("{}-{n}", base.display()))).find(|p| !holds_run(p));
        cfg.out = Some(free.ok_or_else(|| data_err(&base, None, "no free numbered folder beside it"))?);
        return Ok(());
    }
    Err(data_err(
        cfg.out_dir(),
        None,
        "holds another run: --resume continues it, --overwrite replaces it, or choose another --out",
    ))
}

/// Trains as `cfg` says, treating its output folder as `mode` says.
pub fn train(cfg: &TrainConfig, mode: Mode, obs: &mut dyn Observer) -> Result<Summary> {
    train_with(cfg, mode, obs, &Single)
}

/// `train` as one rank of a data-parallel run over `comm` (see
/// `recurrent::distributed`): every rank reads the data and holds the model;
/// rank 0 alone writes files and should be the only one given a talking
/// observer. With `Single` this is `train`.
///
/// Nothing in the output folder changes until the run has read and checked
/// everything and finished an epoch (a fresh run: an epoch with a finite
/// validation loss), so a failed command never damages an earlier run.
pub fn train_with(cfg: &TrainConfig, mode: Mode, obs: &mut dyn Observer, comm: &dyn Comm) -> Result<Summary> {
    cfg.validate()?;
    let mut cfg = cfg.clone();
    agree(comm, settle_out(&mut cfg, mode))?;
    let cfg = &cfg;
    let lead = comm.rank() == 0;
    let out = cfg.out_dir();
    // Every rank reads all the data and takes its shards from it; one that cannot stops them all.
    let prep = agree(comm, task::prepare(cfg))?;
    let (train_data, val_data) = train_val(&prep.data);
    if comm.size() > 1 {
        agree(comm, same_data(comm, cfg, &prep.data))?;
    }
    if val_data.is_empty() {
        return Err(config_err(
            "data.val_fraction",
            cfg.data.val_fraction,
            "leaves no validation examples; the best model is chosen on validation (use at least 0.05)",
        ));
    }
    let tcfg = trainer_config(cfg, &prep)?;
    check_memory(cfg, &prep, &tcfg)?;
    let mut model = init_model(cfg, &prep)?;
    let mut files = RunFiles::new(cfg, &prep.meta, mode);
    let mut trainer = if mode == Mode::Resume {
        // Rank 0 reads where the run stands and sends it to the others, so a run
        // resumes with any number of processes.
        let state = share_state(comm, lead.then(|| files.read_state(&model.cfg)))?;
        let trainer = Trainer::resume(model, tcfg, state)?;
        agree(comm, if lead { files.read_metrics(trainer.counters().validations) } else { Ok(()) })?;
        trainer
    } else {
        // Identical on every rank already (same seed); sent anyway so that the
        // start is rank 0's model whatever the initialisation does.
        comm.broadcast_f32(0, &mut model.params);
        Trainer::new(model, tcfg)?
    };
    let mut writer = FilesObserver { files: &mut files, inner: obs, lead };
    let report = trainer.fit_on(train_data, val_data, &mut writer, comm)?;
    // Report on the best model of this run (held by the Trainer, never read back from disk).
    let best = trainer.best_model().ok_or_else(|| {
        data_err(
            &out,
            None,
            "no epoch ended with a finite validation loss, so no model was saved (the folder was left as it was)",
        )
    })?;
    let (batch, k) = (cfg.train.batch, cfg.train.k1);
    let m = trainer.config().metric.clone();
    let best_val = evaluate_data(&best, val_data, batch, k, &m, comm)?;
    let test = match &prep.data {
        TaskData::Examples { test, .. } => (!test.is_empty()).then_some(TrainData::Examples(test)),
        TaskData::Stream { test, .. } => (test.len() > batch + 1).then_some(TrainData::Stream(test)),
    };
    let test = test.map(|t| evaluate_data(&best, t, batch, k, &m, comm)).transpose()?;
    // A chart that cannot be drawn is worth a warning, not the failure of a finished run.
    let plots = if lead {
        files.plots(cfg, &prep, &best).unwrap_or_else(|e| {
            obs.warn(&format!("no plot: {e}"));
            Vec::new()
        })
    } else {
        Vec::new()
    };
    Ok(Summary {
        out_dir: out,
        best_val,
        test,
        metric: m.name().to_string(),
        baseline: prep.baseline,
        test_baseline: prep.test_baseline,
        epochs_run: report.epochs_run,
        steps: report.steps,
        plots,
    })
}

/// Checks the memory the model, its gradients, the optimizer and one batch's
/// caches need against the one limit (`train.memory_limit_mb`) before
/// anything of that size is allocated.
fn check_memory(cfg: &TrainConfig, prep: &Prepared, tcfg: &TrainerConfig) -> Result<()> {
    let seq_len = match &prep.data {
        TaskData::Examples { train, .. } => (0..train.len()).map(|i| train.seq_len(i)).max().unwrap_or(1),
        TaskData::Stream { .. } => tcfg.truncation.k2,
    };
    // The optimizer's own slot count, from one of no parameters.
    let slots = Optimizer::<f32>::new(tcfg.optimizer.clone(), 0)?.slots.len();
    let work = Workload { batch: cfg.train.batch, seq_len, elem_bytes: 4, optimizer_slots: slots };
    memory::estimate(&model_config(cfg, prep)?, &work)
        .check("training this model (train.memory_limit_mb / --memory-limit-mb)", tcfg.memory_limit as u128)
}

/// Rank 0's run state (read from its file) on every rank.
fn share_state(comm: &dyn Comm, mine: Option<Result<RunState>>) -> Result<RunState> {
    let local = mine.transpose();
    let state = agree(comm, local)?;
    if comm.size() == 1 {
        return state.ok_or_else(|| config_err("resume", "", "no run state"));
    }
    let mut bytes = match &state {
        Some(s) => s.to_bytes().map_err(|e| data_err("<run state>", None, e.to_string()))?,
        None => Vec::new(),
    };
    broadcast_bytes(comm, 0, &mut bytes);
    RunState::from_bytes(&bytes, Path::new("<run state from rank 0>"))
}

/// The files of a run folder. Until the run's first epoch end worth
/// keeping, nothing is written: metrics lines wait in memory.
struct RunFiles {
    out: PathBuf,
    /// The task description stored in checkpoints.
    task: serde_json::Value,
    /// The effective configuration, with absolute data paths.
    config: TrainConfig,
    mode: Mode,
    /// Whether this run has taken the folder over (written its first files).
    committed: bool,
    /// Metrics lines not written yet (a resumed run: the lines kept from before).
    pending: Vec<String>,
}

impl RunFiles {
    fn new(cfg: &TrainConfig, meta: &TaskMeta, mode: Mode) -> Self {
        let mut config = cfg.clone();
        // Absolute, so that --resume works from any working directory.
        for p in [&mut config.data.path, &mut config.data.test_path].into_iter().flatten() {
            if let Ok(abs) = std::fs::canonicalize(&*p) {
                *p = abs;
            }
        }
        RunFiles {
            out: cfg.out_dir(),
            task: serde_json::to_value(meta).unwrap_or(serde_json::Value::Null),
            config,
            mode,
            committed: false,
            pending: Vec::new(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.out.join(name)
    }

    /// The saved run state, checked against the model configuration.
    fn read_state(&self, model: &ModelConfig) -> Result<RunState> {
        let path = self.path("state.safetensors");
        if !path.exists() {
            return Err(data_err(&path, None, "cannot resume: no run state in this folder"));
        }
        let (state, meta) = RunState::load(&path)?;
        if meta.model != *model {
            return Err(data_err(
                &path,
                None,
                format!("was written by a different model configuration ({})", model_difference(&meta.model, model)),
            ));
        }
        Ok(state)
    }

    /// A resumed run keeps the metric lines of the saved state (later ones
    /// belong to an interrupted epoch).
    fn read_metrics(&mut self, lines: usize) -> Result<()> {
        let path = self.path("metrics.jsonl");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(data_err(&path, None, format!("cannot read: {e}"))),
        };
        self.pending = text.lines().take(lines).map(str::to_string).collect();
        Ok(())
    }

    /// Takes the folder over: the configuration, the metrics so far, and
    /// the temporaries of killed runs removed.
    fn commit(&mut self) -> Result<()> {
        std::fs::create_dir_all(&self.out)
            .map_err(|e| data_err(&self.out, None, format!("cannot create the output folder: {e}")))?;
        remove_stale_temporaries(&self.out);
        let toml = toml::to_string(&self.config).map_err(|e| config_err("config", "", e.to_string()))?;
        write_atomic(&self.path("config.toml"), toml.as_bytes())?;
        let lines: String = self.pending.drain(..).map(|l| l + "\n").collect();
        write_atomic(&self.path("metrics.jsonl"), lines.as_bytes())?;
        self.committed = true;
        Ok(())
    }

    fn metrics(&mut self, line: &MetricsLine) -> Result<()> {
        let path = self.path("metrics.jsonl");
        let s = serde_json::to_string(line).map_err(|e| data_err(&path, None, e.to_string()))?;
        if !self.committed {
            self.pending.push(s);
            return Ok(());
        }
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| data_err(&path, None, format!("cannot write: {e}")))?;
        writeln!(f, "{s}").map_err(|e| data_err(&path, None, format!("cannot write: {e}")))
    }

    /// After an epoch: the folder taken over when the run has something
    /// worth keeping, then the best model when it changed, then the run
    /// state (one file, written last).
    fn epoch_end(&mut self, e: &EpochEnd<'_>) -> Result<()> {
        if !self.committed {
            if self.mode != Mode::Resume && e.state.best.is_none() {
                return Ok(());
            }
            self.commit()?;
        }
        if e.improved {
            checkpoint::save(&self.path("model.safetensors"), e.model, self.task.clone())?;
        }
        e.state.save(&self.path("state.safetensors"), &e.model.cfg, self.task.clone())
    }

    /// The loss plot, and for forecasts the validation forecast of the best model.
    fn plots(&self, cfg: &TrainConfig, prep: &Prepared, best: &Model<f32>) -> Result<Vec<PathBuf>> {
        let loss_plot = self.path("loss.svg");
        crate::plot::plot_metrics(&self.path("metrics.jsonl"), &loss_plot)?;
        let mut plots = vec![loss_plot];
        if let (TaskData::Examples { val, .. }, Some(norm)) = (&prep.data, &prep.meta.target_norm) {
            let p = self.path("forecast.svg");
            let (actual, series) = usage::forecast_series(best, val, norm, cfg.train.batch)?;
            let title = format!("{} ({}): validation, one step ahead", prep.meta.target_columns[0], cfg.task);
            crate::plot::plot_forecast(&p, &title, &actual, &series)?;
            plots.push(p);
        }
        Ok(plots)
    }
}

/// Removes the temporary files (`.NAME.tmp-PID`, see `write_atomic`) that
/// processes no longer running left in `dir` when they were killed.
fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.starts_with('.').then(|| name.rsplit_once(".tmp-")).flatten().map(|(_, p)| p) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        // Without /proc (not Linux) a process cannot be checked: keep the file.
        let dead = Path::new("/proc/self").exists() && !Path::new(&format!("/proc/{pid}")).exists();
        if pid != std::process::id() && dead {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The command line's observer: rank 0 writes the run's files, then the
/// caller's observer hears everything.
struct FilesObserver<'a> {
    files: &'a mut RunFiles,
    inner: &'a mut dyn Observer,
    lead: bool,
}

impl Observer for FilesObserver<'_> {
    fn epoch_start(&mut self, epoch: usize, epochs: usize, steps: u64) {
        self.inner.epoch_start(epoch, epochs, steps)
    }
    fn step(&mut self, s: &recurrent::train::StepInfo) {
        self.inner.step(s)
    }
    fn after_step(&mut self) -> Result<()> {
        self.inner.after_step()
    }
    fn validation(&mut self, m: &MetricsLine) -> Result<()> {
        if self.lead {
            self.files.metrics(m)?;
        }
        self.inner.validation(m)
    }
    fn epoch_end(&mut self, e: &EpochEnd<'_>) -> Result<()> {
        if self.lead {
            self.files.epoch_end(e)?;
        }
        self.inner.epoch_end(e)
    }
    fn warn(&mut self, msg: &str) {
        self.inner.warn(msg)
    }
    fn info(&mut self, msg: &str) {
        self.inner.info(msg)
    }
}

/// The first setting in which two model configurations differ, named as the option that sets it.
pub fn model_difference(saved: &ModelConfig, now: &ModelConfig) -> String {
    let (a, b) = (&saved.rnn, &now.rnn);
    let pairs: [(&str, String, String); 11] = [
        ("model.cell", a.cell.to_string(), b.cell.to_string()),
        ("model.hidden", a.hidden_size.to_string(), b.hidden_size.to_string()),
        ("model.layers", a.num_layers.to_string(), b.num_layers.to_string()),
        ("model.bidirectional", a.bidirectional.to_string(), b.bidirectional.to_string()),
        ("model.bias", a.bias.to_string(), b.bias.to_string()),
        ("model.dropout", a.dropout.to_string(), b.dropout.to_string()),
        ("input size (data columns, model.emb_dim)", a.input_size.to_string(), b.input_size.to_string()),
        ("vocabulary", format!("{:?}", saved.vocab), format!("{:?}", now.vocab)),
        ("head", format!("{:?}", saved.head), format!("{:?}", now.head)),
        ("output size (targets, horizon, classes)", saved.out_size.to_string(), now.out_size.to_string()),
        ("loss", format!("{:?}", saved.loss), format!("{:?}", now.loss)),
    ];
    pairs
        .iter()
        .find(|(_, x, y)| x != y)
        .map_or_else(|| "same settings".into(), |(what, x, y)| format!("{what} was {x}, now {y}"))
}

/// Checks that this rank read the same data as rank 0 (on several hosts each
/// reads its own copy of the files).
fn same_data(comm: &dyn Comm, cfg: &TrainConfig, data: &TaskData) -> Result<()> {
    let parts = match data {
        TaskData::Examples { train, val, test } => [train, val, test].map(|e| TrainData::Examples(e)),
        TaskData::Stream { train, val, test } => [train, val, test].map(|s| TrainData::Stream(s)),
    };
    let h = parts.iter().fold(0u64, |h, p| h.rotate_left(1) ^ p.fingerprint());
    let mine = h.to_le_bytes();
    let mut root = mine;
    comm.broadcast_u8(0, &mut root);
    if root == mine {
        return Ok(());
    }
    let what = cfg.data.path.as_ref().map_or_else(|| format!("the {} data", cfg.task), |p| p.display().to_string());
    Err(data_err(what, None, "differs from rank 0's copy: every process must read the same data"))
}
