//! The usual sequence model: an optional embedding (`emb.*`), the recurrent
//! stack (`rnn.*`) and a Linear head (`fc.*`) either on each sequence's last
//! valid step (many-to-one, `fc(out[b, len_b - 1])`, which is
//! `fc(out[:, -1, :])` for equal lengths) or on every step (many-to-many).
//! Parameter names are those of the PyTorch `state_dict` of that model.

use crate::cells::CellKind;
use crate::error::{check_len, config_err, shape_err, Error, Result};
use crate::float::Float;
use crate::infer::{InferWork, Runner};
use crate::init::{normal, uniform};
use crate::linalg::{gemm, sum_rows_into, Tr};
use crate::loss::{loss_forward_backward, LossKind, Targets};
use crate::network::{
    backward_into, check_lengths, check_sweep, register_params, sweep, BackwardWork, DirParams, Keep, PackedNet,
    RnnCache, RnnConfig, RnnState, StepScratch,
};
use crate::params::ParamTable;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// Where the Linear head reads the recurrent output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadKind {
    /// On each sequence's last valid step: y [B, O].
    Last,
    /// On every step: y [B, T, O] (batch-first) or [T, B, O].
    Every,
}

/// A whole model: embedding (optional), recurrent stack, head, loss.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// The recurrent stack.
    pub rnn: RnnConfig,
    /// Vocabulary size when inputs are token ids (an embedding of width
    /// `rnn.input_size` is then added); `None` for real-valued inputs.
    pub vocab: Option<usize>,
    /// Where the Linear head reads the recurrent output.
    pub head: HeadKind,
    /// O: width of the head's output.
    pub out_size: usize,
    /// The loss the model is trained on.
    pub loss: LossKind,
}

impl ModelConfig {
    /// Rejects zero sizes, dropout outside [0, 1) and similar.
    pub fn validate(&self) -> Result<()> {
        self.rnn.validate()?;
        if self.out_size == 0 {
            return Err(config_err("out_size", 0, "must be at least 1"));
        }
        if self.vocab == Some(0) {
            return Err(config_err("vocab", 0, "must be at least 1"));
        }
        Ok(())
    }
}

/// Initialisation choices beyond PyTorch's default U(-1/sqrt(H), 1/sqrt(H)).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InitConfig {
    /// Orthogonal recurrent weights (each gate's H x H block).
    #[serde(default)]
    pub orthogonal_recurrent: bool,
    /// Xavier (Glorot) uniform input weights.
    #[serde(default)]
    pub xavier_input: bool,
    /// LSTM forget-gate bias: bias_ih's forget block set to this, bias_hh's to 0.
    #[serde(default)]
    pub forget_bias: Option<f64>,
}

