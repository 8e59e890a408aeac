"""recurrent: Elman RNN, LSTM and GRU networks exactly as PyTorch defines them,
trained by a Rust engine, with NumPy arrays in and out.

Arrays: any array-like of real numbers is accepted; it is converted once to a
C-contiguous array of the model's dtype (``numpy.ascontiguousarray``), which
copies it only when its dtype or memory order differ (one pass over the
data). Token ids and class targets become int64; lengths become int64.
Complex, boolean, string and object arrays are refused with a TypeError.

Errors: shapes and values raise ValueError, files OSError, memory limits
MemoryError, a diverged fit FloatingPointError; Ctrl-C during ``fit`` raises
KeyboardInterrupt with the model left at the last completed step.
"""

import json as _json
import os as _os

import numpy as _np

from ._recurrent import _Core, _Online, INTERRUPTED  # noqa: F401

__all__ = ["Model", "OnlineLearner", "pad_sequences", "from_torch", "__version__"]
__version__ = "0.1.0"

_CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
_ESTIMATORS = ("bptt", "tbptt", "rtrl", "uoro", "snap1", "snap2")


def _real(a, dtype, what):
    """One C-contiguous array of `dtype` (a copy only when needed)."""
    arr = _np.asarray(a)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{what}: dtype {arr.dtype} is not supported; pass real numbers (float or int)")
    return _np.ascontiguousarray(arr, dtype=dtype)


def _ints(a, what):
    """One C-contiguous int64 array; float values must be whole numbers."""
    arr = _np.asarray(a)
    if arr.dtype.kind in "iu":
        return _np.ascontiguousarray(arr, dtype=_np.int64)
    if arr.dtype.kind == "f":
        if not _np.all(_np.isfinite(arr)) or not _np.all(arr == _np.round(arr)):
            raise ValueError(f"{what}: expected whole numbers (integer ids), got non-integer values")
        return _np.ascontiguousarray(arr, dtype=_np.int64)
    raise TypeError(f"{what}: dtype {arr.dtype} is not supported; pass integers")


def _check_int(name, v):
    """A non-negative integer that fits the engine's 64-bit sizes and seeds."""
    if isinstance(v, bool) or not isinstance(v, (int, _np.integer)) or not 0 <= v < 2**64:
        raise ValueError(f"invalid {name} = {v!r}: must be a non-negative integer below 2**64")


def _lengths(lengths):
    if lengths is None:
        return None
    arr = _ints(lengths, "lengths")
    if arr.ndim != 1:
        raise ValueError(f"lengths has shape {list(arr.shape)}; expected one length per sequence [batch]")
    return arr


