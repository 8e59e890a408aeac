//! Run-time choice of vector instructions for the element-wise loops.
//!
//! The default build targets plain x86-64 (SSE2), so the cells' loops (gate
//! sigmoids and tanh over B x G*H values per step) would run 4 lanes wide
//! even on a machine with AVX-512. `dispatch` runs a `Kernel` inside a
//! function compiled for AVX-512 or AVX2+FMA when the CPU has them (checked
//! at run time, once, cached by std). The kernel's `run` is
//! `#[inline(always)]`, so its body, and the `#[inline(always)]` cell steps
//! it calls, are compiled again for those instructions. The portable
//! instantiation of the very same code is the safe twin: tests run both.
//!
//! Besides `linalg` (and the GEMM hook in `float`), this is the only place the
//! engine uses `unsafe`.

/// A piece of work whose body should be compiled for the best instructions
/// the CPU has. `run` must be `#[inline(always)]` to gain anything.
pub trait Kernel {
    /// What the work returns.
    type Output;
    /// Does the work.
    fn run(self) -> Self::Output;
}

/// Instruction sets `dispatch` can choose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// The build's baseline (SSE2 on x86-64).
    Portable,
    /// AVX2 with FMA.
    Avx2,
    /// AVX-512 (F, VL, DQ) with AVX2 and FMA.
    Avx512,
}

/// The best level this CPU supports.
pub fn detected() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
        {
            return Level::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return Level::Avx2;
        }
    }
    Level::Portable
}

/// A process-wide cap on the level `dispatch` uses (0: none). Tests set it to
/// run the portable twin of every kernel and compare.
static CAP: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Caps the instructions `dispatch` may use, for the whole process (`None`:
/// the best the CPU has). For tests and measurements: comparing the portable
/// build of the kernels with the fast one.
pub fn set_cap(level: Option<Level>) {
    let v = match level {
        None => 0,
        Some(Level::Portable) => 1,
        Some(Level::Avx2) => 2,
        Some(Level::Avx512) => 3,
    };
    CAP.store(v, std::sync::atomic::Ordering::Relaxed);
}

/// The best level of this CPU within the cap: what `dispatch` (and the
/// packed matrix product) use.
#[inline]
pub fn level() -> Level {
    match CAP.load(std::sync::atomic::Ordering::Relaxed) {
        1 => Level::Portable,
        2 => clamp(Level::Avx2),
        _ => detected(),
    }
}

/// `level`, lowered to what this CPU has.
#[inline]
pub fn clamp(level: Level) -> Level {
    match (level, detected()) {
        (Level::Avx512, Level::Avx512) => Level::Avx512,
        (Level::Avx512 | Level::Avx2, Level::Avx512 | Level::Avx2) => Level::Avx2,
        _ => Level::Portable,
    }
}

/// Runs `k` compiled for the best instructions of this CPU (within the cap).
#[inline]
pub fn dispatch<K: Kernel>(k: K) -> K::Output {
    dispatch_at(level(), k)
}

/// Runs `k` compiled for `level`, or for a lower level if the CPU lacks it
/// (tests use this to compare the portable twin with the fast path).
#[inline]
pub fn dispatch_at<K: Kernel>(level: Level, k: K) -> K::Output {
    match clamp(level) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `detected()` confirmed the CPU has every feature the function is compiled for.
        Level::Avx512 => unsafe { run_avx512(k) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Level::Avx2 => unsafe { run_avx2(k) },
        _ => k.run(),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma")]
unsafe fn run_avx512<K: Kernel>(k: K) -> K::Output {
    k.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<K: Kernel>(k: K) -> K::Output {
    k.run()
}
