"""Checkpoints are interchangeable with the command line's: a checkpoint
written by `recurrent train` loads in Python, and one written from Python is
read by `recurrent predict`. Needs the built command (`cargo build --release`
or $RECURRENT_BIN); skipped with a message without it, unless
$RECURRENT_REQUIRE_CLI is set (CI sets it)."""

import math
import os
import subprocess

import numpy as np
import pytest

import recurrent
from conftest import cli_binary

BIN = cli_binary()
if not BIN.exists():
    if os.environ.get("RECURRENT_REQUIRE_CLI"):
        raise RuntimeError(f"{BIN} is missing: run cargo build --release first")
    pytest.skip(f"{BIN} is missing (cargo build --release builds it)", allow_module_level=True)


def run(*args):
    r = subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_a_cli_checkpoint_loads_in_python(tmp_path):
    out = tmp_path / "run"
    run("train", "--task", "adding", "--length", 20, "--samples", 200, "--epochs", 2, "--hidden", 8, "--cell", "gru",
        "--out", out)
    m = recurrent.Model.load(out / "model.safetensors")
    c = m.config
    assert c["rnn"]["cell"] == "gru" and c["rnn"]["hidden_size"] == 8 and c["rnn"]["input_size"] == 2
    assert c["out_size"] == 1 and c["head"] == "last" and m.task["task"] == "adding"
    # The adding problem: values and markers; the checkpoint predicts a finite sum for each sequence.
    rng = np.random.default_rng(0)
    x = np.zeros((4, 20, 2), np.float32)
    x[:, :, 0] = rng.uniform(size=(4, 20))
    x[:, [2, 7], 1] = 1
    y = m.predict(x)
    assert y.shape == (4, 1) and np.all(np.isfinite(y))
    # and trains further from Python
    target = x[:, [2, 7], 0].sum(axis=1, keepdims=True)
    h = m.fit(x, target, epochs=2, batch_size=2, verbose=False)
    assert len(h["val_loss"]) == 2


def test_a_python_checkpoint_is_read_by_the_cli(tmp_path):
    csv = tmp_path / "sine.csv"
    csv.write_text("t,value\n" + "".join(f"{i},{math.sin(i * 0.2):.5f}\n" for i in range(200)))
    out = tmp_path / "run"
    run("train", "--task", "forecast", "--data", csv, "--window", 12, "--horizon", 2, "--epochs", 2, "--hidden", 8,
        "--out", out)
    cli_ckpt = out / "model.safetensors"
    m = recurrent.Model.load(cli_ckpt)
    assert m.task["task"] == "forecast"
    same = tmp_path / "same.safetensors"
    m.save(same)
    want = run("predict", "--checkpoint", cli_ckpt, "--data", csv)
    assert run("predict", "--checkpoint", same, "--data", csv) == want
    # Values changed in Python reach the CLI's predictions.
    sd = m.state_dict()
    sd["fc.bias"] = sd["fc.bias"] + 1.0
    m.load_state_dict(sd)
    changed = tmp_path / "changed.safetensors"
    m.save(changed)
    assert run("predict", "--checkpoint", changed, "--data", csv) != want
