//! Optimizers with PyTorch's update formulas and defaults, gradient clipping
//! and learning-rate schedules. Parameters, gradients and each optimizer state
//! are flat buffers laid out by the model's parameter table.

use crate::error::{check_len, config_err, Result};
use crate::float::Float;
use serde::{Deserialize, Serialize};

crate::choice! {
    /// The optimizers, by name.
    pub enum OptimizerName ("optimizer") {
        /// Stochastic gradient descent (`torch.optim.SGD`).
        Sgd = "sgd",
        /// RMSprop (`torch.optim.RMSprop`).
        Rmsprop = "rmsprop",
        /// Adagrad (`torch.optim.Adagrad`).
        Adagrad = "adagrad",
        /// Adam (`torch.optim.Adam`).
        Adam = "adam",
        /// Adam with decoupled weight decay (`torch.optim.AdamW`).
        Adamw = "adamw",
    }
}

crate::choice! {
    /// The learning-rate schedules, by name (their settings are in [`Schedule`]).
    pub enum ScheduleName ("schedule") {
        /// Constant learning rate.
        Constant = "constant",
        /// `StepLR`.
        Step = "step",
        /// `ExponentialLR`.
        Exponential = "exponential",
        /// Linear warm-up, then cosine annealing.
        Cosine = "cosine",
        /// `ReduceLROnPlateau`.
        Plateau = "plateau",
    }
}

/// An optimizer and its hyper-parameters (PyTorch's names and defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum OptimizerKind {
    /// Stochastic gradient descent (`torch.optim.SGD`).
    Sgd {
        /// Learning rate.
        lr: f64,
        /// Momentum factor.
        momentum: f64,
        /// Dampening of the momentum.
        dampening: f64,
        /// Nesterov momentum.
        nesterov: bool,
        /// L2 penalty added to the gradient (decoupled for AdamW).
        weight_decay: f64,
    },
    /// RMSprop (`torch.optim.RMSprop`).
    Rmsprop {
        /// Learning rate.
        lr: f64,
        /// Smoothing constant of the squared-gradient average.
        alpha: f64,
        /// Added to the denominator for stability.
        eps: f64,
        /// L2 penalty added to the gradient (decoupled for AdamW).
        weight_decay: f64,
        /// Momentum factor.
        momentum: f64,
        /// Normalise by the variance estimate instead of the second moment.
        centered: bool,
    },
    /// Adagrad (`torch.optim.Adagrad`).
    Adagrad {
        /// Learning rate.
        lr: f64,
        /// Learning-rate decay per step.
        lr_decay: f64,
        /// L2 penalty added to the gradient (decoupled for AdamW).
        weight_decay: f64,
        /// Starting value of the squared-gradient sum.
        initial_accumulator_value: f64,
        /// Added to the denominator for stability.
        eps: f64,
    },
    /// Adam (`torch.optim.Adam`).
    Adam {
        /// Learning rate.
        lr: f64,
        /// Decay of the first-moment average.
        beta1: f64,
        /// Decay of the second-moment average.
        beta2: f64,
        /// Added to the denominator for stability.
        eps: f64,
        /// L2 penalty added to the gradient (decoupled for AdamW).
        weight_decay: f64,
        /// Use the maximum of past second moments (AMSGrad).
        amsgrad: bool,
    },
    /// AdamW (`torch.optim.AdamW`): Adam with decoupled weight decay.
    Adamw {
        /// Learning rate.
        lr: f64,
        /// Decay of the first-moment average.
        beta1: f64,
        /// Decay of the second-moment average.
        beta2: f64,
        /// Added to the denominator for stability.
        eps: f64,
        /// L2 penalty added to the gradient (decoupled for AdamW).
        weight_decay: f64,
        /// Use the maximum of past second moments (AMSGrad).
        amsgrad: bool,
    },
}

impl OptimizerKind {
    /// PyTorch's defaults for the optimizer called `name`, with learning rate `lr`.
    pub fn default_for(name: &str, lr: f64) -> Result<Self> {
        Ok(Self::defaults(name.parse()?, lr))
    }

