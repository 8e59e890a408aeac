//! `recurrent train` flags: every option of `TrainConfig`, each optional so
//! that a flag overrides the TOML file only when given. Defaults shown in
//! `--help` are those of `TrainConfig::default()` (a test checks them).

use clap::Args;
use recurrent_cli::train::TrainConfig;
use std::path::PathBuf;

#[derive(Args, Debug, Default, Clone)]
pub struct TrainArgs {
    /// TOML file with any of the options below (flags override it).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Continue the run in this output folder from its last epoch (flags such as --epochs may extend it).
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,

    /// forecast | classify | ts | mnist | tokens | charlm | adding | copy | mackey-glass [default: mackey-glass]
    #[arg(long)]
    pub task: Option<String>,
    /// Seed of every random choice [default: 0]
    #[arg(long)]
    pub seed: Option<u64>,
    /// Output folder [default: runs/<task>]
    #[arg(long)]
    pub out: Option<PathBuf>,

    /// Data file (CSV, .ts, text) or MNIST folder [default: none]
    #[arg(long = "data", help_heading = "Data")]
    pub path: Option<PathBuf>,
    /// Separate test file (.ts: derived from _TRAIN -> _TEST when present) [default: none]
    #[arg(long = "test-data", help_heading = "Data")]
    pub test_path: Option<PathBuf>,
    /// CSV has a header row: true | false [default: detect]
    #[arg(long, help_heading = "Data")]
    pub header: Option<bool>,
    /// CSV delimiter [default: ,]
    #[arg(long, help_heading = "Data")]
    pub delimiter: Option<String>,
    /// Date/time column (kept as text, checked to increase, not a feature) [default: none]
    #[arg(long, help_heading = "Data")]
    pub date_column: Option<String>,
    /// Input columns, comma-separated names or 0-based indices [default: all numeric columns]
    #[arg(long, value_delimiter = ',', help_heading = "Data")]
    pub inputs: Option<Vec<String>>,
    /// Target columns to forecast [default: the input columns]
    #[arg(long, value_delimiter = ',', help_heading = "Data")]
    pub targets: Option<Vec<String>>,
    /// Forecasting window: steps of history [default: 24]
    #[arg(long, help_heading = "Data")]
    pub window: Option<usize>,
    /// Forecasting horizon: steps ahead [default: 1]
    #[arg(long, help_heading = "Data")]
    pub horizon: Option<usize>,
    /// Validation fraction [default: 0.15]
    #[arg(long, help_heading = "Data")]
    pub val_fraction: Option<f64>,
    /// Test fraction (without a separate test file) [default: 0.15]
    #[arg(long, help_heading = "Data")]
    pub test_fraction: Option<f64>,
    /// Label column [default: 0]
    #[arg(long, help_heading = "Data")]
    pub label_column: Option<String>,
    /// Text column (token classification) [default: 1]
    #[arg(long, help_heading = "Data")]
    pub text_column: Option<String>,
    /// Token split: chars | whitespace [default: chars]
    #[arg(long, help_heading = "Data")]
    pub split: Option<String>,
    /// MNIST pixel by pixel (784 steps) instead of row by row [default: false]
    #[arg(long, num_args = 0..=1, default_missing_value = "true", help_heading = "Data")]
    pub pixel_by_pixel: Option<bool>,
    /// At most this many training examples, 0 = all [default: 0]
    #[arg(long, help_heading = "Data")]
    pub limit: Option<usize>,
    /// Synthetic: sequence length (adding; copy: symbols to copy) or series length (mackey-glass) [default: 2000]
    #[arg(long, help_heading = "Data")]
    pub length: Option<usize>,
    /// Synthetic: number of examples [default: 2000]
    #[arg(long, help_heading = "Data")]
    pub samples: Option<usize>,
    /// Copy task: blank steps before recall [default: 10]
    #[arg(long, help_heading = "Data")]
    pub delay: Option<usize>,
    /// Copy task: alphabet size [default: 8]
    #[arg(long, help_heading = "Data")]
    pub symbols: Option<usize>,
    /// Mackey-Glass delay tau [default: 17]
    #[arg(long, help_heading = "Data")]
    pub tau: Option<usize>,

