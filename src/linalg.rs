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

/// Products up to this many multiply-adds are a plain loop.
const SMALL_WORK: usize = 2048;

/// Work below this many multiply-adds stays on one thread: splitting costs more.
const PAR_MIN_WORK: usize = 1 << 18;

/// C[m, n] = alpha * op(A)[m, k] * op(B)[k, n] + beta * C.
///
/// Runs on the threads of the current rayon pool (`--threads`): a large
/// product is cut into blocks of rows of C (or of columns, when C is short
/// and wide like the per-step product [B, G*H]), one block per thread, each
/// computed by matrixmultiply on one thread. A single row times a transposed
/// matrix (streaming, batch 1) is a plain matrix-vector loop, which
/// matrixmultiply has no fast path for.
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
    if m == 1 && tb == Tr::N && k * n > SMALL_WORK {
        // A row times a matrix stored as is: c += a[p] * (row p of B), rows contiguous.
        // (m = 1: A's one row is contiguous whether or not it is transposed.)
        if beta == F::zero() {
            c[..n].iter_mut().for_each(|v| *v = F::zero());
        } else if beta != F::one() {
            c[..n].iter_mut().for_each(|v| *v *= beta);
        }
        for (p, &ap) in a[..k].iter().enumerate() {
            let w = alpha * ap;
            if w != F::zero() {
                axpy(w, &b[p * n..(p + 1) * n], &mut c[..n]);
            }
        }
        return;
    }
    if m * n * k <= SMALL_WORK || (m == 1 && tb == Tr::T) {
        // Tiny products (streaming, heads of width 1) and row-times-matrixᵀ
        // (streaming at batch 1): matrixmultiply's packing costs more than
        // the arithmetic, and it has no matrix-vector path.
        if ta == Tr::N && tb == Tr::T {
            // Rows of A and rows of B are both contiguous: one dot product each.
            for i in 0..m {
                let ai = &a[i * k..(i + 1) * k];
                for j in 0..n {
                    let s = dot(ai, &b[j * k..(j + 1) * k]);
                    let cv = &mut c[i * n + j];
                    *cv = alpha * s + if beta == F::zero() { F::zero() } else { beta * *cv };
                }
            }
            return;
        }
        let at = |i: usize, p: usize| match ta {
            Tr::N => a[i * k + p],
            Tr::T => a[p * m + i],
        };
        for i in 0..m {
            for j in 0..n {
                let mut acc = F::zero();
                for p in 0..k {
                    let bv = match tb {
                        Tr::N => b[p * n + j],
                        Tr::T => b[j * k + p],
                    };
                    acc += at(i, p) * bv;
                }
                let cv = &mut c[i * n + j];
                *cv = alpha * acc + if beta == F::zero() { F::zero() } else { beta * *cv };
            }
        }
        return;
    }
    let (rsa, csa) = strides(ta, m, k);
    let (rsb, csb) = strides(tb, k, n);
    let threads = rayon::current_num_threads();
    let parts = if threads > 1 && m * n * k >= PAR_MIN_WORK { threads } else { 1 };
    let ap = SendPtr(a.as_ptr() as *mut F);
    let bp = SendPtr(b.as_ptr() as *mut F);
    let cp = SendPtr(c.as_mut_ptr());
    // One block of C: rows [r0, r1) x columns [c0, c1).
    let block = |r0: usize, r1: usize, c0: usize, c1: usize| {
        // SAFETY: lengths were checked above against the shapes; the strides
        // describe exactly those row-major matrices; blocks of C given to
        // different threads are disjoint, and A and B are only read.
        unsafe {
            F::gemm_raw(
                r1 - r0,
                k,
                c1 - c0,
                alpha,
                ap.get().offset(r0 as isize * rsa),
                rsa,
                csa,
                bp.get().offset(c0 as isize * csb),
                rsb,
                csb,
                beta,
                cp.get().add(r0 * n + c0),
                n as isize,
                1,
            );
        }
    };
    if parts == 1 {
        block(0, m, 0, n);
    } else if m >= n || m >= 4 * parts {
        let step = m.div_ceil(parts);
        rayon::scope(|s| {
            for r0 in (0..m).step_by(step) {
                s.spawn(move |_| block(r0, (r0 + step).min(m), 0, n));
            }
        });
    } else {
        // Short and wide: split columns, in multiples of 16 to keep kernel tiles whole.
        let step = n.div_ceil(parts).div_ceil(16) * 16;
        rayon::scope(|s| {
            for c0 in (0..n).step_by(step) {
                s.spawn(move |_| block(0, m, c0, (c0 + step).min(n)));
            }
        });
    }
}

