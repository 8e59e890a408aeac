//! The cells: the three classic ones as PyTorch defines them, and the
//! element-wise minGRU and minLSTM of Feng et al. (2024), whose gates read
//! only the input. Each cell file pairs the element-wise step forward with
//! its backward; the matrix products (input projection for all steps, one
//! fused recurrent product per step for the cells that have recurrent
//! weights) live in `network`, which drives any cell through the `Cell` trait.
//!
//! Shape legend used across the crate: B batch, T time, I input, H hidden,
//! G gates (1 Elman, 4 LSTM, 3 GRU, 2 minGRU, 3 minLSTM), D directions, L layers.

pub mod elman;
pub mod gru;
pub mod lstm;
pub mod mingru;
pub mod minlstm;

use crate::float::Float;

pub use elman::Elman;
pub use gru::{Gru, GruGate};
pub use lstm::{Lstm, LstmGate};
pub use mingru::{MinGru, MinGruGate};
pub use minlstm::{MinLstm, MinLstmGate};

crate::choice! {
    /// Which cell a network uses.
    pub enum CellKind ("cell") {
        /// Elman RNN, h' = tanh(W_ih x + b_ih + W_hh h + b_hh).
        RnnTanh = "rnn_tanh" | "rnn" | "tanh" | "elman",
        /// Elman RNN with relu instead of tanh.
        RnnRelu = "rnn_relu" | "relu",
        /// LSTM, gates i, f, g, o.
        Lstm = "lstm",
        /// GRU, gates r, z, n.
        Gru = "gru",
        /// minGRU (Feng et al. 2024): h' = (1 - z) h + z g(W_h x + b_h), z = σ(W_z x + b_z); no recurrent weights.
        MinGru = "mingru" | "min_gru",
        /// minLSTM (Feng et al. 2024): h' = (f h + i g(W_h x + b_h)) / (f + i), f, i sigmoid gates of x; no recurrent weights.
        MinLstm = "minlstm" | "min_lstm",
    }
}

impl CellKind {
    /// Gate blocks G: the fused weights have G*H rows.
    pub fn gates(self) -> usize {
        struct Gates;
        impl CellFn<f64> for Gates {
            type Output = usize;
            fn call<C: Cell<f64>>(self, _: C) -> usize {
                C::GATES
            }
        }
        with_cell(self, Gates)
    }

    /// Whether the state has a cell vector c besides h.
    pub fn has_c(self) -> bool {
        struct HasC;
        impl CellFn<f64> for HasC {
            type Output = bool;
            fn call<C: Cell<f64>>(self, _: C) -> bool {
                C::HAS_C
            }
        }
        with_cell(self, HasC)
    }

    /// Whether the step reads the recurrent pre-activation apart from the
    /// input one (`Cell::NEEDS_GH`: the GRU).
    pub fn needs_gh(self) -> bool {
        struct NeedsGh;
        impl CellFn<f64> for NeedsGh {
            type Output = bool;
            fn call<C: Cell<f64>>(self, _: C) -> bool {
                C::NEEDS_GH
            }
        }
        with_cell(self, NeedsGh)
    }

    /// Whether the cell has recurrent weights W_hh (and b_hh): false for the
    /// element-wise minGRU and minLSTM (`Cell::RECURRENT`).
    pub fn recurrent(self) -> bool {
        struct Rec;
        impl CellFn<f64> for Rec {
            type Output = bool;
            fn call<C: Cell<f64>>(self, _: C) -> bool {
                C::RECURRENT
            }
        }
        with_cell(self, Rec)
    }

    /// Name of the fused input projection of a cell without recurrent
    /// weights, as lucidrains/minGRU-pytorch names it
    /// (`to_hidden_and_gate`, `to_hidden_and_f_i_gate`); `None` for the
    /// classic cells, whose tensors carry PyTorch's `weight_ih_l{k}` names.
    pub fn projection_name(self) -> Option<&'static str> {
        match self {
            CellKind::MinGru => Some("to_hidden_and_gate"),
            CellKind::MinLstm => Some("to_hidden_and_f_i_gate"),
            _ => None,
        }
    }

    /// Parses the names used by the CLI and the fixtures.
    pub fn parse(s: &str) -> Option<Self> {
        <Self as crate::choice::Choice>::from_name(s)
    }

    /// Short name (PyTorch module it matches in parentheses in docs).
    pub fn name(self) -> &'static str {
        crate::choice::Choice::name(self)
    }
}

/// Work generic over the cell type, run by [`with_cell`] with the cell a
/// [`CellKind`] names.
pub(crate) trait CellFn<F: Float> {
    /// What the work returns.
    type Output;
    /// Runs the work with `cell`, compiled for its type.
    fn call<C: Cell<F>>(self, cell: C) -> Self::Output;
}

/// The one place a [`CellKind`] becomes a cell type: runs `work` with the
/// cell of `kind` (the forward sweep, the backward pass, the online
/// estimators' Jacobians and the kind's sizes all go through here).
#[inline]
pub(crate) fn with_cell<F: Float, W: CellFn<F>>(kind: CellKind, work: W) -> W::Output {
    match kind {
        CellKind::RnnTanh => work.call(Elman { relu: false }),
        CellKind::RnnRelu => work.call(Elman { relu: true }),
        CellKind::Lstm => work.call(Lstm),
        CellKind::Gru => work.call(Gru),
        CellKind::MinGru => work.call(MinGru),
        CellKind::MinLstm => work.call(MinLstm),
    }
}

