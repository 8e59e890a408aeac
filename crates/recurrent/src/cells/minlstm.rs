//! minLSTM (Feng et al. 2024, "Were RNNs All We Needed?", arXiv 2410.01201),
//! rows in the order of lucidrains/minGRU-pytorch's `to_hidden_and_f_i_gate`
//! (`hidden, f_gate, i_gate = ....chunk(3)`): the candidate h~, the forget
//! gate f, the input gate i:
//!   h~ = g(W_h x + b_h),  f = σ(W_f x + b_f),  i = σ(W_i x + b_i),
//!   f' = f / (f + i),  i' = i / (f + i),
//!   h' = f' ⊙ h + i' ⊙ h~,
//! with the paper's g (see `mingru`). Element-wise and linear in h, with no
//! recurrent weights (`Cell::RECURRENT` is false) and no cell vector c (the
//! paper's minLSTM drops it).

use super::mingru::{g_act, g_grad};
use super::{blocks3, blocks3_mut, Cell};
use crate::float::Float;

/// Blocks of `to_hidden_and_f_i_gate`, in row order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MinLstmGate {
    /// Candidate state h~ = g(W_h x + b_h).
    H = 0,
    /// Forget gate f = σ(W_f x + b_f).
    F = 1,
    /// Input gate i = σ(W_i x + b_i).
    I = 2,
}

impl MinLstmGate {
    /// First row of this gate's block for hidden size `h`.
    pub const fn offset(self, h: usize) -> usize {
        self as usize * h
    }
}

/// The minLSTM cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MinLstm;

impl<F: Float> Cell<F> for MinLstm {
    const GATES: usize = 3;
    const HAS_C: bool = false;
    const RECURRENT: bool = false;

    #[inline(always)]
    fn step_forward(&self, gx: &[F], _gh: &[F], h_prev: &[F], _c_prev: &[F], act: &mut [F], h: &mut [F], _c: &mut [F]) {
        let m = h.len();
        let [xh, xf, xi] = blocks3(gx, m);
        let [ah, af, ai] = blocks3_mut(act, m);
        let h_prev = &h_prev[..m];
        for j in 0..m {
            let ht = g_act(xh[j]);
            let f = xf[j].sigmoid();
            let i = xi[j].sigmoid();
            ah[j] = ht;
            af[j] = f;
            ai[j] = i;
            let s = f + i;
            h[j] = (f * h_prev[j] + i * ht) / s;
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
        let [ah, af, ai] = blocks3(act, m);
        let [dxh, dxf, dxi] = blocks3_mut(dgx, m);
        let (h_prev, dh, dh_prev) = (&h_prev[..m], &dh[..m], &mut dh_prev[..m]);
        for j in 0..m {
            let (ht, f, i) = (ah[j], af[j], ai[j]);
            let s = f + i;
            // h' = (f h + i h~) / (f + i)
            let dht = dh[j] * i / s;
            dh_prev[j] = dh[j] * f / s;
            // d h' / d f = i (h - h~) / s², d h' / d i = f (h~ - h) / s²
            let diff = (h_prev[j] - ht) / (s * s);
            let df = dh[j] * i * diff;
            let di = -dh[j] * f * diff;
            dxh[j] = dht * g_grad(ht);
            dxf[j] = df * f * (F::one() - f);
            dxi[j] = di * i * (F::one() - i);
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
        let [ah, af, ai] = blocks3(act, m);
        for j in 0..m {
            let (ht, f, i) = (ah[j], af[j], ai[j]);
            let s = f + i;
            let diff = (h_prev[j] - ht) / (s * s);
            mx[3 * j] = i / s * g_grad(ht);
            mx[3 * j + 1] = i * diff * f * (F::one() - f);
            mx[3 * j + 2] = -f * diff * i * (F::one() - i);
            mh[3 * j..3 * j + 3].iter_mut().for_each(|v| *v = F::zero());
            dd[j] = f / s;
        }
    }
}
