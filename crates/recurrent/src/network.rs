//! Stacked, optionally bidirectional recurrent layers over padded
//! variable-length batches, as PyTorch's `nn.RNN` / `nn.LSTM` / `nn.GRU` on
//! packed sequences. `rnn_forward` returns an explicit cache that
//! `rnn_backward` consumes; backward walks the same loops in reverse.
//!
//! Layout: everything inside is time-major and row-major: x [T, B, I],
//! outputs [T, B, D*H], states [L*D, B, H] (index l*D + d, as PyTorch).
//!
//! Speed by design: W_ih and W_hh are packed once per sweep; each step does
//! one product of its input with all G gate blocks of W_ih and one of the
//! previous state with all G gate blocks of W_hh (made per step, so the gate
//! pre-activations stay in cache); the weight gradients are one GEMM each
//! over all steps after the sweep; all per-step buffers are sized before the
//! time loop.

use crate::cells::{Cell, CellKind, Elman, Gru, Lstm};
use crate::error::{config_err, shape_err, Error, Result};
use crate::float::Float;
use crate::linalg::{add_rows, gemm, gemm_packed_threads, sum_rows_into, Packed, Tr};
use crate::params::ParamTable;
use crate::simd::{dispatch, Kernel};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Shape and kind of a stack of recurrent layers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RnnConfig {
    pub cell: CellKind,
    pub input_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub bidirectional: bool,
    pub bias: bool,
    /// Dropout probability on the outputs of every layer but the last (training only).
    pub dropout: f64,
}

impl RnnConfig {
    /// A one-layer, unidirectional network with biases and no dropout.
    pub fn new(cell: CellKind, input_size: usize, hidden_size: usize) -> Self {
        RnnConfig { cell, input_size, hidden_size, num_layers: 1, bidirectional: false, bias: true, dropout: 0.0 }
    }

    /// D: number of directions.
    pub fn dirs(&self) -> usize {
        if self.bidirectional {
            2
        } else {
            1
        }
    }

    /// Width of the output features, D*H.
    pub fn output_size(&self) -> usize {
        self.dirs() * self.hidden_size
    }

    /// Input width of layer `l`.
    pub fn layer_input(&self, l: usize) -> usize {
        if l == 0 {
            self.input_size
        } else {
            self.output_size()
        }
    }

    /// Rejects zero sizes and a dropout outside [0, 1).
    pub fn validate(&self) -> Result<()> {
        for (what, v) in
            [("input_size", self.input_size), ("hidden_size", self.hidden_size), ("num_layers", self.num_layers)]
        {
            if v == 0 {
                return Err(config_err(what, v, "must be at least 1"));
            }
        }
        if !(self.dropout >= 0.0 && self.dropout < 1.0) {
            return Err(config_err("dropout", self.dropout, "must be in [0, 1)"));
        }
        Ok(())
    }
}

/// Indices into the parameter table of one (layer, direction). A missing bias
/// is `usize::MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirParams {
    /// weight_ih [G*H, I_l]
    pub w_ih: usize,
    /// weight_hh [G*H, H]
    pub w_hh: usize,
    /// bias_ih [G*H]
    pub b_ih: usize,
    /// bias_hh [G*H]
    pub b_hh: usize,
}

/// Registers the parameters of `cfg` in `table` under PyTorch's names
/// (`{prefix}weight_ih_l{k}[_reverse]` ...), in PyTorch's order. Returns one
/// `DirParams` per (layer, direction), index l*D + d.
pub fn register_params(table: &mut ParamTable, prefix: &str, cfg: &RnnConfig) -> Vec<DirParams> {
    let gh = cfg.cell.gates() * cfg.hidden_size;
    let mut out = Vec::new();
    for l in 0..cfg.num_layers {
        for d in 0..cfg.dirs() {
            let sfx = if d == 1 { "_reverse" } else { "" };
            let w_ih = table.push(format!("{prefix}weight_ih_l{l}{sfx}"), &[gh, cfg.layer_input(l)]);
            let w_hh = table.push(format!("{prefix}weight_hh_l{l}{sfx}"), &[gh, cfg.hidden_size]);
            let (b_ih, b_hh) = if cfg.bias {
                (
                    table.push(format!("{prefix}bias_ih_l{l}{sfx}"), &[gh]),
                    table.push(format!("{prefix}bias_hh_l{l}{sfx}"), &[gh]),
                )
            } else {
                (usize::MAX, usize::MAX)
            };
            out.push(DirParams { w_ih, w_hh, b_ih, b_hh });
        }
    }
    out
}

/// What one (layer, direction) keeps for its backward pass. Buffers are in
/// *processing* order s (s = t forward, s = T-1-t for the reverse direction).
#[derive(Clone, Debug)]
pub struct DirCache<F> {
    /// Gate activations [T, B, G*H].
    pub act: Vec<F>,
    /// Recurrent pre-activation W_hh h + b_hh [T, B, G*H] (GRU only, which
    /// needs its n block; empty for cells that fold it into gx).
    pub gh: Vec<F>,
    /// Hidden states [T+1, B, H]; h[0] is the initial state.
    pub h: Vec<F>,
    /// Cell states [T+1, B, H] (LSTM; empty otherwise).
    pub c: Vec<F>,
}

