//! The Rust half of the Python package `recurrent`: a model core over the
//! engine (`recurrent::Model<f32>` or `<f64>`) that takes and returns NumPy
//! arrays, and training through the library's `Trainer`. The Python half
//! (`python/recurrent/__init__.py`) checks and converts the arguments (any
//! dtype and memory order becomes one C-contiguous array of the model's
//! dtype) and gives the public API its keywords and docstrings.
//!
//! Every entry point returns a Python exception on failure: engine errors
//! are mapped by [`to_py`], and a panic, which no input should reach, is
//! caught by [`guard`] and raised as `RuntimeError` instead of unwinding
//! into the interpreter.

use numpy::ndarray::{ArrayD, IxDyn};
use numpy::{Element, IntoPyArray, PyArrayDyn, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::{PyFloatingPointError, PyMemoryError, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use rand::SeedableRng;
use recurrent::grad::learner::OnlineLearner;
use recurrent::grad::tbptt::Truncation;
use recurrent::grad::Estimator;
use recurrent::optim::{Optimizer, OptimizerKind};
use recurrent::train::{
    Clipping, Examples, Inputs, Metric, MetricsLine, Observer, TargetSet, TrainData, Trainer, TrainerConfig,
};
use recurrent::{
    Batch, CellKind, Error, Float, HeadKind, InitConfig, LossKind, Model, ModelConfig, RnnConfig, RnnState, SeqInput,
    Targets,
};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Most worker threads `fit` starts (each is an OS thread with its own stack).
const MAX_THREADS: usize = 1024;

/// Text of the error a Ctrl-C during `fit` stops the Trainer with.
const INTERRUPTED: &str = "interrupted by the user (Ctrl-C)";

/// An engine error as the Python exception a caller expects: files give
/// OSError, memory limits MemoryError, divergence FloatingPointError, the
/// rest (shapes, values, names) ValueError.
fn to_py(e: Error) -> PyErr {
    match &e {
        Error::Data { .. } => PyOSError::new_err(e.to_string()),
        Error::Memory { .. } => PyMemoryError::new_err(e.to_string()),
        Error::Diverged(_) => PyFloatingPointError::new_err(e.to_string()),
        Error::Rank { .. } => PyRuntimeError::new_err(e.to_string()),
        _ => PyValueError::new_err(e.to_string()),
    }
}

/// Runs `f`, turning a panic into `RuntimeError` (a bug: please report it).
fn guard<T>(f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(PyRuntimeError::new_err(format!("internal error in recurrent (please report): {msg}")))
        }
    }
}

fn value_err(msg: impl Into<String>) -> PyErr {
    PyValueError::new_err(msg.into())
}

/// A C-contiguous array's values (the Python side makes every array contiguous).
fn slice<'a, T: Element>(a: &'a PyReadonlyArrayDyn<'_, T>, what: &str) -> PyResult<&'a [T]> {
    a.as_slice().map_err(|_| value_err(format!("{what}: the array must be C-contiguous")))
}

fn array<'py, T: Element>(py: Python<'py>, shape: &[usize], v: Vec<T>) -> PyResult<Bound<'py, PyArrayDyn<T>>> {
    let a = ArrayD::from_shape_vec(IxDyn(shape), v).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    Ok(a.into_pyarray(py))
}

/// Token ids from int64 values, refusing negative ones.
fn token_ids(v: &[i64], what: &str) -> PyResult<Vec<usize>> {
    v.iter()
        .enumerate()
        .map(|(p, &t)| {
            usize::try_from(t).map_err(|_| value_err(format!("{what}: token id {t} at flat position {p} is negative")))
        })
        .collect()
}

fn lengths_vec(l: Option<PyReadonlyArrayDyn<'_, i64>>) -> PyResult<Option<Vec<usize>>> {
    l.map(|a| {
        slice(&a, "lengths")?
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                usize::try_from(v).map_err(|_| value_err(format!("lengths[{i}] = {v}: lengths must be at least 1")))
            })
            .collect()
    })
    .transpose()
}

/// The model in one of the two precisions.
#[derive(Clone)]
enum Net {
    F32(Model<f32>),
    F64(Model<f64>),
}

macro_rules! with_net {
    ($net:expr, $m:ident => $body:expr) => {
        match $net {
            Net::F32($m) => $body,
            Net::F64($m) => $body,
        }
    };
}

impl Net {
    fn cfg(&self) -> &ModelConfig {
        with_net!(self, m => &m.cfg)
    }
}