    /// PyTorch's defaults for `name`, with learning rate `lr`.
    pub fn defaults(name: OptimizerName, lr: f64) -> Self {
        match name {
            OptimizerName::Sgd => {
                OptimizerKind::Sgd { lr, momentum: 0.0, dampening: 0.0, nesterov: false, weight_decay: 0.0 }
            }
            OptimizerName::Rmsprop => {
                OptimizerKind::Rmsprop { lr, alpha: 0.99, eps: 1e-8, weight_decay: 0.0, momentum: 0.0, centered: false }
            }
            OptimizerName::Adagrad => OptimizerKind::Adagrad {
                lr,
                lr_decay: 0.0,
                weight_decay: 0.0,
                initial_accumulator_value: 0.0,
                eps: 1e-10,
            },
            OptimizerName::Adam => {
                OptimizerKind::Adam { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, amsgrad: false }
            }
            OptimizerName::Adamw => {
                OptimizerKind::Adamw { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01, amsgrad: false }
            }
        }
    }

    /// Which optimizer this is.
    pub fn name(&self) -> OptimizerName {
        match self {
            OptimizerKind::Sgd { .. } => OptimizerName::Sgd,
            OptimizerKind::Rmsprop { .. } => OptimizerName::Rmsprop,
            OptimizerKind::Adagrad { .. } => OptimizerName::Adagrad,
            OptimizerKind::Adam { .. } => OptimizerName::Adam,
            OptimizerKind::Adamw { .. } => OptimizerName::Adamw,
        }
    }

    /// The base learning rate.
    pub fn lr(&self) -> f64 {
        match *self {
            OptimizerKind::Sgd { lr, .. }
            | OptimizerKind::Rmsprop { lr, .. }
            | OptimizerKind::Adagrad { lr, .. }
            | OptimizerKind::Adam { lr, .. }
            | OptimizerKind::Adamw { lr, .. } => lr,
        }
    }

    fn validate(&self) -> Result<()> {
        let lr = self.lr();
        if !(lr >= 0.0 && lr.is_finite()) {
            return Err(config_err("lr", lr, "must be a finite number >= 0"));
        }
        let check01 = |what: &str, v: f64| {
            if (0.0..1.0).contains(&v) {
                Ok(())
            } else {
                Err(config_err(what, v, "must be in [0, 1)"))
            }
        };
        match *self {
            OptimizerKind::Sgd { momentum, nesterov, dampening, .. } => {
                if momentum < 0.0 {
                    return Err(config_err("momentum", momentum, "must be >= 0"));
                }
                if nesterov && (momentum <= 0.0 || dampening != 0.0) {
                    return Err(config_err("nesterov", true, "needs momentum > 0 and dampening = 0 (as in PyTorch)"));
                }
            }
            OptimizerKind::Rmsprop { alpha, eps, .. } => {
                check01("alpha", alpha)?;
                if eps < 0.0 {
                    return Err(config_err("eps", eps, "must be >= 0"));
                }
            }
            OptimizerKind::Adagrad { lr_decay, initial_accumulator_value, .. } => {
                if lr_decay < 0.0 || initial_accumulator_value < 0.0 {
                    return Err(config_err(
                        "lr_decay / initial_accumulator_value",
                        format!("{lr_decay} / {initial_accumulator_value}"),
                        "must be >= 0",
                    ));
                }
            }
            OptimizerKind::Adam { beta1, beta2, .. } | OptimizerKind::Adamw { beta1, beta2, .. } => {
                check01("beta1", beta1)?;
                check01("beta2", beta2)?;
            }
        }
        Ok(())
    }
}

/// An optimizer with its state: `slots` flat buffers the size of the parameters.
#[derive(Clone, Debug)]
pub struct Optimizer<F> {
    /// The algorithm and its hyper-parameters.
    pub kind: OptimizerKind,
    /// Learning rate used by the next step (schedules change it).
    pub lr: f64,
    /// Steps taken so far.
    pub step: u64,
    /// State buffers [P] each: momentum / square averages / sums / moments.
    pub slots: Vec<Vec<F>>,
}

