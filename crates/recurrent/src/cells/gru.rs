//! GRU cell (PyTorch `nn.GRU`), gates in PyTorch's row order r, z, n:
//!   r = σ(W_ir x + b_ir + W_hr h + b_hr)
//!   z = σ(W_iz x + b_iz + W_hz h + b_hz)
//!   n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
//!   h' = (1 - z) ⊙ n + z ⊙ h
//! The reset gate multiplies the recurrent product *including* its bias, as
//! PyTorch computes it, so `gh` (W_hh h + b_hh) is kept for the backward pass.

use super::{blocks3, blocks3_mut, Cell};
use crate::float::Float;

/// GRU gate blocks in the row order of `weight_ih` / `weight_hh`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GruGate {
    /// Reset gate r.
    R = 0,
    /// Update gate z.
    Z = 1,
    /// Candidate state n.
    N = 2,
}

impl GruGate {
    /// First row of this gate's block for hidden size `h`.
    pub const fn offset(self, h: usize) -> usize {
        self as usize * h
    }
}

/// The GRU cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gru;

impl<F: Float> Cell<F> for Gru {
    const GATES: usize = 3;
    const HAS_C: bool = false;
    const NEEDS_GH: bool = true;

    #[inline(always)]
    fn step_forward(&self, gx: &[F], gh: &[F], h_prev: &[F], _c_prev: &[F], act: &mut [F], h: &mut [F], _c: &mut [F]) {
        let m = h.len();
        // Blocks in GruGate order (R, Z, N), each of length m.
        let [xr, xz, xn] = blocks3(&gx[GruGate::R.offset(m)..], m);
        let [hr, hz, hn] = blocks3(&gh[GruGate::R.offset(m)..], m);
        let [ar, az, an] = blocks3_mut(&mut act[GruGate::R.offset(m)..], m);
        let h_prev = &h_prev[..m];
        for j in 0..m {
            let r = (xr[j] + hr[j]).sigmoid();
            let z = (xz[j] + hz[j]).sigmoid();
            let n = (xn[j] + r * hn[j]).act_tanh();
            ar[j] = r;
            az[j] = z;
            an[j] = n;
            h[j] = (F::one() - z) * n + z * h_prev[j];
        }
    }

    #[inline(always)]
    fn step_backward(
        &self,
        act: &[F],
        gh: &[F],
        h_prev: &[F],
        _c_prev: &[F],
        h: &[F],
        _c: &[F],
        dh: &[F],
        _dc: &mut [F],
        dgx: &mut [F],
        dgh: &mut [F],
        dh_prev: &mut [F],
    ) {
        let m = h.len();
        let [ar, az, an] = blocks3(&act[GruGate::R.offset(m)..], m);
        let [_, _, ghn] = blocks3(&gh[GruGate::R.offset(m)..], m);
        let [xr, xz, xn] = blocks3_mut(&mut dgx[GruGate::R.offset(m)..], m);
        let [hr, hz, hn] = blocks3_mut(&mut dgh[GruGate::R.offset(m)..], m);
        let (h_prev, dh, dh_prev) = (&h_prev[..m], &dh[..m], &mut dh_prev[..m]);
        for j in 0..m {
            let (r, z, n) = (ar[j], az[j], an[j]);
            // h' = (1 - z) * n + z * h
            let dn = dh[j] * (F::one() - z);
            let dz = dh[j] * (h_prev[j] - n);
            dh_prev[j] = dh[j] * z;
            // n = tanh(gx_n + r * gh_n)
            let dpn = dn * (F::one() - n * n);
            let dr = dpn * ghn[j];
            // r = σ(pre_r), z = σ(pre_z)
            let dpr = dr * r * (F::one() - r);
            let dpz = dz * z * (F::one() - z);
            xr[j] = dpr;
            xz[j] = dpz;
            xn[j] = dpn;
            hr[j] = dpr;
            hz[j] = dpz;
            hn[j] = dpn * r;
        }
    }

    #[inline]
    fn step_jacobians(
        &self,
        act: &[F],
        gh: &[F],
        h_prev: &[F],
        _c_prev: &[F],
        h: &[F],
        _c: &[F],
        mx: &mut [F],
        mh: &mut [F],
        dd: &mut [F],
    ) {
        let m = h.len();
        let (or, oz, on) = (GruGate::R.offset(m), GruGate::Z.offset(m), GruGate::N.offset(m));
        for j in 0..m {
            let (r, z, n) = (act[or + j], act[oz + j], act[on + j]);
            // h = (1 - z) n + z h_prev;  n = tanh(gx_n + r gh_n)
            let dn = (F::one() - z) * (F::one() - n * n); // dh / d(pre of n)
            let dr = dn * gh[on + j] * r * (F::one() - r);
            let dz = (h_prev[j] - n) * z * (F::one() - z);
            let b = j * 3;
            mx[b] = dr;
            mx[b + 1] = dz;
            mx[b + 2] = dn;
            mh[b] = dr;
            mh[b + 1] = dz;
            mh[b + 2] = dn * r;
            dd[j] = z;
        }
    }
}