    /// Cell: rnn | rnn_relu | lstm | gru [default: lstm]
    #[arg(long, help_heading = "Model")]
    pub cell: Option<String>,
    /// Hidden units [default: 32]
    #[arg(long, help_heading = "Model")]
    pub hidden: Option<usize>,
    /// Stacked layers [default: 1]
    #[arg(long, help_heading = "Model")]
    pub layers: Option<usize>,
    /// Bidirectional [default: false]
    #[arg(long, num_args = 0..=1, default_missing_value = "true", help_heading = "Model")]
    pub bidirectional: Option<bool>,
    /// Dropout between layers [default: 0]
    #[arg(long, help_heading = "Model")]
    pub dropout: Option<f64>,
    /// Biases in the recurrent layers [default: true]
    #[arg(long, help_heading = "Model")]
    pub bias: Option<bool>,
    /// Embedding width for token inputs [default: 16]
    #[arg(long, help_heading = "Model")]
    pub emb_dim: Option<usize>,
    /// Orthogonal recurrent weights [default: false]
    #[arg(long, num_args = 0..=1, default_missing_value = "true", help_heading = "Model")]
    pub orthogonal: Option<bool>,
    /// Xavier-uniform input weights [default: false]
    #[arg(long, num_args = 0..=1, default_missing_value = "true", help_heading = "Model")]
    pub xavier: Option<bool>,
    /// LSTM forget-gate bias [default: none]
    #[arg(long, help_heading = "Model")]
    pub forget_bias: Option<f64>,

    /// Epochs [default: 20]
    #[arg(long, help_heading = "Training")]
    pub epochs: Option<usize>,
    /// Stop after this many optimizer steps, 0 = no limit [default: 0]
    #[arg(long, help_heading = "Training")]
    pub max_steps: Option<usize>,
    /// Batch size (parallel streams for charlm) [default: 32]
    #[arg(long, help_heading = "Training")]
    pub batch: Option<usize>,
    /// sgd | rmsprop | adagrad | adam | adamw [default: adam]
    #[arg(long, help_heading = "Training")]
    pub optimizer: Option<String>,
    /// Learning rate [default: 0.005]
    #[arg(long, help_heading = "Training")]
    pub lr: Option<f64>,
    /// Momentum (sgd, rmsprop) [default: 0]
    #[arg(long, help_heading = "Training")]
    pub momentum: Option<f64>,
    /// Weight decay (AdamW: decoupled; 0 keeps AdamW's 0.01) [default: 0]
    #[arg(long, help_heading = "Training")]
    pub weight_decay: Option<f64>,
    /// Clip the global gradient norm, 0 = off [default: 1]
    #[arg(long, help_heading = "Training")]
    pub clip_norm: Option<f64>,
    /// Clip gradient values to [-v, v], 0 = off [default: 0]
    #[arg(long, help_heading = "Training")]
    pub clip_value: Option<f64>,
    /// constant | step | exponential | cosine | plateau [default: constant]
    #[arg(long, help_heading = "Training")]
    pub schedule: Option<String>,
    /// step: epochs between decays; plateau: patience [default: 10]
    #[arg(long, help_heading = "Training")]
    pub step_size: Option<usize>,
    /// Decay factor (step, exponential, plateau) [default: 0.5]
    #[arg(long, help_heading = "Training")]
    pub gamma: Option<f64>,
    /// Cosine: linear warm-up epochs [default: 2]
    #[arg(long, help_heading = "Training")]
    pub warmup: Option<usize>,
    /// Early stopping patience in epochs, 0 = off [default: 0]
    #[arg(long, help_heading = "Training")]
    pub patience: Option<usize>,
    /// Stop once the validation metric reaches this value (<= for errors, >= for accuracy) [default: none]
    #[arg(long, help_heading = "Training")]
    pub stop_at: Option<f64>,
    /// bptt | tbptt | rtrl | uoro | snap1 | snap2 (charlm uses tbptt for bptt; the online ones update once per batch of sequences and need real-valued inputs) [default: bptt]
    #[arg(long, help_heading = "Training")]
    pub estimator: Option<String>,
    /// Memory limit of the online estimators' influence matrices, in MiB [default: 2048]
    #[arg(long, help_heading = "Training")]
    pub memory_limit_mb: Option<usize>,
    /// Truncated BPTT: steps between updates [default: 50]
    #[arg(long, help_heading = "Training")]
    pub k1: Option<usize>,
    /// Truncated BPTT: steps back-propagated, >= k1 [default: 50]
    #[arg(long, help_heading = "Training")]
    pub k2: Option<usize>,
    /// Also validate every N steps, 0 = per epoch only [default: 0]
    #[arg(long, help_heading = "Training")]
    pub val_every: Option<usize>,
    /// On a NaN/Inf loss: stop | skip [default: stop]
    #[arg(long, help_heading = "Training")]
    pub on_nan: Option<String>,
    /// Threads, 0 = all cores [default: 0]
    #[arg(long, help_heading = "Training")]
    pub threads: Option<usize>,
}