/// Inputs as the Python side hands them: real values of the model's dtype,
/// or token ids (int64) for an embedding model.
#[derive(FromPyObject)]
enum XIn<'py> {
    F32(PyReadonlyArrayDyn<'py, f32>),
    F64(PyReadonlyArrayDyn<'py, f64>),
    Tok(PyReadonlyArrayDyn<'py, i64>),
}

/// The input of one call, owned or borrowed as the engine wants it.
enum XData<'a, F> {
    Dense(&'a [F]),
    Tokens(Vec<usize>),
}

impl<'a, F> XData<'a, F> {
    fn input(&self) -> SeqInput<'_, F> {
        match self {
            XData::Dense(x) => SeqInput::Dense(x),
            XData::Tokens(t) => SeqInput::Tokens(t),
        }
    }
}

/// Real inputs of type F, or token ids; the shape (B, T) in the given layout.
fn x_data<'a, F: Element>(
    x: &'a XIn<'_>,
    dense: impl Fn(&'a XIn<'_>) -> Option<&'a PyReadonlyArrayDyn<'a, F>>,
) -> PyResult<(XData<'a, F>, Vec<usize>)> {
    match x {
        XIn::Tok(a) => Ok((XData::Tokens(token_ids(slice(a, "x")?, "x")?), a.shape().to_vec())),
        other => {
            let a = dense(other).ok_or_else(|| value_err("x: dtype does not match the model's"))?;
            Ok((XData::Dense(slice(a, "x")?), a.shape().to_vec()))
        }
    }
}

/// (B, T) of x: [B, T, I] / [B, T] (tokens), or [T, B, ..] when not batch-first.
fn bt(shape: &[usize], tokens: bool, batch_first: bool) -> PyResult<(usize, usize)> {
    let want = if tokens { 2 } else { 3 };
    if shape.len() != want {
        return Err(value_err(format!(
            "x has shape {shape:?}; expected {} dimensions ({})",
            want,
            match (tokens, batch_first) {
                (true, true) => "[batch, time] token ids",
                (true, false) => "[time, batch] token ids",
                (false, true) => "[batch, time, features]",
                (false, false) => "[time, batch, features]",
            }
        )));
    }
    Ok(if batch_first { (shape[0], shape[1]) } else { (shape[1], shape[0]) })
}

/// Initial state from h0 / c0 arrays [L*D, B, H].
fn state_of<F: Element + Copy>(
    h0: Option<PyReadonlyArrayDyn<'_, F>>,
    c0: Option<PyReadonlyArrayDyn<'_, F>>,
) -> PyResult<Option<RnnState<F>>> {
    match (h0, c0) {
        (None, None) => Ok(None),
        (h, c) => {
            let h = match h {
                Some(a) => slice(&a, "state h")?.to_vec(),
                None => return Err(value_err("state: c0 given without h0")),
            };
            let c = match c {
                Some(a) => slice(&a, "state c")?.to_vec(),
                None => Vec::new(),
            };
            Ok(Some(RnnState { h, c }))
        }
    }
}

/// The Rust core of `recurrent.Model` (use `recurrent.Model`).
#[pyclass(module = "recurrent._recurrent", name = "_Core")]
#[derive(Clone)]
struct Core {
    net: Net,
}

#[allow(clippy::too_many_arguments)]
fn parse_cfg(
    cell: &str,
    input_size: usize,
    hidden_size: usize,
    num_layers: usize,
    bidirectional: bool,
    bias: bool,
    dropout: f64,
    head: &str,
    out_size: usize,
    loss: &str,
    vocab: Option<usize>,
) -> PyResult<ModelConfig> {
    let cell: CellKind = cell.parse().map_err(to_py)?;
    let head = match head {
        "last" => HeadKind::Last,
        "every" => HeadKind::Every,
        h => return Err(value_err(format!("invalid head = {h:?}: expected \"last\" or \"every\""))),
    };
    let loss = match loss {
        "mse" => LossKind::Mse,
        "cross_entropy" => LossKind::CrossEntropy,
        "bce_with_logits" => LossKind::BceWithLogits,
        l => {
            return Err(value_err(format!(
                "invalid loss = {l:?}: expected \"mse\", \"cross_entropy\" or \"bce_with_logits\""
            )))
        }
    };
    let cfg = ModelConfig {
        rnn: RnnConfig { cell, input_size, hidden_size, num_layers, bidirectional, bias, dropout },
        vocab,
        head,
        out_size,
        loss,
    };
    cfg.validate().map_err(to_py)?;
    Ok(cfg)
}

/// Forward pass: (y, out, h_n, c_n) with their shapes.
#[allow(clippy::type_complexity)]
fn forward_impl<F: Float + Element>(
    py: Python<'_>,
    m: &Model<F>,
    x: XData<'_, F>,
    shape: &[usize],
    lengths: Option<Vec<usize>>,
    state: Option<RnnState<F>>,
    batch_first: bool,
) -> PyResult<(PyObject, PyObject, PyObject, Option<PyObject>)> {
    let tokens = matches!(x, XData::Tokens(_));
    let (b, t) = bt(shape, tokens, batch_first)?;
    let out = py.allow_threads(|| {
        guard(|| {
            let batch = Batch { input: x.input(), batch: b, seq_len: t, batch_first, lengths: lengths.as_deref() };
            m.predict(&batch, state.as_ref()).map_err(to_py)
        })
    })?;
    let cfg = &m.cfg;
    let (o, dh, h) = (cfg.out_size, cfg.rnn.output_size(), cfg.rnn.hidden_size);
    let lead = if batch_first { [b, t] } else { [t, b] };
    let y_shape: Vec<usize> = match cfg.head {
        HeadKind::Last => vec![b, o],
        HeadKind::Every => vec![lead[0], lead[1], o],
    };
    let ld = cfg.rnn.num_layers * cfg.rnn.dirs();
    let y = array(py, &y_shape, out.y)?.into_any().unbind();
    let seq = array(py, &[lead[0], lead[1], dh], out.out)?.into_any().unbind();
    let hn = array(py, &[ld, b, h], out.state.h)?.into_any().unbind();
    let cn = if cfg.rnn.cell.has_c() { Some(array(py, &[ld, b, h], out.state.c)?.into_any().unbind()) } else { None };
    Ok((y, seq, hn, cn))
}

