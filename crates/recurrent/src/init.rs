//! Initialisers that need more than a uniform draw.

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

/// U(lo, hi); lo < hi always holds where it is called (sizes are validated to be >= 1).
pub fn uniform<R: Rng>(rng: &mut R, lo: f64, hi: f64) -> f64 {
    rng.gen_range(lo..hi)
}

/// N(0, 1).
pub fn normal<R: Rng>(rng: &mut R) -> f64 {
    StandardNormal.sample(rng)
}

/// A random orthogonal n x n matrix (row-major), Haar-distributed: QR of a
/// Gaussian matrix by modified Gram-Schmidt, with the signs of R's diagonal
/// folded into Q (as `torch.nn.init.orthogonal_` does).
pub fn orthogonal<R: Rng>(n: usize, rng: &mut R) -> Vec<f64> {
    // Columns of A are orthonormalised in turn; q holds them column-major.
    let mut q: Vec<f64> = (0..n * n).map(|_| normal(rng)).collect();
    for j in 0..n {
        for k in 0..j {
            let dot: f64 = (0..n).map(|i| q[k * n + i] * q[j * n + i]).sum();
            for i in 0..n {
                q[j * n + i] -= dot * q[k * n + i];
            }
        }
        let norm = (0..n).map(|i| q[j * n + i] * q[j * n + i]).sum::<f64>().sqrt();
        // R's diagonal is the norm (positive), so no sign flip is needed here.
        for i in 0..n {
            q[j * n + i] /= norm;
        }
    }
    // Transpose column-major q into row-major output.
    let mut out = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            out[i * n + j] = q[j * n + i];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn orthogonal_is_orthogonal() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for n in [1, 2, 7, 32] {
            let q = orthogonal(n, &mut rng);
            for i in 0..n {
                for j in 0..n {
                    let dot: f64 = (0..n).map(|k| q[i * n + k] * q[j * n + k]).sum();
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!((dot - want).abs() < 1e-10 * n as f64, "n={n} ({i},{j}) {dot}");
                }
            }
        }
    }
}
