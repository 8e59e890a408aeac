//! Stacked, optionally bidirectional recurrent layers over padded
//! variable-length batches, as PyTorch's `nn.RNN` / `nn.LSTM` / `nn.GRU` on
//! packed sequences.
//!
//! One forward sweep (`sweep`) over layers, directions and steps serves
//! training and inference alike; what it keeps is the only difference
//! (`Keep`): training keeps every step in an [`RnnCache`] that
//! `rnn_backward` walks in reverse, inference keeps only the latest state
//! (`infer::Runner`). Both size their buffers once per shape and reuse them
//! from one call to the next (`RnnCache::prepare`); nothing allocates inside
//! the time loop.
//!
//! Layout: everything inside is time-major and row-major: x [T, B, I],
//! outputs [T, B, D*H], states [L*D, B, H] (index l*D + d, as PyTorch).
//!
//! Speed by design: W_ih and W_hh are packed once per sweep ([`PackedNet`]);
//! each step does one product of its input with all G gate blocks of W_ih
//! and one of the previous state with all G gate blocks of W_hh (made per
//! step, so the gate pre-activations stay in cache); the weight gradients
//! are one GEMM each over all steps after the sweep.

use crate::cells::{with_cell, Cell, CellFn};
use crate::error::{check_len, config_err, shape_err, Error, Result};
use crate::float::Float;
use crate::linalg::{add_rows, gemm, gemm_packed_threads, sum_rows_into, Packed, Tr};
use crate::params::ParamTable;
use crate::simd::{dispatch, Kernel};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::cells::CellKind;

/// Shape and kind of a stack of recurrent layers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RnnConfig {
    /// The cell of every layer.
    pub cell: CellKind,
    /// I: width of the input of the first layer.
    pub input_size: usize,
    /// H: hidden units per layer and direction.
    pub hidden_size: usize,
    /// L: stacked layers.
    pub num_layers: usize,
    /// Whether every layer also runs backwards in time (D = 2).
    pub bidirectional: bool,
    /// Whether the layers have biases (`bias_ih`, `bias_hh`).
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

    /// Values in a state [L*D, B, H] for `batch` sequences.
    pub fn state_len(&self, batch: usize) -> usize {
        self.num_layers * self.dirs() * batch * self.hidden_size
    }
}

/// Indices into the parameter table of one (layer, direction).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirParams {
    /// weight_ih [G*H, I_l]
    pub w_ih: usize,
    /// weight_hh [G*H, H]; `None` for a cell without recurrent weights (minGRU, minLSTM).
    pub w_hh: Option<usize>,
    /// bias_ih and bias_hh; `None` for a network without biases (`bias: false`).
    pub bias: Option<BiasParams>,
}

/// Indices of the two biases of one (layer, direction); PyTorch has both or neither.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BiasParams {
    /// bias_ih [G*H]
    pub ih: usize,
    /// bias_hh [G*H]; `None` for a cell without recurrent weights (minGRU, minLSTM).
    pub hh: Option<usize>,
}

impl DirParams {
    /// The parameters' indices in table order: weight_ih, weight_hh, then
    /// bias_ih, bias_hh when the network has biases.
    pub fn indices(&self) -> impl Iterator<Item = usize> {
        [Some(self.w_ih), self.w_hh, self.bias.map(|b| b.ih), self.bias.and_then(|b| b.hh)].into_iter().flatten()
    }
}

/// Registers the parameters of `cfg` in `table` under PyTorch's names
/// (`{prefix}weight_ih_l{k}[_reverse]` ...), in PyTorch's order. Returns one
/// `DirParams` per (layer, direction), index l*D + d. A cell without
/// recurrent weights (minGRU, minLSTM) has one Linear per (layer,
/// direction), named as lucidrains/minGRU-pytorch names the module:
/// `{prefix}l{k}[_reverse].to_hidden_and_gate.weight` [G*H, I_l] and `.bias`
/// [G*H] (`to_hidden_and_f_i_gate` for the minLSTM).
pub(crate) fn register_params(table: &mut ParamTable, prefix: &str, cfg: &RnnConfig) -> Vec<DirParams> {
    let gh = cfg.cell.gates() * cfg.hidden_size;
    let mut out = Vec::new();
    for l in 0..cfg.num_layers {
        for d in 0..cfg.dirs() {
            let sfx = if d == 1 { "_reverse" } else { "" };
            if let Some(proj) = cfg.cell.projection_name() {
                let w_ih = table.push(format!("{prefix}l{l}{sfx}.{proj}.weight"), &[gh, cfg.layer_input(l)]);
                let bias = cfg
                    .bias
                    .then(|| BiasParams { ih: table.push(format!("{prefix}l{l}{sfx}.{proj}.bias"), &[gh]), hh: None });
                out.push(DirParams { w_ih, w_hh: None, bias });
                continue;
            }
            let w_ih = table.push(format!("{prefix}weight_ih_l{l}{sfx}"), &[gh, cfg.layer_input(l)]);
            let w_hh = Some(table.push(format!("{prefix}weight_hh_l{l}{sfx}"), &[gh, cfg.hidden_size]));
            let bias = cfg.bias.then(|| BiasParams {
                ih: table.push(format!("{prefix}bias_ih_l{l}{sfx}"), &[gh]),
                hh: Some(table.push(format!("{prefix}bias_hh_l{l}{sfx}"), &[gh])),
            });
            out.push(DirParams { w_ih, w_hh, bias });
        }
    }
    out
}