impl<F: Float> Optimizer<F> {
    /// A fresh optimizer for `num_params` parameters.
    pub fn new(kind: OptimizerKind, num_params: usize) -> Result<Self> {
        kind.validate()?;
        let zeros = || vec![F::zero(); num_params];
        let slots = match &kind {
            OptimizerKind::Sgd { .. } => vec![zeros()],
            // square average, grad average (centered), momentum buffer
            OptimizerKind::Rmsprop { .. } => vec![zeros(), zeros(), zeros()],
            OptimizerKind::Adagrad { initial_accumulator_value, .. } => {
                vec![vec![F::of(*initial_accumulator_value); num_params]]
            }
            // exp_avg, exp_avg_sq, max_exp_avg_sq
            OptimizerKind::Adam { .. } | OptimizerKind::Adamw { .. } => vec![zeros(), zeros(), zeros()],
        };
        Ok(Optimizer { lr: kind.lr(), kind, step: 0, slots })
    }

    /// One update of `params` [P] with `grads` [P].
    pub fn step(&mut self, params: &mut [F], grads: &[F]) -> Result<()> {
        let n = self.slots[0].len();
        check_len("params", params.len(), n, "[number of parameters]")?;
        check_len("grads", grads.len(), n, "[number of parameters]")?;
        // The update loops, compiled for the CPU's vector instructions.
        crate::simd::dispatch(Update { opt: self, params, grads });
        Ok(())
    }

    #[inline(always)]
    fn update(&mut self, params: &mut [F], grads: &[F]) {
        let n = self.slots[0].len();
        let (params, grads) = (&mut params[..n], &grads[..n]);
        self.step += 1;
        let t = self.step as f64;
        let lr = F::of(self.lr);
        match self.kind.clone() {
            OptimizerKind::Sgd { momentum, dampening, nesterov, weight_decay, .. } => {
                let (mu, damp, wd) = (F::of(momentum), F::of(dampening), F::of(weight_decay));
                let buf = &mut self.slots[0];
                for k in 0..n {
                    let mut g = grads[k] + wd * params[k];
                    if momentum != 0.0 {
                        // PyTorch: the first step copies the gradient into the buffer.
                        buf[k] = if self.step == 1 { g } else { mu * buf[k] + (F::one() - damp) * g };
                        g = if nesterov { g + mu * buf[k] } else { buf[k] };
                    }
                    params[k] -= lr * g;
                }
            }
            OptimizerKind::Rmsprop { alpha, eps, weight_decay, momentum, centered, .. } => {
                let (a, e, wd, mu) = (F::of(alpha), F::of(eps), F::of(weight_decay), F::of(momentum));
                let [sq, avg, buf] = &mut self.slots[..] else { unreachable!("rmsprop has three slots") };
                for k in 0..n {
                    let g = grads[k] + wd * params[k];
                    sq[k] = a * sq[k] + (F::one() - a) * g * g;
                    let denom = if centered {
                        avg[k] = a * avg[k] + (F::one() - a) * g;
                        (sq[k] - avg[k] * avg[k]).sqrt() + e
                    } else {
                        sq[k].sqrt() + e
                    };
                    if momentum > 0.0 {
                        buf[k] = mu * buf[k] + g / denom;
                        params[k] -= lr * buf[k];
                    } else {
                        params[k] -= lr * g / denom;
                    }
                }
            }
            OptimizerKind::Adagrad { lr_decay, weight_decay, eps, .. } => {
                let clr = F::of(self.lr / (1.0 + (t - 1.0) * lr_decay));
                let (wd, e) = (F::of(weight_decay), F::of(eps));
                let sum = &mut self.slots[0];
                for k in 0..n {
                    let g = grads[k] + wd * params[k];
                    sum[k] += g * g;
                    params[k] -= clr * g / (sum[k].sqrt() + e);
                }
            }
            OptimizerKind::Adam { beta1, beta2, eps, weight_decay, amsgrad, .. }
            | OptimizerKind::Adamw { beta1, beta2, eps, weight_decay, amsgrad, .. } => {
                let decoupled = matches!(self.kind, OptimizerKind::Adamw { .. });
                let (b1, b2, e, wd) = (F::of(beta1), F::of(beta2), F::of(eps), F::of(weight_decay));
                let bc1 = 1.0 - beta1.powf(t);
                let bc2_sqrt = F::of((1.0 - beta2.powf(t)).sqrt());
                let step_size = F::of(self.lr / bc1);
                let [m, v, vmax] = &mut self.slots[..] else { unreachable!("adam has three slots") };
                let (m, v) = (&mut m[..n], &mut v[..n]);
                for k in 0..n {
                    let mut g = grads[k];
                    if decoupled {
                        params[k] *= F::one() - lr * wd;
                    } else {
                        g += wd * params[k];
                    }
                    m[k] = b1 * m[k] + (F::one() - b1) * g;
                    v[k] = b2 * v[k] + (F::one() - b2) * g * g;
                    let denom = if amsgrad {
                        vmax[k] = vmax[k].max(v[k]);
                        vmax[k].sqrt() / bc2_sqrt + e
                    } else {
                        v[k].sqrt() / bc2_sqrt + e
                    };
                    params[k] -= step_size * m[k] / denom;
                }
            }
        }
    }
}