/// A batch of sequences as the user holds them.
#[derive(Clone, Copy, Debug)]
pub enum SeqInput<'a, F> {
    /// Real-valued inputs [B, T, I] (batch-first) or [T, B, I].
    Dense(&'a [F]),
    /// Token ids [B, T] or [T, B].
    Tokens(&'a [usize]),
}

/// One batch: inputs, sizes, layout and optional per-sequence lengths.
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a, F> {
    /// The inputs, in the layout `batch_first` says.
    pub input: SeqInput<'a, F>,
    /// B: sequences in the batch.
    pub batch: usize,
    /// T: steps of the longest sequence.
    pub seq_len: usize,
    /// Whether inputs (and outputs) are [B, T, ..] rather than [T, B, ..].
    pub batch_first: bool,
    /// Valid length of each sequence (1..=T); `None` means all T.
    pub lengths: Option<&'a [usize]>,
}

/// What `Model::forward` returns to the user (in the batch's layout).
#[derive(Clone, Debug)]
pub struct ModelOutput<F> {
    /// Head output: [B, O] (last) or [B, T, O] / [T, B, O] (every).
    pub y: Vec<F>,
    /// Recurrent output [B, T, D*H] / [T, B, D*H], zero past each length.
    pub out: Vec<F>,
    /// Final states [L*D, B, H].
    pub state: RnnState<F>,
}

/// What `Model::backward` needs from the forward pass. Hand it back with
/// `Model::recycle` once done, and the next forward pass reuses its buffers.
#[derive(Clone, Debug, Default)]
pub struct ModelCache<F> {
    /// The recurrent stack's cache (every step).
    pub rnn: RnnCache<F>,
    /// Token ids, time-major [T, B] (embedding models).
    pub tokens: Vec<usize>,
    /// Head input of the last-step head [B, D*H] (empty for the every-step
    /// head, which reads `rnn.output` [T*B, D*H]); see `head_input`.
    pub feature: Vec<F>,
    /// Whether the batch was batch-first (the layout of y and dy).
    pub batch_first: bool,
    /// Step read by the last-step head for each sequence (`None`: not scored).
    pub last: Vec<Option<usize>>,
    /// Steps before this one are not scored (every-step head).
    pub loss_from: usize,
}

impl<F> ModelCache<F> {
    /// The head's input [N, D*H]: N = B (last-step head) or T*B (every
    /// step, time-major).
    pub fn head_input(&self) -> &[F] {
        if self.feature.is_empty() {
            &self.rnn.output
        } else {
            &self.feature
        }
    }
}

/// Time-major inputs: x [T, B, I] or token ids [T, B].
#[derive(Clone, Debug)]
pub(crate) enum TimeMajor<F> {
    /// Real-valued inputs [T, B, I].
    Dense(Vec<F>),
    /// Token ids [T, B].
    Tokens(Vec<usize>),
}

/// The workspaces of the backward pass beyond the recurrent stack's.
#[derive(Debug, Default)]
struct BackScratch<F> {
    rnn: BackwardWork<F>,
    /// dy time-major [T, B, O] (every-step head, batch-first batches).
    dy_tm: Vec<F>,
    /// dL/d(head input) [N, D*H].
    dfeature: Vec<F>,
    /// dL/d(recurrent output) [T, B, D*H] (last-step head).
    dout: Vec<F>,
}

/// The forward pass's packed weights and per-step workspace.
#[derive(Debug, Default)]
struct ForwardScratch<F> {
    packed: PackedNet<F>,
    step: StepScratch<F>,
}

/// Buffers handed from one call to the next, so that a loop at a fixed
/// shape allocates its large buffers once (behind locks: a `Model` is
/// shared between threads). A clone of the model starts with none.
#[derive(Default)]
struct Pool<F> {
    caches: Mutex<Vec<ModelCache<F>>>,
    forward: Mutex<Vec<ForwardScratch<F>>>,
    backward: Mutex<Vec<BackScratch<F>>>,
    infer: Mutex<Vec<InferWork<F>>>,
}

/// At most this many sets of each kind of buffer are kept.
const POOL_KEEP: usize = 2;

fn take<T: Default>(m: &Mutex<Vec<T>>) -> T {
    m.lock().ok().and_then(|mut v| v.pop()).unwrap_or_default()
}

fn put<T>(m: &Mutex<Vec<T>>, item: T) {
    if let Ok(mut v) = m.lock() {
        if v.len() < POOL_KEEP {
            v.push(item);
        }
    }
}

impl<F> Clone for Pool<F> {
    fn clone(&self) -> Self {
        Pool {
            caches: Mutex::default(),
            forward: Mutex::default(),
            backward: Mutex::default(),
            infer: Mutex::default(),
        }
    }
}

impl<F> std::fmt::Debug for Pool<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pool")
    }
}

/// Gradients with respect to the model's inputs.
#[derive(Clone, Debug)]
pub struct InputGrads<F> {
    /// dL/dx in the batch's layout (empty unless asked for, or for token inputs).
    pub dx: Vec<F>,
    /// dL/dh0 [L*D, B, H].
    pub dh0: Vec<F>,
    /// dL/dc0 [L*D, B, H] (LSTM).
    pub dc0: Vec<F>,
    /// Mean ||dL/dh_t|| per (layer, direction) and step [L*D, T] (see `RnnInputGrads`).
    pub dh_norms: Vec<f64>,
}

/// A model with its parameters in one flat buffer laid out by `table`.
#[derive(Clone, Debug)]
pub struct Model<F> {
    /// Its configuration.
    pub cfg: ModelConfig,
    /// The layout of `params` (and of gradients and optimizer states).
    pub table: ParamTable,
    /// All parameters, one flat buffer.
    pub params: Vec<F>,
    /// The recurrent parameters of each (layer, direction), index l*D + d.
    pub dirs: Vec<DirParams>,
    emb: Option<usize>,
    fc_w: usize,
    fc_b: usize,
    pool: Pool<F>,
}

