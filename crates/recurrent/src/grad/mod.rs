//! One interface over every way of computing gradients: full BPTT,
//! truncated BPTT, and the online estimators (RTRL, UORO, SnAp-1, SnAp-2),
//! chosen by name, so the same model, loss and optimizer train with any of
//! them. The trainer (`crate::train`) uses only this.
//!
//! - [`tbptt`]: full and truncated backpropagation through time (the one
//!   truncated-BPTT driver: windows, streams carried across windows);
//! - [`online`]: the influence-matrix estimators (exact RTRL, UORO, SnAp-1, SnAp-2);
//! - [`learner`]: an online learner that updates at every step of an unbounded stream.

pub mod learner;
pub mod online;
pub mod tbptt;

use crate::error::{config_err, Result};
use crate::float::Float;
pub use crate::grad::online::Estimator;
use crate::grad::tbptt::{tbptt, Stream, Truncation};
use crate::loss::Targets;
use crate::model::{swap_leading, Batch, Model, SeqInput};
use rand::Rng;

/// An estimator and its settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EstimatorConfig {
    /// How gradients are computed.
    pub method: Estimator,
    /// Truncated BPTT: k1 steps between updates, k2 steps back-propagated.
    pub truncation: Truncation,
    /// Online estimators: bytes their state may take.
    pub memory_limit: usize,
}

impl EstimatorConfig {
    /// Parses the estimator's name (bptt, tbptt, rtrl, uoro, snap1, snap2).
    pub fn new(name: &str, k1: usize, k2: usize, memory_limit: usize) -> Result<Self> {
        Ok(EstimatorConfig { method: Estimator::parse(name)?, truncation: Truncation::new(k1, k2)?, memory_limit })
    }
}

/// Trains on one batch: computes gradients with the configured estimator and
/// calls `update(model, grads, loss)` for each gradient it produces (once
/// for BPTT and the online estimators, whose parameters stay fixed during the
/// batch; once per window for truncated BPTT). `update` typically clips and
/// takes an optimizer step. Returns the loss of each gradient.
pub fn train_batch<F: Float, R: Rng>(
    model: &mut Model<F>,
    batch: &Batch<F>,
    targets: Targets<F>,
    cfg: &EstimatorConfig,
    rng: &mut R,
    grads: &mut Vec<F>,
    mut update: impl FnMut(&mut Model<F>, &mut [F], f64) -> Result<()>,
) -> Result<Vec<f64>> {
    grads.resize(model.num_params(), F::zero());
    match cfg.method {
        Estimator::Bptt => {
            grads.iter_mut().for_each(|g| *g = F::zero());
            let (loss, _) = model.loss_and_grad(batch, targets, None, grads, Some(rng))?;
            let l = loss.to_f64().unwrap_or(f64::NAN);
            update(model, grads, l)?;
            Ok(vec![l])
        }
        Estimator::Tbptt => {
            let stream = Stream::new(model, batch, targets)?;
            let mut inner: Result<()> = Ok(());
            let mut k = 0;
            let mut window_losses = Vec::new();
            // The windows' losses are known only after the pass; the update sees the gradient.
            let r = tbptt(model, &stream, cfg.truncation, None, Some(rng), |m, g| {
                if inner.is_ok() {
                    inner = update(m, g, f64::NAN);
                }
                k += 1;
                Ok(())
            })?;
            inner?;
            window_losses.extend(r.losses.iter().map(|l| l.to_f64().unwrap_or(f64::NAN)));
            Ok(window_losses)
        }
        online => {
            let (b, t, i) = (batch.batch, batch.seq_len, model.cfg.rnn.input_size);
            if batch.lengths.is_some_and(|l| l.iter().any(|&v| v != t)) {
                return Err(config_err(
                    "estimator",
                    format!("{online:?}"),
                    "online estimators need equal-length sequences in a batch; use bptt or tbptt",
                ));
            }
            let x = match batch.input {
                SeqInput::Dense(x) => x,
                SeqInput::Tokens(_) => {
                    return Err(config_err(
                        "estimator",
                        format!("{online:?}"),
                        "online estimators take real-valued inputs",
                    ))
                }
            };
            crate::error::check_len("x", x.len(), b * t * i, || format!("[B={b}, T={t}, I={i}]"))?;
            let x_tm = if batch.batch_first { swap_leading(x, b, t, i) } else { x.to_vec() };
            // Every-step targets follow the batch's layout; the online pass reads them time-major.
            let every = model.cfg.head == crate::model::HeadKind::Every;
            let o = model.cfg.out_size;
            let (real_tm, class_tm);
            let targets_tm = match targets {
                Targets::Real(v) if every && batch.batch_first => {
                    real_tm = swap_leading(v, b, t, o);
                    Targets::Real(&real_tm)
                }
                Targets::Class(v) if every && batch.batch_first => {
                    class_tm = swap_leading(v, b, t, 1);
                    Targets::Class(&class_tm)
                }
                other => other,
            };
            let seed = rng.gen::<u64>();
            let (loss, g) =
                crate::grad::online::sequence_gradient(model, &x_tm, t, b, targets_tm, online, seed, cfg.memory_limit)?;
            *grads = g;
            let l = loss.to_f64().unwrap_or(f64::NAN);
            update(model, grads, l)?;
            Ok(vec![l])
        }
    }
}