/// Loss and gradients by parameter name.
#[allow(clippy::too_many_arguments)]
fn grad_impl<'py, F: Float + Element>(
    py: Python<'py>,
    m: &Model<F>,
    x: XData<'_, F>,
    shape: &[usize],
    y_real: Option<&[F]>,
    y_class: Option<&[i64]>,
    lengths: Option<Vec<usize>>,
    state: Option<RnnState<F>>,
    batch_first: bool,
) -> PyResult<(f64, Bound<'py, PyDict>)> {
    let tokens = matches!(x, XData::Tokens(_));
    let (b, t) = bt(shape, tokens, batch_first)?;
    let targets = match (y_real, y_class) {
        (Some(r), _) => Targets::Real(r),
        (None, Some(c)) => Targets::Class(c),
        (None, None) => return Err(value_err("y: no targets")),
    };
    let (loss, grads) = py.allow_threads(|| {
        guard(|| {
            let batch = Batch { input: x.input(), batch: b, seq_len: t, batch_first, lengths: lengths.as_deref() };
            let mut grads = vec![F::zero(); m.num_params()];
            let (loss, _) = m
                .loss_and_grad::<rand_chacha::ChaCha8Rng>(&batch, targets, state.as_ref(), &mut grads, None)
                .map_err(to_py)?;
            Ok((loss.to_f64().unwrap_or(f64::NAN), grads))
        })
    })?;
    let d = PyDict::new(py);
    for (i, s) in m.table.specs().iter().enumerate() {
        d.set_item(&s.name, array(py, &s.shape, m.table.view(&grads, i).to_vec())?)?;
    }
    Ok((loss, d))
}

/// Records the history of a `fit`, prints a line per epoch through Python's
/// `print` (so it shows in Jupyter too), and stops on Ctrl-C.
struct PyObserver {
    verbose: bool,
    epoch: Vec<usize>,
    step: Vec<u64>,
    train_loss: Vec<f64>,
    val_loss: Vec<f64>,
    val_metric: Vec<f64>,
    lr: Vec<f64>,
    metric: String,
    /// Set by the thread that called `fit` when Python reports a signal
    /// (Ctrl-C): the Trainer stops after the current step.
    stop: Arc<AtomicBool>,
}

impl Observer for PyObserver {
    fn after_step(&mut self) -> recurrent::Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(Error::Config { what: "fit".into(), value: "stopped".into(), reason: INTERRUPTED.into() });
        }
        Ok(())
    }

    fn validation(&mut self, m: &MetricsLine) -> recurrent::Result<()> {
        self.epoch.push(m.epoch);
        self.step.push(m.step);
        self.train_loss.push(m.train_loss);
        self.val_loss.push(m.val_loss);
        self.val_metric.push(m.val_metric);
        self.lr.push(m.lr);
        self.metric.clone_from(&m.metric);
        if self.verbose {
            let line = format!(
                "epoch {:>3}  step {:>6}  train_loss {:.5}  val_loss {:.5}  val_{} {:.5}  lr {:.3e}  {:.0} tokens/s",
                m.epoch, m.step, m.train_loss, m.val_loss, m.metric, m.val_metric, m.lr, m.tokens_per_s
            );
            Python::with_gil(|py| print(py, &line));
        }
        Ok(())
    }

    fn warn(&mut self, msg: &str) {
        if self.verbose {
            Python::with_gil(|py| print(py, &format!("warning: {msg}")));
        }
    }

    fn info(&mut self, msg: &str) {
        if self.verbose {
            Python::with_gil(|py| print(py, msg));
        }
    }
}

/// Python's `print(line, flush=True)`; a failure to print is ignored (it
/// must not stop training).
fn print(py: Python<'_>, line: &str) {
    let kwargs = PyDict::new(py);
    let _ = kwargs.set_item("flush", true);
    if let Ok(builtins) = py.import("builtins") {
        let _ = builtins.getattr("print").and_then(|p| p.call((line,), Some(&kwargs)));
    }
}

