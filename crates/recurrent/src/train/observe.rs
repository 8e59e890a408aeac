//! What the Trainer tells the world: an [`Observer`] hears every step,
//! validation and epoch end; progress bars, metrics files, checkpoints and
//! plots are observers. In a distributed run only rank 0's observers are
//! called, and an error they return stops every rank.

use super::state::RunState;
use crate::error::Result;
use crate::model::Model;
use serde::{Deserialize, Serialize};

/// One validation: the Trainer's metrics record (a line of metrics.jsonl).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsLine {
    /// Optimizer steps so far.
    pub step: u64,
    /// The epoch it belongs to (1-based).
    pub epoch: usize,
    /// Mean training loss over the steps since the last line.
    pub train_loss: f64,
    /// Validation loss.
    pub val_loss: f64,
    /// Validation metric.
    pub val_metric: f64,
    /// The metric's name.
    pub metric: String,
    /// Learning rate of the steps since the last line.
    pub lr: f64,
    /// Global gradient L2 norm before clipping (mean over the steps since the last line).
    pub grad_norm: f64,
    /// Largest gradient norm before clipping since the last line.
    pub grad_norm_max: f64,
    /// Fraction of steps whose gradient was clipped.
    pub clip_fraction: f64,
    /// Input steps (tokens) trained per second since the last line.
    pub tokens_per_s: f64,
    /// Exploding gradients, skipped steps, non-finite validation since the last line.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// One optimizer step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepInfo {
    /// Steps so far, this one included.
    pub step: u64,
    /// The step's training loss (mean over its windows for truncated BPTT).
    pub loss: f64,
    /// Input steps trained per second since the last metrics line.
    pub tokens_per_s: f64,
}

/// The end of an epoch, after its validation and schedule step.
pub struct EpochEnd<'a> {
    /// The epoch that ended (1-based).
    pub epoch: usize,
    /// Whether its validation loss is the best so far (the best model changed).
    pub improved: bool,
    /// The whole resumable state, as it stands now.
    pub state: &'a RunState,
    /// The model after the epoch.
    pub model: &'a Model<f32>,
}

/// Hears what the Trainer does. Every method has a default that does nothing.
pub trait Observer: Send {
    /// An epoch of `steps` optimizer steps begins (1-based `epoch` of `epochs`).
    fn epoch_start(&mut self, _epoch: usize, _epochs: usize, _steps: u64) {}
    /// After each optimizer step.
    fn step(&mut self, _s: &StepInfo) {}
    /// After each step (after `step`) of a one-process run: an error stops
    /// the run there, with the model at the last completed step (a Python
    /// binding's Ctrl-C). Not called in a distributed run.
    fn after_step(&mut self) -> Result<()> {
        Ok(())
    }
    /// After each validation (every epoch, and every `val_every` steps).
    fn validation(&mut self, _m: &MetricsLine) -> Result<()> {
        Ok(())
    }
    /// After each epoch: the state to save for a resume, and whether the best model changed.
    fn epoch_end(&mut self, _e: &EpochEnd<'_>) -> Result<()> {
        Ok(())
    }
    /// A warning (exploding gradients, skipped steps, early stop).
    fn warn(&mut self, _msg: &str) {}
    /// Information worth a line (memory an estimator needs, a goal reached).
    fn info(&mut self, _msg: &str) {}
}

/// An observer that ignores everything.
pub struct Silent;
impl Observer for Silent {}

/// Several observers, called in order (the first error stops the rest).
pub struct Observers<'a>(pub Vec<&'a mut dyn Observer>);

impl Observer for Observers<'_> {
    fn epoch_start(&mut self, epoch: usize, epochs: usize, steps: u64) {
        self.0.iter_mut().for_each(|o| o.epoch_start(epoch, epochs, steps));
    }
    fn step(&mut self, s: &StepInfo) {
        self.0.iter_mut().for_each(|o| o.step(s));
    }
    fn after_step(&mut self) -> Result<()> {
        self.0.iter_mut().try_for_each(|o| o.after_step())
    }
    fn validation(&mut self, m: &MetricsLine) -> Result<()> {
        self.0.iter_mut().try_for_each(|o| o.validation(m))
    }
    fn epoch_end(&mut self, e: &EpochEnd<'_>) -> Result<()> {
        self.0.iter_mut().try_for_each(|o| o.epoch_end(e))
    }
    fn warn(&mut self, msg: &str) {
        self.0.iter_mut().for_each(|o| o.warn(msg));
    }
    fn info(&mut self, msg: &str) {
        self.0.iter_mut().for_each(|o| o.info(msg));
    }
}

/// Watches the gradient norm step by step: a norm 100 times its recent
/// average (exponential, factor 0.9, after 5 steps) is an explosion worth a
/// warning; warnings are kept for the next metrics line (at most 5 each).
#[derive(Default)]
pub(crate) struct Watch {
    ema: Option<f64>,
    seen: usize,
    warnings: Vec<String>,
}

impl Watch {
    /// Looks at one step's norm; returns a warning for an explosion.
    pub(crate) fn observe(&mut self, norm: f64) -> Option<String> {
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

    /// Keeps a warning for the next metrics line.
    pub(crate) fn note(&mut self, msg: String) {
        if self.warnings.len() < 5 {
            self.warnings.push(msg);
        }
    }

    /// The warnings since the last metrics line.
    pub(crate) fn take(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }
}
