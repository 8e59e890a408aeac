//! The forward-only pass of a recurrent stack, for inference and streaming.
//!
//! `network::rnn_forward` keeps every step (gate activations, states) for
//! the backward pass; prediction does not need them. A `Runner` packs each
//! weight matrix once (`linalg::Packed`), keeps only the current state, and
//! sizes its workspaces on the first call, so a stream of `step` calls
//! allocates nothing and everything a step touches stays in cache.
//!
//! Per step and (layer, direction), as PyTorch computes it:
//!   gx = x_t W_ihᵀ + b_ih   [B, G*H]
//!   gh = h   W_hhᵀ + b_hh   [B, G*H]
//!   (h, c) = cell(gx, gh, h, c)
//! Outputs are bit-for-bit the same function as `rnn_forward`'s (the same
//! cell code); the products are summed in a different order, so they agree
//! to rounding (tests compare them).

use crate::cells::{Cell, CellKind, Elman, Gru, Lstm};
use crate::error::{check_len, config_err, shape_err, Result};
use crate::float::Float;
use crate::linalg::{Packed, Tr};
use crate::network::{
    gx_bias, opt_view, project_step, row_cuts, run_parts, split_steps, time_of, DirParams, RnnConfig, RnnState,
    StepWeights,
};
use crate::params::ParamTable;
use crate::simd::{dispatch, Kernel};

/// A forward-only runner over a network's parameters (borrowed: the packed
/// copies cannot go stale while it lives).
#[derive(Debug)]
pub struct Runner<'p, F> {
    cfg: &'p RnnConfig,
    params: &'p [F],
    table: &'p ParamTable,
    dirp: &'p [DirParams],
    /// Per (layer, direction) l*D + d: W_ihᵀ [I_l, G*H] packed.
    w_ih: Vec<Packed<F>>,
    /// Per (layer, direction): W_hhᵀ [H, G*H] packed.
    w_hh: Vec<Packed<F>>,
    /// Per (layer, direction): the bias added to each step's input
    /// projection [G*H] (b_ih, plus b_hh but for the GRU), or empty.
    bias_x: Vec<Vec<F>>,
    /// Input projection of one step [B, G*H].
    gx: Vec<F>,
    /// Recurrent projection of one step [B, G*H].
    gh: Vec<F>,
    /// Gate activations of one row [G*H] (the cell writes them; unused here).
    act: Vec<F>,
    /// Zeros [G*H]: the `gh` of cells that fold it into gx.
    zero_g: Vec<F>,
    /// New states of one step [B, H].
    h_new: Vec<F>,
    c_new: Vec<F>,
    /// Output of the layer below, input of the next [T, B, D*H] (`step`: T = 1).
    layer_a: Vec<F>,
    layer_b: Vec<F>,
}

impl<'p, F: Float> Runner<'p, F> {
    /// Packs the weights of `cfg`'s layers from `params` (laid out by `table`).
    pub fn new(cfg: &'p RnnConfig, table: &'p ParamTable, dirp: &'p [DirParams], params: &'p [F]) -> Result<Self> {
        cfg.validate()?;
        check_len("params", params.len(), table.len(), "[number of parameters]")?;
        let (h, g) = (cfg.hidden_size, cfg.cell.gates() * cfg.hidden_size);
        let mut w_ih = Vec::with_capacity(dirp.len());
        let mut w_hh = Vec::with_capacity(dirp.len());
        let mut bias_x = Vec::with_capacity(dirp.len());
        for (ld, dp) in dirp.iter().enumerate() {
            let mut bias = Vec::new();
            let b_hh = if cfg.cell == CellKind::Gru { &[] } else { opt_view(table, params, dp.b_hh) };
            gx_bias(opt_view(table, params, dp.b_ih), b_hh, &mut bias);
            bias_x.push(bias);
            let i_l = cfg.layer_input(ld / cfg.dirs());
            let mut p = Packed::new();
            p.pack(i_l, g, table.view(params, dp.w_ih), Tr::T);
            w_ih.push(p);
            let mut p = Packed::new();
            p.pack(h, g, table.view(params, dp.w_hh), Tr::T);
            w_hh.push(p);
        }
        Ok(Runner {
            cfg,
            params,
            table,
            dirp,
            w_ih,
            w_hh,
            bias_x,
            gx: Vec::new(),
            gh: Vec::new(),
            act: vec![F::zero(); g],
            zero_g: vec![F::zero(); g],
            h_new: Vec::new(),
            c_new: Vec::new(),
            layer_a: Vec::new(),
            layer_b: Vec::new(),
        })
    }

