//! The Trainer's typed configuration: every choice an enum, every limit an
//! `Option` where "none" is meaningful, defaults in one `Default` impl.

use crate::error::{config_err, Result};
use crate::grad::tbptt::Truncation;
use crate::grad::Estimator;
use crate::optim::{OptimizerKind, OptimizerName, Schedule};
use serde::{Deserialize, Serialize};

crate::choice! {
    /// What a step with a non-finite loss or gradient does.
    pub enum OnNan ("on_nan") {
        /// Stop training with an error; the state after the last good epoch is kept.
        Stop = "stop",
        /// Skip the update (with a warning) and go on.
        Skip = "skip",
    }
}

/// Gradient clipping, applied before every update (norm first, then value).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Clipping {
    /// Clip the global L2 norm of the gradient to this.
    pub norm: Option<f64>,
    /// Clip every gradient value to [-value, value].
    pub value: Option<f64>,
}

/// The number a validation reports besides its loss.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum Metric {
    /// The mean loss itself.
    Loss,
    /// Root mean squared error of real targets, in data units: each output
    /// column j's error is multiplied by `scale[j % scale.len()]` (the
    /// standard deviation the targets were divided by; empty: 1).
    Rmse {
        /// Per-column scale [O] (or shorter, repeated).
        scale: Vec<f64>,
    },
    /// Fraction of class targets whose largest logit is the right class.
    Accuracy,
    /// Bits per character: the mean cross-entropy over ln 2.
    Bpc,
    /// The mean squared error of real targets (the MSE loss itself).
    Mse,
}

impl Metric {
    /// Its name in metrics lines: loss, rmse, accuracy, bpc.
    pub fn name(&self) -> &'static str {
        match self {
            Metric::Loss => "loss",
            Metric::Rmse { .. } => "rmse",
            Metric::Accuracy => "accuracy",
            Metric::Bpc => "bpc",
            Metric::Mse => "mse",
        }
    }

    /// Whether a larger value is better (accuracy) rather than smaller.
    pub fn higher_is_better(&self) -> bool {
        matches!(self, Metric::Accuracy)
    }

    /// Whether `value` reaches `goal` (at least for accuracy, at most otherwise).
    pub fn reaches(&self, value: f64, goal: f64) -> bool {
        if self.higher_is_better() {
            value >= goal
        } else {
            value <= goal
        }
    }
}

/// Everything the Trainer needs besides the model and the data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainerConfig {
    /// The optimizer and its hyper-parameters.
    pub optimizer: OptimizerKind,
    /// The learning-rate schedule, stepped after every epoch's validation.
    pub schedule: Schedule,
    /// Gradient clipping.
    pub clip: Clipping,
    /// How gradients are computed. On a token stream `Bptt` means `Tbptt`
    /// (a stream has no sequence ends).
    pub method: Estimator,
    /// Truncated BPTT's k1 and k2 (also the window of stream validation).
    pub truncation: Truncation,
    /// Bytes the online estimators' state may take.
    pub memory_limit: usize,
    /// Passes over the training data.
    pub epochs: usize,
    /// Stop after this many optimizer steps.
    pub max_steps: Option<u64>,
    /// Examples per batch (parallel streams for a token stream).
    pub batch: usize,
    /// Stop after this many epochs without a better validation loss.
    pub patience: Option<usize>,
    /// Stop once the validation metric reaches this value.
    pub stop_at: Option<f64>,
    /// What a non-finite loss does.
    pub on_nan: OnNan,
    /// Also validate every this many steps (besides every epoch).
    pub val_every: Option<u64>,
    /// The metric validations report.
    pub metric: Metric,
    /// Seed of the training RNG (shuffling, dropout, the online estimators' signs).
    pub seed: u64,
    /// Worker threads; 0: the cores of the host, shared among the processes on it.
    pub threads: usize,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        TrainerConfig {
            optimizer: OptimizerKind::defaults(OptimizerName::Adam, 5e-3),
            schedule: Schedule::Constant,
            clip: Clipping { norm: Some(1.0), value: None },
            method: Estimator::Bptt,
            truncation: Truncation { k1: 50, k2: 50 },
            memory_limit: crate::grad::online::DEFAULT_MEMORY_LIMIT,
            epochs: 20,
            max_steps: None,
            batch: 32,
            patience: None,
            stop_at: None,
            on_nan: OnNan::Stop,
            val_every: None,
            metric: Metric::Loss,
            seed: 1,
            threads: 0,
        }
    }
}

impl TrainerConfig {
    /// Rejects values no training can run with, naming the field.
    pub fn validate(&self) -> Result<()> {
        let pos = |what: &str, v: usize| if v == 0 { Err(config_err(what, v, "must be at least 1")) } else { Ok(()) };
        pos("epochs", self.epochs)?;
        pos("batch", self.batch)?;
        pos("memory_limit", self.memory_limit)?;
        Truncation::new(self.truncation.k1, self.truncation.k2)?;
        for (what, v) in [("clip.norm", self.clip.norm), ("clip.value", self.clip.value)] {
            if let Some(v) = v {
                if !(v > 0.0 && v.is_finite()) {
                    return Err(config_err(what, v, "must be a finite number > 0"));
                }
            }
        }
        if self.max_steps == Some(0) {
            return Err(config_err("max_steps", 0, "must be at least 1 (None: no limit)"));
        }
        if self.val_every == Some(0) {
            return Err(config_err("val_every", 0, "must be at least 1 (None: every epoch only)"));
        }
        if self.patience == Some(0) {
            return Err(config_err("patience", 0, "must be at least 1 (None: no early stopping)"));
        }
        Ok(())
    }
}