/// Transposes the two leading axes of x [A, B, W] into [B, A, W].
pub(crate) fn swap_leading<F: Copy + Default>(x: &[F], a: usize, b: usize, w: usize) -> Vec<F> {
    let mut out = vec![F::default(); x.len()];
    for i in 0..a {
        for j in 0..b {
            out[(j * a + i) * w..(j * a + i + 1) * w].copy_from_slice(&x[(i * b + j) * w..(i * b + j + 1) * w]);
        }
    }
    out
}

/// `swap_leading` into `out` (resized to x's length, reusing its allocation).
pub(crate) fn swap_leading_into<F: Copy + Default>(x: &[F], a: usize, b: usize, w: usize, out: &mut Vec<F>) {
    out.resize(x.len(), F::default());
    for i in 0..a {
        for j in 0..b {
            out[(j * a + i) * w..(j * a + i + 1) * w].copy_from_slice(&x[(i * b + j) * w..(i * b + j + 1) * w]);
        }
    }
}

impl<F: Float> Model<F> {
    /// The parameter table of a configuration (no values).
    pub fn layout(cfg: &ModelConfig) -> (ParamTable, Vec<DirParams>, Option<usize>, usize, usize) {
        let mut table = ParamTable::new();
        let emb = cfg.vocab.map(|v| table.push("emb.weight", &[v, cfg.rnn.input_size]));
        let dirs = register_params(&mut table, "rnn.", &cfg.rnn);
        let fc_w = table.push("fc.weight", &[cfg.out_size, cfg.rnn.output_size()]);
        let fc_b = table.push("fc.bias", &[cfg.out_size]);
        (table, dirs, emb, fc_w, fc_b)
    }

    /// A model with all parameters zero (load or initialise them next).
    pub fn zeros(cfg: ModelConfig) -> Result<Self> {
        cfg.validate()?;
        let (table, dirs, emb, fc_w, fc_b) = Self::layout(&cfg);
        let params = vec![F::zero(); table.len()];
        Ok(Model { cfg, table, params, dirs, emb, fc_w, fc_b, pool: Pool::default() })
    }

    /// A model initialised as PyTorch does by default (then `init` options).
    pub fn new<R: Rng>(cfg: ModelConfig, init: &InitConfig, rng: &mut R) -> Result<Self> {
        let mut m = Self::zeros(cfg)?;
        m.init(init, rng)?;
        Ok(m)
    }