/// Everything `rnn_forward` computed that `rnn_backward` needs.
#[derive(Clone, Debug)]
pub struct RnnCache<F> {
    /// T
    pub seq_len: usize,
    /// B
    pub batch: usize,
    /// Per-sequence valid lengths [B] (0 allowed internally: the state passes through).
    pub lengths: Vec<usize>,
    /// Input of each layer [T, B, I_l] (after dropout for l > 0).
    pub inputs: Vec<Vec<F>>,
    /// Dropout mask applied to the input of layer l > 0 [T, B, D*H], already
    /// scaled by 1/(1-p); empty when no dropout was applied.
    pub masks: Vec<Vec<F>>,
    /// Per (layer, direction), index l*D + d.
    pub dirs: Vec<DirCache<F>>,
    /// Output of the top layer [T, B, D*H], zero past each length.
    pub output: Vec<F>,
}

/// Final states of the network, [L*D, B, H] each (c empty unless LSTM).
#[derive(Clone, Debug, PartialEq)]
pub struct RnnState<F> {
    pub h: Vec<F>,
    pub c: Vec<F>,
}

/// Gradients with respect to the inputs of `rnn_forward`.
#[derive(Clone, Debug)]
pub struct RnnInputGrads<F> {
    /// dL/dx [T, B, I] (empty unless asked for).
    pub dx: Vec<F>,
    /// dL/dh0 [L*D, B, H].
    pub dh0: Vec<F>,
    /// dL/dc0 [L*D, B, H] (LSTM; empty otherwise).
    pub dc0: Vec<F>,
    /// Mean over the sequences still running of ||dL/dh_t||, the whole
    /// gradient reaching the hidden state of step t (from the outputs and
    /// from later steps) [L*D, T], in time order: how far back the error
    /// signal reaches.
    pub dh_norms: Vec<f64>,
}

/// Checks per-sequence lengths: each must be in 1..=T.
pub fn check_lengths(lengths: &[usize], batch: usize, seq_len: usize) -> Result<()> {
    if lengths.len() != batch {
        return Err(shape_err("lengths", format!("[{batch}] (one per sequence)"), format!("[{}]", lengths.len())));
    }
    for (index, &length) in lengths.iter().enumerate() {
        if length == 0 || length > seq_len {
            return Err(Error::Length { index, length, seq_len });
        }
    }
    Ok(())
}

/// Forward pass of the stacked network.
///
/// `x` [T, B, I]; `lengths` [B] (each 0..=T; 0 means the sequence takes no
/// step, as happens to a finished sequence inside a truncated-BPTT window);
/// `h0`, `c0` [L*D, B, H] (empty means zeros); `dropout_rng` is `Some` in
/// training, when dropout applies.
#[allow(clippy::too_many_arguments)]
pub fn rnn_forward<F: Float, R: Rng>(
    cfg: &RnnConfig,
    table: &ParamTable,
    dirp: &[DirParams],
    params: &[F],
    x: &[F],
    seq_len: usize,
    batch: usize,
    lengths: &[usize],
    h0: &[F],
    c0: &[F],
    dropout_rng: Option<&mut R>,
) -> Result<(RnnCache<F>, RnnState<F>)> {
    // The same sweep for each cell, compiled for the CPU's vector instructions.
    macro_rules! go {
        ($cell:expr) => {
            dispatch(Forward { cell: $cell, cfg, table, dirp, params, x, seq_len, batch, lengths, h0, c0, dropout_rng })
        };
    }
    match cfg.cell {
        CellKind::RnnTanh => go!(Elman { relu: false }),
        CellKind::RnnRelu => go!(Elman { relu: true }),
        CellKind::Lstm => go!(Lstm),
        CellKind::Gru => go!(Gru),
    }
}

/// Backward pass: consumes the cache of `rnn_forward`.
///
/// `dout` [T, B, D*H] is dL/d(output) (positions past a length are ignored);
/// `dh_n`, `dc_n` [L*D, B, H] are dL/d(final states) (empty means zero).
/// Parameter gradients are *added* to `grads` (laid out by `table`).
#[allow(clippy::too_many_arguments)]
pub fn rnn_backward<F: Float>(
    cfg: &RnnConfig,
    table: &ParamTable,
    dirp: &[DirParams],
    params: &[F],
    cache: &RnnCache<F>,
    dout: &[F],
    dh_n: &[F],
    dc_n: &[F],
    grads: &mut [F],
    want_dx: bool,
) -> Result<RnnInputGrads<F>> {
    macro_rules! go {
        ($cell:expr) => {
            dispatch(Backward { cell: $cell, cfg, table, dirp, params, cache, dout, dh_n, dc_n, grads, want_dx })
        };
    }
    match cfg.cell {
        CellKind::RnnTanh => go!(Elman { relu: false }),
        CellKind::RnnRelu => go!(Elman { relu: true }),
        CellKind::Lstm => go!(Lstm),
        CellKind::Gru => go!(Gru),
    }
}

#[inline]
pub(crate) fn time_of(d: usize, s: usize, seq_len: usize) -> usize {
    if d == 0 {
        s
    } else {
        seq_len - 1 - s
    }
}

