//! Synthetic tasks, generated from a caller-seeded random number generator
//! so that a run is reproducible from its seed.
//!
//! - [`mackey_glass`]: a chaotic series, the classic forecasting benchmark;
//! - [`adding_problem`]: remember two marked values over a long sequence;
//! - [`copy_task`]: reproduce a random string after a long delay.

use rand::Rng;
use recurrent::error::{config_err, Result};
use recurrent::loss::IGNORE_INDEX;

/// Mackey-Glass production rate β.
const MG_BETA: f64 = 0.2;
/// Mackey-Glass decay rate γ.
const MG_GAMMA: f64 = 0.1;
/// Mackey-Glass nonlinearity exponent (the "n" of the usual notation).
const MG_EXPONENT: i32 = 10;
/// Integration steps per time unit (dt = 0.1).
const MG_STEPS_PER_UNIT: usize = 10;
/// Time units integrated and thrown away before sampling starts, so the
/// series starts on the attractor rather than on the flat initial history.
const MG_TRANSIENT_UNITS: usize = 500;

/// `n` samples of the Mackey-Glass delay differential equation
///
/// ```text
/// dx/dt = β x(t-τ) / (1 + x(t-τ)^10) - γ x(t),   β = 0.2, γ = 0.1,
/// ```
///
/// with delay τ = `tau` time units (17 gives the usual mildly chaotic
/// benchmark, 30 a harder one). It is integrated with fourth-order
/// Runge-Kutta at dt = 0.1; the delayed term at the half step is the mean of
/// the two neighbouring stored values (linear interpolation), since the
/// history is only stored on the grid. The history for t ≤ 0 is constant at
/// x0 = 1.2 + 0.01·U(-1, 1): the jitter, drawn from `rng`, makes different
/// seeds give different (chaotic, hence quickly diverging) series. The
/// first 500 time units are discarded and the series is then sampled every
/// 1.0 time unit. Values stay roughly within 0.2..1.4.
///
/// `tau` must be at least 1 (τ = 0 is an ordinary ODE that decays to a
/// fixed point, not a benchmark).
pub fn mackey_glass(n: usize, tau: usize, rng: &mut impl Rng) -> Result<Vec<f64>> {
    if tau == 0 {
        return Err(config_err("tau", tau, "must be at least 1 time unit"));
    }
    let dt = 1.0 / MG_STEPS_PER_UNIT as f64;
    let delay = tau.checked_mul(MG_STEPS_PER_UNIT).ok_or_else(|| config_err("tau", tau, "is too large"))?;
    let f = |x: f64, delayed: f64| MG_BETA * delayed / (1.0 + delayed.powi(MG_EXPONENT)) - MG_GAMMA * x;

    let x0 = 1.2 + 0.01 * rng.gen_range(-1.0..1.0);
    // Ring buffer of the last delay+1 grid values: x_j lives in slot
    // j mod (delay+1). Filled with x0, it holds the constant history.
    let slots = delay + 1;
    let mut history = vec![x0; slots];
    let mut x = x0;
    let mut out = Vec::with_capacity(n);
    let first_sample = MG_TRANSIENT_UNITS * MG_STEPS_PER_UNIT;
    let mut step = 0usize;
    while out.len() < n {
        if step >= first_sample && (step - first_sample).is_multiple_of(MG_STEPS_PER_UNIT) {
            out.push(x);
        }
        // x(t - τ) and x(t + dt - τ) are the grid values x_{i-delay} and
        // x_{i-delay+1}, i.e. slots (i+1) and (i+2) mod slots.
        let d0 = history[(step + 1) % slots];
        let d1 = history[(step + 2) % slots];
        let dh = 0.5 * (d0 + d1);
        let k1 = f(x, d0);
        let k2 = f(x + 0.5 * dt * k1, dh);
        let k3 = f(x + 0.5 * dt * k2, dh);
        let k4 = f(x + dt * k3, d1);
        x += dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4);
        // x_{i+1} replaces x_{i-delay}, which no later step needs.
        history[(step + 1) % slots] = x;
        step += 1;
    }
    Ok(out)
}