/// What one (layer, direction) keeps as it sweeps. Buffers are in
/// *processing* order s (s = t forward, s = T-1-t for the reverse
/// direction), in slots: with `Keep::All` (training) one per step, with
/// `Keep::Last` (inference) a ring of the latest (2 states, 1 step of
/// activations); step s uses slot s mod (number of slots).
#[derive(Clone, Debug, Default)]
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

/// Everything the forward sweep computed that `rnn_backward` needs.
#[derive(Clone, Debug, Default)]
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

/// What a forward sweep keeps of each (layer, direction).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Keep {
    /// Every step's states and gate activations (training: backward reads them).
    All,
    /// Only the latest state (inference): constant memory in T per (layer, direction).
    Last,
}

/// Resizes `v` to `n` values, keeping its allocation; only values it did
/// not hold before are written (zero). The sweep overwrites every value it
/// later reads, so a buffer reused at the same shape is not touched twice.
pub(crate) fn size_to<F: Float>(v: &mut Vec<F>, n: usize) {
    v.resize(n, F::zero());
}

impl<F: Float> RnnCache<F> {
    /// Sizes every buffer for a sweep of `cfg` over T = `seq_len`, B =
    /// `batch` (allocating only what a previous, smaller shape did not) and
    /// records `lengths` [B]. The caller then writes the input of layer 0
    /// into `inputs[0]` [T, B, I].
    pub(crate) fn prepare(&mut self, cfg: &RnnConfig, seq_len: usize, batch: usize, lengths: &[usize], keep: Keep) {
        let (t, b, h, nd, nl) = (seq_len, batch, cfg.hidden_size, cfg.dirs(), cfg.num_layers);
        let g = cfg.cell.gates() * h;
        self.seq_len = t;
        self.batch = b;
        self.lengths.clear();
        self.lengths.extend_from_slice(lengths);
        self.inputs.resize_with(nl, Vec::new);
        for (l, v) in self.inputs.iter_mut().enumerate() {
            size_to(v, t * b * cfg.layer_input(l));
        }
        self.masks.resize_with(nl, Vec::new);
        // Slots of states and of per-step values (see `DirCache`).
        let (sh, sa) = match keep {
            Keep::All => (t + 1, t),
            Keep::Last => (2, 1),
        };
        self.dirs.resize_with(nl * nd, DirCache::default);
        for dc in &mut self.dirs {
            size_to(&mut dc.act, sa * b * g);
            size_to(&mut dc.gh, if cfg.cell.needs_gh() { sa * b * g } else { 0 });
            size_to(&mut dc.h, sh * b * h);
            size_to(&mut dc.c, if cfg.cell.has_c() { sh * b * h } else { 0 });
        }
        size_to(&mut self.output, t * b * nd * h);
    }
}

/// Final states of the network, [L*D, B, H] each (c empty unless LSTM).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RnnState<F> {
    /// Hidden states [L*D, B, H].
    pub h: Vec<F>,
    /// Cell states [L*D, B, H] (LSTM; empty otherwise).
    pub c: Vec<F>,
}

/// Gradients with respect to the inputs of `rnn_forward`.
#[derive(Clone, Debug, Default)]
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
pub(crate) fn check_lengths(lengths: &[usize], batch: usize, seq_len: usize) -> Result<()> {
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

/// Checks the sizes of a sweep's inputs: T, B >= 1, `lengths` [B] in
/// 0..=T (0: the sequence takes no step, as happens to a finished sequence
/// inside a truncated-BPTT window), and the initial state (empty, or
/// [L*D, B, H]; c only for the LSTM).
pub(crate) fn check_sweep<F>(
    cfg: &RnnConfig,
    seq_len: usize,
    batch: usize,
    lengths: &[usize],
    state: &RnnState<F>,
) -> Result<()> {
    cfg.validate()?;
    let (t, b, h) = (seq_len, batch, cfg.hidden_size);
    if t == 0 || b == 0 {
        return Err(config_err(if t == 0 { "seq_len" } else { "batch" }, 0, "must be at least 1"));
    }
    if lengths.len() != b || lengths.iter().any(|&l| l > t) {
        return Err(shape_err("lengths", format!("[{b}] values in 0..={t}"), format!("{lengths:?}")));
    }
    let (n, ld) = (cfg.state_len(b), cfg.num_layers * cfg.dirs());
    if !state.h.is_empty() {
        check_len("h0", state.h.len(), n, || format!("[L*D={ld}, B={b}, H={h}]"))?;
    }
    if !state.c.is_empty() {
        if !cfg.cell.has_c() {
            return Err(config_err("c0", "given", "only an LSTM has a cell state"));
        }
        check_len("c0", state.c.len(), n, || format!("[L*D={ld}, B={b}, H={h}]"))?;
    }
    Ok(())
}

/// Forward pass of the stacked network, keeping every step for `rnn_backward`.
///
/// `x` [T, B, I]; `lengths` [B] (each 0..=T; 0 means the sequence takes no
/// step, as happens to a finished sequence inside a truncated-BPTT window);
/// `h0`, `c0` [L*D, B, H] (empty means zeros); `dropout_rng` is `Some` in
/// training, when dropout applies. Allocates its cache; `Model` reuses one
/// from call to call instead.
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
    let mut state = RnnState { h: h0.to_vec(), c: c0.to_vec() };
    check_sweep(cfg, seq_len, batch, lengths, &state)?;
    check_len("x", x.len(), seq_len * batch * cfg.input_size, || {
        format!("[T={seq_len}, B={batch}, I={}]", cfg.input_size)
    })?;
    let mut cache = RnnCache::default();
    cache.prepare(cfg, seq_len, batch, lengths, Keep::All);
    cache.inputs[0].copy_from_slice(x);
    let mut packed = PackedNet::default();
    packed.pack(cfg, table, dirp, params);
    sweep(cfg, &packed, &mut cache, &mut StepScratch::default(), &mut state, dropout_rng);
    Ok((cache, state))
}

