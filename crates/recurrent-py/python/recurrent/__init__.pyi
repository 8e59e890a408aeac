"""recurrent: Elman RNN, LSTM and GRU networks exactly as PyTorch defines them,
trained by a Rust engine, with NumPy arrays in and out.

Arrays of any real dtype and memory order are accepted and converted once to
a C-contiguous array of the model's dtype (a copy only when they differ);
token ids, class targets and lengths become int64. Complex, boolean, string
and object arrays raise TypeError; shapes and values ValueError; files
OSError; memory limits MemoryError; a diverged fit FloatingPointError.
"""

import os
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple, Union, overload

import numpy as np
import numpy.typing as npt

__version__: str
INTERRUPTED: str

ArrayLike = npt.ArrayLike
State = Union[npt.ArrayLike, Tuple[npt.ArrayLike, Optional[npt.ArrayLike]]]
Cell = Literal["lstm", "gru", "rnn_tanh", "rnn_relu"]
Head = Literal["last", "every"]
Loss = Literal["mse", "cross_entropy", "bce_with_logits"]
DType = Literal["float32", "float64"]
Estimator = Literal["bptt", "tbptt", "rtrl", "uoro", "snap1", "snap2"]
OptimizerName = Literal["sgd", "adam", "adamw", "rmsprop", "adagrad"]
MetricName = Literal["auto", "loss", "mse", "rmse", "accuracy", "bpc"]

class Model:
    """Embedding (``emb.*``, with ``vocab``) + recurrent stack (``rnn.*``) +
    Linear head (``fc.*``) on each sequence's last valid step
    (``head="last"``: y [B, O]) or on every step (``head="every"``:
    y [B, T, O]); PyTorch's parameter names, shapes and default
    initialisation, drawn from ``seed``."""

    task: Optional[Dict[str, Any]]
    """The task description of a loaded checkpoint (normalisation, vocabulary...), saved back by ``save``."""

    def __init__(
        self,
        cell: Cell = "lstm",
        input_size: int = 1,
        hidden_size: int = 32,
        num_layers: int = 1,
        bidirectional: bool = False,
        bias: bool = True,
        dropout: float = 0.0,
        head: Head = "last",
        out_size: int = 1,
        loss: Loss = "mse",
        vocab: Optional[int] = None,
        dtype: DType = "float32",
        seed: int = 0,
        orthogonal_recurrent: bool = False,
        xavier_input: bool = False,
        forget_bias: Optional[float] = None,
    ) -> None:
        """A model initialised as PyTorch does by default (U(-1/sqrt(H), 1/sqrt(H))
        for the recurrent weights, the Linear default for the head, N(0, 1) for the
        embedding), then the options: orthogonal recurrent blocks, Xavier input
        weights, the LSTM forget-gate bias. With ``vocab`` the inputs are token
        ids embedded to ``input_size`` values."""
    @property
    def config(self) -> Dict[str, Any]:
        """The configuration (the ``model`` of a checkpoint's metadata)."""
    @property
    def dtype(self) -> DType:
        """``"float32"`` or ``"float64"``."""
    @property
    def num_params(self) -> int:
        """Number of scalar parameters."""
    def astype(self, dtype: DType) -> "Model":
        """A copy in another precision."""
    def forward(
        self, x: ArrayLike, lengths: Optional[ArrayLike] = None, state: Optional[State] = None, batch_first: bool = True
    ) -> Dict[str, np.ndarray]:
        """Forward pass without dropout: ``{"y", "out", "h_n"[, "c_n"]}`` (head
        output; recurrent output [B, T, D*H]; final states [L*D, B, H])."""
    @overload
    def predict(
        self,
        x: ArrayLike,
        lengths: Optional[ArrayLike] = None,
        state: Optional[State] = None,
        return_state: Literal[False] = False,
    ) -> np.ndarray: ...
    @overload
    def predict(
        self, x: ArrayLike, lengths: Optional[ArrayLike], state: Optional[State], return_state: Literal[True]
    ) -> Tuple[np.ndarray, Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]]: ...
    def loss_and_grad(
        self,
        x: ArrayLike,
        y: ArrayLike,
        lengths: Optional[ArrayLike] = None,
        state: Optional[State] = None,
        batch_first: bool = True,
    ) -> Tuple[float, Dict[str, np.ndarray]]:
        """The loss (PyTorch's mean reduction) and its gradient by parameter
        name, dropout off. ``y``: real [B, O] / [B, T, O] (mse,
        bce_with_logits), class ids [B] / [B, T] (cross_entropy; -100 skips)."""
    def state_dict(self) -> Dict[str, np.ndarray]:
        """The parameters (copies) by PyTorch name."""
    def load_state_dict(self, d: Dict[str, ArrayLike]) -> None:
        """Loads every parameter, each with its exact shape; nothing changes on error."""
    def save(self, path: Union[str, os.PathLike]) -> None:
        """Writes a checkpoint (safetensors, PyTorch names), atomically; the CLI reads it."""
    @classmethod
    def load(cls, path: Union[str, os.PathLike], dtype: DType = "float32") -> "Model":
        """Reads a checkpoint written by ``save`` or by ``recurrent train``."""
    def to_torch(self) -> Any:
        """An equivalent ``torch.nn.Module`` (``emb``, ``rnn``, ``fc``) whose ``forward(x, lengths=None)``
        returns what ``predict`` returns. Needs torch (ImportError otherwise)."""
    def fit(
        self,
        x: ArrayLike,
        y: ArrayLike,
        lengths: Optional[ArrayLike] = None,
        validation_data: Optional[Sequence[Any]] = None,
        epochs: int = 10,
        batch_size: int = 32,
        optimizer: OptimizerName = "adam",
        lr: float = 5e-3,
        weight_decay: float = 0.0,
        clip_norm: Optional[float] = 1.0,
        clip_value: Optional[float] = None,
        estimator: Estimator = "bptt",
        k1: int = 50,
        k2: int = 50,
        metric: MetricName = "auto",
        patience: Optional[int] = None,
        max_steps: Optional[int] = None,
        seed: int = 1,
        threads: int = 0,
        verbose: bool = True,
        keep_best: bool = False,
    ) -> Dict[str, Union[List[float], List[int], str]]:
        """Trains with recurrent's Trainer (float32) and returns the per-epoch
        history ``{"epoch", "step", "train_loss", "val_loss", "val_<metric>",
        "metric", "lr"}``. The GIL is released while the engine computes;
        Ctrl-C raises KeyboardInterrupt between two steps, with the model at
        the last completed step."""

