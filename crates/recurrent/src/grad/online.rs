//! Online gradient estimators: real-time recurrent learning (exact RTRL),
//! its unbiased rank-one approximation UORO (Tallec & Ollivier 2018), and the
//! sparse approximations SnAp-1 and SnAp-2 (Menick et al. 2021). They carry
//! forward in time the influence of the parameters on the state,
//!   J_t = d s_t / d theta = D_t J_{t-1} + I_t,
//! so a gradient is available at every step, in memory that does not grow
//! with the length of the stream.
//!
//! Notation (per sequence of the batch, per layer l): the state s has
//! S = SC*H components (SC = 2 for the LSTM's (h, c), 1 otherwise), indexed
//! j*SC + q for unit j and component q (0 = h, 1 = c). theta here is the
//! recurrent parameters (`rnn.*`, a contiguous range of the model's flat
//! buffer, P scalars); the head's gradient needs no influence matrix.
//! - D (`a`, S x S): d s_t / d s_{t-1}, built from the cell's local Jacobians
//!   and W_hh;
//! - Bx (`bx`, S x S_{l-1}): d s^l_t / d s^{l-1}_t, how the layer below
//!   (through its h, same step) moves this layer: W_ih mapped onto the
//!   lower layer's state rows (zero on its c rows);
//! - I (immediate, S x P, never materialised): each unit's pre-activations
//!   touch only their own rows of the weights, so I is applied row by row.
//!
//! Exact RTRL for stacked layers: J^l_t = D^l J^l_{t-1} + Bx^l J^{l-1}_t + I^l_t,
//! gradient sum_t dL_t/ds^L_t J^L_t. The approximations keep one influence
//! matrix per layer over that layer's own parameters and send the error to
//! lower layers through the current step only (Bx^T), which is exact in
//! depth and approximate in time; SnAp-1 keeps J on the one-step pattern
//! (a unit's own weight rows), SnAp-2 on the two-step pattern (also the rows
//! of the units that feed it through nonzero recurrent weights, fixed when the
//! estimator is created).
//!
//! Element-wise cells (minGRU, minLSTM: no recurrent weights, `Cell::RECURRENT`
//! false): each unit's state depends only on its own previous state and its
//! own rows of the input weights, so D is diagonal and, within a layer, the
//! influence matrix is block-diagonal: unit j's state depends on unit j's
//! parameters only. What SnAp-1 keeps is then the whole influence of the
//! layer, and its update costs O(P) per step, like the forward pass.
//! - `rtrl` stays exact in every case: for one element-wise layer it keeps
//!   the block-diagonal influence (O(P) memory and time); for stacked layers
//!   a unit of layer l depends on every parameter of the layers below, so it
//!   keeps the dense J^l (O(S P)), as for the classic cells.
//! - `snap1` on element-wise cells is the per-layer O(P) form (Zucchet et
//!   al. 2023): exact within each layer, approximate across layers (the
//!   error reaches a lower layer through the current step only). For one
//!   layer it equals `rtrl`.

pub use super::learner::{sequence_gradient, OnlineLearner};
use crate::cells::{with_cell, Cell, CellFn, CellKind};
use crate::error::{config_err, Result};
use crate::float::Float;
use crate::linalg::{gemm, Tr};
use crate::model::Model;
use crate::network::RnnCache;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

crate::choice! {
    /// How gradients are computed. `Bptt` and `Tbptt` are in `crate::grad::tbptt`; the
    /// others are online and live here.
    pub enum Estimator ("estimator") {
        /// Full backpropagation through time over each sequence.
        Bptt = "bptt",
        /// Truncated BPTT: an update every k1 steps, k2 steps back-propagated.
        Tbptt = "tbptt",
        /// Exact real-time recurrent learning (the full influence matrix).
        Rtrl = "rtrl",
        /// Unbiased online recurrent optimisation (a rank-one influence estimate).
        Uoro = "uoro",
        /// SnAp-1: the influence matrix kept on each unit's own parameters.
        Snap1 = "snap1",
        /// SnAp-2: the influence pattern of two steps.
        Snap2 = "snap2",
    }
}

impl Estimator {
    /// Parses bptt, tbptt, rtrl, uoro, snap1, snap2.
    pub fn parse(s: &str) -> Result<Self> {
        s.parse()
    }

    /// Whether the estimator runs forward in time (step by step).
    pub fn is_online(self) -> bool {
        !matches!(self, Estimator::Bptt | Estimator::Tbptt)
    }
}

/// Default limit on the memory of the influence matrices: 2 GiB.
pub const DEFAULT_MEMORY_LIMIT: usize = 2 << 30;