class Model:
    """A sequence model: an optional embedding (``emb.*``, when ``vocab`` is
    set), a recurrent stack (``rnn.*``, PyTorch's ``nn.RNN``/``nn.LSTM``/
    ``nn.GRU`` with ``batch_first=True``) and a Linear head (``fc.*``) on each
    sequence's last valid step (``head="last"``, y [B, O]) or on every step
    (``head="every"``, y [B, T, O]). Parameter names and shapes are those of
    the PyTorch ``state_dict`` of that model; initialisation is PyTorch's
    default, drawn from ``seed`` (deterministic), plus the optional
    ``orthogonal_recurrent``, ``xavier_input`` and ``forget_bias``.

    Example::

        m = recurrent.Model(cell="lstm", input_size=3, hidden_size=32, out_size=1)
        y = m.predict(np.zeros((8, 20, 3), np.float32))   # [8, 1]
    """

    def __init__(self, cell="lstm", input_size=1, hidden_size=32, num_layers=1, bidirectional=False, bias=True,
                 dropout=0.0, head="last", out_size=1, loss="mse", vocab=None, dtype="float32", seed=0,
                 orthogonal_recurrent=False, xavier_input=False, forget_bias=None):
        dtype = _np.dtype(dtype).name if not isinstance(dtype, str) else dtype
        for name, v in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers),
                        ("out_size", out_size), ("seed", seed)) + ((("vocab", vocab),) if vocab is not None else ()):
            _check_int(name, v)
        self._core = _Core(str(cell), int(input_size), int(hidden_size), int(num_layers), bool(bidirectional),
                           bool(bias), float(dropout), str(head), int(out_size), str(loss),
                           None if vocab is None else int(vocab), str(dtype), int(seed), bool(orthogonal_recurrent),
                           bool(xavier_input), None if forget_bias is None else float(forget_bias))
        self.task = None

    @classmethod
    def _wrap(cls, core, task=None):
        m = cls.__new__(cls)
        m._core = core
        m.task = task
        return m

    # ---- description -------------------------------------------------------------------------------------------
    @property
    def config(self):
        """The configuration as a dict (the ``model`` of a checkpoint's metadata)."""
        return _json.loads(self._core.config_json())

    @property
    def dtype(self):
        """``"float32"`` or ``"float64"``."""
        return self._core.dtype()

    @property
    def num_params(self):
        """Number of scalar parameters."""
        return self._core.num_params()

    def __repr__(self):
        c = self.config
        r = c["rnn"]
        parts = [f"cell={r['cell']!r}", f"input_size={r['input_size']}", f"hidden_size={r['hidden_size']}"]
        if r["num_layers"] != 1:
            parts.append(f"num_layers={r['num_layers']}")
        if r["bidirectional"]:
            parts.append("bidirectional=True")
        if not r["bias"]:
            parts.append("bias=False")
        if r["dropout"]:
            parts.append(f"dropout={r['dropout']}")
        if c["vocab"] is not None:
            parts.append(f"vocab={c['vocab']}")
        parts += [f"head={c['head']!r}", f"out_size={c['out_size']}", f"loss={c['loss']!r}", f"dtype={self.dtype!r}"]
        return f"Model({', '.join(parts)})  # {self.num_params} parameters"

    def astype(self, dtype):
        """A copy of the model in another precision (``"float32"`` or ``"float64"``)."""
        return Model._wrap(self._core.astype(str(dtype)), self.task)

    # ---- arrays ------------------------------------------------------------------------------------------------
    def _x(self, x):
        if self.config["vocab"] is not None:
            return _ints(x, "x")
        return _real(x, self.dtype, "x")

    def _state(self, state):
        if state is None:
            return None, None
        if isinstance(state, tuple):
            if len(state) != 2:
                raise ValueError("state: expected h0 or a tuple (h0, c0)")
            h0, c0 = state
            return _real(h0, self.dtype, "state h0"), (None if c0 is None else _real(c0, self.dtype, "state c0"))
        return _real(state, self.dtype, "state h0"), None

    def forward(self, x, lengths=None, state=None, batch_first=True):
        """Forward pass without dropout. Returns a dict: ``y`` (head output,
        [B, O] or [B, T, O]), ``out`` (recurrent output [B, T, D*H], zero past
        each length), ``h_n`` ([L*D, B, H]) and ``c_n`` (LSTM only). ``x`` is
        [B, T, I] (token ids [B, T] with ``vocab``), or time-major when
        ``batch_first=False``; ``state`` is h0 or (h0, c0), [L*D, B, H]."""
        h0, c0 = self._state(state)
        y, out, h, c = self._core.forward(self._x(x), _lengths(lengths), h0, c0, bool(batch_first))
        r = {"y": y, "out": out, "h_n": h}
        if c is not None:
            r["c_n"] = c
        return r

    def predict(self, x, lengths=None, state=None, return_state=False):
        """Head output for a padded batch x [B, T, I] (token ids [B, T] with
        ``vocab``) with per-sequence ``lengths`` [B] (None: all T): [B, O]
        (``head="last"``) or [B, T, O]. With ``return_state=True`` also the
        final state: h_n, or (h_n, c_n) for the LSTM, each [L*D, B, H]."""
        r = self.forward(x, lengths, state)
        if not return_state:
            return r["y"]
        return r["y"], ((r["h_n"], r["c_n"]) if "c_n" in r else r["h_n"])

    def _targets(self, y, what="y"):
        if self.config["loss"] == "cross_entropy":
            return _ints(y, what)
        return _real(y, self.dtype, what)

    def loss_and_grad(self, x, y, lengths=None, state=None, batch_first=True):
        """The loss of a batch (the model's loss, PyTorch's mean reduction) and
        its gradient, as ``(loss, {name: array})`` with PyTorch's parameter
        names and shapes. Dropout is off (the gradient of the deterministic
        model). ``y``: real [B, O] (last) or [B, T, O] (every) for mse and
        bce_with_logits; class ids [B] or [B, T] for cross_entropy (-100
        skips an entry)."""
        h0, c0 = self._state(state)
        return self._core.loss_and_grad(self._x(x), self._targets(y), _lengths(lengths), h0, c0, bool(batch_first))

    # ---- parameters and files ----------------------------------------------------------------------------------
    def state_dict(self):
        """The parameters as ``{name: array}`` (copies), PyTorch's names and shapes."""
        return dict(self._core.state_dict())

    def load_state_dict(self, d):
        """Loads ``{name: array}``: every parameter, each with its exact shape
        (values converted to the model's dtype). Nothing changes on error."""
        if not hasattr(d, "items"):
            raise TypeError("load_state_dict: expected a dict {name: array}")
        items = []
        for k, v in d.items():
            if hasattr(v, "detach"):  # a torch tensor
                v = v.detach().cpu().numpy()
            items.append((str(k), _real(v, self.dtype, str(k))))
        self._core.load_state_dict(items)

    def save(self, path):
        """Writes a checkpoint (safetensors, PyTorch names, recurrent's
        metadata), atomically; ``recurrent predict --checkpoint`` and
        ``Model.load`` read it."""
        self._core.save(_os.fspath(path), _json.dumps(self.task if self.task is not None else {"task": "python"}))

    @classmethod
    def load(cls, path, dtype="float32"):
        """Reads a checkpoint written by ``save`` or by ``recurrent train``.
        The checkpoint's task description (normalisation, vocabulary...) is
        in ``model.task``."""
        core, task = _Core.load(_os.fspath(path), str(dtype))
        return cls._wrap(core, _json.loads(task))

    def to_torch(self):
        """An equivalent ``torch.nn.Module`` (``emb``, ``rnn``, ``fc``) whose
        ``forward(x, lengths=None)`` returns what ``predict`` returns; needs
        torch (ImportError otherwise)."""
        from .torch_interop import to_torch

        return to_torch(self)

    # ---- training ----------------------------------------------------------------------------------------------
    def fit(self, x, y, lengths=None, validation_data=None, epochs=10, batch_size=32, optimizer="adam", lr=5e-3,
            weight_decay=0.0, clip_norm=1.0, clip_value=None, estimator="bptt", k1=50, k2=50, metric="auto",
            patience=None, max_steps=None, seed=1, threads=0, verbose=True, keep_best=False):
        """Trains the model with recurrent's Trainer and returns the history:
        ``{"epoch", "step", "train_loss", "val_loss", "val_<metric>", "metric", "lr"}``,
        one entry per epoch.

        ``x`` [N, T, I] (token ids [N, T] with ``vocab``), ``y`` [N, O] real
        (mse, bce_with_logits) or class ids [N] (cross_entropy; [N, T] with
        ``head="every"``), ``lengths`` [N]. ``validation_data``: ``(x, y)`` or
        ``(x, y, lengths)``; without it the training data is evaluated after
        each epoch. ``optimizer``: sgd, adam, adamw, rmsprop, adagrad (PyTorch's
        defaults besides ``lr`` and ``weight_decay``). ``estimator``: bptt,
        tbptt (``k1``, ``k2``), rtrl, uoro, snap1, snap2. ``metric``: auto
        (accuracy for cross_entropy, mse for mse, loss otherwise), loss, mse,
        rmse, accuracy, bpc. ``patience``: early stopping after that many
        epochs without a better validation loss; ``max_steps``: a step
        budget. ``keep_best``: end with the parameters of the best validation
        loss instead of the last. ``threads`` 0: all cores. Shuffling and
        dropout are drawn from ``seed`` (deterministic). The GIL is released
        while the engine computes; Ctrl-C stops between two steps and raises
        KeyboardInterrupt, with the model at the last completed step.
        Training is float32 (a float64 model raises ValueError)."""
        if self.dtype != "float32":
            raise ValueError('fit trains in float32 (the Trainer\'s precision): use model.astype("float32")')
        if estimator not in _ESTIMATORS:
            raise ValueError(f"invalid estimator = {estimator!r}: expected one of {', '.join(_ESTIMATORS)}")
        ints = {"epochs": epochs, "batch_size": batch_size, "k1": k1, "k2": k2, "seed": seed, "threads": threads}
        for name, v in list(ints.items()) + [("patience", patience), ("max_steps", max_steps)]:
            if v is not None:
                _check_int(name, v)
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise ValueError("validation_data: expected (x, y) or (x, y, lengths)")
            vx, vy = validation_data[0], validation_data[1]
            vl = validation_data[2] if len(validation_data) == 3 else None
            val = (self._x(vx), self._targets(vy, "validation y"), _lengths(vl))
        return self._core.fit(
            self._x(x), self._targets(y), _lengths(lengths), val, int(epochs), int(batch_size), str(optimizer),
            float(lr), float(weight_decay), None if clip_norm is None else float(clip_norm),
            None if clip_value is None else float(clip_value), str(estimator), int(k1), int(k2), str(metric),
            None if patience is None else int(patience), None if max_steps is None else int(max_steps), int(seed),
            int(threads), bool(verbose), bool(keep_best))


