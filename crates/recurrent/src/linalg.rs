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

/// Columns per panel of a packed matrix: two AVX-512 registers of f32.
pub const NR: usize = 32;

/// Rows of C per micro-kernel call: 8 x 2 accumulators leave registers for
/// the two B vectors and the broadcast of A.
const MR: usize = 8;

/// Half a panel: the columns of one AVX2 tile (two registers of 8 f32).
const NH: usize = NR / 2;

/// Rows of a panel per k-block: KC x NR f32 is 32 KiB, inside L1.
const KC: usize = 256;

/// Whether `F` is f32 (the type the SIMD micro-kernels are written for).
fn is_f32<F: 'static>() -> bool {
    std::any::TypeId::of::<F>() == std::any::TypeId::of::<f32>()
}

/// A right-hand side op(B) [K, N] packed once into column panels of `NR`:
/// panel p holds the K x NR values of columns p*NR..(p+1)*NR (zero past N)
/// contiguously, in one of two layouts:
/// - rows [K, NR] (`split` false): what the AVX-512 kernel reads, a whole
///   row of the panel (two 64-byte lines) per k;
/// - split [K/KC blocks][2 halves][kc, NH] (`split` true): each block of KC
///   rows stores the panel's first NH columns, then its last NH. An AVX2 tile
///   covers half a panel, and with rows interleaved it read every other
///   64-byte line of a 32 KiB block (the other half's lines, fetched along,
///   crowded L1); split, each half of a block is one sequential 16 KiB
///   stream, and one line is one row of a tile.
///
/// The first value sits on a 64-byte boundary, so each NH-wide row of a
/// half is exactly one cache line (glibc's large blocks start 16 bytes past
/// a page).
///
/// Why: the per-step products of a recurrent network multiply a new small
/// left-hand side (B rows of states or gate gradients) by the *same* weight
/// matrix T times; a general GEMM re-packs that matrix on every call (21 % of
/// an LM training step before this existed). Packing it once per sequence
/// sweep and running the micro-kernel straight on the panels removes that.
#[derive(Debug, Default)]
pub struct Packed<F> {
    k: usize,
    n: usize,
    /// The split layout (see above) rather than rows.
    split: bool,
    /// Index in `data` of the first packed value (on a 64-byte boundary).
    off: usize,
    /// [ceil(N/NR), K, NR] values from `off` on (see the layouts above).
    data: Vec<F>,
}

impl<F: Float> Packed<F> {
    /// An empty packing; `pack` fills it (and reuses its allocation later).
    pub fn new() -> Self {
        Packed { k: 0, n: 0, split: true, off: 0, data: Vec::new() }
    }

    /// Packs op(B) [K, N] (B stored [K, N] for `Tr::N`, [N, K] for `Tr::T`),
    /// in the layout of the micro-kernel this CPU runs: rows for the f32
    /// AVX-512 kernel, split for everything else.
    pub fn pack(&mut self, k: usize, n: usize, b: &[F], tb: Tr) {
        let rows = is_f32::<F>() && crate::simd::detected() == crate::simd::Level::Avx512;
        self.pack_layout(k, n, b, tb, !rows);
    }

    /// `pack` in a given layout (tests run every kernel on both).
    fn pack_layout(&mut self, k: usize, n: usize, b: &[F], tb: Tr, split: bool) {
        assert!(b.len() >= k * n, "pack: buffer shorter than {k}x{n}");
        let panels = n.div_ceil(NR);
        let len = panels * k * NR;
        self.k = k;
        self.n = n;
        self.split = split;
        let vals = self.alloc(len);
        for p in 0..panels {
            let (c0, c1) = (p * NR, ((p + 1) * NR).min(n));
            let panel = &mut vals[p * k * NR..(p + 1) * k * NR];
            for k0 in (0..k).step_by(KC) {
                let kc = (k - k0).min(KC);
                let blk = &mut panel[k0 * NR..(k0 + kc) * NR];
                let at = |kk: usize, h: usize| half_row(kc, kk, h, split);
                match tb {
                    Tr::N => {
                        // Rows of B are contiguous: copy each half row.
                        for kk in 0..kc {
                            let row = &b[(k0 + kk) * n..(k0 + kk + 1) * n];
                            for h in 0..2 {
                                let (j0, j1) = (c0 + h * NH, (c0 + (h + 1) * NH).min(c1));
                                if j0 < j1 {
                                    blk[at(kk, h)..at(kk, h) + (j1 - j0)].copy_from_slice(&row[j0..j1]);
                                }
                            }
                        }
                    }
                    Tr::T => {
                        // Column j of op(B) is row j of the stored matrix: a
                        // transpose, eight columns at a time (eight rows read in
                        // order, eight values written side by side per k).
                        const W: usize = 8;
                        let mut j = c0;
                        while j < c1 {
                            let w = (c1 - j).min(W).min(NH - (j - c0) % NH);
                            let (h, jj) = ((j - c0) / NH, (j - c0) % NH);
                            // (Slots t >= w repeat the last row; they are not read.)
                            let rows: [&[F]; W] = std::array::from_fn(|t| {
                                let r = (j + t.min(w - 1)) * k + k0;
                                &b[r..r + kc]
                            });
                            for kk in 0..kc {
                                let dst = &mut blk[at(kk, h) + jj..at(kk, h) + jj + w];
                                for (t, d) in dst.iter_mut().enumerate() {
                                    *d = rows[t][kk];
                                }
                            }
                            j += w;
                        }
                    }
                }
            }
        }
    }