    /// Forward pass over a sequence batch: `x` [T, B, I] time-major,
    /// `lengths` [B] (each 1..=T; steps past a length leave the state as it
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
        self.check(x, seq_len, batch, state)?;
        if lengths.len() != batch || lengths.iter().any(|&l| l > seq_len) {
            return Err(shape_err("lengths", format!("[{batch}] values in 0..={seq_len}"), format!("{lengths:?}")));
        }
        self.run(x, seq_len, batch, lengths, state)?;
        Ok(std::mem::take(&mut self.layer_a))
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
        self.check(x, 1, b, state)?;
        // Every sequence takes its one step.
        const ALL: [usize; 64] = [1; 64];
        if b <= ALL.len() {
            self.run(x, 1, b, &ALL[..b], state)?;
        } else {
            self.run(x, 1, b, &vec![1; b], state)?;
        }
        Ok(&self.layer_a)
    }

    fn check(&self, x: &[F], t: usize, b: usize, state: &RnnState<F>) -> Result<()> {
        let c = self.cfg;
        if t == 0 || b == 0 {
            return Err(config_err(if t == 0 { "seq_len" } else { "batch" }, 0, "must be at least 1"));
        }
        check_len("x", x.len(), t * b * c.input_size, || format!("[T={t}, B={b}, I={}]", c.input_size))?;
        let n = c.num_layers * c.dirs() * b * c.hidden_size;
        check_len("state.h", state.h.len(), n, || {
            format!("[L*D={}, B={b}, H={}]", c.num_layers * c.dirs(), c.hidden_size)
        })?;
        if c.cell.has_c() {
            check_len("state.c", state.c.len(), n, "[L*D, B, H]")?;
        }
        Ok(())
    }

    /// The sweep over layers and directions; the output ends in `layer_a`.
    fn run(&mut self, x: &[F], t_len: usize, b: usize, lengths: &[usize], state: &mut RnnState<F>) -> Result<()> {
        let cfg = self.cfg;
        let (h, nd) = (cfg.hidden_size, cfg.dirs());
        let g = cfg.cell.gates() * h;
        let dh_out = nd * h;
        self.gx.resize(b * g, F::zero());
        self.gh.resize(b * g, F::zero());
        self.h_new.resize(b * h, F::zero());
        if cfg.cell.has_c() {
            self.c_new.resize(b * h, F::zero());
        }
        for l in 0..cfg.num_layers {
            let i_l = cfg.layer_input(l);
            // Layer 0 reads x; layer l > 0 reads the output of l-1, left in layer_a.
            std::mem::swap(&mut self.layer_a, &mut self.layer_b);
            self.layer_a.clear();
            self.layer_a.resize(t_len * b * dh_out, F::zero());
            for d in 0..nd {
                let ld = l * nd + d;
                let dp = self.dirp[ld];
                let k = ld * b * h;
                let input: &[F] = if l == 0 { x } else { &self.layer_b };
                let gru = cfg.cell == CellKind::Gru;
                let b_hh = if gru { opt_view(self.table, self.params, dp.b_hh) } else { &[] };
                let dir = Dir {
                    t_len,
                    b,
                    h,
                    i_l,
                    d,
                    dh_out,
                    lengths,
                    x: input,
                    w_ih: &self.w_ih[ld],
                    w_hh: &self.w_hh[ld],
                    bias_x: &self.bias_x[ld],
                    b_hh,
                    zero_g: &self.zero_g,
                };
                let h_state = &mut state.h[k..k + b * h];
                let c_state: &mut [F] = if cfg.cell.has_c() { &mut state.c[k..k + b * h] } else { &mut [] };
                let ws = Workspaces {
                    out: &mut self.layer_a,
                    gx: &mut self.gx,
                    gh: &mut self.gh,
                    act: &mut self.act,
                    h_new: &mut self.h_new,
                    c_new: &mut self.c_new,
                };
                match cfg.cell {
                    CellKind::RnnTanh => sweep_dir(Elman { relu: false }, &dir, h_state, c_state, ws),
                    CellKind::RnnRelu => sweep_dir(Elman { relu: true }, &dir, h_state, c_state, ws),
                    CellKind::Lstm => sweep_dir(Lstm, &dir, h_state, c_state, ws),
                    CellKind::Gru => sweep_dir(Gru, &dir, h_state, c_state, ws),
                }
            }
        }
        Ok(())
    }
}