/// The per-step workspaces of a sweep, [B, G*H] and [G*H], sized on first
/// use at a shape.
#[derive(Debug, Default)]
pub(crate) struct StepScratch<F> {
    /// One step's gate pre-activations [B, G*H].
    gx: Vec<F>,
    /// Zeros [G*H]: the `gh` of cells that fold it into gx (all but the GRU).
    zero_g: Vec<F>,
}

/// The weights of one (layer, direction) packed for the per-step products,
/// with the biases each step adds.
#[derive(Debug, Default)]
pub(crate) struct PackedDir<F> {
    /// W_ihᵀ [I_l, G*H]
    wih_t: Packed<F>,
    /// W_hhᵀ [H, G*H]
    whh_t: Packed<F>,
    /// The bias added to each step's gx [G*H]: b_ih, plus b_hh for cells
    /// that fold gh into gx (all but the GRU, see `Cell::NEEDS_GH`); empty
    /// without biases.
    bias_x: Vec<F>,
    /// b_hh [G*H] of cells that keep gh apart (GRU), or empty.
    b_hh: Vec<F>,
}

/// The packed weights of every (layer, direction), index l*D + d: packed
/// once per sweep in training (the weights change between calls), once for
/// many calls by `infer::Runner`. Packing again reuses the allocations.
#[derive(Debug, Default)]
pub(crate) struct PackedNet<F> {
    dirs: Vec<PackedDir<F>>,
}

impl<F: Float> PackedNet<F> {
    /// Packs the weights of `cfg`'s layers from `params` (laid out by `table`).
    pub(crate) fn pack(&mut self, cfg: &RnnConfig, table: &ParamTable, dirp: &[DirParams], params: &[F]) {
        let (h, g) = (cfg.hidden_size, cfg.cell.gates() * cfg.hidden_size);
        let apart = cfg.cell.needs_gh();
        self.dirs.resize_with(dirp.len(), PackedDir::default);
        for (ld, (dp, pd)) in dirp.iter().zip(&mut self.dirs).enumerate() {
            pd.wih_t.pack(cfg.layer_input(ld / cfg.dirs()), g, table.view(params, dp.w_ih), Tr::T);
            if let Some(w_hh) = dp.w_hh {
                pd.whh_t.pack(h, g, table.view(params, w_hh), Tr::T);
            }
            pd.bias_x.clear();
            pd.b_hh.clear();
            if let Some(bp) = dp.bias {
                let b_ih = table.view(params, bp.ih);
                pd.bias_x.extend_from_slice(b_ih);
                let Some(hh) = bp.hh else { continue };
                let b_hh = table.view(params, hh);
                if apart {
                    pd.b_hh.extend_from_slice(b_hh);
                } else {
                    // pre = gx + gh: b_hh joins b_ih.
                    for (a, v) in pd.bias_x.iter_mut().zip(b_hh) {
                        *a += *v;
                    }
                }
            }
        }
    }
}

/// The one forward sweep over layers, directions and steps, for training
/// and inference. `cache` was sized by `RnnCache::prepare` (which decides
/// what it keeps) and holds the input of layer 0 in `inputs[0]`; `state`
/// holds the initial states (empty: zeros) and receives the final ones
/// [L*D, B, H]; `scratch` is a workspace; `dropout_rng` is `Some` in training.
/// The caller checked the shapes (`check_sweep`).
pub(crate) fn sweep<F: Float, R: Rng>(
    cfg: &RnnConfig,
    packed: &PackedNet<F>,
    cache: &mut RnnCache<F>,
    scratch: &mut StepScratch<F>,
    state: &mut RnnState<F>,
    dropout_rng: Option<&mut R>,
) {
    struct Go<'a, F, R> {
        cfg: &'a RnnConfig,
        packed: &'a PackedNet<F>,
        cache: &'a mut RnnCache<F>,
        gx: &'a mut StepScratch<F>,
        state: &'a mut RnnState<F>,
        dropout_rng: Option<&'a mut R>,
    }
    impl<F: Float, R: Rng> CellFn<F> for Go<'_, F, R> {
        type Output = ();
        fn call<C: Cell<F>>(self, cell: C) {
            sweep_cell(cell, self.cfg, self.packed, self.cache, self.gx, self.state, self.dropout_rng)
        }
    }
    with_cell(cfg.cell, Go { cfg, packed, cache, gx: scratch, state, dropout_rng })
}