/// Examples for the Trainer from a padded batch: real x [N, T, I] (f32) or
/// token ids [N, T]; targets real [N, O] or classes [N] / [N, T].
fn examples(
    x: &XIn<'_>,
    y_real: Option<PyReadonlyArrayDyn<'_, f32>>,
    y_class: Option<PyReadonlyArrayDyn<'_, i64>>,
    lengths: Option<Vec<usize>>,
    cfg: &ModelConfig,
) -> PyResult<Examples> {
    let (n, t, seqs_dense, seqs_tok) = match x {
        XIn::F32(a) => {
            let s = a.shape();
            bt(s, false, true)?;
            let i = s[2];
            if i != cfg.rnn.input_size {
                return Err(value_err(format!(
                    "x has shape {s:?}; the model takes {} features per step",
                    cfg.rnn.input_size
                )));
            }
            (s[0], s[1], Some((slice(a, "x")?, i)), None)
        }
        XIn::Tok(a) => {
            let s = a.shape();
            bt(s, true, true)?;
            (s[0], s[1], None, Some(token_ids(slice(a, "x")?, "x")?))
        }
        XIn::F64(_) => return Err(value_err("fit: x must be float32 (the Trainer trains in float32)")),
    };
    if n == 0 {
        return Err(value_err("x has no sequences (shape [0, ...]): nothing to train or validate on"));
    }
    if let Some(l) = &lengths {
        if l.len() != n {
            return Err(value_err(format!("lengths has {} values for {n} sequences", l.len())));
        }
        if let Some((r, &v)) = l.iter().enumerate().find(|(_, &v)| v == 0 || v > t) {
            return Err(value_err(format!("lengths[{r}] = {v}: lengths must be in 1..={t}")));
        }
    }
    let len = |r: usize| lengths.as_ref().map_or(t, |l| l[r]);
    let targets = match (y_real, y_class) {
        (Some(y), _) => {
            let s = y.shape().to_vec();
            let v = slice(&y, "y")?;
            if cfg.head == HeadKind::Every {
                return Err(value_err(
                    "fit with head=\"every\" needs class targets (loss=\"cross_entropy\"): the Trainer has no per-step real targets",
                ));
            }
            if s.len() != 2 || s[0] != n || s[1] != cfg.out_size {
                return Err(value_err(format!(
                    "y has shape {s:?}; expected [{n}, {}] (x has {n} sequences)",
                    cfg.out_size
                )));
            }
            TargetSet::Real { width: s[1], rows: v.chunks_exact(s[1].max(1)).map(|r| r.to_vec()).collect() }
        }
        (None, Some(y)) => {
            let s = y.shape().to_vec();
            let v = slice(&y, "y")?;
            match cfg.head {
                HeadKind::Last => {
                    if s != [n] {
                        return Err(value_err(format!("y has shape {s:?}; expected [{n}] class ids")));
                    }
                    TargetSet::Class(v.to_vec())
                }
                HeadKind::Every => {
                    if s != [n, t] {
                        return Err(value_err(format!("y has shape {s:?}; expected [{n}, {t}] class ids per step")));
                    }
                    TargetSet::ClassSeq((0..n).map(|r| v[r * t..r * t + len(r)].to_vec()).collect())
                }
            }
        }
        (None, None) => return Err(value_err("y: no targets")),
    };
    let ex = match (seqs_dense, seqs_tok) {
        (Some((xs, i)), _) => Examples::from_arrays(xs, [n, t, i], lengths.as_deref(), targets).map_err(to_py)?,
        (None, Some(ids)) => {
            let seqs = (0..n).map(|r| ids[r * t..r * t + len(r)].to_vec()).collect();
            let ex = Examples { inputs: Inputs::Tokens { seqs }, targets };
            ex.check().map_err(to_py)?;
            ex
        }
        (None, None) => unreachable!("x is real or tokens"),
    };
    Ok(ex)
}