/// What one (layer, direction) reads: sizes, inputs, weights.
struct Dir<'a, F> {
    t_len: usize,
    /// B of the whole batch
    b: usize,
    h: usize,
    i_l: usize,
    d: usize,
    dh_out: usize,
    /// [B]
    lengths: &'a [usize],
    /// Layer input [T, B, I_l].
    x: &'a [F],
    w_ih: &'a Packed<F>,
    w_hh: &'a Packed<F>,
    /// Bias added to gx [G*H] or empty: b_ih, plus b_hh for cells that
    /// fold gh into gx (all but the GRU, see `Cell::NEEDS_GH`).
    bias_x: &'a [F],
    /// b_hh [G*H] of the GRU, or empty.
    b_hh: &'a [F],
    /// The zero `gh` [G*H] of cells that fold it into gx.
    zero_g: &'a [F],
}

/// The buffers one (layer, direction) writes, whole batch.
struct Workspaces<'a, F> {
    /// Layer output [T, B, D*H].
    out: &'a mut [F],
    /// [B, G*H], [B, G*H], [G*H] (grown to one per row block), [B, H], [B, H].
    gx: &'a mut Vec<F>,
    gh: &'a mut [F],
    act: &'a mut Vec<F>,
    h_new: &'a mut [F],
    c_new: &'a mut [F],
}

/// Runs one (layer, direction): on this thread, or, for a sequence batch big
/// enough, as blocks of rows on the pool's threads (rows are independent
/// sequences: each block runs the whole time loop, no per-step sync).
fn sweep_dir<C: Cell<F>, F: Float>(
    cell: C,
    dir: &Dir<'_, F>,
    h_state: &mut [F],
    c_state: &mut [F],
    ws: Workspaces<'_, F>,
) {
    let (b, h) = (dir.b, dir.h);
    let g = C::GATES * h;
    if dir.t_len == 1 {
        // A single step (the streaming path): whole buffers, nothing allocated.
        let mut out = &mut *ws.out;
        let job = Rows {
            dir,
            r0: 0,
            rows: b,
            inner: rayon::current_num_threads(),
            out: std::slice::from_mut(&mut out),
            h_state,
            c_state,
            gx: &mut ws.gx[..],
            gh: ws.gh,
            act: &mut ws.act[..g],
            h_new: ws.h_new,
            c_new: ws.c_new,
        };
        dispatch(WithCell(cell, job));
        return;
    }
    // A sequence: per-step lists of each block's rows (one block on one thread).
    let cuts = row_cuts(b, b * h * g);
    let parts = cuts.len() - 1;
    ws.act.resize(parts * g, F::zero());
    let inner = if parts > 1 { 1 } else { rayon::current_num_threads() };
    let mut out_p = split_steps(ws.out, b, dir.dh_out, &cuts);
    let mut h_it = single(split_steps(h_state, b, h, &cuts));
    let mut c_it = single(split_steps(c_state, b, h, &cuts));
    let mut gx_it = single(split_steps(&mut ws.gx[..], b, g, &cuts));
    let mut gh_it = single(split_steps(ws.gh, b, g, &cuts));
    let mut hn_it = single(split_steps(ws.h_new, b, h, &cuts));
    let mut cn_it = single(split_steps(ws.c_new, b, h, &cuts));
    let mut act_it = ws.act.chunks_mut(g);
    let mut jobs = Vec::with_capacity(parts);
    for (p, out) in out_p.iter_mut().enumerate() {
        let rows = Rows {
            dir,
            r0: cuts[p],
            rows: cuts[p + 1] - cuts[p],
            inner,
            out: &mut out[..],
            h_state: h_it.next().unwrap_or_default(),
            c_state: c_it.next().unwrap_or_default(),
            gx: gx_it.next().unwrap_or_default(),
            gh: gh_it.next().unwrap_or_default(),
            act: act_it.next().unwrap_or_default(),
            h_new: hn_it.next().unwrap_or_default(),
            c_new: cn_it.next().unwrap_or_default(),
        };
        jobs.push(WithCell(cell, rows));
    }
    run_parts(jobs);
}