fn sweep_cell<C: Cell<F>, F: Float, R: Rng>(
    cell: C,
    cfg: &RnnConfig,
    packed: &PackedNet<F>,
    cache: &mut RnnCache<F>,
    scratch: &mut StepScratch<F>,
    state: &mut RnnState<F>,
    mut dropout_rng: Option<&mut R>,
) {
    let (t_len, b, h) = (cache.seq_len, cache.batch, cfg.hidden_size);
    let (nd, nl) = (cfg.dirs(), cfg.num_layers);
    let g = C::GATES * h;
    let dh_out = nd * h;
    // Initial states: given, or zeros; replaced by the final ones below.
    let n = cfg.state_len(b);
    size_to(&mut state.h, n);
    size_to(&mut state.c, if C::HAS_C { n } else { 0 });
    size_to(&mut scratch.gx, b * g);
    // The zero `gh` [G*H] of cells that fold it into gx (see `Cell::NEEDS_GH`).
    size_to(&mut scratch.zero_g, if C::NEEDS_GH { 0 } else { g });
    let StepScratch { gx, zero_g } = scratch;
    let p = cfg.dropout;
    let RnnCache { lengths, inputs, masks, dirs, output, .. } = cache;
    for l in 0..nl {
        // Dropout on the input of layer l > 0 (= the output of layer l-1), training only.
        let mask = &mut masks[l];
        mask.clear();
        if l > 0 && p > 0.0 {
            if let Some(rng) = dropout_rng.as_deref_mut() {
                let keep = F::of(1.0 / (1.0 - p));
                mask.extend((0..inputs[l].len()).map(|_| if rng.gen::<f64>() < p { F::zero() } else { keep }));
                for (v, m) in inputs[l].iter_mut().zip(mask.iter()) {
                    *v *= *m;
                }
            }
        }
        // Layer l reads inputs[l] and writes the input of layer l+1 (or the output).
        let (lower, upper) = inputs.split_at_mut(l + 1);
        let x: &[F] = &lower[l];
        let out: &mut [F] = if l + 1 < nl { &mut upper[0] } else { &mut output[..] };
        for d in 0..nd {
            let ld = l * nd + d;
            let dc = &mut dirs[ld];
            let (sh, sa) = (dc.h.len() / (b * h), dc.act.len() / (b * g));
            let k = ld * b * h;
            dc.h[..b * h].copy_from_slice(&state.h[k..k + b * h]);
            if C::HAS_C {
                dc.c[..b * h].copy_from_slice(&state.c[k..k + b * h]);
            }
            let pd = &packed.dirs[ld];
            let dir = Dir {
                d,
                t_len,
                b,
                i_l: cfg.layer_input(l),
                h,
                dh_out,
                x,
                w: StepWeights { wih_t: &pd.wih_t, whh_t: &pd.whh_t, bias_x: &pd.bias_x, b_hh: &pd.b_hh },
                zero_g: &zero_g[..],
            };
            run_dir(cell, &dir, lengths, &mut gx[..], dc, out);
            // The final state sits in the slot after the last step.
            let f = (t_len % sh) * b * h;
            state.h[k..k + b * h].copy_from_slice(&dc.h[f..f + b * h]);
            if C::HAS_C {
                state.c[k..k + b * h].copy_from_slice(&dc.c[f..f + b * h]);
            }
            debug_assert!(sa == t_len || sa == 1);
        }
    }
}

/// What every row block of one (layer, direction) reads.
struct Dir<'a, F> {
    d: usize,
    t_len: usize,
    /// B of the whole batch, I_l (strides of `x`)
    b: usize,
    i_l: usize,
    h: usize,
    dh_out: usize,
    /// Layer input [T, B, I_l]
    x: &'a [F],
    w: StepWeights<'a, F>,
    /// [G*H] zeros (cells without NEEDS_GH)
    zero_g: &'a [F],
}