/// `Optimizer::update` as a `simd::Kernel`.
struct Update<'a, F> {
    opt: &'a mut Optimizer<F>,
    params: &'a mut [F],
    grads: &'a [F],
}

impl<F: Float> crate::simd::Kernel for Update<'_, F> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        self.opt.update(self.params, self.grads)
    }
}

/// Global L2 norm of `grads`, computed in f64.
pub fn grad_norm<F: Float>(grads: &[F]) -> f64 {
    grads
        .iter()
        .map(|g| {
            let v = g.to_f64().unwrap_or(f64::NAN);
            v * v
        })
        .sum::<f64>()
        .sqrt()
}

/// Scales `grads` so their global L2 norm is at most `max_norm`, exactly as
/// `torch.nn.utils.clip_grad_norm_` (factor min(1, max_norm / (norm + 1e-6))).
/// Returns the norm before clipping.
pub fn clip_grad_norm<F: Float>(grads: &mut [F], max_norm: f64) -> f64 {
    let norm = grad_norm(grads);
    let coef = (max_norm / (norm + 1e-6)).min(1.0);
    let c = F::of(coef);
    for g in grads.iter_mut() {
        *g *= c;
    }
    norm
}

/// Clamps every gradient to [-clip, clip] (`clip_grad_value_`). Returns how
/// many values were clamped.
pub fn clip_grad_value<F: Float>(grads: &mut [F], clip: f64) -> usize {
    let (lo, hi) = (F::of(-clip), F::of(clip));
    let mut n = 0;
    for g in grads.iter_mut() {
        if *g > hi {
            *g = hi;
            n += 1;
        } else if *g < lo {
            *g = lo;
            n += 1;
        }
    }
    n
}

/// A learning-rate schedule, stepped once per epoch (or per validation).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    /// Constant learning rate.
    Constant,
    /// lr * gamma^(epoch / step_size) (`StepLR`).
    Step {
        /// Epochs between decays.
        step_size: usize,
        /// Decay factor.
        gamma: f64,
    },
    /// lr * gamma^epoch (`ExponentialLR`).
    Exponential {
        /// Decay factor per epoch.
        gamma: f64,
    },
    /// Linear warm-up from `start_factor * lr` over `warmup_epochs`, then
    /// cosine annealing to `eta_min` at `total_epochs` (PyTorch's
    /// SequentialLR of LinearLR and CosineAnnealingLR).
    CosineWarmup {
        /// Epochs of linear warm-up.
        warmup_epochs: usize,
        /// Fraction of lr the warm-up starts at.
        start_factor: f64,
        /// Epoch at which the annealing reaches `eta_min`.
        total_epochs: usize,
        /// Final learning rate.
        eta_min: f64,
    },
    /// `ReduceLROnPlateau` in 'min' mode with a relative threshold.
    Plateau {
        /// Factor the learning rate is multiplied by on a plateau.
        factor: f64,
        /// Epochs without improvement tolerated.
        patience: usize,
        /// Relative improvement that counts.
        threshold: f64,
        /// Epochs to wait after a reduction.
        cooldown: usize,
        /// Lower bound of the learning rate.
        min_lr: f64,
    },
}

