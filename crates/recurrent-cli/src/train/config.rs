//! The training configuration, every option declared once (with its doc,
//! its default, its TOML key and its flag) in the `options!` block below.
//! From that one declaration come the config structs (read from TOML,
//! unknown keys are errors naming file:line), their `Default`, the
//! `recurrent train` flags (`TrainFlags`: each optional, so a flag overrides
//! the TOML file only when given), `--help` with each default and key, and
//! `OPTIONS`, the table of keys and flags.

use recurrent::choice::Choice;
use recurrent::error::{config_err, Result};
use recurrent::grad::Estimator;
use recurrent::optim::{OptimizerName, ScheduleName};
use recurrent::train::OnNan;
use recurrent::CellKind;
use recurrent_data::TokenSplit;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

recurrent::choice! {
    /// What `recurrent train` learns.
    pub enum Task ("task") {
        /// Forecast columns of a CSV time series.
        Forecast = "forecast",
        /// Classify CSV rows (one sequence per row plus a label).
        Classify = "classify",
        /// Classify UCR/UEA .ts series.
        Ts = "ts",
        /// MNIST digits (IDX files), row by row or pixel by pixel.
        Mnist = "mnist",
        /// Classify token sequences (CSV/TSV of label and text).
        Tokens = "tokens",
        /// Character language model on a text file.
        Charlm = "charlm",
        /// The adding problem (synthetic).
        Adding = "adding",
        /// The copy task (synthetic).
        Copy = "copy",
        /// The Mackey-Glass series (synthetic forecasting).
        MackeyGlass = "mackey-glass",
    }
}

/// A config field's type as a flag: the value a flag parses into, and how
/// it becomes the field (an optional field is set by a plain value).
pub trait Flag: Sized {
    /// What the flag's value parses into.
    type Arg: Clone + Send + Sync + 'static;
    /// The field's value for a given flag.
    fn from_arg(a: Self::Arg) -> Self;
}

macro_rules! plain_flags {
    ($($t:ty),*) => {$(
        impl Flag for $t {
            type Arg = $t;
            fn from_arg(a: $t) -> $t { a }
        }
    )*};
}
plain_flags!(
    usize,
    u64,
    f64,
    bool,
    String,
    PathBuf,
    Task,
    CellKind,
    OptimizerName,
    ScheduleName,
    Estimator,
    OnNan,
    TokenSplit
);

impl<T: Flag<Arg = T> + Clone + Send + Sync + 'static> Flag for Option<T> {
    type Arg = T;
    fn from_arg(a: T) -> Self {
        Some(a)
    }
}

/// A comma-separated list given as one flag value.
#[derive(Clone, Debug)]
pub struct List(pub Vec<String>);

impl std::str::FromStr for List {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(List(s.split(',').map(str::to_string).filter(|v| !v.is_empty()).collect()))
    }
}

impl Flag for Vec<String> {
    type Arg = List;
    fn from_arg(a: List) -> Self {
        a.0
    }
}

/// One option: its TOML key and its flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionInfo {
    /// Key in a TOML file (`section.name`, or `name` at the top).
    pub key: &'static str,
    /// Flag of `recurrent train` (without the dashes).
    pub flag: &'static str,
}

/// A default value as `--help` shows it.
pub fn show_default<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::Null) => "none".into(),
        Ok(serde_json::Value::String(s)) => s,
        Ok(serde_json::Value::Array(a)) if a.is_empty() => "none".into(),
        Ok(serde_json::Value::Array(a)) => {
            a.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string)).collect::<Vec<_>>().join(",")
        }
        Ok(v) => v.to_string(),
        Err(_) => "?".into(),
    }
}

/// The help line of an option: its doc, the choices of a named type, its default and its key.
pub fn help_text<T: Serialize>(doc: &str, choices: Option<String>, default: &T, key: &str) -> String {
    let choices = choices.map_or(String::new(), |c| format!(" ({c})"));
    format!("{}{choices} [default: {}] [config: {key}]", doc.trim(), show_default(default))
}