/// Runs one (layer, direction) over all steps: on this thread, or, for a
/// batch big enough, as blocks of rows on the pool's threads (rows are
/// independent sequences: each block runs the whole time loop, no per-step
/// sync). One block allocates nothing.
fn run_dir<C: Cell<F>, F: Float>(
    cell: C,
    dir: &Dir<'_, F>,
    lengths: &[usize],
    gx: &mut [F],
    dc: &mut DirCache<F>,
    out: &mut [F],
) {
    let (b, h) = (dir.b, dir.h);
    let g = C::GATES * h;
    // A single step (streaming) runs as one block, its products on all the
    // pool's threads: nothing is allocated.
    let cuts = if dir.t_len == 1 { None } else { row_cuts(b, b * h * g) };
    match cuts {
        None => dispatch(ForwardRows {
            cell,
            dir,
            r0: 0,
            inner: rayon::current_num_threads(),
            lengths,
            gx,
            gh: Slots::whole(&mut dc.gh, b * g),
            act: Slots::whole(&mut dc.act, b * g),
            hs: Slots::whole(&mut dc.h, b * h),
            cs: Slots::whole(&mut dc.c, b * h),
            out: Slots::whole(out, b * dir.dh_out),
        }),
        Some(cuts) => {
            let mut gx_p = split_steps(gx, b, g, &cuts);
            let mut gh_p = split_steps(&mut dc.gh, b, g, &cuts);
            let mut act_p = split_steps(&mut dc.act, b, g, &cuts);
            let mut h_p = split_steps(&mut dc.h, b, h, &cuts);
            let mut c_p = split_steps(&mut dc.c, b, h, &cuts);
            let mut out_p = split_steps(out, b, dir.dh_out, &cuts);
            let jobs: Vec<ForwardRows<C, F>> = (0..cuts.len() - 1)
                .rev()
                .map(|p| ForwardRows {
                    cell,
                    dir,
                    r0: cuts[p],
                    inner: 1,
                    lengths: &lengths[cuts[p]..cuts[p + 1]],
                    gx: take1(&mut gx_p),
                    gh: Slots::Split(gh_p.pop().unwrap_or_default()),
                    act: Slots::Split(act_p.pop().unwrap_or_default()),
                    hs: Slots::Split(h_p.pop().unwrap_or_default()),
                    cs: Slots::Split(c_p.pop().unwrap_or_default()),
                    out: Slots::Split(out_p.pop().unwrap_or_default()),
                })
                .collect();
            run_parts(jobs);
        }
    }
}

/// Equal slots of one row block: a whole buffer [S, B, W] when one block
/// has every row (nothing allocated), or this block's rows of each slot.
enum Slots<'a, F> {
    /// The whole buffer, slots of `len` values.
    Whole { buf: &'a mut [F], len: usize },
    /// Slot k is entry k.
    Split(Vec<&'a mut [F]>),
}

impl<'a, F> Slots<'a, F> {
    fn whole(buf: &'a mut [F], len: usize) -> Self {
        Slots::Whole { buf, len }
    }

    /// Number of slots (0 for an empty buffer).
    fn count(&self) -> usize {
        match self {
            Slots::Whole { buf, len } => {
                if *len == 0 {
                    0
                } else {
                    buf.len() / len
                }
            }
            Slots::Split(v) => v.len(),
        }
    }

    /// Slot `k` (an empty slice for an empty buffer).
    fn get(&mut self, k: usize) -> &mut [F] {
        match self {
            Slots::Whole { buf, len } => buf.get_mut(k * *len..(k + 1) * *len).unwrap_or_default(),
            Slots::Split(v) => v.get_mut(k).map(|s| &mut **s).unwrap_or_default(),
        }
    }

    /// Slot `from` to read and slot `to` (another one) to write.
    fn pair(&mut self, from: usize, to: usize) -> (&[F], &mut [F]) {
        debug_assert_ne!(from, to);
        match self {
            Slots::Whole { buf, len } => {
                let len = *len;
                if from < to {
                    let (a, b) = buf.split_at_mut(to * len);
                    (&a[from * len..(from + 1) * len], &mut b[..len])
                } else {
                    let (a, b) = buf.split_at_mut(from * len);
                    (&b[..len], &mut a[to * len..(to + 1) * len])
                }
            }
            Slots::Split(v) => {
                if from < to {
                    let (a, b) = v.split_at_mut(to);
                    (&*a[from], &mut *b[0])
                } else {
                    let (a, b) = v.split_at_mut(from);
                    (&*b[0], &mut *a[to])
                }
            }
        }
    }
}

/// One block of rows [r0, r0 + rows) of one (layer, direction), forward
/// over all steps. Slots (see `DirCache`): `gh`, `act` by processing step
/// s, `hs`, `cs` by s (state before step s), `out` by time t.
struct ForwardRows<'a, C, F> {
    cell: C,
    dir: &'a Dir<'a, F>,
    r0: usize,
    /// Threads for the products inside the block (1 when blocks run in parallel).
    inner: usize,
    /// [rows]
    lengths: &'a [usize],
    /// One step's gate pre-activations [rows, G*H]
    gx: &'a mut [F],
    /// [S_a][rows, G*H] (GRU) or empty
    gh: Slots<'a, F>,
    /// [S_a][rows, G*H]
    act: Slots<'a, F>,
    /// [S_h][rows, H]
    hs: Slots<'a, F>,
    /// [S_h][rows, H] (LSTM) or empty
    cs: Slots<'a, F>,
    /// [T][rows, D*H]
    out: Slots<'a, F>,
}