class OnlineLearner:
    """Learns from an unbounded stream one step at a time with an online
    gradient estimator (``rtrl`` exact, ``uoro``, ``snap1``, ``snap2``),
    updating the weights every ``k`` steps; trains a copy of ``model``."""

    def __init__(
        self,
        model: Model,
        estimator: Literal["rtrl", "uoro", "snap1", "snap2"] = "rtrl",
        optimizer: OptimizerName = "adam",
        lr: float = 1e-2,
        k: int = 1,
        batch: int = 1,
        clip_norm: float = 0.0,
        seed: int = 0,
    ) -> None:
        """A learner over ``batch`` parallel streams (``clip_norm`` 0: no clipping)."""
    def step(self, x: ArrayLike, y: Optional[ArrayLike] = None) -> Optional[float]:
        """One step: x [B, I]; y real [B, O], class ids [B] or None. Returns the step's loss (None without y)."""
    @property
    def running_loss(self) -> Optional[float]:
        """Exponential moving average (0.99) of the per-step loss."""
    @property
    def steps(self) -> int:
        """Steps taken."""
    @property
    def updates(self) -> int:
        """Weight updates made."""
    @property
    def estimator_bytes(self) -> int:
        """Bytes the estimator holds (constant over the stream)."""
    @property
    def model(self) -> Model:
        """A copy of the model with the weights learned so far."""

def pad_sequences(
    sequences: Sequence[ArrayLike], dtype: Optional[npt.DTypeLike] = None, value: Any = 0
) -> Tuple[np.ndarray, np.ndarray]:
    """Pads sequences [T_i, I] (or [T_i]) into [N, max T, I] and returns it with the lengths [N] (int64)."""

def from_torch(
    module: Any, fc: Any = None, emb: Any = None, head: Head = "last", loss: Loss = "mse", dtype: DType = "float32"
) -> Model:
    """A Model with the weights of PyTorch modules: a module with ``rnn`` (nn.RNN/LSTM/GRU), ``fc``
    (nn.Linear) and optionally ``emb`` (nn.Embedding), or the recurrent module with ``fc=`` (and
    ``emb=``). Needs torch (ImportError otherwise)."""
