//! The training configuration: one struct with every option and its default,
//! read from TOML (unknown keys are errors) and overridden by CLI flags.

use recurrent::error::{config_err, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Everything `recurrent train` needs. Each field's default is the value of
/// `TrainConfig::default()`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// What to learn: forecast, classify, ts, mnist, tokens, charlm, adding, copy, mackey-glass.
    pub task: String,
    /// Seed of every random choice (data split, initialisation, shuffling, dropout).
    pub seed: u64,
    /// Output folder (checkpoints, metrics, plots); default runs/<task>.
    pub out: Option<PathBuf>,
    pub data: DataConfig,
    pub model: ModelSection,
    pub train: TrainSection,
}

/// Where the data comes from and how it is cut into examples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Data file (CSV, .ts, text) or folder (MNIST IDX files).
    pub path: Option<PathBuf>,
    /// Separate test file (.ts: default derived from _TRAIN -> _TEST).
    pub test_path: Option<PathBuf>,
    /// Whether the CSV has a header row (default: detect).
    pub header: Option<bool>,
    /// CSV field delimiter (one character).
    pub delimiter: String,
    /// Date/time column, kept as text (and checked to increase), not used as a feature.
    pub date_column: Option<String>,
    /// Input columns (names, or 0-based indices); empty: all numeric columns.
    pub inputs: Vec<String>,
    /// Target columns to forecast; empty: the input columns.
    pub targets: Vec<String>,
    /// Forecasting: steps of history the model reads.
    pub window: usize,
    /// Forecasting: steps ahead it predicts (all at once).
    pub horizon: usize,
    /// Fraction of the data held out for validation (chronological for series and text).
    pub val_fraction: f64,
    /// Fraction held out for the final test (when there is no separate test file).
    pub test_fraction: f64,
    /// Classification: label column (name or 0-based index).
    pub label_column: String,
    /// Token classification: text column (name or 0-based index).
    pub text_column: String,
    /// Token classification: split into "chars" or "whitespace" tokens.
    pub split: String,
    /// MNIST: one pixel per step (784 steps) instead of one row per step (28).
    pub pixel_by_pixel: bool,
    /// Use at most this many training examples (0: all).
    pub limit: usize,
    /// Synthetic tasks: sequence length (adding, copy: symbols to copy) or series length (mackey-glass).
    pub length: usize,
    /// Synthetic tasks: number of examples.
    pub samples: usize,
    /// Copy task: blank steps between the symbols and the recall.
    pub delay: usize,
    /// Copy task: alphabet size.
    pub symbols: usize,
    /// Mackey-Glass delay tau.
    pub tau: usize,
}

/// The network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// rnn (tanh), rnn_relu, lstm or gru.
    pub cell: String,
    pub hidden: usize,
    pub layers: usize,
    pub bidirectional: bool,
    /// Dropout between layers (training only).
    pub dropout: f64,
    pub bias: bool,
    /// Embedding width for token inputs.
    pub emb_dim: usize,
    /// Orthogonal recurrent weights.
    pub orthogonal: bool,
    /// Xavier-uniform input weights.
    pub xavier: bool,
    /// LSTM forget-gate bias.
    pub forget_bias: Option<f64>,
}

/// The optimisation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    pub epochs: usize,
    /// Stop after this many optimizer steps (0: no limit).
    pub max_steps: usize,
    pub batch: usize,
    /// sgd, rmsprop, adagrad, adam, adamw.
    pub optimizer: String,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// Clip the global gradient L2 norm to this (0: off).
    pub clip_norm: f64,
    /// Clip each gradient value to [-v, v] (0: off).
    pub clip_value: f64,
    /// constant, step, exponential, cosine, plateau.
    pub schedule: String,
    /// step: epochs between decays; plateau: patience.
    pub step_size: usize,
    /// step / exponential / plateau factor.
    pub gamma: f64,
    /// cosine: linear warm-up epochs.
    pub warmup: usize,
    /// Early stopping: epochs without validation improvement (0: off).
    pub patience: usize,
    /// Stop once the validation metric reaches this value (at most for losses and errors,
    /// at least for accuracy); None: train all epochs.
    pub stop_at: Option<f64>,
    /// Gradient estimator: bptt, tbptt, rtrl, uoro, snap1, snap2.
    pub estimator: String,
    /// Memory limit of the online estimators' influence matrices, in MiB.
    pub memory_limit_mb: usize,
    /// Truncated BPTT: steps between updates.
    pub k1: usize,
    /// Truncated BPTT: steps back-propagated (>= k1).
    pub k2: usize,
    /// Validate every N optimizer steps as well as every epoch (0: per epoch only).
    pub val_every: usize,
    /// On a NaN/Inf loss: "stop" (keep the last good checkpoint) or "skip" the step.
    pub on_nan: String,
    /// Worker threads (0: all cores).
    pub threads: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            task: "mackey-glass".into(),
            seed: 0,
            out: None,
            data: DataConfig::default(),
            model: ModelSection::default(),
            train: TrainSection::default(),
        }
    }
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            path: None,
            test_path: None,
            header: None,
            delimiter: ",".into(),
            date_column: None,
            inputs: Vec::new(),
            targets: Vec::new(),
            window: 24,
            horizon: 1,
            val_fraction: 0.15,
            test_fraction: 0.15,
            label_column: "0".into(),
            text_column: "1".into(),
            split: "chars".into(),
            pixel_by_pixel: false,
            limit: 0,
            length: 2000,
            samples: 2000,
            delay: 10,
            symbols: 8,
            tau: 17,
        }
    }
}

