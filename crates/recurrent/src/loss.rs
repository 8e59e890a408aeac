//! Losses with PyTorch's definitions and 'mean' reduction over the *counted*
//! elements: positions past a sequence's length are not counted, nor are
//! cross-entropy targets equal to `IGNORE_INDEX`. When nothing is counted (a
//! truncated-BPTT window with no target in it) the loss and gradient are 0.

use crate::error::{check_len, config_err, Error, Result};
use crate::float::Float;
use serde::{Deserialize, Serialize};

/// PyTorch's default `ignore_index` for cross-entropy.
pub const IGNORE_INDEX: i64 = -100;

/// Which loss a model is trained with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// Mean squared error.
    Mse,
    /// Cross-entropy over class indices (logits in, `IGNORE_INDEX` skipped).
    CrossEntropy,
    /// Binary cross-entropy on logits (targets in [0, 1]).
    BceWithLogits,
}

impl LossKind {
    /// Parses the names used by the CLI and the fixtures.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "mse" => Some(LossKind::Mse),
            "ce" | "cross_entropy" => Some(LossKind::CrossEntropy),
            "bce" | "bce_with_logits" => Some(LossKind::BceWithLogits),
            _ => None,
        }
    }
}

/// Targets of a loss: real values [N, O] (MSE, BCE) or class indices [N] (CE).
#[derive(Clone, Copy, Debug)]
pub enum Targets<'a, F> {
    /// Real values [N, O] (MSE, BCE with logits).
    Real(&'a [F]),
    /// Class indices [N] (cross-entropy; `IGNORE_INDEX` skips a row).
    Class(&'a [i64]),
}

/// Loss value and dL/dy for predictions `y` [N, O]; only rows with
/// `counted[row]` take part. Returns (loss, dy [N, O], number of counted elements).
pub fn loss_forward_backward<F: Float>(
    kind: LossKind,
    y: &[F],
    n: usize,
    o: usize,
    targets: Targets<F>,
    counted: &[bool],
) -> Result<(F, Vec<F>, usize)> {
    check_len("predictions", y.len(), n * o, || format!("[N={n}, O={o}]"))?;
    check_len("loss mask", counted.len(), n, || format!("[N={n}]"))?;
    let mut dy = vec![F::zero(); n * o];
    let mut total = 0.0f64;
    let mut count = 0usize;
    match (kind, targets) {
        (LossKind::Mse, Targets::Real(tg)) | (LossKind::BceWithLogits, Targets::Real(tg)) => {
            check_len("targets", tg.len(), n * o, || format!("[N={n}, O={o}]"))?;
            for r in (0..n).filter(|&r| counted[r]) {
                for j in 0..o {
                    let (x, t) = (y[r * o + j], tg[r * o + j]);
                    if !t.is_finite() {
                        return Err(config_err("target", t, format!("at position {} is not finite", r * o + j)));
                    }
                    if kind == LossKind::Mse {
                        let e = x - t;
                        total += (e * e).to_f64().unwrap_or(f64::NAN);
                        dy[r * o + j] = e + e;
                    } else {
                        // max(x, 0) - x t + log(1 + exp(-|x|)), stable for any x
                        let l = x.max(F::zero()) - x * t + (F::one() + (-x.abs()).exp()).ln();
                        total += l.to_f64().unwrap_or(f64::NAN);
                        dy[r * o + j] = x.sigmoid() - t;
                    }
                }
                count += o;
            }
        }
        (LossKind::CrossEntropy, Targets::Class(tg)) => {
            check_len("targets", tg.len(), n, || format!("[N={n}]"))?;
            for r in (0..n).filter(|&r| counted[r]) {
                let c = tg[r];
                if c == IGNORE_INDEX {
                    continue;
                }
                if c < 0 || c as usize >= o {
                    return Err(Error::Class { target: c, position: r, classes: o });
                }
                let row = &y[r * o..(r + 1) * o];
                let m = row.iter().fold(F::neg_infinity(), |a, &b| a.max(b));
                let z: F = row.iter().map(|&v| (v - m).exp()).sum();
                let lse = m + z.ln();
                total += (lse - row[c as usize]).to_f64().unwrap_or(f64::NAN);
                for j in 0..o {
                    dy[r * o + j] = (row[j] - lse).exp();
                }
                dy[r * o + c as usize] -= F::one();
                count += 1;
            }
        }
        (k, _) => {
            return Err(config_err(
                "targets",
                format!("{k:?}"),
                "MSE and BCE take real targets, cross-entropy class indices",
            ))
        }
    }
    if count == 0 {
        return Ok((F::zero(), dy, 0));
    }
    let scale = F::of(1.0 / count as f64);
    for v in &mut dy {
        *v *= scale;
    }
    Ok((F::of(total / count as f64), dy, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_target_kind_and_bad_class_are_errors() {
        let y = [0.1f64, 0.2, 0.3];
        let r = loss_forward_backward(LossKind::Mse, &y, 1, 3, Targets::Class(&[1]), &[true]);
        assert!(matches!(r, Err(Error::Config { .. })));
        let r = loss_forward_backward(LossKind::CrossEntropy, &y, 1, 3, Targets::<f64>::Class(&[3]), &[true]);
        assert_eq!(r.unwrap_err(), Error::Class { target: 3, position: 0, classes: 3 });
        let (l, dy, n) =
            loss_forward_backward(LossKind::CrossEntropy, &y, 1, 3, Targets::<f64>::Class(&[IGNORE_INDEX]), &[true])
                .unwrap();
        assert_eq!((l, n), (0.0, 0));
        assert!(dy.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn losses_match_finite_differences() {
        let y = [0.3f64, -1.2, 2.0, 0.1, 0.5, -0.7];
        let real = [0.0f64, 1.0, 1.0, 0.0, 0.2, 1.0];
        let cls = [2i64, 0];
        for kind in [LossKind::Mse, LossKind::BceWithLogits, LossKind::CrossEntropy] {
            let tg = if kind == LossKind::CrossEntropy { Targets::Class(&cls) } else { Targets::Real(&real) };
            let (_, dy, _) = loss_forward_backward(kind, &y, 2, 3, tg, &[true, true]).unwrap();
            for k in 0..6 {
                let (mut a, mut b) = (y, y);
                a[k] += 1e-6;
                b[k] -= 1e-6;
                let la = loss_forward_backward(kind, &a, 2, 3, tg, &[true, true]).unwrap().0;
                let lb = loss_forward_backward(kind, &b, 2, 3, tg, &[true, true]).unwrap().0;
                let fd = (la - lb) / 2e-6;
                assert!((fd - dy[k]).abs() < 1e-8, "{kind:?} {k}: {fd} vs {}", dy[k]);
            }
        }
    }
}