/// Dot product of two equal-length slices. On x86-64 with AVX2 and FMA
/// (checked at run time; the default build targets plain x86-64) the same
/// loop is compiled for those instructions, with fused multiply-adds.
#[inline]
pub fn dot<F: Float>(x: &[F], y: &[F]) -> F {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports the features this function is compiled for.
            return unsafe { dot_avx2_fma(x, y) };
        }
    }
    dot_portable(x, y)
}

/// y += a x, compiled for AVX2 and FMA when the CPU has them.
#[inline]
pub fn axpy<F: Float>(a: F, x: &[F], y: &mut [F]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports the features this function is compiled for.
            return unsafe { axpy_avx2_fma(a, x, y) };
        }
    }
    for (v, xv) in y.iter_mut().zip(x) {
        *v += a * *xv;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_avx2_fma<F: Float>(a: F, x: &[F], y: &mut [F]) {
    for (v, xv) in y.iter_mut().zip(x) {
        *v = a.mul_add(*xv, *v);
    }
}

/// Sixteen independent accumulators, so additions do not wait on each other
/// and the compiler can keep them in SIMD registers.
macro_rules! dot_body {
    ($x:expr, $y:expr, $fma:expr) => {{
        let (x, y) = ($x, $y);
        let mut acc = [F::zero(); 16];
        let (xc, yc) = (x.chunks_exact(16), y.chunks_exact(16));
        let (xr, yr) = (xc.remainder(), yc.remainder());
        for (a, b) in xc.zip(yc) {
            for l in 0..16 {
                acc[l] = if $fma { a[l].mul_add(b[l], acc[l]) } else { acc[l] + a[l] * b[l] };
            }
        }
        for l in 0..8 {
            acc[l] += acc[l + 8];
        }
        let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
        for (a, b) in xr.iter().zip(yr) {
            s += *a * *b;
        }
        s
    }};
}

fn dot_portable<F: Float>(x: &[F], y: &[F]) -> F {
    dot_body!(x, y, false)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2_fma<F: Float>(x: &[F], y: &[F]) -> F {
    dot_body!(x, y, true)
}

/// A raw pointer that may cross threads: `gemm` hands each thread a disjoint
/// block of C, which is what makes this sound.
#[derive(Clone, Copy)]
struct SendPtr<F>(*mut F);
// SAFETY: see `gemm`: concurrent users write disjoint blocks and only read A, B.
unsafe impl<F> Send for SendPtr<F> {}
unsafe impl<F> Sync for SendPtr<F> {}
impl<F> SendPtr<F> {
    fn get(self) -> *mut F {
        self.0
    }
}

/// The plain triple loop, accumulating in f64: the reference for `gemm`.
#[allow(clippy::too_many_arguments)]
pub fn gemm_naive<F: Float>(
    m: usize,
    k: usize,
    n: usize,
    alpha: F,
    a: &[F],
    ta: Tr,
    b: &[F],
    tb: Tr,
    beta: F,
    c: &mut [F],
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
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(check_edge_shapes);
        }
    }

    #[test]
    fn dot_matches_naive() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        for n in [0, 1, 7, 15, 16, 17, 33, 100, 1000] {
            let x: Vec<f64> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let y: Vec<f64> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let want: f64 = x.iter().zip(&y).map(|(a, b)| a * b).sum();
            assert!((dot(&x, &y) - want).abs() < 1e-13 * (n as f64 + 1.0));
            assert!((dot_portable(&x, &y) - want).abs() < 1e-13 * (n as f64 + 1.0));
        }
    }

    fn check_edge_shapes() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for &(m, k, n) in &[
            (1, 1, 1),
            (1, 7, 3),
            (1, 300, 1030),
            (5, 1, 9),
            (3, 4, 1),
            (17, 33, 9),
            (64, 31, 5),
            (2, 0, 3),
            (97, 65, 83),
            (5, 130, 1001),
            (700, 40, 17),
        ] {
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