/// Sizes of one layer, as the online estimators see it.
#[derive(Clone, Debug)]
struct LayerDims {
    /// H
    h: usize,
    /// I_l
    i: usize,
    /// SC * H
    s: usize,
    /// Width of a recurrent weight row: H, or 0 for a cell without recurrent weights.
    hr: usize,
    /// Offsets of weight_ih, weight_hh and (bias_ih, bias_hh) from the start
    /// of the rnn parameters (`None`: a cell without recurrent weights).
    w_ih: usize,
    w_hh: Option<usize>,
    bias: Option<(usize, Option<usize>)>,
    /// This layer's own parameters: [p0, p1) relative to the rnn start.
    p0: usize,
    p1: usize,
}

/// Local Jacobians of one layer for one sequence at the current step.
#[derive(Clone, Debug)]
struct StepJac<F> {
    /// d s / d gx [S, G] (unit-major, see `Cell::step_jacobians`).
    mx: Vec<F>,
    /// d s / d gh [S, G].
    mh: Vec<F>,
    /// direct d s / d s_prev [H, SC, SC].
    dd: Vec<F>,
    /// D: d s_t / d s_{t-1} [S, S] (dense estimators and UORO; empty for the per-unit ones).
    a: Vec<F>,
    /// Bx: d s^l_t / d s^{l-1}_t [S, S_{l-1}] (l > 0).
    bx: Vec<F>,
    /// The layer's input at this step [I_l] and its previous hidden state [H].
    x: Vec<F>,
    h_prev: Vec<F>,
}

/// What each estimator carries between steps, per sequence.
#[derive(Clone, Debug)]
enum Influence<F> {
    /// Exact RTRL (`cross`: with the layer-below term) or SnAp-2 (with a
    /// mask): one dense J [S_l, P] per (layer, sequence), double-buffered.
    Dense { j: Vec<Vec<F>>, spare: Vec<Vec<F>>, cross: bool, mask: Option<Vec<Vec<bool>>> },
    /// SnAp-1: per (layer, sequence), for each state row, its values on the
    /// row's own parameters [S_l, G*(I_l + H + 2)] (bias part unused without bias).
    Snap1 { j: Vec<Vec<F>> },
    /// UORO: state tangent [S_total] and parameter tangent [P] per sequence.
    Uoro { s: Vec<Vec<F>>, theta: Vec<Vec<F>>, rng: ChaCha8Rng },
}

/// The online estimator of a model for a batch of `b` sequences.
#[derive(Clone, Debug)]
pub struct OnlineState<F> {
    /// The estimator (an online one).
    pub method: Estimator,
    cell: CellKind,
    sc: usize,
    g: usize,
    pub(super) b: usize,
    layers: Vec<LayerDims>,
    /// First rnn parameter in the model's flat buffer, and P.
    rnn_off: usize,
    p: usize,
    jac: Vec<StepJac<F>>,
    inf: Influence<F>,
    /// Whether `update` ran since the last reset (the Jacobians are current).
    ready: bool,
}

fn layer_dims<F: Float>(model: &Model<F>) -> Result<(Vec<LayerDims>, usize, usize)> {
    let cfg = &model.cfg.rnn;
    if cfg.bidirectional {
        return Err(config_err(
            "bidirectional",
            true,
            "online estimators run forward in time; a bidirectional network needs the future",
        ));
    }
    let sc = crate::cells::state_components(cfg.cell);
    let rnn_off = model.table.spec(model.dirs[0].w_ih).offset;
    let mut layers = Vec::new();
    let mut end = rnn_off;
    for (l, dp) in model.dirs.iter().enumerate() {
        let off = |idx: usize| model.table.spec(idx).offset - rnn_off;
        let last = dp.indices().map(|i| model.table.spec(i).offset + model.table.spec(i).len).max().unwrap_or(0);
        layers.push(LayerDims {
            h: cfg.hidden_size,
            hr: if dp.w_hh.is_some() { cfg.hidden_size } else { 0 },
            i: cfg.layer_input(l),
            s: sc * cfg.hidden_size,
            w_ih: off(dp.w_ih),
            w_hh: dp.w_hh.map(off),
            bias: dp.bias.map(|b| (off(b.ih), b.hh.map(off))),
            p0: off(dp.w_ih),
            p1: last - rnn_off,
        });
        end = end.max(last);
    }
    Ok((layers, rnn_off, end - rnn_off))
}

/// Whether `method` keeps a per-unit influence: SnAp-1, and exact RTRL of
/// one layer of an element-wise cell (block-diagonal, see the module doc).
fn per_unit(method: Estimator, cell: CellKind, layers: usize) -> bool {
    method == Estimator::Snap1 || (method == Estimator::Rtrl && !cell.recurrent() && layers == 1)
}