impl<C: Cell<F>, F: Float> Kernel for ForwardRows<'_, C, F> {
    type Output = ();
    #[inline(always)]
    fn run(mut self) {
        let dir = self.dir;
        let (h, m, i_l) = (dir.h, self.lengths.len(), dir.i_l);
        let g = C::GATES * h;
        let (sh, sa) = (self.hs.count(), self.act.count());
        for s in 0..dir.t_len {
            let t = time_of(dir.d, s, dir.t_len);
            let x_t = &dir.x[(t * dir.b + self.r0) * i_l..(t * dir.b + self.r0 + m) * i_l];
            let (h_prev, h_next) = self.hs.pair(s % sh, (s + 1) % sh);
            let gh_s: &mut [F] = if C::NEEDS_GH { self.gh.get(s % sa) } else { &mut [] };
            project_step::<C, F>(m, x_t, h_prev, &dir.w, self.gx, gh_s, self.inner);
            let (c_prev, c_next): (&[F], &mut [F]) =
                if C::HAS_C { self.cs.pair(s % sh, (s + 1) % sh) } else { (&[], &mut []) };
            let (gx_t, act_s, out_t) = (&*self.gx, self.act.get(s % sa), self.out.get(t));
            for (r, &len) in self.lengths.iter().enumerate() {
                let (rh, rg) = (r * h..(r + 1) * h, r * g..(r + 1) * g);
                let (cp, cnx): (&[F], &mut [F]) =
                    if C::HAS_C { (&c_prev[rh.clone()], &mut c_next[rh.clone()]) } else { (&[], &mut []) };
                let o = r * dir.dh_out + dir.d * h;
                if t < len {
                    let gh_r: &[F] = if C::NEEDS_GH { &gh_s[rg.clone()] } else { dir.zero_g };
                    self.cell.step_forward(
                        &gx_t[rg.clone()],
                        gh_r,
                        &h_prev[rh.clone()],
                        cp,
                        &mut act_s[rg],
                        &mut h_next[rh.clone()],
                        cnx,
                    );
                    out_t[o..o + h].copy_from_slice(&h_next[rh]);
                } else {
                    // Past this sequence's length: the state passes through
                    // unchanged, the output is zero, no gate is active.
                    h_next[rh.clone()].copy_from_slice(&h_prev[rh]);
                    cnx.copy_from_slice(cp);
                    act_s[rg].iter_mut().for_each(|v| *v = F::zero());
                    out_t[o..o + h].iter_mut().for_each(|v| *v = F::zero());
                }
            }
        }
    }
}

/// The packed weights and biases of one (layer, direction) that each step's
/// projections use.
pub(crate) struct StepWeights<'a, F> {
    /// W_ihᵀ packed [I_l, G*H]
    pub wih_t: &'a Packed<F>,
    /// W_hhᵀ packed [H, G*H] (not read for cells without recurrent weights)
    pub whh_t: &'a Packed<F>,
    /// Bias of gx [G*H] or empty (see `PackedDir::bias_x`)
    pub bias_x: &'a [F],
    /// b_hh [G*H] of cells that keep gh apart (GRU), or empty
    pub b_hh: &'a [F],
}