    /// (Re-)initialises all parameters: recurrent weights and biases
    /// U(-1/sqrt(H), 1/sqrt(H)); Linear U(-1/sqrt(fan_in), 1/sqrt(fan_in));
    /// embedding N(0, 1); then the options of `init`.
    pub fn init<R: Rng>(&mut self, init: &InitConfig, rng: &mut R) -> Result<()> {
        let h = self.cfg.rnn.hidden_size;
        let k = 1.0 / (h as f64).sqrt();
        if let Some(e) = self.emb {
            for v in self.table.view_mut(&mut self.params, e) {
                *v = F::of(normal(rng));
            }
        }
        let recurrent = self.cfg.rnn.cell.recurrent();
        for (ld, dp) in self.dirs.clone().into_iter().enumerate() {
            // A cell without recurrent weights has one Linear per layer,
            // initialised as nn.Linear: U(-1/sqrt(I_l), 1/sqrt(I_l)).
            let k =
                if recurrent { k } else { 1.0 / (self.cfg.rnn.layer_input(ld / self.cfg.rnn.dirs()) as f64).sqrt() };
            for idx in dp.indices() {
                for v in self.table.view_mut(&mut self.params, idx) {
                    *v = F::of(uniform(rng, -k, k));
                }
            }
        }
        let fan_in = self.cfg.rnn.output_size() as f64;
        let kf = 1.0 / fan_in.sqrt();
        for idx in [self.fc_w, self.fc_b] {
            for v in self.table.view_mut(&mut self.params, idx) {
                *v = F::of(uniform(rng, -kf, kf));
            }
        }
        let g = self.cfg.rnn.cell.gates();
        for dp in self.dirs.clone() {
            if init.xavier_input {
                let shape = self.table.spec(dp.w_ih).shape.clone();
                let a = (6.0 / (shape[0] + shape[1]) as f64).sqrt();
                for v in self.table.view_mut(&mut self.params, dp.w_ih) {
                    *v = F::of(uniform(rng, -a, a));
                }
            }
            if init.orthogonal_recurrent {
                let Some(w_hh) = dp.w_hh else {
                    return Err(config_err(
                        "orthogonal_recurrent",
                        true,
                        format!("the {} cell has no recurrent weights", self.cfg.rnn.cell.name()),
                    ));
                };
                let w = self.table.view_mut(&mut self.params, w_hh);
                for gate in 0..g {
                    let q = crate::init::orthogonal(h, rng);
                    for (dst, src) in w[gate * h * h..(gate + 1) * h * h].iter_mut().zip(&q) {
                        *dst = F::of(*src);
                    }
                }
            }
            if let Some(fb) = init.forget_bias {
                if self.cfg.rnn.cell != CellKind::Lstm {
                    return Err(config_err("forget_bias", fb, "applies to an LSTM only"));
                }
                let Some(bp) = dp.bias else {
                    return Err(config_err("forget_bias", fb, "the network has no biases (bias = false)"));
                };
                let off = crate::cells::LstmGate::F.offset(h);
                let bi = self.table.view_mut(&mut self.params, bp.ih);
                bi[off..off + h].iter_mut().for_each(|v| *v = F::of(fb));
                if let Some(hh) = bp.hh {
                    let bh = self.table.view_mut(&mut self.params, hh);
                    bh[off..off + h].iter_mut().for_each(|v| *v = F::zero());
                }
            }
        }
        Ok(())
    }

    /// The same model in another precision (f64 for checks, f32 for training).
    pub fn cast<G: Float>(&self) -> Model<G> {
        Model {
            cfg: self.cfg.clone(),
            table: self.table.clone(),
            params: self.params.iter().map(|v| G::of(v.to_f64().unwrap_or(f64::NAN))).collect(),
            dirs: self.dirs.clone(),
            emb: self.emb,
            fc_w: self.fc_w,
            fc_b: self.fc_b,
            pool: Pool::default(),
        }
    }

    /// Number of scalar parameters.
    pub fn num_params(&self) -> usize {
        self.table.len()
    }

    /// Validates a batch and returns its lengths (all T when not given).
    pub fn check_input(&self, batch: &Batch<F>) -> Result<Vec<usize>> {
        let (b, t) = (batch.batch, batch.seq_len);
        if b == 0 || t == 0 {
            return Err(config_err(if b == 0 { "batch" } else { "seq_len" }, 0, "must be at least 1"));
        }
        match (batch.input, self.cfg.vocab) {
            (SeqInput::Dense(x), None) => {
                let i = self.cfg.rnn.input_size;
                let shape =
                    if batch.batch_first { format!("[B={b}, T={t}, I={i}]") } else { format!("[T={t}, B={b}, I={i}]") };
                check_len("x", x.len(), b * t * i, &shape)?;
                if let Some(p) = x.iter().position(|v| !v.is_finite()) {
                    return Err(config_err("x", x[p], format!("input at flat position {p} is not finite")));
                }
            }
            (SeqInput::Tokens(x), Some(v)) => {
                check_len("tokens", x.len(), b * t, || format!("[{b} x {t}]"))?;
                if let Some(p) = x.iter().position(|&tok| tok >= v) {
                    return Err(Error::Token { token: x[p], position: p, vocab: v });
                }
            }
            (SeqInput::Dense(_), Some(_)) => {
                return Err(config_err("input", "real values", "this model embeds token ids"))
            }
            (SeqInput::Tokens(_), None) => {
                return Err(config_err("input", "token ids", "this model has no embedding (vocab not set)"))
            }
        }
        match batch.lengths {
            Some(l) => {
                check_lengths(l, b, t)?;
                Ok(l.to_vec())
            }
            None => Ok(vec![t; b]),
        }
    }