    /// Zeroes `len` values starting on a 64-byte line (sets `off`) and
    /// returns them.
    fn alloc(&mut self, len: usize) -> &mut [F] {
        let size = std::mem::size_of::<F>();
        self.data.clear();
        self.data.resize(len + 64 / size, F::zero());
        self.off = (64 - self.data.as_ptr() as usize % 64) % 64 / size;
        &mut self.data[self.off..self.off + len]
    }

    /// The packed values [ceil(N/NR), K, NR].
    fn vals(&self) -> &[F] {
        &self.data[self.off..self.off + self.n.div_ceil(NR) * self.k * NR]
    }

    /// (K, N) of the packed op(B).
    pub fn shape(&self) -> (usize, usize) {
        (self.k, self.n)
    }
}

/// Where the NH values of row kk, half h, of a block of kc rows of a panel
/// start inside the block (the two layouts of `Packed`). The AVX2 kernels
/// walk the split layout with the same arithmetic: half h at h * kc * NH,
/// rows NH apart.
#[inline]
fn half_row(kc: usize, kk: usize, h: usize, split: bool) -> usize {
    if split {
        (h * kc + kk) * NH
    } else {
        kk * NR + h * NH
    }
}

/// A copy whose values start on a 64-byte line again (a plain copy of `data`
/// would keep `off` but not the alignment).
impl<F: Float> Clone for Packed<F> {
    fn clone(&self) -> Self {
        let mut p = Packed { k: self.k, n: self.n, split: self.split, off: 0, data: Vec::new() };
        p.alloc(self.vals().len()).copy_from_slice(self.vals());
        p
    }
}

/// C[m, n] = A[m, k] * op(B) + beta * C, with A and C row-major and
/// contiguous and op(B) packed. Splits the panels over the threads of the
/// current rayon pool when the product is large enough. Made for the
/// per-step products (m = rows of a batch): the AVX2 kernel keeps a
/// repacked copy of A (m x k values) per thread for the next call.
pub fn gemm_packed<F: Float>(m: usize, a: &[F], b: &Packed<F>, beta: F, c: &mut [F]) {
    gemm_packed_threads(m, a, b, beta, c, rayon::current_num_threads())
}

/// `gemm_packed` on at most `threads` threads of the current pool (1: this
/// thread only, for callers that already split the work between threads).
pub fn gemm_packed_threads<F: Float>(m: usize, a: &[F], b: &Packed<F>, beta: F, c: &mut [F], threads: usize) {
    let (k, n) = (b.k, b.n);
    assert!(a.len() >= m * k && c.len() >= m * n, "gemm_packed: buffer shorter than {m}x{k}x{n}");
    if m == 0 || n == 0 {
        return;
    }
    let panels = n.div_ceil(NR);
    let parts = if threads > 1 && m * n * k >= PAR_MIN_WORK / 2 { threads.min(panels) } else { 1 };
    let cp = SendPtr(c.as_mut_ptr());
    let run = |p0: usize, p1: usize| {
        // SAFETY: c holds m x n values (checked above); blocks of panels
        // [p0, p1) write the disjoint column ranges [p0*NR, p1*NR) of C.
        unsafe { packed_panels(m, k, n, a, b.vals(), b.split, p0, p1, beta, cp.get()) }
    };
    split_join(0, panels, parts, &run);
}

/// Runs `f` over [lo, hi) cut into `parts` nearly equal ranges, in parallel
/// by recursive `rayon::join` (which, unlike a scope, allocates nothing).
fn split_join(lo: usize, hi: usize, parts: usize, f: &(impl Fn(usize, usize) + Sync)) {
    if parts <= 1 || hi - lo <= 1 {
        f(lo, hi);
        return;
    }
    let left = parts / 2;
    let mid = lo + (hi - lo) * left / parts;
    rayon::join(|| split_join(lo, mid, left, f), || split_join(mid, hi, parts - left, f));
}

/// Panels [p0, p1) of `gemm_packed`, on one thread, with the best
/// micro-kernel this CPU has (within `simd::set_cap`).
///
/// # Safety
/// `c` points to a row-major m x n matrix that no one else writes in columns
/// [p0*NR, p1*NR); `a` and `bp` hold the shapes `gemm_packed` checked, `bp`
/// in the layout `split` says.
#[allow(clippy::too_many_arguments)]
unsafe fn packed_panels<F: Float>(
    m: usize,
    k: usize,
    n: usize,
    a: &[F],
    bp: &[F],
    split: bool,
    p0: usize,
    p1: usize,
    beta: F,
    c: *mut F,
) {
    packed_panels_at(crate::simd::level(), m, k, n, a, bp, split, p0, p1, beta, c)
}

