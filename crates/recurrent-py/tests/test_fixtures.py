"""The committed PyTorch fixtures (tools/make_fixtures.py) reproduced from
Python: forward outputs, final states, loss and every parameter gradient, in
float64 to 1e-10 and float32 to 1e-5 relative, with the error floors of
crates/recurrent/tests/torch_fixtures.rs."""

import json

import numpy as np
import pytest

import recurrent
from conftest import FIXTURES

CASES = json.loads((FIXTURES / "torch_rnn.json").read_text())["cases"]
LOSS = {"mse": "mse", "ce": "cross_entropy", "cross_entropy": "cross_entropy", "bce": "bce_with_logits",
        "bce_with_logits": "bce_with_logits"}


def tensor(v):
    return np.array(v["data"], dtype=np.float64).reshape(v["shape"])


def rel_err(got, want, floor):
    """Worst |a - b| / max(|a|, |b|, floor * max|want|) (the Rust tests' measure)."""
    got = np.asarray(got, dtype=np.float64).ravel()
    want = np.asarray(want, dtype=np.float64).ravel()
    assert got.shape == want.shape
    scale = np.abs(want).max() if want.size else 0.0
    den = np.maximum(np.maximum(np.abs(got), np.abs(want)), max(floor * scale, 1e-300))
    return float((np.abs(got - want) / den).max()) if want.size else 0.0


def test_every_fixture_case_is_run():
    assert len(CASES) >= 25


@pytest.mark.parametrize("precision,tol,floor", [("float64", 1e-10, 1e-3), ("float32", 1e-5, 1.0)])
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_matches_pytorch(case, precision, tol, floor):
    c = case["config"]
    m = recurrent.Model(cell=c["cell"], input_size=c["input_size"], hidden_size=c["hidden_size"],
                        num_layers=c["num_layers"], bidirectional=c["bidirectional"], bias=c["bias"],
                        head=c["head"], out_size=c["out_size"], loss=LOSS[c["loss"]], vocab=c["vocab"],
                        dtype=precision)
    inputs = case["inputs"]
    names = list(m.state_dict())
    m.load_state_dict({n: tensor(inputs[n]) for n in names})
    x = tensor(inputs["x"])
    if c["vocab"] is not None:
        x = x.astype(np.int64)
    lengths = c["lengths"]
    state = tensor(inputs["h0"]) if "c0" not in inputs else (tensor(inputs["h0"]), tensor(inputs["c0"]))
    bf = c["batch_first"]
    fwd = m.forward(x, lengths=lengths, state=state, batch_first=bf)
    loss, grads = m.loss_and_grad(x, tensor(inputs["target"]), lengths=lengths, state=state, batch_first=bf)
    want = case["f64" if precision == "float64" else "f32"]
    checks = {"out": fwd["out"], "y": fwd["y"], "h_n": fwd["h_n"], "loss": [loss]}
    if c["cell"] == "lstm":
        checks["c_n"] = fwd["c_n"]
    for n in names:
        checks["grad." + n] = grads[n]
        assert grads[n].shape == tuple(inputs[n]["shape"]), n
        assert grads[n].dtype == np.dtype(precision)
    assert fwd["y"].dtype == np.dtype(precision)
    fails = []
    for k, got in checks.items():
        e = rel_err(got, tensor(want[k]), floor)
        if not e <= tol:
            fails.append(f"{k}: rel err {e:.3e} > {tol:e}")
    assert not fails, "\n".join(fails)
    # Every parameter gradient the fixture holds was compared.
    assert {k for k in want if k.startswith("grad.") and k[5:] in names} == {"grad." + n for n in names}