class OnlineLearner:
    """Learns from an unbounded stream, one step at a time, with an online
    gradient estimator: ``rtrl`` (exact real-time recurrent learning),
    ``uoro``, ``snap1`` or ``snap2``. The weights are updated every ``k``
    steps with the mean gradient of the scored steps since the last update
    (``k=1``: fully online), clipped to ``clip_norm`` (0: off). Memory is
    fixed when the learner is made. It trains a copy of ``model``; the
    ``model`` property returns the weights learned so far. ``batch``
    parallel streams; ``seed`` draws the estimators' random signs.

    Example::

        learner = recurrent.OnlineLearner(recurrent.Model(cell="gru", input_size=1, hidden_size=16))
        for t in range(1000):
            learner.step([[np.sin(0.3 * t)]], [[np.sin(0.3 * (t + 1))]])
        learner.running_loss
    """

    def __init__(self, model, estimator="rtrl", optimizer="adam", lr=1e-2, k=1, batch=1, clip_norm=0.0, seed=0):
        if not isinstance(model, Model):
            raise TypeError("OnlineLearner: model must be a recurrent.Model")
        for name, v in (("k", k), ("batch", batch), ("seed", seed)):
            _check_int(name, v)
        self._dtype = model.dtype
        self._classes = model.config["loss"] == "cross_entropy"
        self._online = _Online(model._core, str(estimator), str(optimizer), float(lr), int(k), int(batch),
                               float(clip_norm), int(seed))

    def step(self, x, y=None):
        """One step of every stream: ``x`` [B, I] (or [I] for one stream); ``y``
        real [B, O] (or [O]), class ids [B], or None (the state advances, no
        loss). Returns the step's loss, or None without a target."""
        x = _real(x, self._dtype, "x")
        if y is not None:
            y = _ints(y, "y") if self._classes else _real(y, self._dtype, "y")
        return self._online.step(x, y)

    @property
    def running_loss(self):
        """Exponential moving average (factor 0.99) of the per-step loss; None before the first target."""
        return self._online.running_loss()

    @property
    def steps(self):
        """Steps taken."""
        return self._online.counts()[0]

    @property
    def updates(self):
        """Weight updates made."""
        return self._online.counts()[1]

    @property
    def estimator_bytes(self):
        """Bytes the estimator's state holds (constant over the stream)."""
        return self._online.estimator_bytes()

    @property
    def model(self):
        """A copy of the model with the weights learned so far."""
        return Model._wrap(self._online.model())