/// `packed_panels` with the micro-kernel of `level` (or of a lower level when
/// the CPU lacks it): tests run every level the CPU has against the plain loop.
/// Each micro-kernel reads one layout (AVX-512: rows; AVX2: split); the
/// portable loop, with or without FMA, reads both, and runs when the level
/// and the layout do not match (a cap lowered after packing).
///
/// # Safety
/// As `packed_panels`.
#[allow(clippy::too_many_arguments)]
unsafe fn packed_panels_at<F: Float>(
    level: crate::simd::Level,
    m: usize,
    k: usize,
    n: usize,
    a: &[F],
    bp: &[F],
    split: bool,
    p0: usize,
    p1: usize,
    beta: F,
    c: *mut F,
) {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::simd::Level;
        let level = crate::simd::clamp(level);
        let kernel_level = match (level, split) {
            (Level::Avx512, false) => Level::Avx512,
            (Level::Avx512 | Level::Avx2, true) => Level::Avx2,
            _ => Level::Portable,
        };
        if is_f32::<F>() && kernel_level != Level::Portable {
            let level = kernel_level;
            // SAFETY: F is f32 (checked), so the casts are identities; the CPU
            // has the instructions of `level` (`clamp` checked), and the
            // layout is the one its kernels read (matched above).
            let (a32, b32) = (&*(a as *const [F] as *const [f32]), &*(bp as *const [F] as *const [f32]));
            let beta32 = *(&beta as *const F as *const f32);
            if m == 1 {
                let kernel_1: unsafe fn(usize, &[f32], &[f32], *mut f32, usize, f32) =
                    if level == Level::Avx512 { avx512::kernel_1 } else { avx2::kernel_1 };
                for p in p0..p1 {
                    let panel = &b32[p * k * NR..(p + 1) * k * NR];
                    kernel_1(k, a32, panel, (c as *mut f32).add(p * NR), (n - p * NR).min(NR), beta32);
                }
                return;
            }
            if level == Level::Avx512 {
                // Blocks of KC rows of the panels: one block of one panel (KC x NR
                // values, 32 KiB) stays in L1 while every row block of A passes over it.
                for k0 in (0..k.max(1)).step_by(KC) {
                    let kc = (k - k0).min(KC);
                    let beta_k = if k0 == 0 { beta32 } else { 1.0 };
                    for p in p0..p1 {
                        let cols = (n - p * NR).min(NR);
                        let panel = &b32[(p * k + k0) * NR..(p * k + k0 + kc) * NR];
                        let cblk = (c as *mut f32).add(p * NR);
                        let mut r = 0;
                        while r < m {
                            let rows = (m - r).min(MR);
                            let (ar, cr) = (&a32[r * k + k0..], cblk.add(r * n));
                            match rows {
                                1 => avx512::kernel::<1>(kc, ar, k, panel, cr, n, cols, beta_k),
                                2 => avx512::kernel::<2>(kc, ar, k, panel, cr, n, cols, beta_k),
                                3 => avx512::kernel::<3>(kc, ar, k, panel, cr, n, cols, beta_k),
                                4 => avx512::kernel::<4>(kc, ar, k, panel, cr, n, cols, beta_k),
                                5 => avx512::kernel::<5>(kc, ar, k, panel, cr, n, cols, beta_k),
                                6 => avx512::kernel::<6>(kc, ar, k, panel, cr, n, cols, beta_k),
                                7 => avx512::kernel::<7>(kc, ar, k, panel, cr, n, cols, beta_k),
                                _ => avx512::kernel::<MR>(kc, ar, k, panel, cr, n, cols, beta_k),
                            }
                            r += rows;
                        }
                    }
                }
            } else {
                avx2::panels(m, k, n, a32, b32, p0, p1, beta32, c as *mut f32);
            }
            return;
        }
        if level != Level::Portable {
            return packed_panels_avx2(m, k, n, a, bp, split, p0, p1, beta, c);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = level;
    packed_panels_portable(m, k, n, a, bp, split, p0, p1, beta, c)
}

/// The portable micro-kernel: one row of C at a time against one panel, 32
/// accumulators the compiler turns into SIMD registers. Also the reference
/// the AVX-512 and AVX2 kernels are tested against.
macro_rules! packed_body {
    ($m:expr, $k:expr, $n:expr, $a:expr, $bp:expr, $split:expr, $p0:expr, $p1:expr, $beta:expr, $c:expr, $fma:expr) => {{
        let (m, k, n, a, bp, split, beta, c) = ($m, $k, $n, $a, $bp, $split, $beta, $c);
        for p in $p0..$p1 {
            let cols = (n - p * NR).min(NR);
            let panel = &bp[p * k * NR..(p + 1) * k * NR];
            for r in 0..m {
                let ar = &a[r * k..(r + 1) * k];
                let mut acc = [F::zero(); NR];
                for k0 in (0..k).step_by(KC) {
                    let kc = (k - k0).min(KC);
                    let blk = &panel[k0 * NR..(k0 + kc) * NR];
                    for (kr, &av) in ar[k0..k0 + kc].iter().enumerate() {
                        // The two halves of row k0 + kr.
                        let lo = &blk[half_row(kc, kr, 0, split)..][..NH];
                        let hi = &blk[half_row(kc, kr, 1, split)..][..NH];
                        for j in 0..NH {
                            let (x, y) = (lo[j], hi[j]);
                            acc[j] = if $fma { av.mul_add(x, acc[j]) } else { acc[j] + av * x };
                            acc[NH + j] = if $fma { av.mul_add(y, acc[NH + j]) } else { acc[NH + j] + av * y };
                        }
                    }
                }
                let cr = c.add(r * n + p * NR);
                for (j, &v) in acc.iter().enumerate().take(cols) {
                    let old = if beta == F::zero() { F::zero() } else { beta * *cr.add(j) };
                    *cr.add(j) = v + old;
                }
            }
        }
    }};
}

/// # Safety
/// As `packed_panels`.
#[allow(clippy::too_many_arguments)]
unsafe fn packed_panels_portable<F: Float>(
    m: usize,
    k: usize,
    n: usize,
    a: &[F],
    bp: &[F],
    split: bool,
    p0: usize,
    p1: usize,
    beta: F,
    c: *mut F,
) {
    packed_body!(m, k, n, a, bp, split, p0, p1, beta, c, false)
}

/// # Safety
/// As `packed_panels`, and the CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn packed_panels_avx2<F: Float>(
    m: usize,
    k: usize,
    n: usize,
    a: &[F],
    bp: &[F],
    split: bool,
    p0: usize,
    p1: usize,
    beta: F,
    c: *mut F,
) {
    packed_body!(m, k, n, a, bp, split, p0, p1, beta, c, true)
}