pub(crate) fn opt_view<'a, F>(table: &ParamTable, params: &'a [F], idx: usize) -> &'a [F] {
    if idx == usize::MAX {
        &[]
    } else {
        table.view(params, idx)
    }
}

/// The arguments of `forward_cell`, so the whole sweep can be compiled for
/// the CPU's vector instructions (`simd::dispatch`).
struct Forward<'a, C, F, R> {
    cell: C,
    cfg: &'a RnnConfig,
    table: &'a ParamTable,
    dirp: &'a [DirParams],
    params: &'a [F],
    x: &'a [F],
    seq_len: usize,
    batch: usize,
    lengths: &'a [usize],
    h0: &'a [F],
    c0: &'a [F],
    dropout_rng: Option<&'a mut R>,
}

impl<C: Cell<F>, F: Float, R: Rng> Kernel for Forward<'_, C, F, R> {
    type Output = Result<(RnnCache<F>, RnnState<F>)>;
    #[inline(always)]
    fn run(self) -> Self::Output {
        forward_cell(self)
    }
}

/// The arguments of `backward_cell` (see `Forward`).
struct Backward<'a, C, F> {
    cell: C,
    cfg: &'a RnnConfig,
    table: &'a ParamTable,
    dirp: &'a [DirParams],
    params: &'a [F],
    cache: &'a RnnCache<F>,
    dout: &'a [F],
    dh_n: &'a [F],
    dc_n: &'a [F],
    grads: &'a mut [F],
    want_dx: bool,
}

impl<C: Cell<F>, F: Float> Kernel for Backward<'_, C, F> {
    type Output = Result<RnnInputGrads<F>>;
    #[inline(always)]
    fn run(self) -> Self::Output {
        backward_cell(self)
    }
}