def pad_sequences(sequences, dtype=None, value=0):
    """Pads a list of sequences of different lengths, each [T_i, I] (or
    [T_i] token ids), into one array [N, max T_i, I] (or [N, max T_i]) and
    their lengths [N] (int64), ready for ``Model.predict(x, lengths)``.
    ``dtype``: of the padded array (default: the sequences' common dtype);
    ``value``: what fills the padding (ignored by the model)."""
    seqs = [_np.asarray(s) for s in sequences]
    if not seqs:
        raise ValueError("pad_sequences: no sequences")
    tails = {s.shape[1:] for s in seqs}
    if len(tails) != 1 or seqs[0].ndim not in (1, 2):
        raise ValueError(f"pad_sequences: every sequence must be [T] or [T, I] with the same I; got shapes "
                         f"{sorted({s.shape for s in seqs})[:4]}")
    lengths = _np.array([len(s) for s in seqs], dtype=_np.int64)
    if lengths.min() == 0:
        raise ValueError(f"pad_sequences: sequence {int(lengths.argmin())} is empty")
    dt = _np.result_type(*seqs) if dtype is None else _np.dtype(dtype)
    out = _np.full((len(seqs), int(lengths.max())) + seqs[0].shape[1:], value, dtype=dt)
    for r, s in enumerate(seqs):
        out[r, : len(s)] = s
    return out, lengths


def from_torch(module, fc=None, emb=None, head="last", loss="mse", dtype="float32"):
    """A Model with the weights of PyTorch modules: a module with ``rnn``
    (nn.RNN/LSTM/GRU), ``fc`` (nn.Linear) and optionally ``emb``
    (nn.Embedding), or the recurrent module with ``fc=`` (and ``emb=``).
    Needs torch (ImportError otherwise)."""
    from .torch_interop import from_torch as _from_torch

    return _from_torch(module, fc=fc, emb=emb, head=head, loss=loss, dtype=dtype)