/// The one step of each row block of `split_steps` (empty slices for an empty buffer).
fn single<F>(v: Vec<Vec<&mut [F]>>) -> impl Iterator<Item = &mut [F]> {
    v.into_iter().map(|mut steps| steps.pop().unwrap_or_default())
}

/// One block of rows [r0, r0 + rows) of one (layer, direction) over all
/// steps. The per-step list `out` holds this block's rows of each
/// step; the other buffers are this block's rows.
struct Rows<'d, 's, 'a, F> {
    dir: &'d Dir<'d, F>,
    r0: usize,
    rows: usize,
    /// Threads for the products inside the block (1 when blocks run in parallel).
    inner: usize,
    /// [T][rows, D*H]
    out: &'s mut [&'a mut [F]],
    /// State in and out [rows, H].
    h_state: &'a mut [F],
    c_state: &'a mut [F],
    /// Workspaces [rows, G*H], [rows, G*H], [G*H], [rows, H], [rows, H].
    gx: &'a mut [F],
    gh: &'a mut [F],
    act: &'a mut [F],
    h_new: &'a mut [F],
    c_new: &'a mut [F],
}

/// A block of rows with its cell, run through `simd::dispatch`.
struct WithCell<'d, 's, 'a, C, F>(C, Rows<'d, 's, 'a, F>);

impl<C: Cell<F>, F: Float> Kernel for WithCell<'_, '_, '_, C, F> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let WithCell(cell, s) = self;
        let dir = s.dir;
        let (b, h, i_l, m, r0) = (dir.b, dir.h, dir.i_l, s.rows, s.r0);
        let g = C::GATES * h;
        let lengths = &dir.lengths[r0..r0 + m];
        for step in 0..dir.t_len {
            let t = time_of(dir.d, step, dir.t_len);
            let x_t = &dir.x[(t * b + r0) * i_l..(t * b + r0 + m) * i_l];
            let w = StepWeights { wih_t: dir.w_ih, whh_t: dir.w_hh, bias_x: dir.bias_x, b_hh: dir.b_hh };
            project_step::<C, F>(m, x_t, s.h_state, &w, s.gx, s.gh, s.inner);
            let gx_t: &[F] = &*s.gx;
            let out_t = &mut *s.out[t];
            for (r, &len) in lengths.iter().enumerate() {
                let rh = r * h..(r + 1) * h;
                if t < len {
                    let (cp, cn): (&[F], &mut [F]) =
                        if C::HAS_C { (&s.c_state[rh.clone()], &mut s.c_new[rh.clone()]) } else { (&[], &mut []) };
                    cell.step_forward(
                        &gx_t[r * g..(r + 1) * g],
                        if C::NEEDS_GH { &s.gh[r * g..(r + 1) * g] } else { dir.zero_g },
                        &s.h_state[rh.clone()],
                        cp,
                        s.act,
                        &mut s.h_new[rh.clone()],
                        cn,
                    );
                    let o = r * dir.dh_out + dir.d * h;
                    out_t[o..o + h].copy_from_slice(&s.h_new[rh]);
                } else {
                    // Past this sequence's length the state stays as it is.
                    s.h_new[rh.clone()].copy_from_slice(&s.h_state[rh.clone()]);
                    if C::HAS_C {
                        s.c_new[rh.clone()].copy_from_slice(&s.c_state[rh]);
                    }
                }
            }
            s.h_state.copy_from_slice(&s.h_new[..m * h]);
            if C::HAS_C {
                s.c_state.copy_from_slice(&s.c_new[..m * h]);
            }
        }
    }
}
