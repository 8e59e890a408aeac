//! The float trait the engine is generic over: f32 for training, f64 for
//! gradient checks. It adds to `num_traits::Float` the one thing the engine
//! needs from a matrix-product crate: a strided GEMM for this precision.

use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{AddAssign, DivAssign, MulAssign, SubAssign};

/// A floating-point element type of the engine (f32 or f64).
pub trait Float:
    num_traits::Float
    + num_traits::FromPrimitive
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Sum
    + Default
    + Debug
    + Display
    + Send
    + Sync
    + 'static
{
    /// Name used in messages and benchmark output.
    const NAME: &'static str;

    /// Converts from f64 (rounding for f32).
    fn of(x: f64) -> Self;

    /// Logistic sigmoid, written so it never overflows.
    #[inline]
    fn sigmoid(self) -> Self {
        if self >= Self::zero() {
            Self::one() / (Self::one() + (-self).exp())
        } else {
            let e = self.exp();
            e / (Self::one() + e)
        }
    }

    /// tanh as the cells use it (f32: a branch-free form the compiler can vectorise).
    #[inline]
    fn act_tanh(self) -> Self {
        self.tanh()
    }

    /// Raw strided GEMM: C = alpha * A B + beta * C with A m x k, B k x n.
    ///
    /// # Safety
    /// Pointers and strides must describe valid, non-overlapping (for C) matrices.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    );
}

impl Float for f32 {
    const NAME: &'static str = "f32";
    #[inline]
    fn of(x: f64) -> Self {
        x as f32
    }
    /// 1 / (1 + e^-x) with `exp_f32`: no branch, no call into libm, so loops
    /// over gates vectorise. Relative error a few ulp (tests compare with
    /// PyTorch's f32 to 1e-5).
    #[inline(always)]
    fn sigmoid(self) -> Self {
        1.0 / (1.0 + exp_f32(-self))
    }
    /// tanh(x) = 1 - 2 / (e^{2x} + 1), branch-free; absolute error below 1e-7.
    #[inline(always)]
    fn act_tanh(self) -> Self {
        1.0 - 2.0 / (exp_f32(2.0 * self) + 1.0)
    }
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: f32,
        a: *const f32,
        rsa: isize,
        csa: isize,
        b: *const f32,
        rsb: isize,
        csb: isize,
        beta: f32,
        c: *mut f32,
        rsc: isize,
        csc: isize,
    ) {
        matrixmultiply::sgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
    }
}

impl Float for f64 {
    const NAME: &'static str = "f64";
    #[inline]
    fn of(x: f64) -> Self {
        x
    }
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: f64,
        a: *const f64,
        rsa: isize,
        csa: isize,
        b: *const f64,
        rsb: isize,
        csb: isize,
        beta: f64,
        c: *mut f64,
        rsc: isize,
        csc: isize,
    ) {
        matrixmultiply::dgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
    }
}

/// e^x for f32 without libm, branch-free (Cephes' expf): x = n ln 2 + r with
/// |r| <= ln 2 / 2, e^r by a degree-6 polynomial, 2^n assembled in the
/// exponent bits. Inputs are clamped to the range where 2^n is a normal
/// float; relative error about 2 ulp.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    // Round x / ln 2 to the nearest integer with the 1.5 * 2^23 trick (no branch, no libm call).
    let t = x * LOG2E + 12_582_912.0;
    let n = t - 12_582_912.0;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1)
        * r
        + 5.000_000_1e-1;
    let er = p * r * r + r + 1.0;
    // t's bit pattern is that of 1.5 * 2^23 + n, i.e. 0x4B40_0000 + n: the
    // exponent n + 127 comes from integer arithmetic on those bits (an
    // `as i32` cast would saturate and check NaN, which costs more than the
    // rest of the function in vector code).
    let bits = t.to_bits().wrapping_sub(0x4B40_0000 - 127) << 23;
    er * f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_f32_functions_match_f64() {
        let mut x = -90.0f64;
        let (mut worst_exp, mut worst_sig, mut worst_tanh) = (0.0f64, 0.0f64, 0.0f64);
        while x < 90.0 {
            let xf = x as f32;
            let xd = xf as f64;
            if xd > -87.0 && xd < 88.0 {
                worst_exp = worst_exp.max(((exp_f32(xf) as f64) - xd.exp()).abs() / xd.exp());
            }
            let sig = 1.0 / (1.0 + (-xd).exp());
            worst_sig = worst_sig.max(
                ((xf.sigmoid() as f64) - sig).abs() / sig.max(1e-30).min(1.0).max(if sig < 1e-37 { 1.0 } else { sig }),
            );
            worst_tanh = worst_tanh.max(((xf.act_tanh() as f64) - xd.tanh()).abs());
            x += 0.0137;
        }
        assert!(worst_exp < 4.0 * f32::EPSILON as f64, "exp {worst_exp:e}");
        assert!(worst_sig < 4.0 * f32::EPSILON as f64, "sigmoid {worst_sig:e}");
        assert!(worst_tanh < 2.0 * f32::EPSILON as f64, "tanh {worst_tanh:e}");
    }
}