impl<F: Float> OnlineState<F> {
    /// Bytes the estimator's state needs for `batch` sequences (computed before anything is allocated).
    pub fn memory_needed(model: &Model<F>, method: Estimator, batch: usize) -> Result<usize> {
        let (layers, _, p) = layer_dims(model)?;
        let g = model.cfg.rnn.cell.gates();
        let f = std::mem::size_of::<F>();
        let s_tot: usize = layers.iter().map(|l| l.s).sum();
        let unit = per_unit(method, model.cfg.rnn.cell, layers.len());
        let a = |l: &LayerDims| if unit { 0 } else { l.s };
        let jac: usize = layers.iter().map(|l| l.s * (2 * g + a(l) + s_tot + 1) + l.i + l.h).sum::<usize>() * batch;
        let inf = match method {
            _ if unit => batch * layers.iter().map(|l| l.s * snap1_width(l, g)).sum::<usize>(),
            Estimator::Rtrl | Estimator::Snap2 => (batch + 1) * s_tot * p,
            Estimator::Uoro => batch * (s_tot + p),
            _ => return Err(config_err("estimator", format!("{method:?}"), "is not an online estimator")),
        };
        let mask =
            if method == Estimator::Snap2 { layers.iter().map(|l| l.s * p).sum::<usize>() / f.max(1) } else { 0 };
        Ok((jac + inf + mask) * f)
    }

    /// A fresh estimator (zero influence) for `batch` sequences. Fails with
    /// a clear error, before allocating, when it needs more than `limit` bytes.
    pub fn new(model: &Model<F>, method: Estimator, batch: usize, limit: usize, seed: u64) -> Result<Self> {
        if !method.is_online() {
            return Err(config_err("estimator", format!("{method:?}"), "is not an online estimator"));
        }
        if batch == 0 {
            return Err(config_err("batch", 0, "must be at least 1"));
        }
        if model.cfg.vocab.is_some() {
            return Err(config_err(
                "estimator",
                format!("{method:?}"),
                "online estimators take real-valued inputs; this model embeds tokens",
            ));
        }
        let need = Self::memory_needed(model, method, batch)?;
        if need > limit {
            return Err(config_err(
                "memory",
                format!("{need} bytes ({:.1} MiB)", need as f64 / 1048576.0),
                format!("{method:?} for this model and batch {batch} needs more than the limit of {limit} bytes ({:.1} MiB); raise the limit, or use a smaller network or batch, or snap1 / uoro", limit as f64 / 1048576.0),
            ));
        }
        let (layers, rnn_off, p) = layer_dims(model)?;
        let cell = model.cfg.rnn.cell;
        let sc = crate::cells::state_components(cell);
        let g = cell.gates();
        let s_tot: usize = layers.iter().map(|l| l.s).sum();
        let unit = per_unit(method, cell, layers.len());
        let mut jac = Vec::new();
        for _ in 0..batch {
            for (l, d) in layers.iter().enumerate() {
                let s_below = if l > 0 { layers[l - 1].s } else { 0 };
                jac.push(StepJac {
                    mx: vec![F::zero(); d.s * g],
                    mh: vec![F::zero(); d.s * g],
                    dd: vec![F::zero(); d.h * sc * sc],
                    a: vec![F::zero(); if unit { 0 } else { d.s * d.s }],
                    bx: vec![F::zero(); d.s * s_below],
                    x: vec![F::zero(); d.i],
                    h_prev: vec![F::zero(); d.h],
                });
            }
        }
        let nl = layers.len();
        let inf = match method {
            _ if unit => Influence::Snap1 {
                j: (0..batch * nl)
                    .map(|k| vec![F::zero(); layers[k % nl].s * snap1_width(&layers[k % nl], g)])
                    .collect(),
            },
            Estimator::Rtrl | Estimator::Snap2 => {
                let j = (0..batch * nl).map(|k| vec![F::zero(); layers[k % nl].s * p]).collect();
                let spare = layers.iter().map(|l| vec![F::zero(); l.s * p]).collect();
                let mask = (method == Estimator::Snap2).then(|| snap2_mask(model, &layers, sc, g, p));
                Influence::Dense { j, spare, cross: method == Estimator::Rtrl, mask }
            }
            Estimator::Uoro => Influence::Uoro {
                s: vec![vec![F::zero(); s_tot]; batch],
                theta: vec![vec![F::zero(); p]; batch],
                rng: ChaCha8Rng::seed_from_u64(seed),
            },
            _ => unreachable!("checked above"),
        };
        Ok(OnlineState { method, cell, sc, g, b: batch, layers, rnn_off, p, jac, inf, ready: false })
    }