/// The f32 AVX2 + FMA micro-kernels (machines without AVX-512, such as AMD
/// Zen 2/3): a 6 x 16 tile, the classic shape for 16 ymm registers (12
/// accumulators, two B vectors, one broadcast of A), run over half a panel.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{KC, NH, NR};
    use std::arch::x86_64::*;

    /// Rows per tile.
    pub const MR: usize = 6;
    /// Rows of a half panel (64 bytes, one line each) that the first tile
    /// prefetches ahead.
    const PF: usize = 32;

    /// Size of a packed matrix from which the tiles fetch the next half block
    /// while they run (see `panels`). Measured on a Zen 3 (engine variants
    /// interleaved call by call): +6-17 % at L (16 MiB of W_hh), 4-10 %
    /// slower at M and LM (1-4 MiB, which the hardware prefetchers keep up with).
    const NEXT_FROM: usize = 8 << 20;

    /// Bytes of C a group of panels covers (see `panels`): a quarter of L2.
    const C_GROUP: usize = 128 << 10;

    /// Lines (rows of a half block, 64 bytes each) a tile prefetches for the
    /// next half block: `left` lines from `at`, one every `every` rows of k.
    #[derive(Clone, Copy)]
    pub struct Lines {
        pub at: *const f32,
        pub every: usize,
        pub left: usize,
    }

    impl Lines {
        pub const NONE: Lines = Lines { at: std::ptr::null(), every: 1, left: 0 };
    }

    /// Rows of the next tile when `rest` rows remain: 6, except that a tail
    /// of 7 to 9 rows is split in two near-equal tiles (a tile of 1-3 rows has
    /// too few accumulators to hide the FMA latency: 6 + 2 for 32 rows ran the
    /// last tile at half speed).
    #[inline]
    pub fn tile_rows(rest: usize) -> usize {
        if (MR + 1..=MR + 3).contains(&rest) {
            rest.div_ceil(2)
        } else {
            rest.min(MR)
        }
    }

    thread_local! {
        /// A repacked: per k-block (at m * k0), tile by tile: [k-blocks][tiles][kc][rows].
        static A_PACK: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// Panels [p0, p1) of C = A * packed B + beta * C (see `packed_panels`),
    /// B in the split layout (`Packed`).
    ///
    /// A is first repacked, k-block by k-block and tile by tile (for each
    /// tile of R rows, its kc columns interleaved: [kc][R]), so the
    /// micro-kernel reads A as one sequential stream instead of R rows a
    /// whole row apart. The copy is m*k values against m*k*n multiply-adds;
    /// reading A in place had cost 10-35 % at M, LM and L (A's rows 1-4 KiB
    /// apart). Then the panels run in groups (see the loop).
    ///
    /// # Safety
    /// As `packed_panels`; the CPU has AVX2 and FMA.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn panels(
        m: usize,
        k: usize,
        n: usize,
        a: &[f32],
        b: &[f32],
        p0: usize,
        p1: usize,
        beta: f32,
        c: *mut f32,
    ) {
        A_PACK.with(|buf| {
            let mut buf = buf.borrow_mut();
            if buf.len() < m * k {
                buf.resize(m * k, 0.0);
            }
            // Repack all of A once: k-block k0 at m * k0, each tile of R rows
            // inside it as [kc][R].
            for k0 in (0..k).step_by(super::KC) {
                let kc = (k - k0).min(super::KC);
                let mut r = 0;
                while r < m {
                    let rows = tile_rows(m - r);
                    let strip = &mut buf[m * k0 + r * kc..m * k0 + (r + rows) * kc];
                    for i in 0..rows {
                        let src = &a[(r + i) * k + k0..(r + i) * k + k0 + kc];
                        for (kk, &v) in src.iter().enumerate() {
                            strip[kk * rows + i] = v;
                        }
                    }
                    r += rows;
                }
            }
            let ap = buf.as_ptr();
            // Panels in groups whose columns of C fit in L2 (C_GROUP); inside a
            // group, block by block. A group's C then stays in L2 across the
            // k-blocks instead of all of C passing through the caches once per
            // k-block (1 MiB at configuration L), and each k-block of A is read
            // once per group (all of A once per panel was slower where A is
            // the large one, [64, 4096] in L's backward).
            let group = (C_GROUP / (m * NR * 4)).max(1);
            let mut tiles = 0;
            let mut r = 0;
            while r < m {
                r += tile_rows(m - r);
                tiles += 1;
            }
            // Whether the tiles fetch the next half block (see the loop).
            let fetch_next = tiles > 1 && k * n * std::mem::size_of::<f32>() >= NEXT_FROM;
            // The half block after (p, h, k0) in this loop order, and its rows.
            let next = |g0: usize, g1: usize, p: usize, h: usize, k0: usize| -> Option<(*const f32, usize)> {
                let (p, h, k0) = if h == 0 && p * NR + NH < n {
                    (p, 1, k0)
                } else if p + 1 < g1 {
                    (p + 1, 0, k0)
                } else if k0 + super::KC < k {
                    (g0, 0, k0 + super::KC)
                } else if g1 < p1 {
                    (g1, 0, 0)
                } else {
                    return None;
                };
                let kc = (k - k0).min(super::KC);
                Some((b.as_ptr().add((p * k + k0) * NR + h * kc * NH), kc))
            };
            for g0 in (p0..p1).step_by(group) {
                let g1 = (g0 + group).min(p1);
                for k0 in (0..k.max(1)).step_by(super::KC) {
                    let kc = (k - k0).min(super::KC);
                    let beta_k = if k0 == 0 { beta } else { 1.0 };
                    for p in g0..g1 {
                        for h in 0..NR / NH {
                            let c0 = p * NR + h * NH;
                            if c0 >= n {
                                break;
                            }
                            let cols = (n - c0).min(NH);
                            let cblk = c.add(c0);
                            // Half h of this panel's block: kc rows of NH, contiguous.
                            let half = b.as_ptr().add((p * k + k0) * NR + h * kc * NH);
                            // Large weights come from L3 or memory: while the tiles
                            // run over this half block, they fetch the next one, each
                            // tile after the first a share of its lines, so no tile
                            // waits for them. A block nothing fetched ahead (the
                            // first of the call, every block of smaller weights or
                            // when one tile covers all rows) is fetched by its first
                            // tile a little ahead of its loads.
                            let nx = if fetch_next { next(g0, g1, p, h, k0) } else { None };
                            let fetched = fetch_next && !(p == p0 && h == 0 && k0 == 0);
                            let mut r = 0;
                            let mut ti = 0;
                            while r < m {
                                let rows = tile_rows(m - r);
                                let (ar, cr) = (ap.add(m * k0 + r * kc), cblk.add(r * n));
                                let ahead = ti == 0 && !fetched;
                                let share = match nx {
                                    Some((q, lines)) if ti > 0 => {
                                        let (l0, l1) = ((ti - 1) * lines / (tiles - 1), ti * lines / (tiles - 1));
                                        Lines {
                                            at: q.add(l0 * NH),
                                            every: (kc / (l1 - l0).max(1)).max(1),
                                            left: l1 - l0,
                                        }
                                    }
                                    _ => Lines::NONE,
                                };
                                // Three instantiations, so the kernels that fetch no
                                // next block carry no check for it in their loop.
                                macro_rules! tile {
                                    ($r:expr) => {
                                        if ahead {
                                            kernel::<$r, true, false>(kc, ar, half, cr, n, cols, beta_k, share)
                                        } else if share.left > 0 {
                                            kernel::<$r, false, true>(kc, ar, half, cr, n, cols, beta_k, share)
                                        } else {
                                            kernel::<$r, false, false>(kc, ar, half, cr, n, cols, beta_k, share)
                                        }
                                    };
                                }
                                match rows {
                                    1 => tile!(1),
                                    2 => tile!(2),
                                    3 => tile!(3),
                                    4 => tile!(4),
                                    5 => tile!(5),
                                    _ => tile!(6),
                                }
                                r += rows;
                                ti += 1;
                            }
                        }
                    }
                }
            }
        })
    }

    /// C[R, cols] = A[R, k] * half-panel [k, 16] (contiguous rows) + beta * C
    /// (row stride ldc), with A packed [k][R] (see `panels`). With `AHEAD`
    /// it prefetches its own half block PF rows ahead of its loads; with
    /// `NEXT`, the lines `next` of another block along the way.
    ///
    /// # Safety
    /// `a` holds k * R values, `half` k rows of 16
    /// values, `c` R rows of `cols` writable values at stride
    /// `ldc`, `next` lines inside one packed matrix; the CPU has AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn kernel<const R: usize, const AHEAD: bool, const NEXT: bool>(
        k: usize,
        a: *const f32,
        half: *const f32,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        beta: f32,
        mut next: Lines,
    ) {
        if beta != 0.0 {
            // C is read at the end: start fetching its rows now (they are
            // often far away, e.g. one step of a [T, B, G*H] input projection
            // that no longer fits in cache) so the loads do not stall the store.
            for r in 0..R {
                let cr = c.add(r * ldc) as *const i8;
                _mm_prefetch::<_MM_HINT_T0>(cr);
                _mm_prefetch::<_MM_HINT_T0>(cr.add(60));
            }
        }
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        let mut bp = half;
        let mut ap = a;
        let mut count = 0;
        for _ in 0..k {
            if NEXT && next.left > 0 {
                count += 1;
                if count == next.every {
                    count = 0;
                    next.left -= 1;
                    _mm_prefetch::<_MM_HINT_T0>(next.at as *const i8);
                    next.at = next.at.wrapping_add(NH);
                }
            }
            if AHEAD {
                // The weights are often in L3 or memory (a [H, G*H] matrix of
                // megabytes, evicted by the step's other buffers): without
                // this the loads below stalled the first tile of each block.
                // (A prefetch never faults: past the last rows of the
                // matrix it fetches nothing useful, hence wrapping_add.)
                _mm_prefetch::<_MM_HINT_T0>(bp.wrapping_add(PF * NH) as *const i8);
            }
            let b0 = _mm256_loadu_ps(bp);
            let b1 = _mm256_loadu_ps(bp.add(8));
            bp = bp.add(NH);
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let av = _mm256_broadcast_ss(&*ap.add(r));
                acc_r[0] = _mm256_fmadd_ps(av, b0, acc_r[0]);
                acc_r[1] = _mm256_fmadd_ps(av, b1, acc_r[1]);
            }
            ap = ap.add(R);
        }
        // A short block (the last k-block, k < lines) leaves part of its share:
        // fetch it now, since the next block's first tile counts on it.
        while NEXT && next.left > 0 {
            next.left -= 1;
            _mm_prefetch::<_MM_HINT_T0>(next.at as *const i8);
            next.at = next.at.wrapping_add(NH);
        }
        for (r, acc_r) in acc.iter().enumerate() {
            store(acc_r[0], acc_r[1], c.add(r * ldc), cols, beta);
        }
    }

    /// Writes 16 values (the first `cols` of them) of one row of C.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn store(mut v0: __m256, mut v1: __m256, cr: *mut f32, cols: usize, beta: f32) {
        if cols >= NH {
            if beta != 0.0 {
                let bv = _mm256_set1_ps(beta);
                v0 = _mm256_fmadd_ps(bv, _mm256_loadu_ps(cr), v0);
                v1 = _mm256_fmadd_ps(bv, _mm256_loadu_ps(cr.add(8)), v1);
            }
            _mm256_storeu_ps(cr, v0);
            _mm256_storeu_ps(cr.add(8), v1);
        } else {
            // A partial tile (the last columns of C): through a buffer.
            let mut buf = [0f32; NH];
            _mm256_storeu_ps(buf.as_mut_ptr(), v0);
            _mm256_storeu_ps(buf.as_mut_ptr().add(8), v1);
            for (j, &v) in buf.iter().enumerate().take(cols) {
                let old = if beta == 0.0 { 0.0 } else { beta * *cr.add(j) };
                *cr.add(j) = v + old;
            }
        }
    }

    /// One row against a whole panel of 32 columns (a matrix-vector product,
    /// streaming at batch 1), B in the split layout: per k-block, the two
    /// halves are two sequential streams. Two steps of k per iteration into
    /// separate accumulators, so eight additions are in flight.
    ///
    /// # Safety
    /// `a` holds k values, `panel` k * NR, `c` `cols` writable values; the
    /// CPU has AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn kernel_1(k: usize, a: &[f32], panel: &[f32], c: *mut f32, cols: usize, beta: f32) {
        debug_assert!(a.len() >= k && panel.len() >= k * NR);
        let mut acc = [[_mm256_setzero_ps(); 4]; 2];
        for k0 in (0..k).step_by(KC) {
            let kc = (k - k0).min(KC);
            let ap = a.as_ptr().add(k0);
            let lo = panel.as_ptr().add(k0 * NR);
            let hi = lo.add(kc * NH);
            let k2 = kc / 2 * 2;
            let mut p = 0;
            while p < k2 {
                for (u, acc_u) in acc.iter_mut().enumerate() {
                    let av = _mm256_broadcast_ss(&*ap.add(p + u));
                    let (l, h) = (lo.add((p + u) * NH), hi.add((p + u) * NH));
                    acc_u[0] = _mm256_fmadd_ps(av, _mm256_loadu_ps(l), acc_u[0]);
                    acc_u[1] = _mm256_fmadd_ps(av, _mm256_loadu_ps(l.add(8)), acc_u[1]);
                    acc_u[2] = _mm256_fmadd_ps(av, _mm256_loadu_ps(h), acc_u[2]);
                    acc_u[3] = _mm256_fmadd_ps(av, _mm256_loadu_ps(h.add(8)), acc_u[3]);
                }
                p += 2;
            }
            if p < kc {
                let av = _mm256_broadcast_ss(&*ap.add(p));
                let (l, h) = (lo.add(p * NH), hi.add(p * NH));
                acc[0][0] = _mm256_fmadd_ps(av, _mm256_loadu_ps(l), acc[0][0]);
                acc[0][1] = _mm256_fmadd_ps(av, _mm256_loadu_ps(l.add(8)), acc[0][1]);
                acc[0][2] = _mm256_fmadd_ps(av, _mm256_loadu_ps(h), acc[0][2]);
                acc[0][3] = _mm256_fmadd_ps(av, _mm256_loadu_ps(h.add(8)), acc[0][3]);
            }
        }
        let s: [__m256; 4] = std::array::from_fn(|j| _mm256_add_ps(acc[0][j], acc[1][j]));
        store(s[0], s[1], c, cols, beta);
        if cols > NH {
            store(s[2], s[3], c.add(NH), cols - NH, beta);
        }
    }
}