#[pymethods]
impl Core {
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (cell, input_size, hidden_size, num_layers, bidirectional, bias, dropout, head, out_size, loss, vocab, dtype, seed, orthogonal_recurrent, xavier_input, forget_bias))]
    fn new(
        cell: &str,
        input_size: usize,
        hidden_size: usize,
        num_layers: usize,
        bidirectional: bool,
        bias: bool,
        dropout: f64,
        head: &str,
        out_size: usize,
        loss: &str,
        vocab: Option<usize>,
        dtype: &str,
        seed: u64,
        orthogonal_recurrent: bool,
        xavier_input: bool,
        forget_bias: Option<f64>,
    ) -> PyResult<Self> {
        guard(|| {
            let cfg = parse_cfg(
                cell,
                input_size,
                hidden_size,
                num_layers,
                bidirectional,
                bias,
                dropout,
                head,
                out_size,
                loss,
                vocab,
            )?;
            let init = InitConfig { orthogonal_recurrent, xavier_input, forget_bias };
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            // The memory a model of these sizes takes is checked before it is allocated.
            let bytes = recurrent::memory::param_count(&cfg) * if dtype == "float64" { 8 } else { 4 };
            recurrent::memory::check_bytes(
                &format!("the parameters of {}", recurrent::memory::describe(&cfg)),
                bytes,
                recurrent::memory::DEFAULT_LIMIT_BYTES,
            )
            .map_err(to_py)?;
            let net = match dtype {
                "float32" => Net::F32(Model::new(cfg, &init, &mut rng).map_err(to_py)?),
                "float64" => Net::F64(Model::new(cfg, &init, &mut rng).map_err(to_py)?),
                d => return Err(value_err(format!("invalid dtype = {d:?}: expected \"float32\" or \"float64\""))),
            };
            Ok(Core { net })
        })
    }

    /// Loads a checkpoint (safetensors with recurrent's metadata).
    #[staticmethod]
    fn load(py: Python<'_>, path: std::path::PathBuf, dtype: &str) -> PyResult<(Self, String)> {
        py.allow_threads(|| {
            guard(|| {
                let (net, task) = match dtype {
                    "float32" => {
                        let (m, meta) = recurrent::checkpoint::load::<f32>(&path).map_err(to_py)?;
                        (Net::F32(m), meta.task)
                    }
                    "float64" => {
                        let (m, meta) = recurrent::checkpoint::load::<f64>(&path).map_err(to_py)?;
                        (Net::F64(m), meta.task)
                    }
                    d => return Err(value_err(format!("invalid dtype = {d:?}: expected \"float32\" or \"float64\""))),
                };
                Ok((Core { net }, task.to_string()))
            })
        })
    }

    /// Saves a checkpoint; `task` is JSON stored as the metadata's task.
    fn save(&self, py: Python<'_>, path: std::path::PathBuf, task: &str) -> PyResult<()> {
        let task: serde_json::Value =
            serde_json::from_str(task).map_err(|e| value_err(format!("task: not valid JSON: {e}")))?;
        py.allow_threads(|| {
            guard(|| with_net!(&self.net, m => recurrent::checkpoint::save(Path::new(&path), m, task).map_err(to_py)))
        })
    }

    /// The configuration as JSON.
    fn config_json(&self) -> PyResult<String> {
        serde_json::to_string(self.net.cfg()).map_err(|e| PyRuntimeError::new_err(e.to_string()))
    }

    fn dtype(&self) -> &'static str {
        match self.net {
            Net::F32(_) => "float32",
            Net::F64(_) => "float64",
        }
    }

    fn num_params(&self) -> usize {
        with_net!(&self.net, m => m.num_params())
    }

    /// A copy in the other precision.
    fn astype(&self, dtype: &str) -> PyResult<Self> {
        let net = match dtype {
            "float32" => Net::F32(with_net!(&self.net, m => m.cast::<f32>())),
            "float64" => Net::F64(with_net!(&self.net, m => m.cast::<f64>())),
            d => return Err(value_err(format!("invalid dtype = {d:?}: expected \"float32\" or \"float64\""))),
        };
        Ok(Core { net })
    }

    /// [(name, array)] in the model's order.
    fn state_dict<'py>(&self, py: Python<'py>) -> PyResult<Vec<(String, PyObject)>> {
        with_net!(&self.net, m => m
            .table
            .specs()
            .iter()
            .enumerate()
            .map(|(i, s)| Ok((s.name.clone(), array(py, &s.shape, m.table.view(&m.params, i).to_vec())?.into_any().unbind())))
            .collect())
    }

    /// Loads [(name, array of the model's dtype)]; every parameter must be given.
    fn load_state_dict(&mut self, items: Vec<(String, XIn<'_>)>) -> PyResult<()> {
        guard(|| {
            let mut next = self.net.clone();
            match &mut next {
                Net::F32(m) => {
                    let mut named = Vec::new();
                    for (name, a) in &items {
                        let XIn::F32(a) = a else { return Err(value_err(format!("{name}: expected float32 values"))) };
                        named.push((name.clone(), a.shape().to_vec(), slice(a, name)?.to_vec()));
                    }
                    m.load_named(&named).map_err(to_py)?;
                    if let Some(p) = m.params.iter().position(|v| !v.is_finite()) {
                        return Err(value_err(format!("parameter value {p} is not finite")));
                    }
                }
                Net::F64(m) => {
                    let mut named = Vec::new();
                    for (name, a) in &items {
                        let XIn::F64(a) = a else { return Err(value_err(format!("{name}: expected float64 values"))) };
                        named.push((name.clone(), a.shape().to_vec(), slice(a, name)?.to_vec()));
                    }
                    m.load_named(&named).map_err(to_py)?;
                    if let Some(p) = m.params.iter().position(|v| !v.is_finite()) {
                        return Err(value_err(format!("parameter value {p} is not finite")));
                    }
                }
            }
            self.net = next;
            Ok(())
        })
    }

    /// (y, out, h_n, c_n or None).
    #[pyo3(signature = (x, lengths, h0, c0, batch_first))]
    #[allow(clippy::type_complexity)]
    fn forward(
        &self,
        py: Python<'_>,
        x: XIn<'_>,
        lengths: Option<PyReadonlyArrayDyn<'_, i64>>,
        h0: Option<XIn<'_>>,
        c0: Option<XIn<'_>>,
        batch_first: bool,
    ) -> PyResult<(PyObject, PyObject, PyObject, Option<PyObject>)> {
        let lengths = lengths_vec(lengths)?;
        match &self.net {
            Net::F32(m) => {
                let (xd, shape) = x_data(&x, |a| if let XIn::F32(a) = a { Some(a) } else { None })?;
                let st = state_of(f32_arr(h0)?, f32_arr(c0)?)?;
                forward_impl(py, m, xd, &shape, lengths, st, batch_first)
            }
            Net::F64(m) => {
                let (xd, shape) = x_data(&x, |a| if let XIn::F64(a) = a { Some(a) } else { None })?;
                let st = state_of(f64_arr(h0)?, f64_arr(c0)?)?;
                forward_impl(py, m, xd, &shape, lengths, st, batch_first)
            }
        }
    }

    /// (loss, {name: gradient}).
    #[pyo3(signature = (x, y, lengths, h0, c0, batch_first))]
    #[allow(clippy::too_many_arguments)]
    fn loss_and_grad<'py>(
        &self,
        py: Python<'py>,
        x: XIn<'_>,
        y: XIn<'_>,
        lengths: Option<PyReadonlyArrayDyn<'_, i64>>,
        h0: Option<XIn<'_>>,
        c0: Option<XIn<'_>>,
        batch_first: bool,
    ) -> PyResult<(f64, Bound<'py, PyDict>)> {
        let lengths = lengths_vec(lengths)?;
        let class = if let XIn::Tok(a) = &y { Some(slice(a, "y")?) } else { None };
        match &self.net {
            Net::F32(m) => {
                let (xd, shape) = x_data(&x, |a| if let XIn::F32(a) = a { Some(a) } else { None })?;
                let real = if let XIn::F32(a) = &y { Some(slice(a, "y")?) } else { None };
                let st = state_of(f32_arr(h0)?, f32_arr(c0)?)?;
                grad_impl(py, m, xd, &shape, real, class, lengths, st, batch_first)
            }
            Net::F64(m) => {
                let (xd, shape) = x_data(&x, |a| if let XIn::F64(a) = a { Some(a) } else { None })?;
                let real = if let XIn::F64(a) = &y { Some(slice(a, "y")?) } else { None };
                let st = state_of(f64_arr(h0)?, f64_arr(c0)?)?;
                grad_impl(py, m, xd, &shape, real, class, lengths, st, batch_first)
            }
        }
    }

    /// Trains through the library's Trainer; returns the history dict.
    #[pyo3(signature = (x, y, lengths, val, epochs, batch_size, optimizer, lr, weight_decay, clip_norm, clip_value, estimator, k1, k2, metric, patience, max_steps, seed, threads, verbose, keep_best))]
    #[allow(clippy::too_many_arguments)]
    fn fit<'py>(
        &mut self,
        py: Python<'py>,
        x: XIn<'py>,
        y: XIn<'py>,
        lengths: Option<PyReadonlyArrayDyn<'py, i64>>,
        val: Option<(XIn<'py>, XIn<'py>, Option<PyReadonlyArrayDyn<'py, i64>>)>,
        epochs: usize,
        batch_size: usize,
        optimizer: &str,
        lr: f64,
        weight_decay: f64,
        clip_norm: Option<f64>,
        clip_value: Option<f64>,
        estimator: &str,
        k1: usize,
        k2: usize,
        metric: &str,
        patience: Option<usize>,
        max_steps: Option<u64>,
        seed: u64,
        threads: usize,
        verbose: bool,
        keep_best: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        if threads > MAX_THREADS {
            return Err(value_err(format!("invalid threads = {threads}: at most {MAX_THREADS} (0: all cores)")));
        }
        let Net::F32(model) = &self.net else {
            return Err(value_err(
                "fit trains in float32 (the Trainer's precision): use a dtype=\"float32\" model (model.astype(\"float32\"))",
            ));
        };
        let cfg = model.cfg.clone();
        let split = |y: XIn<'py>| -> (Option<PyReadonlyArrayDyn<'py, f32>>, Option<PyReadonlyArrayDyn<'py, i64>>) {
            match y {
                XIn::F32(a) => (Some(a), None),
                XIn::Tok(a) => (None, Some(a)),
                XIn::F64(_) => (None, None),
            }
        };
        let (yr, yc) = split(y);
        let train = examples(&x, yr, yc, lengths_vec(lengths)?, &cfg)?;
        let val = match val {
            Some((vx, vy, vl)) => {
                let (yr, yc) = split(vy);
                Some(examples(&vx, yr, yc, lengths_vec(vl)?, &cfg)?)
            }
            None => None,
        };
        if !(lr > 0.0 && lr.is_finite()) {
            return Err(value_err(format!("invalid lr = {lr}: must be a finite number > 0")));
        }
        if !(weight_decay >= 0.0 && weight_decay.is_finite()) {
            return Err(value_err(format!("invalid weight_decay = {weight_decay}: must be a finite number >= 0")));
        }
        let mut opt = OptimizerKind::default_for(optimizer, lr).map_err(to_py)?;
        match &mut opt {
            OptimizerKind::Sgd { weight_decay: w, .. }
            | OptimizerKind::Rmsprop { weight_decay: w, .. }
            | OptimizerKind::Adagrad { weight_decay: w, .. }
            | OptimizerKind::Adam { weight_decay: w, .. }
            | OptimizerKind::Adamw { weight_decay: w, .. } => *w = weight_decay,
        }
        let metric = match metric {
            "auto" => match cfg.loss {
                LossKind::Mse => Metric::Mse,
                LossKind::CrossEntropy => Metric::Accuracy,
                LossKind::BceWithLogits => Metric::Loss,
            },
            "loss" => Metric::Loss,
            "mse" => Metric::Mse,
            "rmse" => Metric::Rmse { scale: Vec::new() },
            "accuracy" => Metric::Accuracy,
            "bpc" => Metric::Bpc,
            m => {
                return Err(value_err(format!(
                    "invalid metric = {m:?}: expected \"auto\", \"loss\", \"mse\", \"rmse\", \"accuracy\" or \"bpc\""
                )))
            }
        };
        let settings = TrainerConfig {
            optimizer: opt,
            clip: Clipping { norm: clip_norm, value: clip_value },
            method: Estimator::parse(estimator).map_err(to_py)?,
            truncation: Truncation::new(k1, k2).map_err(to_py)?,
            epochs,
            max_steps,
            batch: batch_size,
            patience,
            metric,
            seed,
            threads,
            ..TrainerConfig::default()
        };
        let mut trainer = Trainer::new(model.clone(), settings).map_err(to_py)?;
        let mut obs = PyObserver {
            verbose,
            epoch: Vec::new(),
            step: Vec::new(),
            train_loss: Vec::new(),
            val_loss: Vec::new(),
            val_metric: Vec::new(),
            lr: Vec::new(),
            metric: String::new(),
            stop: Arc::new(AtomicBool::new(false)),
        };
        // The Trainer runs on a thread of its own while this (the caller's,
        // usually Python's main) thread waits without the GIL and, every 50
        // ms, asks Python whether a signal arrived: handlers run only on the
        // main thread, so Ctrl-C is seen here and passed on as a flag the
        // observer checks after every step.
        let stop = obs.stop.clone();
        let mut signal: Option<PyErr> = None;
        let result = std::thread::scope(|s| {
            let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
            let done_rx = std::sync::Mutex::new(done_rx);
            let (trainer, obs, train, val) = (&mut trainer, &mut obs, &train, &val);
            let worker = s.spawn(move || {
                let r = guard(|| {
                    let v = val.as_ref().unwrap_or(train);
                    trainer.fit(TrainData::Examples(train), TrainData::Examples(v), obs).map_err(to_py)
                });
                let _ = done_tx.send(());
                r
            });
            loop {
                let finished = py.allow_threads(|| {
                    done_rx.lock().is_ok_and(|rx| rx.recv_timeout(Duration::from_millis(50)).is_ok())
                });
                if finished || worker.is_finished() {
                    break;
                }
                if signal.is_none() {
                    if let Err(e) = py.check_signals() {
                        signal = Some(e);
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            }
            worker.join().unwrap_or_else(|_| {
                Err(PyRuntimeError::new_err("internal error in recurrent: the training thread panicked"))
            })
        });
        // The model as trained so far, also after an error (the last completed step).
        let trained = if keep_best && result.is_ok() { trainer.best_model() } else { None };
        self.net = Net::F32(trained.unwrap_or_else(|| trainer.model().clone()));
        let hist = PyDict::new(py);
        hist.set_item("epoch", obs.epoch)?;
        hist.set_item("step", obs.step)?;
        hist.set_item("train_loss", obs.train_loss)?;
        hist.set_item("val_loss", obs.val_loss)?;
        let key = format!("val_{}", if obs.metric.is_empty() { "metric" } else { obs.metric.as_str() });
        hist.set_item(key, obs.val_metric)?;
        hist.set_item("metric", obs.metric)?;
        hist.set_item("lr", obs.lr)?;
        if let Some(e) = signal {
            return Err(e);
        }
        result?;
        Ok(hist)
    }
}