    /// Forgets all influence (a new sequence starts from a fresh state).
    pub fn reset(&mut self) {
        match &mut self.inf {
            Influence::Dense { j, .. } | Influence::Snap1 { j } => {
                j.iter_mut().for_each(|v| v.iter_mut().for_each(|x| *x = F::zero()))
            }
            Influence::Uoro { s, theta, .. } => {
                s.iter_mut().chain(theta.iter_mut()).for_each(|v| v.iter_mut().for_each(|x| *x = F::zero()));
            }
        }
        self.ready = false;
    }

    /// Bytes held by the estimator (constant over a stream).
    pub fn memory_bytes(&self) -> usize {
        let f = std::mem::size_of::<F>();
        let jac: usize = self
            .jac
            .iter()
            .map(|j| {
                j.mx.capacity()
                    + j.mh.capacity()
                    + j.dd.capacity()
                    + j.a.capacity()
                    + j.bx.capacity()
                    + j.x.capacity()
                    + j.h_prev.capacity()
            })
            .sum();
        let inf = match &self.inf {
            Influence::Dense { j, spare, mask, .. } => {
                j.iter().chain(spare.iter()).map(|v| v.capacity()).sum::<usize>()
                    + mask.as_ref().map_or(0, |m| m.iter().map(|v| v.capacity()).sum::<usize>() / f.max(1))
            }
            Influence::Snap1 { j } => j.iter().map(|v| v.capacity()).sum(),
            Influence::Uoro { s, theta, .. } => s.iter().chain(theta.iter()).map(|v| v.capacity()).sum(),
        };
        (jac + inf) * f
    }

