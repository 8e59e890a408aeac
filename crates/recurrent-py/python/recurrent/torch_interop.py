"""PyTorch interop without a hard dependency: ``from_torch`` and
``Model.to_torch`` import torch only when called, and raise ImportError with
a clear message when it is missing."""

import numpy as _np


def _torch():
    try:
        import torch  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("recurrent's PyTorch interop needs torch: pip install torch") from e
    return torch


_CELL_OF = {"LSTM": "lstm", "GRU": "gru"}


def from_torch(module, fc=None, emb=None, head="last", loss="mse", dtype="float32"):
    """A ``recurrent.Model`` with the weights of PyTorch modules: either one
    module with attributes ``rnn`` (``nn.RNN``/``nn.LSTM``/``nn.GRU``),
    ``fc`` (``nn.Linear``) and optionally ``emb`` (``nn.Embedding``) — the
    usual sequence model, the one ``to_torch`` returns — or the recurrent
    module itself with ``fc=`` (and ``emb=``) given. ``head`` and ``loss``
    are not part of PyTorch's modules: say them here."""
    torch = _torch()
    from . import Model

    rnn = module
    if hasattr(module, "rnn") and isinstance(module.rnn, torch.nn.RNNBase):
        rnn, fc, emb = module.rnn, getattr(module, "fc", fc), getattr(module, "emb", emb)
        head = getattr(module, "head", head)
    if not isinstance(rnn, (torch.nn.RNN, torch.nn.LSTM, torch.nn.GRU)):
        raise TypeError(f"from_torch: expected nn.RNN, nn.LSTM, nn.GRU or a module with .rnn, got {type(rnn).__name__}")
    if not isinstance(fc, torch.nn.Linear):
        raise ValueError("from_torch: a recurrent Model has a Linear head: pass fc=nn.Linear(...) (or a module with .fc)")
    if emb is not None and not isinstance(emb, torch.nn.Embedding):
        raise TypeError(f"from_torch: emb must be an nn.Embedding, got {type(emb).__name__}")
    if getattr(rnn, "proj_size", 0):
        raise ValueError("from_torch: LSTM proj_size is not supported")
    cell = _CELL_OF.get(type(rnn).__name__) or ("rnn_relu" if rnn.nonlinearity == "relu" else "rnn_tanh")
    if emb is not None and emb.embedding_dim != rnn.input_size:
        raise ValueError(f"from_torch: embedding width {emb.embedding_dim} != rnn input_size {rnn.input_size}")
    m = Model(cell=cell, input_size=rnn.input_size, hidden_size=rnn.hidden_size, num_layers=rnn.num_layers,
              bidirectional=rnn.bidirectional, bias=rnn.bias, dropout=float(rnn.dropout), head=head,
              out_size=fc.out_features, loss=loss, vocab=None if emb is None else emb.num_embeddings, dtype=dtype)
    sd = {}
    for prefix, mod in (("rnn.", rnn), ("fc.", fc), ("emb.", emb)):
        if mod is not None:
            for k, v in mod.state_dict().items():
                sd[prefix + k] = v.detach().cpu().double().numpy()
    m.load_state_dict(sd)
    return m


def to_torch(model):
    """An equivalent ``torch.nn.Module`` (float64 for a float64 model, else
    float32) with submodules ``emb`` (with ``vocab``), ``rnn`` (batch_first)
    and ``fc``, whose ``forward(x, lengths=None)`` returns what
    ``model.predict(x, lengths)`` returns (packed sequences when lengths are
    given)."""
    torch = _torch()
    c = model.config
    r = c["rnn"]
    dtype = torch.float64 if model.dtype == "float64" else torch.float32
    kinds = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}

    class SequenceModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = c["head"]
            if c["vocab"] is not None:
                self.emb = torch.nn.Embedding(c["vocab"], r["input_size"])
            kw = dict(num_layers=r["num_layers"], bidirectional=r["bidirectional"], bias=r["bias"],
                      dropout=r["dropout"], batch_first=True)
            if r["cell"] in kinds:
                self.rnn = kinds[r["cell"]](r["input_size"], r["hidden_size"], **kw)
            else:
                self.rnn = torch.nn.RNN(r["input_size"], r["hidden_size"],
                                        nonlinearity="relu" if r["cell"] == "rnn_relu" else "tanh", **kw)
            self.fc = torch.nn.Linear(r["hidden_size"] * (2 if r["bidirectional"] else 1), c["out_size"])

        def forward(self, x, lengths=None):
            if hasattr(self, "emb"):
                x = self.emb(x)
            t = x.shape[1]
            if lengths is None:
                out, _ = self.rnn(x)
                last = torch.full((x.shape[0],), t - 1, dtype=torch.long)
            else:
                lengths = torch.as_tensor(lengths, dtype=torch.long)
                packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True,
                                                                 enforce_sorted=False)
                out, _ = self.rnn(packed)
                out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=t)
                last = lengths - 1
            if self.head == "every":
                return self.fc(out)
            return self.fc(out[torch.arange(out.shape[0]), last])

    net = SequenceModel().to(dtype)
    net.load_state_dict({k: torch.from_numpy(_np.array(v)) for k, v in model.state_dict().items()})
    return net