/// The element-wise part of one recurrent step, for one sequence (one row of
/// the batch) of H units. `gx` is the input pre-activation W_ih x + b_ih [G*H],
/// `gh` the recurrent one W_hh h + b_hh [G*H]; both were produced by fused
/// matrix products over all gates.
pub trait Cell<F: Float>: Copy + Send + Sync {
    /// G: gate blocks, in the order of `weight_ih` rows.
    const GATES: usize;
    /// Whether the state carries a cell vector c.
    const HAS_C: bool;
    /// State components per unit (2 with c).
    const STATE: usize = if Self::HAS_C { 2 } else { 1 };
    /// Whether the step needs the recurrent pre-activation `gh` apart from
    /// `gx`, forward and backward. Only the GRU does (its reset gate
    /// multiplies W_hn h + b_hn); for the others pre = gx + gh, so the
    /// network adds the recurrent product straight into gx, passes a zero
    /// `gh`, and keeps no [T, B, G*H] copy of it for the backward pass.
    const NEEDS_GH: bool = false;
    /// Whether the cell has recurrent weights W_hh and b_hh. Without them
    /// (minGRU, minLSTM) the network makes no recurrent product: `gh` is
    /// zero, `dgh` unused, and the state reaches the next step only through
    /// the cell's own element-wise recurrence (`step_backward`'s `dh_prev`,
    /// `step_jacobians`' `dd`), so each unit depends on its own past alone.
    const RECURRENT: bool = true;

    /// One step: writes the gate activations `act` [G*H], the new hidden
    /// state `h` [H] and (LSTM) cell state `c` [H].
    #[allow(clippy::too_many_arguments)]
    fn step_forward(&self, gx: &[F], gh: &[F], h_prev: &[F], c_prev: &[F], act: &mut [F], h: &mut [F], c: &mut [F]);

    /// Differentiates `step_forward`. Takes dL/dh [H] and dL/dc [H] (in
    /// `dc`, replaced by dL/dc_prev), writes the gradients of the two
    /// pre-activations `dgx`, `dgh` [G*H] (`dgh` only when `NEEDS_GH`: for
    /// the other cells it equals `dgx`, may be empty and is not touched),
    /// and the part of dL/dh_prev that does not flow through W_hh
    /// (`dh_prev` [H], overwritten).
    #[allow(clippy::too_many_arguments)]
    fn step_backward(
        &self,
        act: &[F],
        gh: &[F],
        h_prev: &[F],
        c_prev: &[F],
        h: &[F],
        c: &[F],
        dh: &[F],
        dc: &mut [F],
        dgx: &mut [F],
        dgh: &mut [F],
        dh_prev: &mut [F],
    );

    /// The local Jacobians of one step that real-time recurrent learning
    /// needs, unit by unit. A unit's state has `STATE` components q (h, and
    /// c for the LSTM); each depends only on the unit's own G pre-activations
    /// and on its own previous state. For unit j, writes
    /// - `mx[(j*STATE + q)*G + g]` = d s_q[j] / d gx[g*H + j],
    /// - `mh[(j*STATE + q)*G + g]` = d s_q[j] / d gh[g*H + j],
    /// - `dd[(j*STATE + q)*STATE + q']` = d s_q[j] / d s_prev_q'[j] other than through gh.
    #[allow(clippy::too_many_arguments)]
    fn step_jacobians(
        &self,
        act: &[F],
        gh: &[F],
        h_prev: &[F],
        c_prev: &[F],
        h: &[F],
        c: &[F],
        mx: &mut [F],
        mh: &mut [F],
        dd: &mut [F],
    );
}

/// Splits `x` into its 4 consecutive gate blocks of `n` (LSTM). Every block
/// has length exactly `n` by construction (`split_at`), so the cells' loops
/// over `0..n` carry no bounds checks and vectorise.
#[inline(always)]
pub(crate) fn blocks4<F>(x: &[F], n: usize) -> [&[F]; 4] {
    let (a, r) = x.split_at(n);
    let (b, r) = r.split_at(n);
    let (c, r) = r.split_at(n);
    [a, b, c, &r[..n]]
}

/// `blocks4` for a mutable slice.
#[inline(always)]
pub(crate) fn blocks4_mut<F>(x: &mut [F], n: usize) -> [&mut [F]; 4] {
    let (a, r) = x.split_at_mut(n);
    let (b, r) = r.split_at_mut(n);
    let (c, r) = r.split_at_mut(n);
    [a, b, c, &mut r[..n]]
}

/// The 3 gate blocks of `n` (GRU); see `blocks4`.
#[inline(always)]
pub(crate) fn blocks3<F>(x: &[F], n: usize) -> [&[F]; 3] {
    let (a, r) = x.split_at(n);
    let (b, r) = r.split_at(n);
    [a, b, &r[..n]]
}

/// `blocks3` for a mutable slice.
#[inline(always)]
pub(crate) fn blocks3_mut<F>(x: &mut [F], n: usize) -> [&mut [F]; 3] {
    let (a, r) = x.split_at_mut(n);
    let (b, r) = r.split_at_mut(n);
    [a, b, &mut r[..n]]
}

/// State components per unit: 2 for the LSTM (h, c), 1 otherwise.
pub fn state_components(cell: CellKind) -> usize {
    if cell.has_c() {
        2
    } else {
        1
    }
}