/// A schedule with its running state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scheduler {
    /// The schedule.
    pub schedule: Schedule,
    /// The learning rate it scales.
    pub base_lr: f64,
    /// Epochs stepped so far.
    pub epoch: usize,
    /// Current learning rate.
    pub lr: f64,
    /// Best metric so far (None before the first).
    best: Option<f64>,
    bad_epochs: usize,
    cooldown_left: usize,
}

impl Scheduler {
    /// A scheduler starting at `base_lr`.
    pub fn new(schedule: Schedule, base_lr: f64) -> Result<Self> {
        match &schedule {
            Schedule::Step { step_size: 0, .. } => return Err(config_err("step_size", 0, "must be at least 1")),
            Schedule::CosineWarmup { warmup_epochs, total_epochs, start_factor, .. } => {
                if warmup_epochs >= total_epochs {
                    return Err(config_err(
                        "warmup_epochs",
                        warmup_epochs,
                        format!("must be below total_epochs = {total_epochs}"),
                    ));
                }
                if !(*start_factor > 0.0 && *start_factor <= 1.0) {
                    return Err(config_err("start_factor", start_factor, "must be in (0, 1]"));
                }
            }
            Schedule::Plateau { factor, .. } if !(*factor > 0.0 && *factor < 1.0) => {
                return Err(config_err("factor", factor, "must be in (0, 1)"));
            }
            _ => {}
        }
        let mut s = Scheduler { schedule, base_lr, epoch: 0, lr: base_lr, best: None, bad_epochs: 0, cooldown_left: 0 };
        s.lr = s.lr_at(0);
        Ok(s)
    }

    fn lr_at(&self, e: usize) -> f64 {
        let b = self.base_lr;
        match self.schedule {
            Schedule::Constant | Schedule::Plateau { .. } => self.lr,
            Schedule::Step { step_size, gamma } => b * gamma.powi((e / step_size) as i32),
            Schedule::Exponential { gamma } => b * gamma.powi(e as i32),
            Schedule::CosineWarmup { warmup_epochs, start_factor, total_epochs, eta_min } => {
                if e < warmup_epochs {
                    b * (start_factor + (1.0 - start_factor) * e as f64 / warmup_epochs as f64)
                } else {
                    let tmax = (total_epochs - warmup_epochs) as f64;
                    let k = (e - warmup_epochs) as f64;
                    eta_min + (b - eta_min) * (1.0 + (std::f64::consts::PI * k / tmax).cos()) / 2.0
                }
            }
        }
    }

    /// Ends an epoch: `metric` is the validation loss (used by Plateau only).
    /// Returns the learning rate for the next epoch.
    pub fn step(&mut self, metric: Option<f64>) -> f64 {
        self.epoch += 1;
        if let Schedule::Plateau { factor, patience, threshold, cooldown, min_lr } = self.schedule {
            if let Some(m) = metric {
                if self.best.is_none_or(|b| m < b * (1.0 - threshold)) {
                    self.best = Some(m);
                    self.bad_epochs = 0;
                } else {
                    self.bad_epochs += 1;
                }
                if self.cooldown_left > 0 {
                    self.cooldown_left -= 1;
                    self.bad_epochs = 0;
                }
                if self.bad_epochs > patience {
                    let new = (self.lr * factor).max(min_lr);
                    if self.lr - new > 1e-8 {
                        self.lr = new;
                    }
                    self.cooldown_left = cooldown;
                    self.bad_epochs = 0;
                }
            }
        } else {
            self.lr = self.lr_at(self.epoch);
        }
        self.lr
    }
}
