//! LSTM cell (PyTorch `nn.LSTM`), gates in PyTorch's row order i, f, g, o:
//!   i = σ(pre_i)  f = σ(pre_f)  g = tanh(pre_g)  o = σ(pre_o)
//!   c' = f ⊙ c + i ⊙ g          h' = o ⊙ tanh(c')
//! with pre = W_ih x + b_ih + W_hh h + b_hh.

use super::{blocks4, blocks4_mut, Cell};
use crate::float::Float;

/// LSTM gate blocks in the row order of `weight_ih` / `weight_hh`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LstmGate {
    /// Input gate i.
    I = 0,
    /// Forget gate f.
    F = 1,
    /// Cell candidate g.
    G = 2,
    /// Output gate o.
    O = 3,
}

impl LstmGate {
    /// First row of this gate's block for hidden size `h`.
    pub const fn offset(self, h: usize) -> usize {
        self as usize * h
    }
}

/// The LSTM cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lstm;

impl<F: Float> Cell<F> for Lstm {
    const GATES: usize = 4;
    const HAS_C: bool = true;

    #[inline(always)]
    fn step_forward(&self, gx: &[F], gh: &[F], _h_prev: &[F], c_prev: &[F], act: &mut [F], h: &mut [F], c: &mut [F]) {
        let n = h.len();
        // Blocks in LstmGate order (I, F, G, O), each of length n.
        let [xi, xf, xg, xo] = blocks4(&gx[LstmGate::I.offset(n)..], n);
        let [hi, hf, hg, ho] = blocks4(&gh[LstmGate::I.offset(n)..], n);
        let [ai, af, ag, ao] = blocks4_mut(&mut act[LstmGate::I.offset(n)..], n);
        let (c_prev, c) = (&c_prev[..n], &mut c[..n]);
        for j in 0..n {
            let i = (xi[j] + hi[j]).sigmoid();
            let f = (xf[j] + hf[j]).sigmoid();
            let g = (xg[j] + hg[j]).act_tanh();
            let o = (xo[j] + ho[j]).sigmoid();
            ai[j] = i;
            af[j] = f;
            ag[j] = g;
            ao[j] = o;
            let cn = f * c_prev[j] + i * g;
            c[j] = cn;
            h[j] = o * cn.act_tanh();
        }
    }

    #[inline(always)]
    fn step_backward(
        &self,
        act: &[F],
        _gh: &[F],
        _h_prev: &[F],
        c_prev: &[F],
        h: &[F],
        c: &[F],
        dh: &[F],
        dc: &mut [F],
        dgx: &mut [F],
        _dgh: &mut [F],
        dh_prev: &mut [F],
    ) {
        let n = h.len();
        let [ai, af, ag, ao] = blocks4(&act[LstmGate::I.offset(n)..], n);
        let [di_, df_, dg_, do_] = blocks4_mut(&mut dgx[LstmGate::I.offset(n)..], n);
        let (c_prev, c, dh, dc, dh_prev) = (&c_prev[..n], &c[..n], &dh[..n], &mut dc[..n], &mut dh_prev[..n]);
        for j in 0..n {
            let (i, f, g, o) = (ai[j], af[j], ag[j], ao[j]);
            let tc = c[j].act_tanh();
            // h' = o * tanh(c')
            let dout = dh[j] * tc;
            let dct = dc[j] + dh[j] * o * (F::one() - tc * tc);
            // c' = f * c + i * g
            let di = dct * g;
            let dg = dct * i;
            let df = dct * c_prev[j];
            dc[j] = dct * f;
            // i = σ(pre_i), f = σ(pre_f), g = tanh(pre_g), o = σ(pre_o)
            di_[j] = di * i * (F::one() - i);
            df_[j] = df * f * (F::one() - f);
            dg_[j] = dg * (F::one() - g * g);
            do_[j] = dout * o * (F::one() - o);
            dh_prev[j] = F::zero();
        }
        // pre = gx + gh: dgh equals dgx, which the network uses for both (NEEDS_GH is false).
    }

    #[inline]
    fn step_jacobians(
        &self,
        act: &[F],
        _gh: &[F],
        _h_prev: &[F],
        c_prev: &[F],
        h: &[F],
        c: &[F],
        mx: &mut [F],
        mh: &mut [F],
        dd: &mut [F],
    ) {
        let n = h.len();
        let (oi, of, og, oo) =
            (LstmGate::I.offset(n), LstmGate::F.offset(n), LstmGate::G.offset(n), LstmGate::O.offset(n));
        for j in 0..n {
            let (i, f, g, o) = (act[oi + j], act[of + j], act[og + j], act[oo + j]);
            let tc = c[j].act_tanh();
            let dtc = o * (F::one() - tc * tc); // dh/dc
                                                // c = f c_prev + i g, with i = σ(pre_i), f = σ(pre_f), g = tanh(pre_g)
            let dc = [g * i * (F::one() - i), c_prev[j] * f * (F::one() - f), i * (F::one() - g * g), F::zero()];
            // h = o tanh(c), with o = σ(pre_o)
            let dh = [dtc * dc[0], dtc * dc[1], dtc * dc[2], tc * o * (F::one() - o)];
            let (rh, rc) = ((j * 2) * 4, (j * 2 + 1) * 4);
            for k in 0..4 {
                mx[rh + k] = dh[k];
                mh[rh + k] = dh[k];
                mx[rc + k] = dc[k];
                mh[rc + k] = dc[k];
            }
            // Direct paths: dc/dc_prev = f, dh/dc_prev = dtc f; nothing from h_prev except through gh.
            dd[j * 4] = F::zero();
            dd[j * 4 + 1] = dtc * f;
            dd[j * 4 + 2] = F::zero();
            dd[j * 4 + 3] = f;
        }
    }
}