/// The f32 AVX-512 micro-kernels on one panel of `NR` = 32 columns.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::NR;
    use std::arch::x86_64::*;

    /// Masks for the two 16-lane halves of a panel with `cols` valid columns.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn masks(cols: usize) -> (__mmask16, __mmask16) {
        let lo = if cols >= 16 { 0xffff } else { (1u32 << cols) as u16 - 1 };
        let hi = if cols >= 32 {
            0xffff
        } else if cols <= 16 {
            0
        } else {
            (1u32 << (cols - 16)) as u16 - 1
        };
        (lo, hi)
    }

    /// C[R, cols] = A[R, k] (row stride lda) * panel [k, 32] + beta * C (row stride ldc).
    ///
    /// # Safety
    /// `a` holds R rows of k values at stride `lda`, `panel` k*32 values, `c`
    /// R rows of `cols` writable values at stride `ldc`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn kernel<const R: usize>(
        k: usize,
        a: &[f32],
        lda: usize,
        panel: &[f32],
        c: *mut f32,
        ldc: usize,
        cols: usize,
        beta: f32,
    ) {
        debug_assert!(a.len() >= (R - 1) * lda + k && panel.len() >= k * NR);
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        let (ap, mut bp) = (a.as_ptr(), panel.as_ptr());
        // One pointer per row of A, advanced with k: no index arithmetic in the loop.
        let mut rows: [*const f32; R] = std::array::from_fn(|r| ap.add(r * lda));
        for _ in 0..k {
            let b0 = _mm512_loadu_ps(bp);
            let b1 = _mm512_loadu_ps(bp.add(16));
            bp = bp.add(NR);
            for (acc_r, row) in acc.iter_mut().zip(rows.iter_mut()) {
                let av = _mm512_set1_ps(**row);
                *row = row.add(1);
                acc_r[0] = _mm512_fmadd_ps(av, b0, acc_r[0]);
                acc_r[1] = _mm512_fmadd_ps(av, b1, acc_r[1]);
            }
        }
        store(&acc, c, ldc, cols, beta);
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn store<const R: usize>(acc: &[[__m512; 2]; R], c: *mut f32, ldc: usize, cols: usize, beta: f32) {
        let (m0, m1) = masks(cols);
        let bv = _mm512_set1_ps(beta);
        for (r, acc_r) in acc.iter().enumerate() {
            let cr = c.add(r * ldc);
            let (mut v0, mut v1) = (acc_r[0], acc_r[1]);
            if beta != 0.0 {
                v0 = _mm512_fmadd_ps(bv, _mm512_maskz_loadu_ps(m0, cr), v0);
                v1 = _mm512_fmadd_ps(bv, _mm512_maskz_loadu_ps(m1, cr.add(16)), v1);
            }
            _mm512_mask_storeu_ps(cr, m0, v0);
            _mm512_mask_storeu_ps(cr.add(16), m1, v1);
        }
    }

    /// One row (a matrix-vector product, streaming at batch 1): four
    /// independent accumulator pairs over k so the additions do not wait on
    /// each other.
    ///
    /// # Safety
    /// As `kernel` with R = 1.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn kernel_1(k: usize, a: &[f32], panel: &[f32], c: *mut f32, cols: usize, beta: f32) {
        debug_assert!(a.len() >= k && panel.len() >= k * NR);
        let (ap, bp) = (a.as_ptr(), panel.as_ptr());
        let mut acc = [[_mm512_setzero_ps(); 2]; 4];
        let k4 = k / 4 * 4;
        let mut p = 0;
        while p < k4 {
            for (u, acc_u) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*ap.add(p + u));
                acc_u[0] = _mm512_fmadd_ps(av, _mm512_loadu_ps(bp.add((p + u) * NR)), acc_u[0]);
                acc_u[1] = _mm512_fmadd_ps(av, _mm512_loadu_ps(bp.add((p + u) * NR + 16)), acc_u[1]);
            }
            p += 4;
        }
        while p < k {
            let av = _mm512_set1_ps(*ap.add(p));
            acc[0][0] = _mm512_fmadd_ps(av, _mm512_loadu_ps(bp.add(p * NR)), acc[0][0]);
            acc[0][1] = _mm512_fmadd_ps(av, _mm512_loadu_ps(bp.add(p * NR + 16)), acc[0][1]);
            p += 1;
        }
        let s0 = _mm512_add_ps(_mm512_add_ps(acc[0][0], acc[1][0]), _mm512_add_ps(acc[2][0], acc[3][0]));
        let s1 = _mm512_add_ps(_mm512_add_ps(acc[0][1], acc[1][1]), _mm512_add_ps(acc[2][1], acc[3][1]));
        store::<1>(&[[s0, s1]], c, 0, cols, beta);
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
    use crate::simd::Level;
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

    /// The packed product against the plain loop, f32 (the AVX-512 kernels
    /// where the CPU has them) and f64 (the portable or AVX2 kernel), on
    /// edge shapes: one row, one column, partial panels and row blocks.
    #[test]
    fn packed_matches_naive_on_edge_shapes() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            for &(m, k, n) in &[
                (1, 1, 1),
                (1, 7, 33),
                (1, 256, 1024),
                (1, 513, 40),
                (1, 300, 70),
                (2, 3, 31),
                (7, 5, 64),
                (8, 16, 32),
                (9, 1, 65),
                (17, 33, 9),
                (32, 128, 512),
                (64, 300, 100),
                // Two groups of panels (the AVX2 kernel's C_GROUP), several k-blocks.
                (40, 300, 1000),
                (11, 520, 3000),
                // Past NEXT_FROM (8 MiB of f32): the tiles fetch the next block.
                (7, 1030, 2050),
                (6, 257, 16),
                (5, 300, 33),
                (13, 40, 47),
                (3, 0, 5),
            ] {
                for tb in [Tr::N, Tr::T] {
                    for &beta in &[0.0, 1.0, 0.5] {
                        let a: Vec<f64> = (0..m * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
                        let b: Vec<f64> = (0..k * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
                        let c0: Vec<f64> = (0..m * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
                        let mut want = c0.clone();
                        gemm_naive(m, k, n, 1.0, &a, Tr::N, &b, tb, beta, &mut want);
                        let mut p64 = Packed::new();
                        p64.pack(k, n, &b, tb);
                        let mut c64 = c0.clone();
                        pool.install(|| gemm_packed(m, &a, &p64, beta, &mut c64));
                        let tol = 1e-14 * (k as f64 + 1.0);
                        for (x, y) in c64.iter().zip(&want) {
                            assert!((x - y).abs() <= tol, "f64 {m}x{k}x{n} {tb:?} beta {beta}: {x} vs {y}");
                        }
                        let f = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
                        let mut p32 = Packed::new();
                        p32.pack(k, n, &f(&b), tb);
                        let mut c32 = f(&c0);
                        pool.install(|| gemm_packed(m, &f(&a), &p32, beta as f32, &mut c32));
                        let tol = 4.0 * f32::EPSILON as f64 * (k as f64 + 1.0);
                        for (x, y) in c32.iter().zip(&want) {
                            assert!((*x as f64 - y).abs() <= tol, "f32 {m}x{k}x{n} {tb:?} beta {beta}: {x} vs {y}");
                        }
                        // Every micro-kernel this CPU can run (the fast ones
                        // and their portable twin), whatever `gemm_packed` picked,
                        // on both layouts (a kernel for the other layout falls
                        // back to the portable loop), in f32 and f64.
                        for split in [false, true] {
                            p32.pack_layout(k, n, &f(&b), tb, split);
                            p64.pack_layout(k, n, &b, tb, split);
                            assert_eq!(p32.vals().as_ptr() as usize % 64, 0, "packed values on a line");
                            let copy = p64.clone();
                            assert_eq!(copy.vals().as_ptr() as usize % 64, 0, "copied values on a line");
                            assert_eq!(copy.vals(), p64.vals(), "a copy holds the same values");
                            for level in [Level::Portable, Level::Avx2, Level::Avx512] {
                                let mut c32 = f(&c0);
                                let a32 = f(&a);
                                let mut c64 = c0.clone();
                                // SAFETY: c32 and c64 are m x n, written by this thread
                                // only; shapes and layouts as packed.
                                unsafe {
                                    let panels = n.div_ceil(NR);
                                    let (b32, b64) = (p32.vals(), p64.vals());
                                    let (beta32, c32p) = (beta as f32, c32.as_mut_ptr());
                                    packed_panels_at(level, m, k, n, &a32, b32, split, 0, panels, beta32, c32p);
                                    packed_panels_at(level, m, k, n, &a, b64, split, 0, panels, beta, c64.as_mut_ptr());
                                };
                                for (x, y) in c32.iter().zip(&want) {
                                    let msg = format!(
                                        "f32 {level:?} split {split} {m}x{k}x{n} {tb:?} beta {beta}: {x} vs {y}"
                                    );
                                    assert!((*x as f64 - y).abs() <= tol, "{msg}");
                                }
                                for (x, y) in c64.iter().zip(&want) {
                                    let msg = format!(
                                        "f64 {level:?} split {split} {m}x{k}x{n} {tb:?} beta {beta}: {x} vs {y}"
                                    );
                                    assert!((x - y).abs() <= 1e-14 * (k as f64 + 1.0), "{msg}");
                                }
                            }
                        }
                    }
                }
            }
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
