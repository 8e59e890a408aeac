//! The forward-only pass of a recurrent stack, for inference and streaming.
//!
//! A `Runner` runs the same sweep as training (`network::sweep`, the same
//! cell code) with `Keep::Last`: it keeps only the latest state of each
//! (layer, direction) instead of every step's, packs each weight matrix
//! once for all its calls (`linalg::Packed`), and sizes its workspaces on
//! the first call at a shape, so a stream of `step` calls allocates nothing
//! and everything a step touches stays in cache.
//!
//! Per step and (layer, direction), as PyTorch computes it:
//!   gx = x_t W_ihᵀ + b_ih   [B, G*H]
//!   gh = h   W_hhᵀ + b_hh   [B, G*H]
//!   (h, c) = cell(gx, gh, h, c)
//! Outputs are the training forward's, bit for bit where the products see
//! the same rows (tests compare them).

use crate::error::{check_len, config_err, shape_err, Result};
use crate::float::Float;
use crate::network::{check_sweep, sweep, DirParams, Keep, PackedNet, RnnCache, RnnConfig, RnnState, StepScratch};
use crate::params::ParamTable;
use rand_chacha::ChaCha8Rng;

/// The buffers of forward-only runs: packed weights and the workspaces of
/// one shape. `Model` keeps some between calls.
#[derive(Debug, Default)]
pub(crate) struct InferWork<F> {
    packed: PackedNet<F>,
    /// Sized for `Keep::Last`; `inputs[0]` takes the input [T, B, I] and
    /// `output` is the top layer's [T, B, D*H].
    cache: RnnCache<F>,
    scratch: StepScratch<F>,
    /// Lengths of a `step`: all 1 [B].
    ones: Vec<usize>,
}

/// A forward-only runner over a network's parameters (packed when it is
/// made: later changes to the parameters are not seen).
#[derive(Debug)]
pub struct Runner<'p, F> {
    cfg: &'p RnnConfig,
    work: InferWork<F>,
}

impl<'p, F: Float> Runner<'p, F> {
    /// Packs the weights of `cfg`'s layers from `params` (laid out by `table`).
    pub fn new(cfg: &'p RnnConfig, table: &ParamTable, dirp: &[DirParams], params: &[F]) -> Result<Self> {
        Self::with_work(cfg, table, dirp, params, InferWork::default())
    }

    /// `new` over the buffers of an earlier runner (`into_work`).
    pub(crate) fn with_work(
        cfg: &'p RnnConfig,
        table: &ParamTable,
        dirp: &[DirParams],
        params: &[F],
        mut work: InferWork<F>,
    ) -> Result<Self> {
        cfg.validate()?;
        check_len("params", params.len(), table.len(), "[number of parameters]")?;
        work.packed.pack(cfg, table, dirp, params);
        Ok(Runner { cfg, work })
    }

    /// The runner's buffers, for a later runner of the same model.
    pub(crate) fn into_work(self) -> InferWork<F> {
        self.work
    }

    /// Forward pass over a sequence batch: `x` [T, B, I] time-major,
    /// `lengths` [B] (each 0..=T; steps past a length leave the state as it
    /// is and output zeros), `state` [L*D, B, H] initial states, replaced by
    /// the final ones. Returns the top layer's output [T, B, D*H].
    pub fn forward(
        &mut self,
        x: &[F],
        seq_len: usize,
        batch: usize,
        lengths: &[usize],
        state: &mut RnnState<F>,
    ) -> Result<Vec<F>> {
        let i = self.cfg.input_size;
        check_len("x", x.len(), seq_len * batch * i, || format!("[T={seq_len}, B={batch}, I={i}]"))?;
        self.forward_filled(seq_len, batch, lengths, state, |input| input.copy_from_slice(x))?;
        Ok(std::mem::take(&mut self.work.cache.output))
    }

    /// `forward` with the input [T, B, I] written by `fill` straight into
    /// the runner's buffer; the output is left in `output()`.
    pub(crate) fn forward_filled(
        &mut self,
        seq_len: usize,
        batch: usize,
        lengths: &[usize],
        state: &mut RnnState<F>,
        fill: impl FnOnce(&mut [F]),
    ) -> Result<()> {
        self.check_state(batch, state)?;
        check_sweep(self.cfg, seq_len, batch, lengths, state)?;
        let w = &mut self.work;
        w.cache.prepare(self.cfg, seq_len, batch, lengths, Keep::Last);
        fill(&mut w.cache.inputs[0]);
        sweep::<F, ChaCha8Rng>(self.cfg, &w.packed, &mut w.cache, &mut w.scratch, state, None);
        Ok(())
    }

    /// The top layer's output [T, B, D*H] of the last `forward_filled`.
    pub(crate) fn output(&self) -> &[F] {
        &self.work.cache.output
    }

    /// One step of every layer for `B` streams: `x` [B, I], `state`
    /// [L*D, B, H] updated in place. Allocates nothing after the first call
    /// with this batch size. Returns the top layer's output [B, D*H].
    pub fn step(&mut self, x: &[F], state: &mut RnnState<F>) -> Result<&[F]> {
        let i = self.cfg.input_size;
        if x.is_empty() || !x.len().is_multiple_of(i) {
            return Err(shape_err("x", format!("[B, I={i}]"), format!("{} values", x.len())));
        }
        let b = x.len() / i;
        // Every sequence takes its one step.
        let mut ones = std::mem::take(&mut self.work.ones);
        ones.clear();
        ones.resize(b, 1);
        let r = self.forward_filled(1, b, &ones, state, |input| input.copy_from_slice(x));
        self.work.ones = ones;
        r?;
        Ok(&self.work.cache.output)
    }

    /// A runner's state must be whole: h, and c for the LSTM, [L*D, B, H].
    fn check_state(&self, b: usize, state: &RnnState<F>) -> Result<()> {
        let c = self.cfg;
        if b == 0 {
            return Err(config_err("batch", 0, "must be at least 1"));
        }
        let n = c.state_len(b);
        check_len("state.h", state.h.len(), n, || {
            format!("[L*D={}, B={b}, H={}]", c.num_layers * c.dirs(), c.hidden_size)
        })?;
        if c.cell.has_c() {
            check_len("state.c", state.c.len(), n, "[L*D, B, H]")?;
        }
        Ok(())
    }
}