#[inline(always)]
fn forward_cell<F: Float, C: Cell<F>, R: Rng>(args: Forward<'_, C, F, R>) -> Result<(RnnCache<F>, RnnState<F>)> {
    let Forward { cell, cfg, table, dirp, params, x, seq_len, batch, lengths, h0, c0, mut dropout_rng } = args;
    cfg.validate()?;
    let (t_len, b, h) = (seq_len, batch, cfg.hidden_size);
    let (nd, nl) = (cfg.dirs(), cfg.num_layers);
    let g = C::GATES * h;
    let dh_out = nd * h;
    if t_len == 0 || b == 0 {
        return Err(config_err(if t_len == 0 { "seq_len" } else { "batch" }, 0, "must be at least 1"));
    }
    crate::error::check_len("x", x.len(), t_len * b * cfg.input_size, || {
        format!("[T={t_len}, B={b}, I={}]", cfg.input_size)
    })?;
    if lengths.len() != b || lengths.iter().any(|&l| l > t_len) {
        return Err(shape_err("lengths", format!("[{b}] values in 0..={t_len}"), format!("{lengths:?}")));
    }
    let state_len = nl * nd * b * h;
    if !h0.is_empty() {
        crate::error::check_len("h0", h0.len(), state_len, || format!("[L*D={}, B={b}, H={h}]", nl * nd))?;
    }
    if !c0.is_empty() {
        if !C::HAS_C {
            return Err(config_err("c0", "given", "only an LSTM has a cell state"));
        }
        crate::error::check_len("c0", c0.len(), state_len, || format!("[L*D={}, B={b}, H={h}]", nl * nd))?;
    }

    let mut inputs: Vec<Vec<F>> = Vec::with_capacity(nl);
    let mut masks: Vec<Vec<F>> = Vec::with_capacity(nl);
    let mut dirs: Vec<DirCache<F>> = Vec::with_capacity(nl * nd);
    let mut hn = vec![F::zero(); state_len];
    let mut cn = if C::HAS_C { vec![F::zero(); state_len] } else { Vec::new() };
    // Workspace reused by every (layer, direction): one step's gate
    // pre-activations [B, G*H]. The input projection is made step by step
    // (a [T, B, G*H] projection made up front left cache before its step).
    let mut gx = vec![F::zero(); b * g];
    // W_ihᵀ [I_l, G*H] and W_hhᵀ [H, G*H], packed once per (layer, direction) for its T per-step products.
    let mut wih_t = Packed::new();
    let mut whh_t = Packed::new();
    // The bias added to each step's gx [G*H]: b_ih (+ b_hh for cells that fold gh into gx).
    let mut bias_x: Vec<F> = Vec::new();
    // The zero `gh` [G*H] of cells that fold it into gx (see `Cell::NEEDS_GH`).
    let zero_g = vec![F::zero(); if C::NEEDS_GH { 0 } else { g }];
    let mut layer_in: Vec<F> = x.to_vec();
    let mut out: Vec<F> = Vec::new();
    let p = cfg.dropout;
    for l in 0..nl {
        let i_l = cfg.layer_input(l);
        // Dropout on the input of layer l > 0 (= the output of layer l-1), training only.
        let mut mask = Vec::new();
        if l > 0 && p > 0.0 {
            if let Some(rng) = dropout_rng.as_deref_mut() {
                let keep = F::of(1.0 / (1.0 - p));
                mask = (0..layer_in.len()).map(|_| if rng.gen::<f64>() < p { F::zero() } else { keep }).collect();
                for (v, m) in layer_in.iter_mut().zip(&mask) {
                    *v *= *m;
                }
            }
        }
        out = vec![F::zero(); t_len * b * dh_out];
        for d in 0..nd {
            let dp = dirp[l * nd + d];
            let w_ih = table.view(params, dp.w_ih);
            let w_hh = table.view(params, dp.w_hh);
            let b_ih = opt_view(table, params, dp.b_ih);
            let b_hh = opt_view(table, params, dp.b_hh);
            whh_t.pack(h, g, w_hh, Tr::T);
            wih_t.pack(i_l, g, w_ih, Tr::T);
            // pre = gx + gh: for cells that fold gh into gx, b_hh joins b_ih.
            gx_bias(b_ih, if C::NEEDS_GH { &[] } else { b_hh }, &mut bias_x);
            let mut dc = DirCache {
                act: vec![F::zero(); t_len * b * g],
                gh: if C::NEEDS_GH { vec![F::zero(); t_len * b * g] } else { Vec::new() },
                h: vec![F::zero(); (t_len + 1) * b * h],
                c: if C::HAS_C { vec![F::zero(); (t_len + 1) * b * h] } else { Vec::new() },
            };
            let k = (l * nd + d) * b * h;
            if !h0.is_empty() {
                dc.h[..b * h].copy_from_slice(&h0[k..k + b * h]);
            }
            if !c0.is_empty() {
                dc.c[..b * h].copy_from_slice(&c0[k..k + b * h]);
            }
            // Rows of the batch are independent sequences: each block of rows
            // runs the whole time loop on its own thread (no per-step sync).
            let cuts = row_cuts(b, b * h * g);
            let inner = if cuts.len() > 2 { 1 } else { rayon::current_num_threads() };
            let mut gx_p = split_steps(&mut gx, b, g, &cuts);
            let mut gh_p = split_steps(&mut dc.gh, b, g, &cuts);
            let mut act_p = split_steps(&mut dc.act, b, g, &cuts);
            let mut h_p = split_steps(&mut dc.h, b, h, &cuts);
            let mut c_p = split_steps(&mut dc.c, b, h, &cuts);
            let mut out_p = split_steps(&mut out, b, dh_out, &cuts);
            let jobs: Vec<ForwardRows<C, F>> = (0..cuts.len() - 1)
                .rev()
                .map(|p| ForwardRows {
                    cell,
                    d,
                    t_len,
                    b,
                    r0: cuts[p],
                    i_l,
                    h,
                    dh_out,
                    inner,
                    lengths: &lengths[cuts[p]..cuts[p + 1]],
                    x: &layer_in,
                    wih_t: &wih_t,
                    whh_t: &whh_t,
                    bias_x: &bias_x,
                    b_hh,
                    zero_g: &zero_g,
                    gx: take1(&mut gx_p),
                    gh: gh_p.pop().unwrap_or_default(),
                    act: act_p.pop().unwrap_or_default(),
                    hs: h_p.pop().unwrap_or_default(),
                    cs: c_p.pop().unwrap_or_default(),
                    out: out_p.pop().unwrap_or_default(),
                })
                .collect();
            run_parts(jobs);
            hn[k..k + b * h].copy_from_slice(&dc.h[t_len * b * h..]);
            if C::HAS_C {
                cn[k..k + b * h].copy_from_slice(&dc.c[t_len * b * h..]);
            }
            dirs.push(dc);
        }
        inputs.push(std::mem::replace(&mut layer_in, out.clone()));
        masks.push(mask);
    }
    let cache = RnnCache { seq_len: t_len, batch: b, lengths: lengths.to_vec(), inputs, masks, dirs, output: out };
    Ok((cache, RnnState { h: hn, c: cn }))
}