/// One step's projections for `m` rows: gx = x_t W_ihᵀ + bias_x [m, G*H];
/// then, for cells that keep it apart (`Cell::NEEDS_GH`),
/// gh = h_prev W_hhᵀ + b_hh [m, G*H], and for the others h_prev W_hhᵀ is added straight into
/// gx (pre = gx + gh); `gh` is then unused. Each is one fused product for
/// all G gates; the input projection is made per step because a
/// [T, B, G*H] one made up front left cache before its step came.
#[inline(always)]
fn project_step<C: Cell<F>, F: Float>(
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
        add_rows(&mut gx[..m * w.bias_x.len()], w.bias_x);
    }
    if !C::RECURRENT {
        // No recurrent weights: the state enters only the cell's own step.
    } else if C::NEEDS_GH {
        gemm_packed_threads(m, h_prev, w.whh_t, F::zero(), gh, inner);
        if !w.b_hh.is_empty() {
            add_rows(&mut gh[..m * w.b_hh.len()], w.b_hh);
        }
    } else {
        gemm_packed_threads(m, h_prev, w.whh_t, F::one(), gx, inner);
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

/// Row cut points [0, .., B] splitting the batch into one block per thread
/// of the current pool, in multiples of 8 rows (the micro-kernel's row
/// block) when possible; `None` (one block, nothing allocated) when the
/// per-step work is too small to pay for a second thread.
pub(crate) fn row_cuts(b: usize, step_work: usize) -> Option<Vec<usize>> {
    let threads = rayon::current_num_threads();
    let parts = if threads > 1 && step_work >= 1 << 15 { threads.min(b) } else { 1 };
    if parts == 1 {
        return None;
    }
    let unit = if b >= 8 * parts { 8 } else { 1 };
    let mut cuts = vec![0];
    for p in 1..parts {
        let c = (b * p / parts).div_ceil(unit) * unit;
        if c > *cuts.last().unwrap_or(&0) && c < b {
            cuts.push(c);
        }
    }
    cuts.push(b);
    (cuts.len() > 2).then_some(cuts)
}

/// Cuts every step [B, W] of `buf` [S, B, W] into the row blocks of `cuts`:
/// result [block][step]. An empty buffer gives empty lists.
fn split_steps<'a, F>(buf: &'a mut [F], b: usize, w: usize, cuts: &[usize]) -> Vec<Vec<&'a mut [F]>> {
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
fn run_parts<K: Kernel<Output = ()> + Send>(mut jobs: Vec<K>) {
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

/// The workspaces of `rnn_backward` and its results, sized on first use at
/// a shape and reused by later calls (`Model` keeps some).
#[derive(Debug, Default)]
pub(crate) struct BackwardWork<F> {
    /// dL/d(gate pre-activations) [T, B, G*H], time order.
    dgx: Vec<F>,
    /// The same for gh [T, B, G*H], processing order: only cells with
    /// NEEDS_GH have one apart from dgx (for the others the two are equal).
    dgh: Vec<F>,
    /// Reverse direction of the other cells: the states before each step in time order [T, B, H].
    h_rev: Vec<F>,
    /// dL/dh_s carried backwards, dL/dh_{s-1} being assembled, dL/dc [B, H].
    dh: Vec<F>,
    dhp: Vec<F>,
    dc: Vec<F>,
    /// W_hh [G*H, H], packed once per (layer, direction) for its T per-step products.
    whh: Packed<F>,
    /// dL/d(output of layer l) [T, B, D*H], and the layer below's being made [T, B, I_l].
    dlayer: Vec<F>,
    dxl: Vec<F>,
    /// (sum of ||dL/dh_t||, sequences counted) per row block [blocks, T].
    norms: Vec<(f64, usize)>,
    /// Results: see `RnnInputGrads`.
    pub(crate) grads: RnnInputGrads<F>,
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
    let mut work = BackwardWork::default();
    backward_into(cfg, table, dirp, params, cache, dout, dh_n, dc_n, grads, want_dx, &mut work)?;
    Ok(work.grads)
}

/// `rnn_backward` into reusable workspaces: the input gradients are left in `work.grads`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_into<F: Float>(
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
    work: &mut BackwardWork<F>,
) -> Result<()> {
    let (t_len, b, h) = (cache.seq_len, cache.batch, cfg.hidden_size);
    let dh_out = cfg.output_size();
    let state_len = cfg.state_len(b);
    check_len("dout", dout.len(), t_len * b * dh_out, || format!("[T={t_len}, B={b}, D*H={dh_out}]"))?;
    if !dh_n.is_empty() {
        check_len("dh_n", dh_n.len(), state_len, "[L*D, B, H]")?;
    }
    if !dc_n.is_empty() {
        check_len("dc_n", dc_n.len(), state_len, "[L*D, B, H]")?;
    }
    check_len("grads", grads.len(), table.len(), "[number of parameters]")?;
    if cache.dirs.len() != cfg.num_layers * cfg.dirs() || cache.dirs.iter().any(|d| d.h.len() != (t_len + 1) * b * h) {
        return Err(config_err(
            "cache",
            "of another network or shape",
            "the backward pass needs the cache of a training forward pass (Keep::All) of this network",
        ));
    }
    struct Go<'a, F> {
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
        work: &'a mut BackwardWork<F>,
    }
    impl<F: Float> CellFn<F> for Go<'_, F> {
        type Output = ();
        fn call<C: Cell<F>>(self, cell: C) {
            backward_cell(cell, self)
        }
    }
    with_cell(cfg.cell, Go { cfg, table, dirp, params, cache, dout, dh_n, dc_n, grads, want_dx, work });

    fn backward_cell<C: Cell<F>, F: Float>(cell: C, args: Go<'_, F>) {
        let Go { cfg, table, dirp, params, cache, dout, dh_n, dc_n, grads, want_dx, work } = args;
        let (t_len, b, h) = (cache.seq_len, cache.batch, cfg.hidden_size);
        let (nd, nl) = (cfg.dirs(), cfg.num_layers);
        let g = C::GATES * h;
        let dh_out = nd * h;
        let state_len = cfg.state_len(b);
        let lengths = &cache.lengths;
        let BackwardWork { dgx, dgh, h_rev, dh, dhp, dc: dcs, whh, dlayer, dxl, norms, grads: out } = work;
        // Every value below is written before it is read (see each loop), so
        // buffers reused at the same shape are not cleared first.
        size_to(dgx, t_len * b * g);
        size_to(dgh, if C::NEEDS_GH { t_len * b * g } else { 0 });
        size_to(dh, b * h);
        size_to(dhp, b * h);
        size_to(dcs, if C::HAS_C { b * h } else { 0 });
        size_to(&mut out.dh0, state_len);
        size_to(&mut out.dc0, if C::HAS_C { state_len } else { 0 });
        size_to_f64(&mut out.dh_norms, nl * nd * t_len);
        dlayer.clear();
        dlayer.extend_from_slice(dout);
        out.dx.clear();
        for l in (0..nl).rev() {
            let i_l = cfg.layer_input(l);
            let x_l = &cache.inputs[l];
            let need_dx = l > 0 || want_dx;
            // The first direction writes dxl (beta 0), the second adds to it.
            size_to(dxl, if need_dx { t_len * b * i_l } else { 0 });
            for d in 0..nd {
                let dp = dirp[l * nd + d];
                let dcache = &cache.dirs[l * nd + d];
                let w_ih = table.view(params, dp.w_ih);
                let k = (l * nd + d) * b * h;
                if let Some(w_hh) = dp.w_hh {
                    whh.pack(g, h, table.view(params, w_hh), Tr::N);
                }
                if dh_n.is_empty() {
                    dh.iter_mut().for_each(|v| *v = F::zero());
                } else {
                    dh.copy_from_slice(&dh_n[k..k + b * h]);
                }
                if C::HAS_C {
                    if dc_n.is_empty() {
                        dcs.iter_mut().for_each(|v| *v = F::zero());
                    } else {
                        dcs.copy_from_slice(&dc_n[k..k + b * h]);
                    }
                }
                let (cuts, inner) = match row_cuts(b, b * h * g) {
                    Some(c) => (c, 1),
                    None => (vec![0, b], rayon::current_num_threads()),
                };
                let mut dgx_p = split_steps(dgx, b, g, &cuts);
                let mut dgh_p = split_steps(dgh, b, g, &cuts);
                let mut dh_p = split_steps(dh, b, h, &cuts);
                let mut dhp_p = split_steps(dhp, b, h, &cuts);
                let mut dcs_p = split_steps(dcs, b, h, &cuts);
                let mut dh0_p = split_steps(&mut out.dh0[k..k + b * h], b, h, &cuts);
                let mut dc0_p = split_steps(if C::HAS_C { &mut out.dc0[k..k + b * h] } else { &mut [] }, b, h, &cuts);
                norms.resize((cuts.len() - 1) * t_len, (0.0, 0));
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
                        whh: &*whh,
                        dcache,
                        dlayer: &dlayer[..],
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
                    out.dh_norms[(l * nd + d) * t_len + t] = if n > 0 { sum / n as f64 } else { 0.0 };
                }
                // Weight gradients: one product each over all steps.
                // gx = X W_ihᵀ  =>  dW_ih += dgxᵀ X   [G*H, T*B] x [T*B, I]
                gemm(g, t_len * b, i_l, F::one(), dgx, Tr::T, x_l, Tr::N, F::one(), table.view_mut(grads, dp.w_ih));
                // gh_s = h_{s-1} W_hhᵀ  =>  dW_hh += dghᵀ H_prev   [G*H, T*B] x [T*B, H]
                let h_prev = &dcache.h[..t_len * b * h];
                let dw_hh: &mut [F] = match dp.w_hh {
                    Some(w) => table.view_mut(grads, w),
                    None => &mut [],
                };
                if !C::RECURRENT {
                    // No recurrent weights, nothing to add.
                } else if C::NEEDS_GH {
                    gemm(g, t_len * b, h, F::one(), dgh, Tr::T, h_prev, Tr::N, F::one(), dw_hh);
                } else if d == 0 {
                    // dgh = dgx, and time order is processing order.
                    gemm(g, t_len * b, h, F::one(), dgx, Tr::T, h_prev, Tr::N, F::one(), dw_hh);
                } else {
                    // dgh = dgx in time order: pair it with the states in time order.
                    size_to(h_rev, t_len * b * h);
                    for (t, dst) in h_rev.chunks_exact_mut(b * h).enumerate() {
                        let s = time_of(d, t, t_len);
                        dst.copy_from_slice(&dcache.h[s * b * h..(s + 1) * b * h]);
                    }
                    gemm(g, t_len * b, h, F::one(), dgx, Tr::T, h_rev, Tr::N, F::one(), dw_hh);
                }
                if let Some(bp) = dp.bias {
                    sum_rows_into(table.view_mut(grads, bp.ih), dgx);
                    if let Some(hh) = bp.hh {
                        sum_rows_into(table.view_mut(grads, hh), if C::NEEDS_GH { dgh } else { dgx });
                    }
                }
                if need_dx {
                    // dX += dgx W_ih   [T*B, G*H] x [G*H, I]
                    let beta = if d == 0 { F::zero() } else { F::one() };
                    gemm(t_len * b, g, i_l, F::one(), dgx, Tr::N, w_ih, Tr::N, beta, dxl);
                }
            }
            if l > 0 {
                // The input of layer l was dropout(output of layer l-1).
                if !cache.masks[l].is_empty() {
                    for (v, m) in dxl.iter_mut().zip(&cache.masks[l]) {
                        *v *= *m;
                    }
                }
                std::mem::swap(dlayer, dxl);
            } else if need_dx {
                std::mem::swap(&mut out.dx, dxl);
            }
        }
    }
    Ok(())
}

fn size_to_f64(v: &mut Vec<f64>, n: usize) {
    v.resize(n, 0.0);
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
            if C::RECURRENT {
                let dgh_rows: &[F] = if C::NEEDS_GH { dgh_s } else { dgx_t };
                gemm_packed_threads(m, dgh_rows, self.whh, F::one(), self.dhp, self.inner);
            }
            std::mem::swap(&mut self.dh, &mut self.dhp);
        }
        self.dh0.copy_from_slice(self.dh);
        if C::HAS_C {
            self.dc0.copy_from_slice(self.dc);
        }
    }
}
