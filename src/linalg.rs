//! Matrix products: the one leaf module that calls the GEMM crate through
//! `unsafe`, with a plain safe twin (`gemm_naive`) that tests compare against.
//!
//! All matrices are row-major and contiguous. `op(A)` is `A` (stored m x k) or
//! `Aᵀ` (A stored k x m); the transpose is free, it only swaps strides.

use crate::float::Float;

/// Whether an operand is used as stored or transposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tr {
    /// As stored.
    N,
    /// Transposed.
    T,
}

fn strides(tr: Tr, rows: usize, cols: usize) -> (isize, isize) {
    // rows x cols is the shape of op(X); the stored matrix is rows x cols (N) or cols x rows (T).
    match tr {
        Tr::N => (cols as isize, 1),
        Tr::T => (1, rows as isize),
    }
}

/// C[m, n] = alpha * op(A)[m, k] * op(B)[k, n] + beta * C.
///
/// Panics if a slice is shorter than its shape: callers inside the engine size
/// every buffer from validated shapes, so a panic here is an engine bug.
#[allow(clippy::too_many_arguments)]
pub fn gemm<F: Float>(m: usize, k: usize, n: usize, alpha: F, a: &[F], ta: Tr, b: &[F], tb: Tr, beta: F, c: &mut [F]) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n, "gemm: buffer shorter than {m}x{k}x{n}");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for v in &mut c[..m * n] {
            *v = if beta == F::zero() { F::zero() } else { *v * beta };
        }
        return;
    }
    let (rsa, csa) = strides(ta, m, k);
    let (rsb, csb) = strides(tb, k, n);
    // SAFETY: the lengths were checked above against the shapes and strides
    // describe exactly those row-major matrices; `c` is a unique borrow.
    unsafe {
        F::gemm_raw(m, k, n, alpha, a.as_ptr(), rsa, csa, b.as_ptr(), rsb, csb, beta, c.as_mut_ptr(), n as isize, 1);
    }
}

/// The plain triple loop, accumulating in f64: the reference for `gemm`.
#[allow(clippy::too_many_arguments)]
pub fn gemm_naive<F: Float>(
    m: usize, k: usize, n: usize, alpha: F, a: &[F], ta: Tr, b: &[F], tb: Tr, beta: F, c: &mut [F],
) {
    let at = |i: usize, p: usize| match ta {
        Tr::N => a[i * k + p],
        Tr::T => a[p * m + i],
    };
    let bt = |p: usize, j: usize| match tb {
        Tr::N => b[p * n + j],
        Tr::T => b[j * k + p],
    };
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f64;
            for p in 0..k {
                s += at(i, p).to_f64().unwrap() * bt(p, j).to_f64().unwrap();
            }
            let old = if beta == F::zero() { F::zero() } else { beta * c[i * n + j] };
            c[i * n + j] = alpha * F::of(s) + old;
        }
    }
}

/// Adds `bias[n]` to every row of `c[m, n]`.
pub fn add_rows<F: Float>(c: &mut [F], bias: &[F]) {
    let n = bias.len();
    if n == 0 {
        return;
    }
    for row in c.chunks_exact_mut(n) {
        for (x, b) in row.iter_mut().zip(bias) {
            *x += *b;
        }
    }
}

/// Adds the column sums of `x[m, n]` to `acc[n]` (a bias gradient).
pub fn sum_rows_into<F: Float>(acc: &mut [F], x: &[F]) {
    let n = acc.len();
    if n == 0 {
        return;
    }
    for row in x.chunks_exact(n) {
        for (a, v) in acc.iter_mut().zip(row) {
            *a += *v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn gemm_matches_naive_on_edge_shapes() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for &(m, k, n) in &[(1, 1, 1), (1, 7, 3), (5, 1, 9), (3, 4, 1), (17, 33, 9), (64, 31, 5), (2, 0, 3)] {
            for ta in [Tr::N, Tr::T] {
                for tb in [Tr::N, Tr::T] {
                    for &beta in &[0.0, 1.0, 0.5] {
                        let a: Vec<f64> = (0..m * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
                        let b: Vec<f64> = (0..k * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
                        let c0: Vec<f64> = (0..m * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
                        let mut c1 = c0.clone();
                        let mut c2 = c0.clone();
                        gemm(m, k, n, 0.7, &a, ta, &b, tb, beta, &mut c1);
                        gemm_naive(m, k, n, 0.7, &a, ta, &b, tb, beta, &mut c2);
                        let tol = 1e-14 * (k as f64 + 1.0);
                        for (x, y) in c1.iter().zip(&c2) {
                            assert!((x - y).abs() <= tol, "{m}x{k}x{n} {ta:?}{tb:?} beta {beta}: {x} vs {y}");
                        }
                    }
                }
            }
        }
    }
}