#[inline(always)]
fn backward_cell<F: Float, C: Cell<F>>(args: Backward<'_, C, F>) -> Result<RnnInputGrads<F>> {
    let Backward { cell, cfg, table, dirp, params, cache, dout, dh_n, dc_n, grads, want_dx } = args;
    let (t_len, b, h) = (cache.seq_len, cache.batch, cfg.hidden_size);
    let (nd, nl) = (cfg.dirs(), cfg.num_layers);
    let g = C::GATES * h;
    let dh_out = nd * h;
    let state_len = nl * nd * b * h;
    crate::error::check_len("dout", dout.len(), t_len * b * dh_out, || format!("[T={t_len}, B={b}, D*H={dh_out}]"))?;
    if !dh_n.is_empty() {
        crate::error::check_len("dh_n", dh_n.len(), state_len, "[L*D, B, H]")?;
    }
    if !dc_n.is_empty() {
        crate::error::check_len("dc_n", dc_n.len(), state_len, "[L*D, B, H]")?;
    }
    crate::error::check_len("grads", grads.len(), table.len(), "[number of parameters]")?;
    let lengths = &cache.lengths;

    let mut dh0 = vec![F::zero(); state_len];
    let mut dc0 = if C::HAS_C { vec![F::zero(); state_len] } else { Vec::new() };
    // Workspaces sized once.
    let mut dgx = vec![F::zero(); t_len * b * g]; // [T, B, G*H], time order
                                                  // [T, B, G*H] in processing order; only cells with NEEDS_GH have a dgh
                                                  // apart from dgx (for the others the two are equal).
    let mut dgh = vec![F::zero(); if C::NEEDS_GH { t_len * b * g } else { 0 }];
    // Reverse direction of such cells: the states before each step in time order [T, B, H].
    let mut h_rev: Vec<F> = Vec::new();
    let mut dh = vec![F::zero(); b * h]; // dL/dh_s carried backwards [B, H]
    let mut dhp = vec![F::zero(); b * h]; // dL/dh_{s-1} being assembled [B, H]
    let mut dcs = vec![F::zero(); if C::HAS_C { b * h } else { 0 }];
    // W_hh [G*H, H], packed once per (layer, direction) for its T per-step products.
    let mut whh = Packed::new();
    let mut dlayer: Vec<F> = dout.to_vec(); // dL/d(output of layer l) [T, B, D*H]
    let mut dx = Vec::new();
    let mut dh_norms = vec![0.0f64; nl * nd * t_len];
    for l in (0..nl).rev() {
        let i_l = cfg.layer_input(l);
        let x_l = &cache.inputs[l];
        let need_dx = l > 0 || want_dx;
        let mut dxl = if need_dx { vec![F::zero(); t_len * b * i_l] } else { Vec::new() };
        for d in 0..nd {
            let dp = dirp[l * nd + d];
            let dcache = &cache.dirs[l * nd + d];
            let w_ih = table.view(params, dp.w_ih);
            let w_hh = table.view(params, dp.w_hh);
            let k = (l * nd + d) * b * h;
            whh.pack(g, h, w_hh, Tr::N);
            dh.iter_mut().for_each(|v| *v = F::zero());
            if !dh_n.is_empty() {
                dh.copy_from_slice(&dh_n[k..k + b * h]);
            }
            if C::HAS_C {
                dcs.iter_mut().for_each(|v| *v = F::zero());
                if !dc_n.is_empty() {
                    dcs.copy_from_slice(&dc_n[k..k + b * h]);
                }
            }
            let cuts = row_cuts(b, b * h * g);
            let inner = if cuts.len() > 2 { 1 } else { rayon::current_num_threads() };
            let mut dgx_p = split_steps(&mut dgx, b, g, &cuts);
            let mut dgh_p = split_steps(&mut dgh, b, g, &cuts);
            let mut dh_p = split_steps(&mut dh, b, h, &cuts);
            let mut dhp_p = split_steps(&mut dhp, b, h, &cuts);
            let mut dcs_p = split_steps(&mut dcs, b, h, &cuts);
            let mut dh0_p = split_steps(&mut dh0[k..k + b * h], b, h, &cuts);
            let mut dc0_p = split_steps(if C::HAS_C { &mut dc0[k..k + b * h] } else { &mut [] }, b, h, &cuts);
            let mut norms = vec![(0.0f64, 0usize); (cuts.len() - 1) * t_len];
            let mut norms_p: Vec<&mut [(f64, usize)]> = norms.chunks_mut(t_len).collect();
            let jobs: Vec<BackwardRows<C, F>> = (0..cuts.len() - 1)
                .rev()
                .map(|p| BackwardRows {
                    cell,
                    d,
                    t_len,
                    b,
                    h,
                    dh_out,
                    inner,
                    r0: cuts[p],
                    lengths: &lengths[cuts[p]..cuts[p + 1]],
                    whh: &whh,
                    dcache,
                    dlayer: &dlayer,
                    dgx: dgx_p.pop().unwrap_or_default(),
                    dgh: dgh_p.pop().unwrap_or_default(),
                    dh: take1(&mut dh_p),
                    dhp: take1(&mut dhp_p),
                    dc: take1(&mut dcs_p),
                    dh0: take1(&mut dh0_p),
                    dc0: take1(&mut dc0_p),
                    norms: norms_p.pop().unwrap_or_default(),
                })
                .collect();
            run_parts(jobs);
            for t in 0..t_len {
                let (sum, n) = norms.iter().skip(t).step_by(t_len).fold((0.0, 0), |a, v| (a.0 + v.0, a.1 + v.1));
                dh_norms[(l * nd + d) * t_len + t] = if n > 0 { sum / n as f64 } else { 0.0 };
            }
            // Weight gradients: one product each over all steps.
            let [dw_ih, dw_hh, db_ih, db_hh] = table.views_mut(grads, [dp.w_ih, dp.w_hh, dp.b_ih, dp.b_hh]);
            // gx = X W_ihᵀ  =>  dW_ih += dgxᵀ X   [G*H, T*B] x [T*B, I]
            gemm(g, t_len * b, i_l, F::one(), &dgx, Tr::T, x_l, Tr::N, F::one(), dw_ih);
            // gh_s = h_{s-1} W_hhᵀ  =>  dW_hh += dghᵀ H_prev   [G*H, T*B] x [T*B, H]
            if C::NEEDS_GH {
                gemm(g, t_len * b, h, F::one(), &dgh, Tr::T, &dcache.h[..t_len * b * h], Tr::N, F::one(), dw_hh);
            } else if d == 0 {
                // dgh = dgx, and time order is processing order.
                gemm(g, t_len * b, h, F::one(), &dgx, Tr::T, &dcache.h[..t_len * b * h], Tr::N, F::one(), dw_hh);
            } else {
                // dgh = dgx in time order: pair it with the states in time order.
                h_rev.resize(t_len * b * h, F::zero());
                for (t, dst) in h_rev.chunks_exact_mut(b * h).enumerate() {
                    let s = time_of(d, t, t_len);
                    dst.copy_from_slice(&dcache.h[s * b * h..(s + 1) * b * h]);
                }
                gemm(g, t_len * b, h, F::one(), &dgx, Tr::T, &h_rev, Tr::N, F::one(), dw_hh);
            }
            if cfg.bias {
                sum_rows_into(db_ih, &dgx);
                sum_rows_into(db_hh, if C::NEEDS_GH { &dgh } else { &dgx });
            }
            if need_dx {
                // dX += dgx W_ih   [T*B, G*H] x [G*H, I]
                gemm(t_len * b, g, i_l, F::one(), &dgx, Tr::N, w_ih, Tr::N, F::one(), &mut dxl);
            }
        }
        if l > 0 {
            // The input of layer l was dropout(output of layer l-1).
            if !cache.masks[l].is_empty() {
                for (v, m) in dxl.iter_mut().zip(&cache.masks[l]) {
                    *v *= *m;
                }
            }
            dlayer = dxl;
        } else {
            dx = dxl;
        }
    }
    Ok(RnnInputGrads { dx, dh0, dc0, dh_norms })
}

