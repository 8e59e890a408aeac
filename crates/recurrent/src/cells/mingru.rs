//! minGRU (Feng et al. 2024, "Were RNNs All We Needed?", arXiv 2410.01201),
//! rows in the order of lucidrains/minGRU-pytorch's `to_hidden_and_gate`
//! (`hidden, gate = to_hidden_and_gate(x).chunk(2)`): block 0 the candidate
//! h~, block 1 the update gate z:
//!   h~ = g(W_h x + b_h),  z = σ(W_z x + b_z),
//!   h' = (1 - z) ⊙ h + z ⊙ h~,
//! with the paper's g(x) = x + 0.5 for x >= 0, σ(x) for x < 0 (its
//! appendix B.3, the default of its log-space code and of lucidrains' module).
//! The gates read only the input: the recurrence is element-wise and linear
//! in h (h' = a ⊙ h + b with a = 1 - z, b = z ⊙ h~), so the cell has no
//! recurrent weights (`Cell::RECURRENT` is false) and each unit's state
//! depends only on its own previous state.
//!
//! The default (and only) variant is h~ = g(W_h x + b_h), not the plain
//! h~ = W_h x + b_h of the paper's section 3: g is what the paper trains with
//! (its log-space scan needs h > 0, which g keeps from h0 >= 0), and with it
//! a checkpoint computes what lucidrains' module computes on the same
//! weights. The step is computed in linear space, sequentially; the
//! log-space form gives the same values up to rounding. g is not
//! differentiable at 0 (slope σ'(0) = 1/4 from below, 1 from above); the
//! backward pass takes the slope of the side the forward value lies on.

use super::Cell;
use crate::float::Float;

/// Block of the candidate h~ and of the update gate z in `to_hidden_and_gate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MinGruGate {
    /// Candidate state h~ = g(W_h x + b_h).
    H = 0,
    /// Update gate z = σ(W_z x + b_z).
    Z = 1,
}

impl MinGruGate {
    /// First row of this gate's block for hidden size `h`.
    pub const fn offset(self, h: usize) -> usize {
        self as usize * h
    }
}

/// The paper's g: x + 0.5 for x >= 0, σ(x) below (continuous, positive).
#[inline(always)]
pub(crate) fn g_act<F: Float>(x: F) -> F {
    if x >= F::zero() {
        x + F::of(0.5)
    } else {
        x.sigmoid()
    }
}

/// g'(x) from a = g(x): 1 where x >= 0 (there a >= 0.5), σ'(x) = a (1 - a) below (a < 0.5).
#[inline(always)]
pub(crate) fn g_grad<F: Float>(a: F) -> F {
    if a >= F::of(0.5) {
        F::one()
    } else {
        a * (F::one() - a)
    }
}

/// The minGRU cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MinGru;

impl<F: Float> Cell<F> for MinGru {
    const GATES: usize = 2;
    const HAS_C: bool = false;
    const RECURRENT: bool = false;

    #[inline(always)]
    fn step_forward(&self, gx: &[F], _gh: &[F], h_prev: &[F], _c_prev: &[F], act: &mut [F], h: &mut [F], _c: &mut [F]) {
        let m = h.len();
        let (xh, xz) = gx[..2 * m].split_at(m);
        let (ah, az) = act[..2 * m].split_at_mut(m);
        let h_prev = &h_prev[..m];
        for j in 0..m {
            let ht = g_act(xh[j]);
            let z = xz[j].sigmoid();
            ah[j] = ht;
            az[j] = z;
            h[j] = (F::one() - z) * h_prev[j] + z * ht;
        }
    }

    #[inline(always)]
    fn step_backward(
        &self,
        act: &[F],
        _gh: &[F],
        h_prev: &[F],
        _c_prev: &[F],
        h: &[F],
        _c: &[F],
        dh: &[F],
        _dc: &mut [F],
        dgx: &mut [F],
        _dgh: &mut [F],
        dh_prev: &mut [F],
    ) {
        let m = h.len();
        let (ah, az) = act[..2 * m].split_at(m);
        let (dxh, dxz) = dgx[..2 * m].split_at_mut(m);
        let (h_prev, dh, dh_prev) = (&h_prev[..m], &dh[..m], &mut dh_prev[..m]);
        for j in 0..m {
            let (ht, z) = (ah[j], az[j]);
            // h' = (1 - z) h + z h~
            let dht = dh[j] * z;
            let dz = dh[j] * (ht - h_prev[j]);
            dh_prev[j] = dh[j] * (F::one() - z);
            // h~ = g(pre_h), z = σ(pre_z)
            dxh[j] = dht * g_grad(ht);
            dxz[j] = dz * z * (F::one() - z);
        }
    }

    #[inline]
    fn step_jacobians(
        &self,
        act: &[F],
        _gh: &[F],
        h_prev: &[F],
        _c_prev: &[F],
        h: &[F],
        _c: &[F],
        mx: &mut [F],
        mh: &mut [F],
        dd: &mut [F],
    ) {
        let m = h.len();
        let (ah, az) = act[..2 * m].split_at(m);
        for j in 0..m {
            let (ht, z) = (ah[j], az[j]);
            mx[2 * j] = z * g_grad(ht);
            mx[2 * j + 1] = (ht - h_prev[j]) * z * (F::one() - z);
            mh[2 * j] = F::zero();
            mh[2 * j + 1] = F::zero();
            dd[j] = F::one() - z;
        }
    }
}