fn f32_arr(a: Option<XIn<'_>>) -> PyResult<Option<PyReadonlyArrayDyn<'_, f32>>> {
    match a {
        None => Ok(None),
        Some(XIn::F32(a)) => Ok(Some(a)),
        Some(_) => Err(value_err("state: expected float32 values")),
    }
}

fn f64_arr(a: Option<XIn<'_>>) -> PyResult<Option<PyReadonlyArrayDyn<'_, f64>>> {
    match a {
        None => Ok(None),
        Some(XIn::F64(a)) => Ok(Some(a)),
        Some(_) => Err(value_err("state: expected float64 values")),
    }
}

/// The online learner in one of the two precisions.
enum Learner {
    F32(OnlineLearner<f32>),
    F64(OnlineLearner<f64>),
}

/// The Rust core of `recurrent.OnlineLearner` (use `recurrent.OnlineLearner`).
#[pyclass(module = "recurrent._recurrent", name = "_Online")]
struct Online {
    learner: Learner,
}

#[allow(clippy::too_many_arguments)]
fn make_learner<F: Float>(
    model: Model<F>,
    estimator: &str,
    optimizer: &str,
    lr: f64,
    k: usize,
    batch: usize,
    clip_norm: f64,
    seed: u64,
) -> PyResult<OnlineLearner<F>> {
    if !(lr > 0.0 && lr.is_finite()) {
        return Err(value_err(format!("invalid lr = {lr}: must be a finite number > 0")));
    }
    if !(clip_norm >= 0.0 && clip_norm.is_finite()) {
        return Err(value_err(format!("invalid clip_norm = {clip_norm}: must be a finite number >= 0 (0: off)")));
    }
    if batch == 0 {
        return Err(value_err("invalid batch = 0: must be at least 1"));
    }
    let method = Estimator::parse(estimator).map_err(to_py)?;
    if !method.is_online() {
        return Err(value_err(format!(
            "invalid estimator = {estimator:?}: an OnlineLearner takes rtrl, uoro, snap1 or snap2 (bptt and tbptt need whole sequences: use fit)"
        )));
    }
    let opt =
        Optimizer::new(OptimizerKind::default_for(optimizer, lr).map_err(to_py)?, model.num_params()).map_err(to_py)?;
    let mut l = OnlineLearner::new(model, opt, method, k, batch, seed, recurrent::grad::online::DEFAULT_MEMORY_LIMIT)
        .map_err(to_py)?;
    l.clip_norm = clip_norm;
    Ok(l)
}

fn online_step<F: Float + Element>(
    l: &mut OnlineLearner<F>,
    x: &[F],
    y_real: Option<&[F]>,
    y_class: Option<&[i64]>,
) -> PyResult<Option<f64>> {
    let target = match (y_real, y_class) {
        (Some(r), _) => Some(Targets::Real(r)),
        (None, Some(c)) => Some(Targets::Class(c)),
        (None, None) => None,
    };
    guard(|| l.step(x, target).map_err(to_py))
}

#[pymethods]
impl Online {
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (core, estimator, optimizer, lr, k, batch, clip_norm, seed))]
    fn new(
        core: &Core,
        estimator: &str,
        optimizer: &str,
        lr: f64,
        k: usize,
        batch: usize,
        clip_norm: f64,
        seed: u64,
    ) -> PyResult<Self> {
        guard(|| {
            let learner = match &core.net {
                Net::F32(m) => {
                    Learner::F32(make_learner(m.clone(), estimator, optimizer, lr, k, batch, clip_norm, seed)?)
                }
                Net::F64(m) => {
                    Learner::F64(make_learner(m.clone(), estimator, optimizer, lr, k, batch, clip_norm, seed)?)
                }
            };
            Ok(Online { learner })
        })
    }

    /// One step: x [B, I]; y real [B, O] or class ids [B], or None.
    #[pyo3(signature = (x, y))]
    fn step(&mut self, py: Python<'_>, x: XIn<'_>, y: Option<XIn<'_>>) -> PyResult<Option<f64>> {
        let class = match &y {
            Some(XIn::Tok(a)) => Some(slice(a, "y")?),
            _ => None,
        };
        match &mut self.learner {
            Learner::F32(l) => {
                let XIn::F32(xa) = &x else { return Err(value_err("x: expected float32 values")) };
                let real = match &y {
                    Some(XIn::F32(a)) => Some(slice(a, "y")?),
                    _ => None,
                };
                let xs = slice(xa, "x")?;
                py.allow_threads(|| online_step(l, xs, real, class))
            }
            Learner::F64(l) => {
                let XIn::F64(xa) = &x else { return Err(value_err("x: expected float64 values")) };
                let real = match &y {
                    Some(XIn::F64(a)) => Some(slice(a, "y")?),
                    _ => None,
                };
                let xs = slice(xa, "x")?;
                py.allow_threads(|| online_step(l, xs, real, class))
            }
        }
    }

    fn running_loss(&self) -> Option<f64> {
        match &self.learner {
            Learner::F32(l) => l.running_loss(),
            Learner::F64(l) => l.running_loss(),
        }
    }

    /// (steps, updates).
    fn counts(&self) -> (u64, u64) {
        match &self.learner {
            Learner::F32(l) => l.counts(),
            Learner::F64(l) => l.counts(),
        }
    }

    fn estimator_bytes(&self) -> usize {
        match &self.learner {
            Learner::F32(l) => l.estimator_bytes(),
            Learner::F64(l) => l.estimator_bytes(),
        }
    }

    /// A copy of the model as learned so far.
    fn model(&self) -> Core {
        match &self.learner {
            Learner::F32(l) => Core { net: Net::F32(l.model.clone()) },
            Learner::F64(l) => Core { net: Net::F64(l.model.clone()) },
        }
    }
}

#[pymodule]
fn _recurrent(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Core>()?;
    m.add_class::<Online>()?;
    m.add("INTERRUPTED", INTERRUPTED)?;
    Ok(())
}