/// The bias each step adds to its input projection gx [G*H]: `b_ih` plus
/// `b_hh_folded` (b_hh for cells that fold gh into gx, empty for the GRU);
/// empty when both are (a network without biases).
pub(crate) fn gx_bias<F: Float>(b_ih: &[F], b_hh_folded: &[F], out: &mut Vec<F>) {
    out.clear();
    for v in [b_ih, b_hh_folded] {
        if !v.is_empty() {
            out.resize(v.len(), F::zero());
            for (a, x) in out.iter_mut().zip(v) {
                *a += *x;
            }
        }
    }
}

/// The packed weights and biases of one (layer, direction) that each step's
/// projections use.
pub(crate) struct StepWeights<'a, F> {
    /// W_ihᵀ packed [I_l, G*H]
    pub wih_t: &'a Packed<F>,
    /// W_hhᵀ packed [H, G*H]
    pub whh_t: &'a Packed<F>,
    /// Bias of gx [G*H] (`gx_bias`) or empty
    pub bias_x: &'a [F],
    /// b_hh [G*H] of cells that keep gh apart (GRU), or empty
    pub b_hh: &'a [F],
}

/// One step's projections for `m` rows, shared by the training forward and
/// the runner: gx = x_t W_ihᵀ + bias_x [m, G*H]; then, for cells that keep it
/// apart (`Cell::NEEDS_GH`), gh = h_prev W_hhᵀ + b_hh [m, G*H], and for the
/// others h_prev W_hhᵀ is added straight into gx (pre = gx + gh); `gh` is
/// then unused. Each is one fused product for all G gates; the input
/// projection is made per step because a [T, B, G*H] one made up front left
/// cache before its step came.
pub(crate) fn project_step<C: Cell<F>, F: Float>(
    m: usize,
    x_t: &[F],
    h_prev: &[F],
    w: &StepWeights<'_, F>,
    gx: &mut [F],
    gh: &mut [F],
    inner: usize,
) {
    gemm_packed_threads(m, x_t, w.wih_t, F::zero(), gx, inner);
    if !w.bias_x.is_empty() {
        add_rows(gx, w.bias_x);
    }
    if C::NEEDS_GH {
        gemm_packed_threads(m, h_prev, w.whh_t, F::zero(), gh, inner);
        if !w.b_hh.is_empty() {
            add_rows(gh, w.b_hh);
        }
    } else {
        gemm_packed_threads(m, h_prev, w.whh_t, F::one(), gx, inner);
    }
}

/// Row cut points [0, .., B] splitting the batch into one block per thread
/// of the current pool, in multiples of 8 rows (the micro-kernel's row
/// block) when possible; one block when the per-step work is too small to
/// pay for a second thread.
pub(crate) fn row_cuts(b: usize, step_work: usize) -> Vec<usize> {
    let threads = rayon::current_num_threads();
    let parts = if threads > 1 && step_work >= 1 << 15 { threads.min(b) } else { 1 };
    let unit = if b >= 8 * parts { 8 } else { 1 };
    let mut cuts = vec![0];
    for p in 1..parts {
        let c = (b * p / parts).div_ceil(unit) * unit;
        if c > *cuts.last().unwrap_or(&0) && c < b {
            cuts.push(c);
        }
    }
    cuts.push(b);
    cuts
}

/// Cuts every step [B, W] of `buf` [S, B, W] into the row blocks of `cuts`:
/// result [block][step]. An empty buffer gives empty lists.
pub(crate) fn split_steps<'a, F>(buf: &'a mut [F], b: usize, w: usize, cuts: &[usize]) -> Vec<Vec<&'a mut [F]>> {
    let parts = cuts.len() - 1;
    let mut out: Vec<Vec<&'a mut [F]>> = (0..parts).map(|_| Vec::new()).collect();
    if buf.is_empty() || b * w == 0 {
        return out;
    }
    for step in buf.chunks_exact_mut(b * w) {
        let mut rest = step;
        for (p, o) in out.iter_mut().enumerate() {
            let (a, r) = rest.split_at_mut((cuts[p + 1] - cuts[p]) * w);
            o.push(a);
            rest = r;
        }
    }
    out
}