    /// Updates the influence after a forward step whose cache (T = 1) is given.
    pub fn update(&mut self, model: &Model<F>, cache: &RnnCache<F>) -> Result<()> {
        if cache.seq_len != 1 || cache.batch != self.b {
            return Err(config_err(
                "cache",
                format!("T={} B={}", cache.seq_len, cache.batch),
                format!("online update takes one step of batch {}", self.b),
            ));
        }
        struct Local<'a, F: Float>(&'a mut OnlineState<F>, &'a Model<F>, &'a RnnCache<F>);
        impl<F: Float> CellFn<F> for Local<'_, F> {
            type Output = ();
            fn call<C: Cell<F>>(self, cell: C) {
                self.0.local(cell, self.1, self.2)
            }
        }
        with_cell(self.cell, Local(self, model, cache));
        let (nl, p) = (self.layers.len(), self.p);
        let params = &model.params[self.rnn_off..self.rnn_off + p];
        match &mut self.inf {
            Influence::Dense { j, spare, cross, mask } => {
                for b in 0..self.b {
                    for l in 0..nl {
                        let d = &self.layers[l];
                        let jc = &self.jac[b * nl + l];
                        let s = d.s;
                        // J_new = D J_old (+ Bx J^{l-1}_new) + I
                        let (below, rest) = j.split_at_mut(b * nl + l);
                        let jl = &mut rest[0];
                        let tmp = &mut spare[l];
                        gemm(s, s, p, F::one(), &jc.a, Tr::N, jl, Tr::N, F::zero(), tmp);
                        if *cross && l > 0 {
                            let sb = self.layers[l - 1].s;
                            gemm(s, sb, p, F::one(), &jc.bx, Tr::N, &below[b * nl + l - 1], Tr::N, F::one(), tmp);
                        }
                        // The new J is in the spare buffer: swap, keeping the old one as the next spare.
                        std::mem::swap(jl, tmp);
                        add_immediate_dense(d, self.sc, self.g, jc, jl, p);
                        if let Some(m) = mask {
                            for (v, keep) in jl.iter_mut().zip(&m[l]) {
                                if !keep {
                                    *v = F::zero();
                                }
                            }
                        }
                    }
                }
            }
            Influence::Snap1 { j } => {
                for b in 0..self.b {
                    for l in 0..nl {
                        let d = &self.layers[l];
                        snap1_update(d, self.sc, self.g, &self.jac[b * nl + l], &mut j[b * nl + l], params);
                    }
                }
            }
            Influence::Uoro { s, theta, rng } => {
                for b in 0..self.b {
                    uoro_update(
                        &self.layers,
                        self.sc,
                        self.g,
                        &self.jac[b * nl..(b + 1) * nl],
                        &mut s[b],
                        &mut theta[b],
                        rng,
                        p,
                    );
                }
            }
        }
        self.ready = true;
        Ok(())
    }

    /// Adds to `grads` (the model's flat gradient buffer) the gradient of a
    /// loss at this step whose derivative with respect to the top layer's
    /// new hidden state is `dh_top` [B, H].
    pub fn accumulate(&self, model: &Model<F>, dh_top: &[F], grads: &mut [F]) -> Result<()> {
        let nl = self.layers.len();
        let top = &self.layers[nl - 1];
        crate::error::check_len("dh_top", dh_top.len(), self.b * top.h, "[B, H]")?;
        crate::error::check_len("grads", grads.len(), model.num_params(), "[number of parameters]")?;
        if !self.ready {
            return Err(config_err("accumulate", "before update", "run a forward step and `update` first"));
        }
        let p = self.p;
        let g_rnn = &mut grads[self.rnn_off..self.rnn_off + p];
        for b in 0..self.b {
            // delta^L: dL/ds on the top layer (h rows only).
            let mut delta = vec![F::zero(); top.s];
            for j in 0..top.h {
                delta[j * self.sc] = dh_top[b * top.h + j];
            }
            match &self.inf {
                Influence::Dense { j, cross: true, .. } => {
                    // grads += delta^T J^L
                    gemm(1, top.s, p, F::one(), &delta, Tr::N, &j[b * nl + nl - 1], Tr::N, F::one(), g_rnn);
                }
                Influence::Dense { j, .. } => {
                    for_each_layer_delta(&self.layers, self.sc, &self.jac[b * nl..(b + 1) * nl], delta, |l, dl| {
                        gemm(1, self.layers[l].s, p, F::one(), dl, Tr::N, &j[b * nl + l], Tr::N, F::one(), g_rnn);
                    });
                }
                Influence::Snap1 { j } => {
                    for_each_layer_delta(&self.layers, self.sc, &self.jac[b * nl..(b + 1) * nl], delta, |l, dl| {
                        snap1_accumulate(&self.layers[l], self.sc, self.g, dl, &j[b * nl + l], g_rnn);
                    });
                }
                Influence::Uoro { s, theta, .. } => {
                    // grads += (delta . s~) theta~, delta on the top layer's rows of s~.
                    let off: usize = self.layers[..nl - 1].iter().map(|l| l.s).sum();
                    let c: F = delta.iter().zip(&s[b][off..]).map(|(x, y)| *x * *y).sum();
                    for (gk, tk) in g_rnn.iter_mut().zip(&theta[b]) {
                        *gk += c * *tk;
                    }
                }
            }
        }
        Ok(())
    }

    /// Computes every layer's local Jacobians (mx, mh, dd, D, Bx) from the step's cache.
    fn local<C: Cell<F>>(&mut self, cell: C, model: &Model<F>, cache: &RnnCache<F>) {
        let (nl, sc, g) = (self.layers.len(), self.sc, self.g);
        let need_dense = !matches!(self.inf, Influence::Snap1 { .. });
        for l in 0..nl {
            let d = self.layers[l].clone();
            let (h, gh_w) = (d.h, g * d.h);
            let dc = &cache.dirs[l];
            let w_ih = model.table.view(&model.params, model.dirs[l].w_ih);
            let w_hh: &[F] = model.dirs[l].w_hh.map_or(&[], |w| model.table.view(&model.params, w));
            let s_below = if l > 0 { self.layers[l - 1].s } else { 0 };
            for b in 0..self.b {
                let jc = &mut self.jac[b * nl + l];
                let (rh, rg) = (b * h..(b + 1) * h, b * gh_w..(b + 1) * gh_w);
                let (cp, cn): (&[F], &[F]) = if C::HAS_C {
                    (&dc.c[rh.clone()], &dc.c[h * self.b + b * h..h * self.b + (b + 1) * h])
                } else {
                    (&[], &[])
                };
                let h_prev = &dc.h[rh.clone()];
                let h_new = &dc.h[h * self.b + b * h..h * self.b + (b + 1) * h];
                cell.step_jacobians(
                    &dc.act[rg.clone()],
                    if C::NEEDS_GH { &dc.gh[rg] } else { &[] },
                    h_prev,
                    cp,
                    h_new,
                    cn,
                    &mut jc.mx,
                    &mut jc.mh,
                    &mut jc.dd,
                );
                jc.x.copy_from_slice(&cache.inputs[l][b * d.i..(b + 1) * d.i]);
                jc.h_prev.copy_from_slice(h_prev);
                if !need_dense && l == 0 {
                    continue;
                }
                if need_dense {
                    // D[(j,q),(k,0)] = sum_g mh[(j,q),g] W_hh[gH+j, k] + [k=j] dd[(j,q),0]; D[(j,q),(k,1)] = [k=j] dd[(j,q),1]
                    jc.a.iter_mut().for_each(|v| *v = F::zero());
                    for j in 0..h {
                        for q in 0..sc {
                            let row = (j * sc + q) * d.s;
                            for gg in (0..g).filter(|_| !w_hh.is_empty()) {
                                let m = jc.mh[(j * sc + q) * g + gg];
                                if m == F::zero() {
                                    continue;
                                }
                                let w = &w_hh[(gg * h + j) * h..(gg * h + j + 1) * h];
                                for k in 0..h {
                                    jc.a[row + k * sc] += m * w[k];
                                }
                            }
                            for q2 in 0..sc {
                                jc.a[row + j * sc + q2] += jc.dd[(j * sc + q) * sc + q2];
                            }
                        }
                    }
                }
                if l > 0 {
                    // Bx[(j,q),(k,0)] = sum_g mx[(j,q),g] W_ih[gH+j, k]; zero on the lower layer's c rows.
                    jc.bx.iter_mut().for_each(|v| *v = F::zero());
                    let sb_sc = s_below / d.i; // components per lower unit
                    for j in 0..h {
                        for q in 0..sc {
                            let row = (j * sc + q) * s_below;
                            for gg in 0..g {
                                let m = jc.mx[(j * sc + q) * g + gg];
                                if m == F::zero() {
                                    continue;
                                }
                                let w = &w_ih[(gg * h + j) * d.i..(gg * h + j + 1) * d.i];
                                for k in 0..d.i {
                                    jc.bx[row + k * sb_sc] += m * w[k];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Adds the immediate Jacobian I (d s / d theta of this layer, one step) into a dense J [S, P].
fn add_immediate_dense<F: Float>(d: &LayerDims, sc: usize, g: usize, jc: &StepJac<F>, jl: &mut [F], p: usize) {
    for j in 0..d.h {
        for q in 0..sc {
            let row = &mut jl[(j * sc + q) * p..(j * sc + q + 1) * p];
            for gg in 0..g {
                let r = gg * d.h + j; // the weight row feeding gate gg of unit j
                let (mx, mh) = (jc.mx[(j * sc + q) * g + gg], jc.mh[(j * sc + q) * g + gg]);
                for (k, xv) in jc.x.iter().enumerate() {
                    row[d.w_ih + r * d.i + k] += mx * *xv;
                }
                if let Some(w_hh) = d.w_hh {
                    for (k, hv) in jc.h_prev.iter().enumerate() {
                        row[w_hh + r * d.h + k] += mh * *hv;
                    }
                }
                if let Some((b_ih, b_hh)) = d.bias {
                    row[b_ih + r] += mx;
                    if let Some(b_hh) = b_hh {
                        row[b_hh + r] += mh;
                    }
                }
            }
        }
    }
}

/// Runs `f(l, delta^l)` for every layer, top down, sending the error to the
/// layer below through the current step only: delta^{l-1} = Bx^lᵀ delta^l.
fn for_each_layer_delta<F: Float>(
    layers: &[LayerDims],
    _sc: usize,
    jac: &[StepJac<F>],
    top: Vec<F>,
    mut f: impl FnMut(usize, &[F]),
) {
    let mut delta = top;
    for l in (0..layers.len()).rev() {
        f(l, &delta);
        if l > 0 {
            let sb = layers[l - 1].s;
            let mut below = vec![F::zero(); sb];
            // below = Bxᵀ delta   [S_{l-1}] = [S_{l-1}, S_l] x [S_l]
            gemm(1, layers[l].s, sb, F::one(), &delta, Tr::N, &jac[l].bx, Tr::N, F::zero(), &mut below);
            delta = below;
        }
    }
}

/// Width of a SnAp-1 row: the unit's own weight rows (G x (I + H), G x I
/// without recurrent weights) and biases (2G).
fn snap1_width(d: &LayerDims, g: usize) -> usize {
    g * (d.i + d.hr + 2)
}

/// SnAp-1: J_new[(j,q)] = sum_q' D[(j,q),(j,q')] J_old[(j,q')] + I[(j,q)], on the unit's own rows.
fn snap1_update<F: Float>(d: &LayerDims, sc: usize, g: usize, jc: &StepJac<F>, jl: &mut [F], params: &[F]) {
    let w = snap1_width(d, g);
    let w_hh: &[F] = d.w_hh.map_or(&[], |o| &params[o..o + g * d.h * d.h]);
    for (j, rows) in jl.chunks_exact_mut(sc * w).enumerate() {
        // The diagonal block of D for unit j: [SC, SC].
        let mut dj = [F::zero(); 4];
        for q in 0..sc {
            for gg in (0..g).filter(|_| !w_hh.is_empty()) {
                dj[q * sc] += jc.mh[(j * sc + q) * g + gg] * w_hh[(gg * d.h + j) * d.h + j];
            }
            for q2 in 0..sc {
                dj[q * sc + q2] += jc.dd[(j * sc + q) * sc + q2];
            }
        }
        if sc == 1 {
            let d0 = dj[0];
            rows.iter_mut().for_each(|v| *v *= d0);
        } else {
            // (h, c) rows mix through the 2 x 2 block.
            let (rh, rc) = rows.split_at_mut(w);
            for (a, b) in rh.iter_mut().zip(rc.iter_mut()) {
                let (va, vb) = (*a, *b);
                *a = dj[0] * va + dj[1] * vb;
                *b = dj[2] * va + dj[3] * vb;
            }
        }
        // Immediate part, laid out per gate: [W_ih row (I) | W_hh row (H) | b_ih | b_hh].
        for (q, row) in rows.chunks_exact_mut(w).enumerate() {
            for (gg, seg) in row.chunks_exact_mut(d.i + d.hr + 2).enumerate() {
                let (mx, mh) = (jc.mx[(j * sc + q) * g + gg], jc.mh[(j * sc + q) * g + gg]);
                let (sx, rest) = seg.split_at_mut(d.i);
                let (sh, sb) = rest.split_at_mut(d.hr);
                for (v, xv) in sx.iter_mut().zip(&jc.x) {
                    *v += mx * *xv;
                }
                for (v, hv) in sh.iter_mut().zip(&jc.h_prev) {
                    *v += mh * *hv;
                }
                sb[0] += mx;
                sb[1] += mh;
            }
        }
    }
}

/// SnAp-1 gradient: grads[own rows of unit j] += sum_q delta[(j,q)] J[(j,q)].
fn snap1_accumulate<F: Float>(d: &LayerDims, sc: usize, g: usize, delta: &[F], jl: &[F], g_rnn: &mut [F]) {
    let w = snap1_width(d, g);
    for j in 0..d.h {
        for q in 0..sc {
            let dv = delta[j * sc + q];
            if dv == F::zero() {
                continue;
            }
            let row = &jl[(j * sc + q) * w..(j * sc + q + 1) * w];
            for (gg, seg) in row.chunks_exact(d.i + d.hr + 2).enumerate() {
                let r = gg * d.h + j;
                for (gv, v) in g_rnn[d.w_ih + r * d.i..d.w_ih + (r + 1) * d.i].iter_mut().zip(&seg[..d.i]) {
                    *gv += dv * *v;
                }
                if let Some(w_hh) = d.w_hh {
                    for (gv, v) in g_rnn[w_hh + r * d.h..w_hh + (r + 1) * d.h].iter_mut().zip(&seg[d.i..d.i + d.h]) {
                        *gv += dv * *v;
                    }
                }
                if let Some((b_ih, b_hh)) = d.bias {
                    g_rnn[b_ih + r] += dv * seg[d.i + d.hr];
                    if let Some(b_hh) = b_hh {
                        g_rnn[b_hh + r] += dv * seg[d.i + d.hr + 1];
                    }
                }
            }
        }
    }
}

/// SnAp-2's fixed pattern for each layer [S_l, P]: a row (j, q) keeps the
/// parameters of unit j's own weight rows and those of every unit k that
/// feeds unit j through a nonzero recurrent weight.
fn snap2_mask<F: Float>(model: &Model<F>, layers: &[LayerDims], sc: usize, g: usize, p: usize) -> Vec<Vec<bool>> {
    let rnn_off = model.table.spec(model.dirs[0].w_ih).offset;
    layers
        .iter()
        .map(|d| {
            let w_hh: &[F] = d.w_hh.map_or(&[], |o| &model.params[rnn_off + o..rnn_off + o + g * d.h * d.h]);
            // feeds[j][k]: unit k reaches unit j in one step.
            let feeds = |j: usize, k: usize| {
                j == k || (!w_hh.is_empty() && (0..g).any(|gg| w_hh[(gg * d.h + j) * d.h + k] != F::zero()))
            };
            let own = |col: usize, k: usize| -> bool {
                // Is parameter column `col` in unit k's own rows?
                let in_rows = |base: usize, width: usize| {
                    col >= base && col < base + g * d.h * width && ((col - base) / width) % d.h == k
                };
                in_rows(d.w_ih, d.i)
                    || d.w_hh.is_some_and(|w| in_rows(w, d.h))
                    || d.bias.is_some_and(|(b_ih, b_hh)| in_rows(b_ih, 1) || b_hh.is_some_and(|b| in_rows(b, 1)))
            };
            let mut m = vec![false; d.s * p];
            for j in 0..d.h {
                let sources: Vec<usize> = (0..d.h).filter(|&k| feeds(j, k)).collect();
                for col in d.p0..d.p1 {
                    if sources.iter().any(|&k| own(col, k)) {
                        for q in 0..sc {
                            m[(j * sc + q) * p + col] = true;
                        }
                    }
                }
            }
            m
        })
        .collect()
}

/// UORO's step for one sequence (Tallec & Ollivier 2018, algorithm 1):
///   s~ <- rho0 D s~ + rho1 nu,   theta~ <- theta~ / rho0 + (nuᵀ I) / rho1,
/// with random signs nu and rho0 = sqrt(|theta~| / |D s~|), rho1 = sqrt(|nuᵀ I| / |nu|),
/// which keep the two factors at the same scale and minimise the variance.
#[allow(clippy::too_many_arguments)]
fn uoro_update<F: Float>(
    layers: &[LayerDims],
    sc: usize,
    g: usize,
    jac: &[StepJac<F>],
    s: &mut [F],
    theta: &mut [F],
    rng: &mut ChaCha8Rng,
    p: usize,
) {
    let eps = 1e-7;
    let nl = layers.len();
    let offs: Vec<usize> = layers
        .iter()
        .scan(0, |o, l| {
            let r = *o;
            *o += l.s;
            Some(r)
        })
        .collect();
    // v = D_total s~, layer by layer: v^l = D^l s~^l + Bx^l v^{l-1}.
    let mut v = vec![F::zero(); s.len()];
    for l in 0..nl {
        let (o, sl) = (offs[l], layers[l].s);
        let (done, rest) = v.split_at_mut(o);
        gemm(sl, sl, 1, F::one(), &jac[l].a, Tr::N, &s[o..o + sl], Tr::N, F::zero(), &mut rest[..sl]);
        if l > 0 {
            let (ob, sb) = (offs[l - 1], layers[l - 1].s);
            gemm(sl, sb, 1, F::one(), &jac[l].bx, Tr::N, &done[ob..ob + sb], Tr::N, F::one(), &mut rest[..sl]);
        }
    }
    // nu: random signs on every state component.
    let nu: Vec<F> = (0..s.len()).map(|_| if rng.gen::<bool>() { F::one() } else { -F::one() }).collect();
    // nuᵀ I_total: the coefficient on layer l's immediate part is e^l = nu^l + Bx^{l+1}ᵀ e^{l+1}.
    let mut nui = vec![F::zero(); p];
    let mut e: Vec<F> = nu[offs[nl - 1]..].to_vec();
    for l in (0..nl).rev() {
        let d = &layers[l];
        let jc = &jac[l];
        for j in 0..d.h {
            for gg in 0..g {
                let r = gg * d.h + j;
                let (mut cx, mut ch) = (F::zero(), F::zero());
                for q in 0..sc {
                    cx += e[j * sc + q] * jc.mx[(j * sc + q) * g + gg];
                    ch += e[j * sc + q] * jc.mh[(j * sc + q) * g + gg];
                }
                for (k, xv) in jc.x.iter().enumerate() {
                    nui[d.w_ih + r * d.i + k] += cx * *xv;
                }
                if let Some(w_hh) = d.w_hh {
                    for (k, hv) in jc.h_prev.iter().enumerate() {
                        nui[w_hh + r * d.h + k] += ch * *hv;
                    }
                }
                if let Some((b_ih, b_hh)) = d.bias {
                    nui[b_ih + r] += cx;
                    if let Some(b_hh) = b_hh {
                        nui[b_hh + r] += ch;
                    }
                }
            }
        }
        if l > 0 {
            let sb = layers[l - 1].s;
            let mut below = vec![F::zero(); sb];
            gemm(1, d.s, sb, F::one(), &e, Tr::N, &jc.bx, Tr::N, F::zero(), &mut below);
            for (bv, nv) in below.iter_mut().zip(&nu[offs[l - 1]..offs[l - 1] + sb]) {
                *bv += *nv;
            }
            e = below;
        }
    }
    let norm = |x: &[F]| x.iter().map(|v| v.to_f64().unwrap_or(0.0).powi(2)).sum::<f64>().sqrt();
    let rho0 = ((norm(theta) + eps) / (norm(&v) + eps)).sqrt();
    let rho1 = ((norm(&nui) + eps) / (norm(&nu) + eps)).sqrt();
    let (r0, r1) = (F::of(rho0), F::of(rho1));
    for k in 0..s.len() {
        s[k] = r0 * v[k] + r1 * nu[k];
    }
    for k in 0..p {
        theta[k] = theta[k] / r0 + nui[k] / r1;
    }
}