/// The names of a named-choice type, for help texts (None for other types).
pub trait Choices {
    /// "a | b | c" for named choices.
    fn choices() -> Option<String> {
        None
    }
}
macro_rules! no_choices {
    ($($t:ty),*) => {$( impl Choices for $t {} )*};
}
no_choices!(usize, u64, f64, bool, String, PathBuf, Vec<String>);
impl<T: Choices> Choices for Option<T> {
    fn choices() -> Option<String> {
        T::choices()
    }
}
macro_rules! named_choices {
    ($($t:ty),*) => {$( impl Choices for $t { fn choices() -> Option<String> { Some(<$t as Choice>::names()) } } )*};
}
named_choices!(Task, CellKind, OptimizerName, ScheduleName, Estimator, OnNan, TokenSplit);

/// Declares the options: the top-level ones, then each section with its
/// TOML table, its help heading and its fields. Each field: doc comment,
/// `name: Type = default, "flag"`, and optional extra clap settings in brackets.
macro_rules! options {
    (
        top {
            $( $(#[doc = $tdoc:literal])+ $tfield:ident : $tty:ty = $tdefault:expr, $tflag:literal $([$($textra:tt)*])? ; )+
        }
        $(
            $(#[doc = $sdoc:literal])+
            section $skey:ident : $Section:ident ($heading:literal) {
                $( $(#[doc = $doc:literal])+ $field:ident : $ty:ty = $default:expr, $flag:literal $([$($extra:tt)*])? ; )+
            }
        )+
    ) => {
        /// Everything `recurrent train` needs; each field's default is declared with it.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct TrainConfig {
            $( $(#[doc = $tdoc])+ pub $tfield: $tty, )+
            $( $(#[doc = $sdoc])+ pub $skey: $Section, )+
        }

        impl Default for TrainConfig {
            fn default() -> Self {
                TrainConfig { $( $tfield: $tdefault, )+ $( $skey: $Section::default(), )+ }
            }
        }

        $(
            $(#[doc = $sdoc])+
            #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
            #[serde(deny_unknown_fields, default)]
            pub struct $Section {
                $( $(#[doc = $doc])+ pub $field: $ty, )+
            }

            impl Default for $Section {
                fn default() -> Self {
                    $Section { $( $field: $default, )+ }
                }
            }
        )+

        /// The flags of `recurrent train`, one per option, each optional.
        #[derive(clap::Args, Debug, Default, Clone)]
        pub struct TrainFlags {
            $(
                #[arg(long = $tflag, help = help_text(concat!($($tdoc),+), <$tty as Choices>::choices(), &TrainConfig::default().$tfield, stringify!($tfield)) $(, $($textra)*)?)]
                pub $tfield: Option<<$tty as Flag>::Arg>,
            )+
            $($(
                #[arg(long = $flag, help_heading = $heading, help = help_text(concat!($($doc),+), <$ty as Choices>::choices(), &$Section::default().$field, concat!(stringify!($skey), ".", stringify!($field))) $(, $($extra)*)?)]
                pub $field: Option<<$ty as Flag>::Arg>,
            )+)+
        }

        impl TrainFlags {
            /// Sets the options whose flags were given.
            pub fn apply(&self, c: &mut TrainConfig) {
                $( if let Some(v) = self.$tfield.clone() { c.$tfield = Flag::from_arg(v); } )+
                $($( if let Some(v) = self.$field.clone() { c.$skey.$field = Flag::from_arg(v); } )+)+
            }
        }

        /// Every option's TOML key and flag.
        pub const OPTIONS: &[OptionInfo] = &[
            $( OptionInfo { key: stringify!($tfield), flag: $tflag }, )+
            $($( OptionInfo { key: concat!(stringify!($skey), ".", stringify!($field)), flag: $flag }, )+)+
        ];
    };
}

options! {
    top {
        /// What to learn.
        task: Task = Task::MackeyGlass, "task";
        /// Seed of every random choice (data split, initialisation, shuffling, dropout).
        seed: u64 = 0, "seed";
        /// Output folder (checkpoints, metrics, plots); none: runs/<task>.
        out: Option<PathBuf> = None, "out";
    }
    /// Where the data comes from and how it is cut into examples.
    section data: DataConfig ("Data") {
        /// Data file (CSV, .ts, text) or folder (MNIST IDX files).
        path: Option<PathBuf> = None, "data";
        /// Separate test file (.ts: derived from _TRAIN -> _TEST when present).
        test_path: Option<PathBuf> = None, "test-data";
        /// Whether the CSV has a header row (none: detect).
        header: Option<bool> = None, "header";
        /// CSV field delimiter (one character).
        delimiter: String = ",".into(), "delimiter";
        /// Date/time column, kept as text (and checked to increase), not used as a feature.
        date_column: Option<String> = None, "date-column";
        /// Input columns, comma-separated names or 0-based indices (none: all numeric columns).
        inputs: Vec<String> = Vec::new(), "inputs";
        /// Target columns to forecast (none: the input columns).
        targets: Vec<String> = Vec::new(), "targets";
        /// Forecasting: steps of history the model reads.
        window: usize = 24, "window";
        /// Forecasting: steps ahead it predicts (all at once).
        horizon: usize = 1, "horizon";
        /// Fraction of the data held out for validation (chronological for series and text).
        val_fraction: f64 = 0.15, "val-fraction";
        /// Fraction held out for the final test (when there is no separate test file).
        test_fraction: f64 = 0.15, "test-fraction";
        /// Classification: label column (name or 0-based index).
        label_column: String = "0".into(), "label-column";
        /// Token classification: text column (name or 0-based index).
        text_column: String = "1".into(), "text-column";
        /// Token classification: how text is split into tokens.
        split: TokenSplit = TokenSplit::Chars, "split";
        /// MNIST: one pixel per step (784 steps) instead of one row per step (28).
        pixel_by_pixel: bool = false, "pixel-by-pixel" [num_args = 0..=1, default_missing_value = "true"];
        /// Use at most this many training examples (0: all).
        limit: usize = 0, "limit";
        /// Synthetic tasks: sequence length (adding; copy: symbols to copy) or series length (mackey-glass).
        length: usize = 2000, "length";
        /// Synthetic tasks: number of examples.
        samples: usize = 2000, "samples";
        /// Copy task: blank steps between the symbols and the recall.
        delay: usize = 10, "delay";
        /// Copy task: alphabet size.
        symbols: usize = 8, "symbols";
        /// Mackey-Glass delay tau.
        tau: usize = 17, "tau";
    }
    /// The network.
    section model: ModelSection ("Model") {
        /// The recurrent cell.
        cell: CellKind = CellKind::Lstm, "cell";
        /// Hidden units.
        hidden: usize = 32, "hidden";
        /// Stacked layers.
        layers: usize = 1, "layers";
        /// Bidirectional layers.
        bidirectional: bool = false, "bidirectional" [num_args = 0..=1, default_missing_value = "true"];
        /// Dropout between layers (training only).
        dropout: f64 = 0.0, "dropout";
        /// Biases in the recurrent layers.
        bias: bool = true, "bias";
        /// Embedding width for token inputs.
        emb_dim: usize = 16, "emb-dim";
        /// Orthogonal recurrent weights.
        orthogonal: bool = false, "orthogonal" [num_args = 0..=1, default_missing_value = "true"];
        /// Xavier-uniform input weights.
        xavier: bool = false, "xavier" [num_args = 0..=1, default_missing_value = "true"];
        /// LSTM forget-gate bias (none: PyTorch's initialisation).
        forget_bias: Option<f64> = None, "forget-bias";
    }
    /// The optimisation.
    section train: TrainSection ("Training") {
        /// Passes over the training data.
        epochs: usize = 20, "epochs";
        /// Stop after this many optimizer steps (0: no limit).
        max_steps: usize = 0, "max-steps";
        /// Examples per batch (parallel streams for charlm).
        batch: usize = 32, "batch";
        /// The optimizer.
        optimizer: OptimizerName = OptimizerName::Adam, "optimizer";
        /// Learning rate.
        lr: f64 = 5e-3, "lr";
        /// Momentum (sgd, rmsprop).
        momentum: f64 = 0.0, "momentum";
        /// Weight decay (AdamW: decoupled; 0 keeps AdamW's 0.01).
        weight_decay: f64 = 0.0, "weight-decay";
        /// Clip the global gradient L2 norm to this (0: off).
        clip_norm: f64 = 1.0, "clip-norm";
        /// Clip each gradient value to [-v, v] (0: off).
        clip_value: f64 = 0.0, "clip-value";
        /// Learning-rate schedule, stepped after every epoch.
        schedule: ScheduleName = ScheduleName::Constant, "schedule";
        /// step: epochs between decays; plateau: patience.
        step_size: usize = 10, "step-size";
        /// Decay factor (step, exponential, plateau).
        gamma: f64 = 0.5, "gamma";
        /// cosine: linear warm-up epochs.
        warmup: usize = 2, "warmup";
        /// Early stopping: epochs without validation improvement (0: off).
        patience: usize = 0, "patience";
        /// Stop once the validation metric reaches this value (at most for errors, at least for accuracy; none: all epochs).
        stop_at: Option<f64> = None, "stop-at";
        /// Gradient method (charlm uses tbptt for bptt; the online ones update once per batch and need real-valued inputs).
        estimator: Estimator = Estimator::Bptt, "estimator";
        /// Memory limit of the online estimators' influence matrices, in MiB.
        memory_limit_mb: usize = 2048, "memory-limit-mb";
        /// Truncated BPTT: steps between updates.
        k1: usize = 50, "k1";
        /// Truncated BPTT: steps back-propagated (>= k1).
        k2: usize = 50, "k2";
        /// Validate every N optimizer steps as well as every epoch (0: per epoch only).
        val_every: usize = 0, "val-every";
        /// On a NaN/Inf loss or gradient: stop (the last good state is kept) or skip the step.
        on_nan: OnNan = OnNan::Stop, "on-nan";
        /// Worker threads (0: all cores, shared among the processes on a host).
        threads: usize = 0, "threads";
    }
}

/// The options a resumed run may change; every other one defines the run
/// (its data, model, optimizer and schedule) and is refused on `--resume`.
pub const RESUME_MAY_CHANGE: [&str; 9] = [
    "out",
    "train.epochs",
    "train.max_steps",
    "train.patience",
    "train.stop_at",
    "train.val_every",
    "train.threads",
    "train.on_nan",
    "train.memory_limit_mb",
];

impl TrainConfig {
    /// Checks a resumed run's configuration `now` (the saved one, `self`,
    /// with the flags of the resume applied): only the options of
    /// [`RESUME_MAY_CHANGE`] may differ, and a cosine schedule keeps its
    /// planned number of epochs. The error names the flag and the value the
    /// run was made with.
    pub fn check_resume(&self, now: &TrainConfig) -> Result<()> {
        let json = |c: &TrainConfig| serde_json::to_value(c).map_err(|e| config_err("config", "", e.to_string()));
        let (was, is) = (json(self)?, json(now)?);
        let at = |v: &serde_json::Value, key: &str| key.split('.').try_fold(v, |v, k| v.get(k)).cloned();
        for opt in OPTIONS {
            let (a, b) = (at(&was, opt.key), at(&is, opt.key));
            if a != b && !RESUME_MAY_CHANGE.contains(&opt.key) {
                let show = |v: Option<serde_json::Value>| v.map_or("none".into(), |v| show_default(&v));
                return Err(config_err(
                    format!("--{} ({})", opt.flag, opt.key),
                    show(b),
                    format!(
                        "cannot change when resuming: the run was made with {}; start a new run (another --out, or --overwrite)",
                        show(a)
                    ),
                ));
            }
        }
        if self.train.schedule == ScheduleName::Cosine && self.train.epochs != now.train.epochs {
            return Err(config_err(
                "--epochs (train.epochs)",
                now.train.epochs,
                format!(
                    "the cosine schedule of this run was planned for {} epochs and cannot be stretched",
                    self.train.epochs
                ),
            ));
        }
        Ok(())
    }

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
        self.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(self.task.name()))
    }

    /// Checks every value that has a fixed set or range.
    pub fn validate(&self) -> Result<()> {
        if self.train.estimator.is_online() && matches!(self.task, Task::Tokens | Task::Charlm | Task::Copy) {
            return Err(config_err(
                "train.estimator",
                self.train.estimator,
                format!(
                    "online estimators take real-valued inputs; task {} embeds tokens (use bptt or tbptt)",
                    self.task
                ),
            ));
        }
        if self.train.threads > 1024 {
            return Err(config_err(
                "train.threads",
                self.train.threads,
                "must be at most 1024 (0: the cores of the host)",
            ));
        }
        if !(self.train.gamma > 0.0 && self.train.gamma.is_finite()) {
            return Err(config_err("train.gamma", self.train.gamma, "must be a finite number > 0"));
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