/// The adding problem (Hochreiter & Schmidhuber 1997; Le et al. 2015):
/// `n` sequences of `len` steps with two input channels, laid out
/// `[n, len, 2]`: channel 0 holds values drawn from U(0, 1), channel 1 is a
/// marker that is 1 at exactly two steps, one in the first half
/// (`0..len/2`) and one in the second (`len/2..len`), and 0 elsewhere. The
/// target `[n]` is the sum of the two marked values, so a model must carry
/// the first one across at least half the sequence. Predicting 1 always
/// gives the baseline MSE of about 0.167.
///
/// `len` must be at least 2, one step per half.
pub fn adding_problem(n: usize, len: usize, rng: &mut impl Rng) -> Result<(Vec<f32>, Vec<f32>)> {
    if len < 2 {
        return Err(config_err("len", len, "must be at least 2 (one marker in each half)"));
    }
    let half = len / 2;
    let mut inputs = vec![0.0f32; n * len * 2];
    let mut targets = Vec::with_capacity(n);
    for seq in inputs.chunks_exact_mut(len * 2) {
        for step in seq.chunks_exact_mut(2) {
            step[0] = rng.gen::<f32>();
        }
        let a = rng.gen_range(0..half);
        let b = rng.gen_range(half..len);
        seq[2 * a + 1] = 1.0;
        seq[2 * b + 1] = 1.0;
        targets.push(seq[2 * a] + seq[2 * b]);
    }
    Ok((inputs, targets))
}

/// The copy (memory) task (Hochreiter & Schmidhuber 1997; Arjovsky et al.
/// 2016). Token ids: `0..symbols` are data symbols, `symbols` is the blank,
/// `symbols + 1` the "go" marker, so the vocabulary has `symbols + 2`
/// tokens. Each of the `n` sequences has `T = 2*len + delay` steps:
///
/// ```text
/// step:    0 .. len-1 | len .. len+delay-2 | len+delay-1 | len+delay .. T-1
/// input:   s_0..s_{l-1} | blank ...          | go          | blank ...
/// target:  -100 ...                                        | s_0 .. s_{l-1}
/// ```
///
/// The `len` symbols are drawn uniformly; the model must output them, in
/// order, during the last `len` steps, the only ones scored (targets are
/// [`IGNORE_INDEX`] = -100 elsewhere, so guessing blanks earns nothing).
/// Returns `(tokens [n, T], targets [n, T], T, vocab)`.
///
/// `len`, `delay` (the go marker needs a step) and `symbols` must be at
/// least 1.
pub fn copy_task(
    n: usize,
    len: usize,
    delay: usize,
    symbols: usize,
    rng: &mut impl Rng,
) -> Result<(Vec<usize>, Vec<i64>, usize, usize)> {
    if len == 0 {
        return Err(config_err("len", len, "must be at least 1 symbol to remember"));
    }
    if delay == 0 {
        return Err(config_err("delay", delay, "must be at least 1 (the go marker takes the last delay step)"));
    }
    if symbols == 0 {
        return Err(config_err("symbols", symbols, "must be at least 1"));
    }
    let blank = symbols;
    let go = symbols + 1;
    let steps = 2 * len + delay;
    let mut tokens = vec![blank; n * steps];
    let mut targets = vec![IGNORE_INDEX; n * steps];
    for (seq, tgt) in tokens.chunks_exact_mut(steps).zip(targets.chunks_exact_mut(steps)) {
        for k in 0..len {
            let s = rng.gen_range(0..symbols);
            seq[k] = s;
            tgt[len + delay + k] = s as i64;
        }
        seq[len + delay - 1] = go;
    }
    Ok((tokens, targets, steps, symbols + 2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// The shortest delay (tau = 1, a ring buffer of 11 slots) runs and
    /// stays positive and finite.
    #[test]
    fn mackey_glass_short_delay_runs() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let xs = mackey_glass(50, 1, &mut rng).unwrap();
        assert_eq!(xs.len(), 50);
        assert!(xs.iter().all(|&x| x > 0.0 && x.is_finite()));
    }

    #[test]
    fn copy_task_layout() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let (tok, tgt, t, v) = copy_task(1, 3, 4, 5, &mut rng).unwrap();
        assert_eq!((t, v), (10, 7));
        assert_eq!(&tok[3..7], &[5, 5, 5, 6]);
        assert_eq!(&tok[7..], &[5, 5, 5]);
        assert!(tgt[..7].iter().all(|&x| x == -100));
        assert_eq!(tgt[7..].iter().map(|&x| x as usize).collect::<Vec<_>>(), tok[..3].to_vec());
    }
}