/// The last one-step block of `split_steps` (or an empty slice).
fn take1<'a, F>(v: &mut Vec<Vec<&'a mut [F]>>) -> &'a mut [F] {
    v.pop().and_then(|mut s| s.pop()).unwrap_or_default()
}

/// Runs the row blocks, each compiled for the CPU's vector instructions,
/// the first on this thread and the others on the pool (`rayon::join`).
pub(crate) fn run_parts<K: Kernel<Output = ()> + Send>(mut jobs: Vec<K>) {
    fn go<K: Kernel<Output = ()> + Send>(jobs: &mut Vec<K>) {
        match jobs.len() {
            0 => {}
            1 => dispatch(jobs.pop().expect("one job")),
            n => {
                let mut rest = jobs.split_off(n / 2);
                rayon::join(|| go(jobs), || go(&mut rest));
            }
        }
    }
    go(&mut jobs);
}

/// One block of rows of one (layer, direction), forward over all steps.
/// Per-step lists hold this block's rows: `gx`, `out` by time t; `gh`,
/// `act` by processing step s; `h`, `c` by s with T+1 entries.
struct ForwardRows<'a, C, F> {
    cell: C,
    d: usize,
    t_len: usize,
    /// B of the whole batch, first row of this block, I_l (strides of `x`)
    b: usize,
    r0: usize,
    i_l: usize,
    h: usize,
    dh_out: usize,
    /// Threads for the products inside the block (1 when blocks run in parallel).
    inner: usize,
    /// [rows]
    lengths: &'a [usize],
    /// Layer input [T, B, I_l] (all rows; this block reads its own)
    x: &'a [F],
    /// W_ihᵀ packed [I_l, G*H]
    wih_t: &'a Packed<F>,
    /// W_hhᵀ packed [H, G*H]
    whh_t: &'a Packed<F>,
    /// Bias of gx [G*H] (b_ih, + b_hh but for the GRU) or empty
    bias_x: &'a [F],
    /// [G*H] or empty
    b_hh: &'a [F],
    /// [G*H] zeros (cells without NEEDS_GH)
    zero_g: &'a [F],
    /// One step's gate pre-activations [rows, G*H]
    gx: &'a mut [F],
    /// [T][rows, G*H] (GRU) or empty
    gh: Vec<&'a mut [F]>,
    /// [T][rows, G*H]
    act: Vec<&'a mut [F]>,
    /// [T+1][rows, H]
    hs: Vec<&'a mut [F]>,
    /// [T+1][rows, H] (LSTM) or empty
    cs: Vec<&'a mut [F]>,
    /// [T][rows, D*H]
    out: Vec<&'a mut [F]>,
}

impl<C: Cell<F>, F: Float> Kernel for ForwardRows<'_, C, F> {
    type Output = ();
    #[inline(always)]
    fn run(mut self) {
        let (h, m) = (self.h, self.lengths.len());
        let g = C::GATES * h;
        let i_l = self.i_l;
        for s in 0..self.t_len {
            let t = time_of(self.d, s, self.t_len);
            let x_t = &self.x[(t * self.b + self.r0) * i_l..(t * self.b + self.r0 + m) * i_l];
            let (h_lo, h_hi) = self.hs.split_at_mut(s + 1);
            let (h_prev, h_next) = (&*h_lo[s], &mut *h_hi[0]);
            let gh_s: &mut [F] = if C::NEEDS_GH { &mut *self.gh[s] } else { &mut [] };
            let w = StepWeights { wih_t: self.wih_t, whh_t: self.whh_t, bias_x: self.bias_x, b_hh: self.b_hh };
            project_step::<C, F>(m, x_t, h_prev, &w, self.gx, gh_s, self.inner);
            let (c_prev, c_next): (&[F], &mut [F]) = if C::HAS_C {
                let (lo, hi) = self.cs.split_at_mut(s + 1);
                (&*lo[s], &mut *hi[0])
            } else {
                (&[], &mut [])
            };
            let (gx_t, act_s, out_t) = (&*self.gx, &mut *self.act[s], &mut *self.out[t]);
            for r in 0..m {
                let rh = r * h..(r + 1) * h;
                let (cp, cnx): (&[F], &mut [F]) =
                    if C::HAS_C { (&c_prev[rh.clone()], &mut c_next[rh.clone()]) } else { (&[], &mut []) };
                if t < self.lengths[r] {
                    let gh_r: &[F] = if C::NEEDS_GH { &self.gh[s][r * g..(r + 1) * g] } else { self.zero_g };
                    self.cell.step_forward(
                        &gx_t[r * g..(r + 1) * g],
                        gh_r,
                        &h_prev[rh.clone()],
                        cp,
                        &mut act_s[r * g..(r + 1) * g],
                        &mut h_next[rh.clone()],
                        cnx,
                    );
                    let o = r * self.dh_out + self.d * h;
                    out_t[o..o + h].copy_from_slice(&h_next[rh]);
                } else {
                    // Past this sequence's length: the state passes through unchanged.
                    h_next[rh.clone()].copy_from_slice(&h_prev[rh]);
                    cnx.copy_from_slice(cp);
                }
            }
        }
    }
}

