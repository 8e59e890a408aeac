//! Elman RNN cell (PyTorch `nn.RNN`): h' = act(W_ih x + b_ih + W_hh h + b_hh),
//! act = tanh or relu.

use super::Cell;
use crate::float::Float;

/// Elman cell; `relu` selects relu instead of tanh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Elman {
    /// relu instead of tanh (PyTorch's `nonlinearity='relu'`).
    pub relu: bool,
}

impl<F: Float> Cell<F> for Elman {
    const GATES: usize = 1;
    const HAS_C: bool = false;

    #[inline(always)]
    fn step_forward(&self, gx: &[F], gh: &[F], _h_prev: &[F], _c_prev: &[F], act: &mut [F], h: &mut [F], _c: &mut [F]) {
        let n = h.len();
        let (gx, gh, act) = (&gx[..n], &gh[..n], &mut act[..n]);
        for j in 0..n {
            let pre = gx[j] + gh[j];
            let v = if self.relu { pre.max(F::zero()) } else { pre.act_tanh() };
            act[j] = v;
            h[j] = v;
        }
    }

    #[inline(always)]
    fn step_backward(
        &self,
        _act: &[F],
        _gh: &[F],
        _h_prev: &[F],
        _c_prev: &[F],
        h: &[F],
        _c: &[F],
        dh: &[F],
        _dc: &mut [F],
        dgx: &mut [F],
        _dgh: &mut [F],
        dh_prev: &mut [F],
    ) {
        let n = h.len();
        let (dh, dgx, dh_prev) = (&dh[..n], &mut dgx[..n], &mut dh_prev[..n]);
        for j in 0..n {
            // h = tanh(pre)  =>  dpre = dh * (1 - h^2);  h = relu(pre)  =>  dpre = dh * [h > 0]
            let d = if self.relu {
                if h[j] > F::zero() {
                    dh[j]
                } else {
                    F::zero()
                }
            } else {
                dh[j] * (F::one() - h[j] * h[j])
            };
            // pre = gx + gh: dgh equals dgx, which the network uses for both (NEEDS_GH is false).
            dgx[j] = d;
            dh_prev[j] = F::zero();
        }
    }

    #[inline]
    fn step_jacobians(
        &self,
        _act: &[F],
        _gh: &[F],
        _h_prev: &[F],
        _c_prev: &[F],
        h: &[F],
        _c: &[F],
        mx: &mut [F],
        mh: &mut [F],
        dd: &mut [F],
    ) {
        for j in 0..h.len() {
            // h = act(gx + gh): both pre-activations enter the same way.
            let d = if self.relu {
                if h[j] > F::zero() {
                    F::one()
                } else {
                    F::zero()
                }
            } else {
                F::one() - h[j] * h[j]
            };
            mx[j] = d;
            mh[j] = d;
            dd[j] = F::zero();
        }
    }
}