    /// Forward pass. `state0` gives initial states (zeros when `None`);
    /// `dropout_rng` is `Some` in training.
    pub fn forward<R: Rng>(
        &self,
        batch: &Batch<F>,
        state0: Option<&RnnState<F>>,
        dropout_rng: Option<&mut R>,
    ) -> Result<(ModelOutput<F>, ModelCache<F>)> {
        let lengths = self.check_input(batch)?;
        if let Some(s) = state0 {
            self.check_state(s, batch.batch)?;
        }
        let (b, t) = (batch.batch, batch.seq_len);
        let last = lengths.iter().map(|&l| Some(l - 1)).collect();
        self.forward_tm(batch.input, batch.batch_first, t, b, &lengths, last, 0, state0, dropout_rng)
    }

    /// Forward pass for prediction: the same outputs as `forward`, without
    /// the cache a backward pass needs (and without dropout). Weights are
    /// packed once for the call and only the current state is kept, which
    /// makes it faster and lighter than `forward` on long sequences.
    pub fn predict(&self, batch: &Batch<F>, state0: Option<&RnnState<F>>) -> Result<ModelOutput<F>> {
        let lengths = self.check_input(batch)?;
        let (b, t) = (batch.batch, batch.seq_len);
        let mut state = match state0 {
            Some(s) => {
                self.check_state(s, b)?;
                let mut s = s.clone();
                if s.c.is_empty() && self.cfg.rnn.cell.has_c() {
                    s.c = vec![F::zero(); s.h.len()];
                }
                s
            }
            None => self.zero_state(b),
        };
        let mut runner =
            Runner::with_work(&self.cfg.rnn, &self.table, &self.dirs, &self.params, take(&self.pool.infer))?;
        let fill = |input: &mut [F]| self.fill_input(batch.input, batch.batch_first, t, b, input);
        if let Err(e) = runner.forward_filled(t, b, &lengths, &mut state, fill) {
            put(&self.pool.infer, runner.into_work());
            return Err(e);
        }
        let out_tm = runner.output();
        let dh = self.cfg.rnn.output_size();
        let o = self.cfg.out_size;
        let y = match self.cfg.head {
            HeadKind::Last => {
                let mut f = vec![F::zero(); b * dh];
                for (r, &l) in lengths.iter().enumerate() {
                    f[r * dh..(r + 1) * dh]
                        .copy_from_slice(&out_tm[((l - 1) * b + r) * dh..((l - 1) * b + r + 1) * dh]);
                }
                let mut y = vec![F::zero(); b * o];
                self.head_forward(&f, b, &mut y);
                y
            }
            HeadKind::Every => {
                let mut y = vec![F::zero(); t * b * o];
                self.head_forward(out_tm, t * b, &mut y);
                if batch.batch_first {
                    swap_leading(&y, t, b, o)
                } else {
                    y
                }
            }
        };
        let out = if batch.batch_first { swap_leading(out_tm, t, b, dh) } else { out_tm.to_vec() };
        put(&self.pool.infer, runner.into_work());
        Ok(ModelOutput { y, out, state })
    }

