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
use crate::linalg::{add_rows, gemm, gemm_packed, Packed, Tr};
use crate::network::{opt_view, time_of, DirParams, RnnConfig, RnnState};
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
    /// Input projection of one step [B, G*H].
    gx: Vec<F>,
    /// Recurrent projection of one step [B, G*H].
    gh: Vec<F>,
    /// Gate activations of one row [G*H] (the cell writes them; unused here).
    act: Vec<F>,
    /// Zeros [G*H]: the `gh` of cells that fold it into gx.
    zero_g: Vec<F>,
    /// Input projection of every step of a sequence [T, B, G*H].
    gx_all: Vec<F>,
    /// Summed biases of that projection [G*H].
    bias: Vec<F>,
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
        for (ld, dp) in dirp.iter().enumerate() {
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
            gx: Vec::new(),
            gh: Vec::new(),
            act: vec![F::zero(); g],
            zero_g: vec![F::zero(); g],
            gx_all: Vec::new(),
            bias: Vec::new(),
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
        if x.is_empty() || x.len() % i != 0 {
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
                // A sequence: the input projection of all steps is one product
                // (the per-step ones have only I_l terms each).
                let pre = t_len > 1;
                if pre {
                    // Every row starts as the biases: b_ih, plus b_hh for the cells that
                    // fold gh into gx (all but the GRU, see `Cell::NEEDS_GH`); then += X W_ihᵀ.
                    self.bias.clear();
                    self.bias.resize(g, F::zero());
                    for idx in [dp.b_ih, if cfg.cell == CellKind::Gru { usize::MAX } else { dp.b_hh }] {
                        for (a, v) in self.bias.iter_mut().zip(opt_view(self.table, self.params, idx)) {
                            *a += *v;
                        }
                    }
                    self.gx_all.clear();
                    for _ in 0..t_len * b {
                        self.gx_all.extend_from_slice(&self.bias);
                    }
                    let w_ih = self.table.view(self.params, dp.w_ih);
                    gemm(t_len * b, i_l, g, F::one(), input, Tr::N, w_ih, Tr::T, F::one(), &mut self.gx_all);
                }
                let sweep = Sweep {
                    pre,
                    gx_all: &mut self.gx_all,
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
                    b_ih: opt_view(self.table, self.params, dp.b_ih),
                    b_hh: opt_view(self.table, self.params, dp.b_hh),
                    h_state: &mut state.h[k..k + b * h],
                    c_state: if cfg.cell.has_c() { &mut state.c[k..k + b * h] } else { &mut [] },
                    out: &mut self.layer_a,
                    gx: &mut self.gx,
                    gh: &mut self.gh,
                    act: &mut self.act,
                    h_new: &mut self.h_new,
                    c_new: &mut self.c_new,
                    zero_g: &self.zero_g,
                };
                match cfg.cell {
                    CellKind::RnnTanh => dispatch(WithCell(Elman { relu: false }, sweep)),
                    CellKind::RnnRelu => dispatch(WithCell(Elman { relu: true }, sweep)),
                    CellKind::Lstm => dispatch(WithCell(Lstm, sweep)),
                    CellKind::Gru => dispatch(WithCell(Gru, sweep)),
                }
            }
        }
        Ok(())
    }
}

/// One (layer, direction) over all steps: its inputs, weights and workspaces.
struct Sweep<'a, F> {
    t_len: usize,
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
    /// [G*H] or empty.
    b_ih: &'a [F],
    b_hh: &'a [F],
    /// State in and out [B, H].
    h_state: &'a mut [F],
    c_state: &'a mut [F],
    /// Layer output [T, B, D*H].
    out: &'a mut [F],
    /// Workspaces [B, G*H], [B, G*H], [G*H], [B, H], [B, H].
    gx: &'a mut [F],
    gh: &'a mut [F],
    act: &'a mut [F],
    h_new: &'a mut [F],
    c_new: &'a mut [F],
    /// The zero `gh` [G*H] of cells that fold it into gx.
    zero_g: &'a [F],
    /// Whether `gx_all` [T, B, G*H] already holds every step's input
    /// projection with its biases (sequences; a single step projects itself).
    pre: bool,
    gx_all: &'a mut [F],
}

/// A sweep with its cell, run through `simd::dispatch`.
struct WithCell<'a, C, F>(C, Sweep<'a, F>);

impl<C: Cell<F>, F: Float> Kernel for WithCell<'_, C, F> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let WithCell(cell, s) = self;
        let (b, h, i_l) = (s.b, s.h, s.i_l);
        let g = C::GATES * h;
        for step in 0..s.t_len {
            let t = time_of(s.d, step, s.t_len);
            // gx = x_t W_ihᵀ + b_ih (+ b_hh for cells that fold gh into gx).
            let gx_t: &mut [F] = if s.pre {
                &mut s.gx_all[t * b * g..(t + 1) * b * g]
            } else {
                gemm_packed(b, &s.x[t * b * i_l..(t + 1) * b * i_l], s.w_ih, F::zero(), s.gx);
                if !s.b_ih.is_empty() {
                    add_rows(s.gx, s.b_ih);
                }
                if !C::NEEDS_GH && !s.b_hh.is_empty() {
                    add_rows(s.gx, s.b_hh);
                }
                &mut *s.gx
            };
            if C::NEEDS_GH {
                gemm_packed(b, s.h_state, s.w_hh, F::zero(), s.gh);
                if !s.b_hh.is_empty() {
                    add_rows(s.gh, s.b_hh);
                }
            } else {
                // pre = gx + gh: the recurrent product goes straight into gx (see `Cell::NEEDS_GH`).
                gemm_packed(b, s.h_state, s.w_hh, F::one(), gx_t);
            }
            for r in 0..b {
                let rh = r * h..(r + 1) * h;
                if t < s.lengths[r] {
                    let (cp, cn): (&[F], &mut [F]) =
                        if C::HAS_C { (&s.c_state[rh.clone()], &mut s.c_new[rh.clone()]) } else { (&[], &mut []) };
                    cell.step_forward(
                        &gx_t[r * g..(r + 1) * g],
                        if C::NEEDS_GH { &s.gh[r * g..(r + 1) * g] } else { s.zero_g },
                        &s.h_state[rh.clone()],
                        cp,
                        s.act,
                        &mut s.h_new[rh.clone()],
                        cn,
                    );
                    let o = (t * b + r) * s.dh_out + s.d * h;
                    s.out[o..o + h].copy_from_slice(&s.h_new[rh]);
                } else {
                    // Past this sequence's length the state stays as it is.
                    s.h_new[rh.clone()].copy_from_slice(&s.h_state[rh.clone()]);
                    if C::HAS_C {
                        s.c_new[rh.clone()].copy_from_slice(&s.c_state[rh]);
                    }
                }
            }
            s.h_state.copy_from_slice(s.h_new);
            if C::HAS_C {
                s.c_state.copy_from_slice(s.c_new);
            }
        }
    }
}