macro_rules! set {
    ($dst:expr, $src:expr) => {
        if let Some(v) = $src.clone() {
            $dst = v;
        }
    };
}

impl TrainArgs {
    /// Applies the flags that were given on top of `c`.
    pub fn apply(&self, c: &mut TrainConfig) {
        set!(c.task, self.task);
        set!(c.seed, self.seed);
        if self.out.is_some() {
            c.out = self.out.clone();
        }
        let d = &mut c.data;
        if self.path.is_some() {
            d.path = self.path.clone();
        }
        if self.test_path.is_some() {
            d.test_path = self.test_path.clone();
        }
        if self.header.is_some() {
            d.header = self.header;
        }
        set!(d.delimiter, self.delimiter);
        if self.date_column.is_some() {
            d.date_column = self.date_column.clone();
        }
        set!(d.inputs, self.inputs);
        set!(d.targets, self.targets);
        set!(d.window, self.window);
        set!(d.horizon, self.horizon);
        set!(d.val_fraction, self.val_fraction);
        set!(d.test_fraction, self.test_fraction);
        set!(d.label_column, self.label_column);
        set!(d.text_column, self.text_column);
        set!(d.split, self.split);
        set!(d.pixel_by_pixel, self.pixel_by_pixel);
        set!(d.limit, self.limit);
        set!(d.length, self.length);
        set!(d.samples, self.samples);
        set!(d.delay, self.delay);
        set!(d.symbols, self.symbols);
        set!(d.tau, self.tau);
        let m = &mut c.model;
        set!(m.cell, self.cell);
        set!(m.hidden, self.hidden);
        set!(m.layers, self.layers);
        set!(m.bidirectional, self.bidirectional);
        set!(m.dropout, self.dropout);
        set!(m.bias, self.bias);
        set!(m.emb_dim, self.emb_dim);
        set!(m.orthogonal, self.orthogonal);
        set!(m.xavier, self.xavier);
        if self.forget_bias.is_some() {
            m.forget_bias = self.forget_bias;
        }
        let t = &mut c.train;
        set!(t.epochs, self.epochs);
        set!(t.max_steps, self.max_steps);
        set!(t.batch, self.batch);
        set!(t.optimizer, self.optimizer);
        set!(t.lr, self.lr);
        set!(t.momentum, self.momentum);
        set!(t.weight_decay, self.weight_decay);
        set!(t.clip_norm, self.clip_norm);
        set!(t.clip_value, self.clip_value);
        set!(t.schedule, self.schedule);
        set!(t.step_size, self.step_size);
        set!(t.gamma, self.gamma);
        set!(t.warmup, self.warmup);
        set!(t.patience, self.patience);
        if self.stop_at.is_some() {
            t.stop_at = self.stop_at;
        }
        set!(t.estimator, self.estimator);
        set!(t.memory_limit_mb, self.memory_limit_mb);
        set!(t.k1, self.k1);
        set!(t.k2, self.k2);
        set!(t.val_every, self.val_every);
        set!(t.on_nan, self.on_nan);
        set!(t.threads, self.threads);
    }
}