    /// A forward-only runner over this model's recurrent stack (weights
    /// packed once): the fast path for streaming one step at a time.
    pub fn runner(&self) -> Result<Runner<'_, F>> {
        Runner::new(&self.cfg.rnn, &self.table, &self.dirs, &self.params)
    }

    /// Embedding rows of token ids [N] into x [N, I].
    fn embed_into(&self, ids: &[usize], x: &mut [F]) {
        let i = self.cfg.rnn.input_size;
        let e = self.table.view(&self.params, self.emb.expect("checked: embedding model"));
        for (row, &tok) in x.chunks_exact_mut(i).zip(ids) {
            row.copy_from_slice(&e[tok * i..(tok + 1) * i]);
        }
    }

    /// Writes the recurrent stack's input x [T, B, I] for `input` (laid out
    /// [B, T, ..] when `batch_first`, else [T, B, ..]): real values moved
    /// to time-major, or the embedding rows of token ids.
    fn fill_input(&self, input: SeqInput<'_, F>, batch_first: bool, t: usize, b: usize, x: &mut [F]) {
        let i = self.cfg.rnn.input_size;
        match input {
            SeqInput::Dense(v) if batch_first => {
                for (r, seq) in v.chunks_exact(t * i).enumerate() {
                    for (tt, row) in seq.chunks_exact(i).enumerate() {
                        x[(tt * b + r) * i..(tt * b + r + 1) * i].copy_from_slice(row);
                    }
                }
            }
            SeqInput::Dense(v) => x.copy_from_slice(v),
            SeqInput::Tokens(ids) => {
                let e = self.table.view(&self.params, self.emb.expect("checked: embedding model"));
                for (k, row) in x.chunks_exact_mut(i).enumerate() {
                    // Row k of x is (time k / B, sequence k % B).
                    let tok = if batch_first { ids[(k % b) * t + k / b] } else { ids[k] };
                    row.copy_from_slice(&e[tok * i..(tok + 1) * i]);
                }
            }
        }
    }

    /// Forward pass, unchecked (the callers validate), keeping every step
    /// in a cache taken from the model's pool. `input` is laid out
    /// [B, T, ..] when `batch_first` (as are the outputs), else [T, B, ..].
    /// Lengths may be 0 (a finished sequence inside a truncated-BPTT window);
    /// `last[b]` is the step the last-step head reads for sequence b (`None`:
    /// no target for it here); steps before `loss_from` are not counted.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward_tm<R: Rng>(
        &self,
        input: SeqInput<'_, F>,
        batch_first: bool,
        t: usize,
        b: usize,
        lengths: &[usize],
        last: Vec<Option<usize>>,
        loss_from: usize,
        state0: Option<&RnnState<F>>,
        dropout_rng: Option<&mut R>,
    ) -> Result<(ModelOutput<F>, ModelCache<F>)> {
        let mut state = state0.cloned().unwrap_or_default();
        check_sweep(&self.cfg.rnn, t, b, lengths, &state)?;
        let mut cache = take(&self.pool.caches);
        cache.rnn.prepare(&self.cfg.rnn, t, b, lengths, Keep::All);
        cache.tokens.clear();
        if let SeqInput::Tokens(ids) = input {
            if batch_first {
                swap_leading_into(ids, b, t, 1, &mut cache.tokens);
            } else {
                cache.tokens.extend_from_slice(ids);
            }
            let x = &mut cache.rnn.inputs[0];
            self.embed_into(&cache.tokens, x);
        } else {
            self.fill_input(input, batch_first, t, b, &mut cache.rnn.inputs[0]);
        }
        let mut fwd = take(&self.pool.forward);
        fwd.packed.pack(&self.cfg.rnn, &self.table, &self.dirs, &self.params);
        sweep(&self.cfg.rnn, &fwd.packed, &mut cache.rnn, &mut fwd.step, &mut state, dropout_rng);
        put(&self.pool.forward, fwd);
        let dh = self.cfg.rnn.output_size();
        let o = self.cfg.out_size;
        let rnn = &cache.rnn;
        match self.cfg.head {
            HeadKind::Last => {
                let f = &mut cache.feature;
                f.resize(b * dh, F::zero());
                for (r, row) in f.chunks_exact_mut(dh).enumerate() {
                    match last[r] {
                        Some(tt) => row.copy_from_slice(&rnn.output[(tt * b + r) * dh..(tt * b + r + 1) * dh]),
                        None => row.iter_mut().for_each(|v| *v = F::zero()),
                    }
                }
            }
            HeadKind::Every => cache.feature.clear(),
        }
        let n = cache.head_input().len() / dh;
        let mut y = vec![F::zero(); n * o];
        self.head_forward(cache.head_input(), n, &mut y);
        let (y, out) = if batch_first {
            let y = if self.cfg.head == HeadKind::Every { swap_leading(&y, t, b, o) } else { y };
            (y, swap_leading(&cache.rnn.output, t, b, dh))
        } else {
            (y, cache.rnn.output.clone())
        };
        cache.batch_first = batch_first;
        cache.last = last;
        cache.loss_from = loss_from;
        Ok((ModelOutput { y, out, state }, cache))
    }

    /// Hands a cache back once its backward pass is done: the next forward
    /// pass reuses its buffers instead of allocating new ones (optional; a
    /// cache dropped instead is simply freed).
    pub fn recycle(&self, cache: ModelCache<F>) {
        put(&self.pool.caches, cache);
    }

    /// y [N, O] = feature [N, D*H] W_fcᵀ + b_fc
    fn head_forward(&self, feature: &[F], n: usize, y: &mut [F]) {
        let (dh, o) = (self.cfg.rnn.output_size(), self.cfg.out_size);
        let w = self.table.view(&self.params, self.fc_w);
        let bias = self.table.view(&self.params, self.fc_b);
        for row in y.chunks_exact_mut(o) {
            row.copy_from_slice(bias);
        }
        gemm(n, dh, o, F::one(), feature, Tr::N, w, Tr::T, F::one(), y);
    }

    /// Which rows of y [N, O] (in the batch's layout) count in the loss.
    pub fn counted_rows(&self, cache: &ModelCache<F>) -> Vec<bool> {
        let (t, b) = (cache.rnn.seq_len, cache.rnn.batch);
        let l = &cache.rnn.lengths;
        let from = cache.loss_from;
        match self.cfg.head {
            HeadKind::Last => cache.last.iter().map(|x| x.is_some()).collect(),
            HeadKind::Every if cache.batch_first => (0..b * t).map(|k| k % t >= from && k % t < l[k / t]).collect(),
            HeadKind::Every => (0..t * b).map(|k| k / b >= from && k / b < l[k % b]).collect(),
        }
    }

    /// The model's loss on `y` (from `forward`) and dL/dy.
    pub fn loss(&self, y: &[F], targets: Targets<F>, cache: &ModelCache<F>) -> Result<(F, Vec<F>)> {
        let counted = self.counted_rows(cache);
        let (l, dy, _) = loss_forward_backward(self.cfg.loss, y, counted.len(), self.cfg.out_size, targets, &counted)?;
        Ok((l, dy))
    }

    /// Backward pass: adds parameter gradients to `grads` [num_params] and
    /// returns input gradients. `dy` is dL/dy in the batch's layout; `dstate`
    /// optionally dL/d(final states).
    pub fn backward(
        &self,
        cache: &ModelCache<F>,
        dy: &[F],
        dstate: Option<&RnnState<F>>,
        grads: &mut [F],
        want_dx: bool,
    ) -> Result<InputGrads<F>> {
        check_len("grads", grads.len(), self.table.len(), "[number of parameters]")?;
        let (t, b) = (cache.rnn.seq_len, cache.rnn.batch);
        let (dh, o) = (self.cfg.rnn.output_size(), self.cfg.out_size);
        let feature = cache.head_input();
        let n = feature.len() / dh;
        check_len("dy", dy.len(), n * o, || format!("[{n} x O={o}]"))?;
        let mut work = take(&self.pool.backward);
        let BackScratch { rnn: rnn_work, dy_tm, dfeature, dout } = &mut work;
        let dy_tm: &[F] = if cache.batch_first && self.cfg.head == HeadKind::Every {
            swap_leading_into(dy, b, t, o, dy_tm);
            dy_tm
        } else {
            dy
        };
        // y = feature W_fcᵀ + b  =>  dW_fc += dyᵀ feature, db += Σ dy, dfeature = dy W_fc
        {
            let [dw, db] = self.table.views_mut(grads, [self.fc_w, self.fc_b]);
            gemm(o, n, dh, F::one(), dy_tm, Tr::T, feature, Tr::N, F::one(), dw);
            sum_rows_into(db, dy_tm);
        }
        let w = self.table.view(&self.params, self.fc_w);
        dfeature.resize(n * dh, F::zero());
        gemm(n, o, dh, F::one(), dy_tm, Tr::N, w, Tr::N, F::zero(), dfeature);
        let dout: &[F] = match self.cfg.head {
            HeadKind::Every => dfeature,
            HeadKind::Last => {
                dout.clear();
                dout.resize(t * b * dh, F::zero());
                for r in 0..b {
                    if let Some(tt) = cache.last[r] {
                        dout[(tt * b + r) * dh..(tt * b + r + 1) * dh].copy_from_slice(&dfeature[r * dh..(r + 1) * dh]);
                    }
                }
                dout
            }
        };
        let (dh_n, dc_n): (&[F], &[F]) = match dstate {
            Some(s) => (&s.h, &s.c),
            None => (&[], &[]),
        };
        let embed = self.emb.is_some();
        let r = backward_into(
            &self.cfg.rnn,
            &self.table,
            &self.dirs,
            &self.params,
            &cache.rnn,
            dout,
            dh_n,
            dc_n,
            grads,
            want_dx || embed,
            rnn_work,
        );
        if let Err(e) = r {
            put(&self.pool.backward, work);
            return Err(e);
        }
        let g = &rnn_work.grads;
        let i = self.cfg.rnn.input_size;
        let dx = if let Some(e) = self.emb {
            // x[t, b] = E[token]  =>  dE[token] += dx[t, b]
            let de = self.table.view_mut(grads, e);
            for (row, &tok) in g.dx.chunks_exact(i).zip(&cache.tokens) {
                for (a, v) in de[tok * i..(tok + 1) * i].iter_mut().zip(row) {
                    *a += *v;
                }
            }
            Vec::new()
        } else if want_dx && cache.batch_first {
            swap_leading(&g.dx, t, b, i)
        } else if want_dx {
            g.dx.clone()
        } else {
            Vec::new()
        };
        let out = InputGrads { dx, dh0: g.dh0.clone(), dc0: g.dc0.clone(), dh_norms: g.dh_norms.clone() };
        put(&self.pool.backward, work);
        Ok(out)
    }

    /// Forward, loss and backward in one call; gradients are *added* to `grads`.
    pub fn loss_and_grad<R: Rng>(
        &self,
        batch: &Batch<F>,
        targets: Targets<F>,
        state0: Option<&RnnState<F>>,
        grads: &mut [F],
        dropout_rng: Option<&mut R>,
    ) -> Result<(F, ModelOutput<F>)> {
        let (out, cache) = self.forward(batch, state0, dropout_rng)?;
        let (loss, dy) = self.loss(&out.y, targets, &cache)?;
        self.backward(&cache, &dy, None, grads, false)?;
        self.recycle(cache);
        Ok((loss, out))
    }

    /// Loads named tensors (PyTorch state_dict names), checking each shape;
    /// every parameter of the model must be given.
    pub fn load_named(&mut self, tensors: &[(String, Vec<usize>, Vec<F>)]) -> Result<()> {
        let mut seen = vec![false; self.table.specs().len()];
        for (name, shape, data) in tensors {
            let idx = self.table.index_of(name)?;
            self.table.set(&mut self.params, name, shape, data)?;
            seen[idx] = true;
        }
        if let Some(missing) = seen.iter().position(|s| !s) {
            return Err(Error::Param { name: self.table.spec(missing).name.clone(), problem: "missing".into() });
        }
        Ok(())
    }

    /// One step of the recurrent stack, for streaming inference: x [B, I]
    /// real inputs, `state` [L*D, B, H]; returns the new state.
    pub fn step(&self, x: &[F], state: &RnnState<F>) -> Result<RnnState<F>> {
        if self.emb.is_some() {
            return Err(config_err("input", "real values", "this model embeds token ids"));
        }
        let mut s = state.clone();
        if s.c.is_empty() && self.cfg.rnn.cell.has_c() {
            s.c = vec![F::zero(); s.h.len()];
        }
        self.runner()?.step(x, &mut s)?;
        Ok(s)
    }

    /// A zero state [L*D, B, H] for `batch` sequences.
    pub fn zero_state(&self, batch: usize) -> RnnState<F> {
        let n = self.cfg.rnn.num_layers * self.cfg.rnn.dirs() * batch * self.cfg.rnn.hidden_size;
        RnnState { h: vec![F::zero(); n], c: if self.cfg.rnn.cell.has_c() { vec![F::zero(); n] } else { Vec::new() } }
    }

    /// Checks a state's size against the model for `batch` sequences.
    pub fn check_state(&self, s: &RnnState<F>, batch: usize) -> Result<()> {
        let z = self.zero_state(batch);
        if s.h.len() != z.h.len() || (s.c.len() != z.c.len() && !(s.c.is_empty())) {
            return Err(shape_err(
                "state",
                format!("h {} / c {} values", z.h.len(), z.c.len()),
                format!("h {} / c {}", s.h.len(), s.c.len()),
            ));
        }
        Ok(())
    }
}