impl Default for ModelSection {
    fn default() -> Self {
        ModelSection {
            cell: "lstm".into(),
            hidden: 32,
            layers: 1,
            bidirectional: false,
            dropout: 0.0,
            bias: true,
            emb_dim: 16,
            orthogonal: false,
            xavier: false,
            forget_bias: None,
        }
    }
}

impl Default for TrainSection {
    fn default() -> Self {
        TrainSection {
            epochs: 20,
            max_steps: 0,
            batch: 32,
            optimizer: "adam".into(),
            lr: 5e-3,
            momentum: 0.0,
            weight_decay: 0.0,
            clip_norm: 1.0,
            clip_value: 0.0,
            schedule: "constant".into(),
            step_size: 10,
            gamma: 0.5,
            warmup: 2,
            patience: 0,
            stop_at: None,
            estimator: "bptt".into(),
            memory_limit_mb: 2048,
            k1: 50,
            k2: 50,
            val_every: 0,
            on_nan: "stop".into(),
            threads: 0,
        }
    }
}

/// The tasks `task` may name.
pub const TASKS: [&str; 9] =
    ["forecast", "classify", "ts", "mnist", "tokens", "charlm", "adding", "copy", "mackey-glass"];

impl TrainConfig {
    /// Parses a TOML file's text; unknown keys and wrong types are errors naming the key.
    pub fn from_toml(text: &str, path: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| {
            let msg = e.message().to_string();
            let line = e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            recurrent::error::data_err(path, line, msg)
        })
    }

    /// The output folder: `out`, or runs/<task>.
    pub fn out_dir(&self) -> PathBuf {
        self.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(&self.task))
    }

    /// Checks every value that has a fixed set or range.
    pub fn validate(&self) -> Result<()> {
        let one_of = |what: &str, v: &str, set: &[&str]| {
            if set.contains(&v) {
                Ok(())
            } else {
                Err(config_err(what, v, format!("expected one of {}", set.join(", "))))
            }
        };
        one_of("task", &self.task, &TASKS)?;
        one_of("model.cell", &self.model.cell, &["rnn", "rnn_tanh", "rnn_relu", "lstm", "gru"])?;
        one_of("train.optimizer", &self.train.optimizer, &["sgd", "rmsprop", "adagrad", "adam", "adamw"])?;
        one_of("train.schedule", &self.train.schedule, &["constant", "step", "exponential", "cosine", "plateau"])?;
        one_of("train.estimator", &self.train.estimator, &["bptt", "tbptt", "rtrl", "uoro", "snap1", "snap2"])?;
        one_of("train.on_nan", &self.train.on_nan, &["stop", "skip"])?;
        one_of("data.split", &self.data.split, &["chars", "whitespace"])?;
        if matches!(self.train.estimator.as_str(), "rtrl" | "uoro" | "snap1" | "snap2")
            && matches!(self.task.as_str(), "tokens" | "charlm" | "copy")
        {
            return Err(config_err(
                "train.estimator",
                &self.train.estimator,
                format!(
                    "online estimators take real-valued inputs; task {} embeds tokens (use bptt or tbptt)",
                    self.task
                ),
            ));
        }
        if self.train.memory_limit_mb == 0 {
            return Err(config_err("train.memory_limit_mb", 0, "must be at least 1"));
        }
        let pos = |what: &str, v: usize| if v == 0 { Err(config_err(what, v, "must be at least 1")) } else { Ok(()) };
        pos("model.hidden", self.model.hidden)?;
        pos("model.layers", self.model.layers)?;
        pos("model.emb_dim", self.model.emb_dim)?;
        pos("train.epochs", self.train.epochs)?;
        pos("train.batch", self.train.batch)?;
        pos("train.k1", self.train.k1)?;
        pos("data.window", self.data.window)?;
        pos("data.horizon", self.data.horizon)?;
        if self.train.k2 < self.train.k1 {
            return Err(config_err("train.k2", self.train.k2, format!("must be >= train.k1 = {}", self.train.k1)));
        }
        if !(self.train.lr > 0.0 && self.train.lr.is_finite()) {
            return Err(config_err("train.lr", self.train.lr, "must be a positive number"));
        }
        if !(0.0..1.0).contains(&self.model.dropout) {
            return Err(config_err("model.dropout", self.model.dropout, "must be in [0, 1)"));
        }
        for (what, v) in
            [("data.val_fraction", self.data.val_fraction), ("data.test_fraction", self.data.test_fraction)]
        {
            if !(0.0..0.9).contains(&v) {
                return Err(config_err(what, v, "must be in [0, 0.9)"));
            }
        }
        if self.data.val_fraction + self.data.test_fraction >= 0.9 {
            return Err(config_err(
                "data.val_fraction + data.test_fraction",
                self.data.val_fraction + self.data.test_fraction,
                "must be below 0.9",
            ));
        }
        if self.data.delimiter.len() != 1 {
            return Err(config_err("data.delimiter", &self.data.delimiter, "must be one character"));
        }
        for (what, v) in [
            ("train.clip_norm", self.train.clip_norm),
            ("train.clip_value", self.train.clip_value),
            ("train.weight_decay", self.train.weight_decay),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(config_err(what, v, "must be a finite number >= 0"));
            }
        }
        Ok(())
    }
}