/// One block of rows [r0, r0 + rows) of one (layer, direction), backward
/// over all steps. Reads the whole cache; writes only its rows.
struct BackwardRows<'a, C, F> {
    cell: C,
    d: usize,
    t_len: usize,
    /// B of the whole batch (cache strides)
    b: usize,
    h: usize,
    dh_out: usize,
    inner: usize,
    r0: usize,
    /// [rows]
    lengths: &'a [usize],
    /// W_hh packed [G*H, H]
    whh: &'a Packed<F>,
    dcache: &'a DirCache<F>,
    /// dL/d(layer output) [T, B, D*H]
    dlayer: &'a [F],
    /// [T][rows, G*H] by time t
    dgx: Vec<&'a mut [F]>,
    /// [T][rows, G*H] by processing step s
    dgh: Vec<&'a mut [F]>,
    /// dL/dh carried backwards, its next value, dL/dc [rows, H]
    dh: &'a mut [F],
    dhp: &'a mut [F],
    dc: &'a mut [F],
    /// Outputs dL/dh0, dL/dc0 [rows, H]
    dh0: &'a mut [F],
    dc0: &'a mut [F],
    /// (sum of ||dL/dh_t||, sequences counted) [T] by time t
    norms: &'a mut [(f64, usize)],
}

impl<C: Cell<F>, F: Float> Kernel for BackwardRows<'_, C, F> {
    type Output = ();
    #[inline(always)]
    fn run(mut self) {
        let (b, h, m, r0) = (self.b, self.h, self.lengths.len(), self.r0);
        let g = C::GATES * h;
        let dc = self.dcache;
        for s in (0..self.t_len).rev() {
            let t = time_of(self.d, s, self.t_len);
            let (mut running, mut norm_sum) = (0usize, 0.0f64);
            let row_g = |step: usize| (step * b + r0) * g..(step * b + r0 + m) * g;
            let act_s = &dc.act[row_g(s)];
            let gh_s: &[F] = if C::NEEDS_GH { &dc.gh[row_g(s)] } else { &[] };
            let rows_h = |step: usize| (step * b + r0) * h..(step * b + r0 + m) * h;
            let (h_prev, h_cur) = (&dc.h[rows_h(s)], &dc.h[rows_h(s + 1)]);
            let (c_prev, c_cur): (&[F], &[F]) =
                if C::HAS_C { (&dc.c[rows_h(s)], &dc.c[rows_h(s + 1)]) } else { (&[], &[]) };
            let dgx_t = &mut *self.dgx[t];
            let dgh_s: &mut [F] = if C::NEEDS_GH { &mut *self.dgh[s] } else { &mut [] };
            for r in 0..m {
                let (rh, rg) = (r * h..(r + 1) * h, r * g..(r + 1) * g);
                if t < self.lengths[r] {
                    // out[t] = h_s: its gradient joins the one carried from step s+1.
                    let o = (t * b + r0 + r) * self.dh_out + self.d * h;
                    for (v, gv) in self.dh[rh.clone()].iter_mut().zip(&self.dlayer[o..o + h]) {
                        *v += *gv;
                    }
                    let dh_r = &self.dh[rh.clone()];
                    running += 1;
                    norm_sum += crate::linalg::dot(dh_r, dh_r).to_f64().unwrap_or(f64::NAN).sqrt();
                    let (cp, cc, dcr): (&[F], &[F], &mut [F]) = if C::HAS_C {
                        (&c_prev[rh.clone()], &c_cur[rh.clone()], &mut self.dc[rh.clone()])
                    } else {
                        (&[], &[], &mut [])
                    };
                    self.cell.step_backward(
                        &act_s[rg.clone()],
                        if C::NEEDS_GH { &gh_s[rg.clone()] } else { &[] },
                        &h_prev[rh.clone()],
                        cp,
                        &h_cur[rh.clone()],
                        cc,
                        &self.dh[rh.clone()],
                        dcr,
                        &mut dgx_t[rg.clone()],
                        if C::NEEDS_GH { &mut dgh_s[rg.clone()] } else { &mut [] },
                        &mut self.dhp[rh],
                    );
                } else {
                    // The state passed through unchanged: so does its gradient.
                    dgx_t[rg.clone()].iter_mut().for_each(|v| *v = F::zero());
                    if C::NEEDS_GH {
                        dgh_s[rg].iter_mut().for_each(|v| *v = F::zero());
                    }
                    self.dhp[rh.clone()].copy_from_slice(&self.dh[rh]);
                }
            }
            self.norms[t] = (norm_sum, running);
            // gh = h_prev W_hhᵀ  =>  dh_prev += dgh W_hh   [rows, G*H] x [G*H, H]
            let dgh_rows: &[F] = if C::NEEDS_GH { dgh_s } else { dgx_t };
            gemm_packed_threads(m, dgh_rows, self.whh, F::one(), self.dhp, self.inner);
            std::mem::swap(&mut self.dh, &mut self.dhp);
        }
        self.dh0.copy_from_slice(self.dh);
        if C::HAS_C {
            self.dc0.copy_from_slice(self.dc);
        }
    }
}
