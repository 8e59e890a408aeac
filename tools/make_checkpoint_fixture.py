"""Write the PyTorch-made checkpoint fixtures that the Rust tests load.

Makes, in tests/fixtures/torch_ckpt/:

  input.csv                  40 daily rows `date,load,temp` (2020-01-01 on):
                             smooth sinusoids plus seeded noise, 4 decimals.
  model.safetensors          a 2-layer GRU (input 2 = [load, temp], hidden 6,
                             bias, unidirectional) -> Linear(6, 2), head "last",
                             forecasting `load` 2 steps ahead from windows of 8
                             rows; trained with 300 full-batch Adam steps in
                             float32 so its weights are not random. Tensors are
                             the model's state_dict, metadata key "recurrent"
                             holds the JSON config (README "Checkpoints").
  expected.csv               what `recurrent predict --checkpoint model.safetensors
                             --data input.csv` should print: one row per window
                             (window ending at row e = 7 .. 39), forecasts in data
                             units, computed in float64 (model.double()) from the
                             saved float32 weights, printed with repr.
  lstm_bidir.safetensors     a 1-layer bidirectional LSTM (hidden 4), same task
  lstm_bidir_expected.csv    and columns, seeded random init, and its forecasts.

Normalisation (z-score with the population std, ddof=0) is fitted on all 40
rows of the CSV, as read back from the file. Deterministic: fixed seeds, one
thread. After writing, the script reloads each checkpoint into a fresh model
built from its metadata alone and checks that it reproduces the forecasts.

Run from anywhere, with a Python that has torch, safetensors and numpy:

    /tmp/torch/bin/python tools/make_checkpoint_fixture.py
"""

import datetime
import json
import math
import os

import numpy as np
import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import load_file, save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "crates", "recurrent", "tests", "fixtures", "torch_ckpt")

torch.set_num_threads(1)
torch.backends.mkldnn.enabled = False

ROWS, WINDOW, HORIZON = 40, 8, 2
INPUTS, TARGETS = ["load", "temp"], ["load"]


class Model(nn.Module):
    """The usual model, built from the checkpoint's "model" object."""

    def __init__(self, rnn, vocab, head, out_size, **_):
        super().__init__()
        if vocab:
            self.emb = nn.Embedding(vocab, rnn["input_size"])
        kind = {"rnn_tanh": nn.RNN, "rnn_relu": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[rnn["cell"]]
        extra = {"nonlinearity": "relu"} if rnn["cell"] == "rnn_relu" else {}
        self.rnn = kind(rnn["input_size"], rnn["hidden_size"], rnn["num_layers"], bias=rnn["bias"],
                        batch_first=True, dropout=rnn["dropout"], bidirectional=rnn["bidirectional"], **extra)
        self.fc = nn.Linear(rnn["hidden_size"] * (2 if rnn["bidirectional"] else 1), out_size)
        self.head = head

    def forward(self, x):
        out, _ = self.rnn(self.emb(x) if hasattr(self, "emb") else x)
        return self.fc(out[:, -1] if self.head == "last" else out)


def write_csv():
    rng = np.random.default_rng(20200101)
    t = np.arange(ROWS)
    load = 10.0 + 3.0 * np.sin(2 * math.pi * t / 10.0) + 0.5 * np.sin(2 * math.pi * t / 23.0) + rng.normal(0, 0.2, ROWS)
    temp = 15.0 + 6.0 * np.cos(2 * math.pi * t / 14.0) + rng.normal(0, 0.3, ROWS)
    day0 = datetime.date(2020, 1, 1)
    path = os.path.join(OUT_DIR, "input.csv")
    with open(path, "w") as f:
        f.write("date,load,temp\n")
        for i in range(ROWS):
            d = (day0 + datetime.timedelta(days=i)).isoformat()
            f.write(f"{d},{load[i]:.4f},{temp[i]:.4f}\n")
    return path


def read_csv(path):
    """(dates, {column: float64 array}) exactly as the file holds them."""
    with open(path) as f:
        header = f.readline().strip().split(",")
        rows = [line.strip().split(",") for line in f if line.strip()]
    dates = [r[0] for r in rows]
    cols = {name: np.array([float(r[i]) for r in rows]) for i, name in enumerate(header) if name != "date"}
    return dates, cols


def norm(cols, names):
    # population std (ddof=0), as recurrent fits it
    return {"mean": [float(np.mean(cols[c])) for c in names], "std": [float(np.std(cols[c])) for c in names]}


def windows(cols, in_norm, out_norm, with_targets):
    """Inputs [N, W, I] (normalised) for every window; targets [N, H*K] when with_targets."""
    x = np.stack([(cols[c] - m) / s for c, m, s in zip(INPUTS, in_norm["mean"], in_norm["std"])], axis=1)
    y = np.stack([(cols[c] - m) / s for c, m, s in zip(TARGETS, out_norm["mean"], out_norm["std"])], axis=1)
    need = WINDOW + (HORIZON if with_targets else 0)
    starts = range(ROWS - need + 1)
    xs = np.stack([x[s:s + WINDOW] for s in starts])
    ys = np.stack([y[s + WINDOW:s + WINDOW + HORIZON].reshape(-1) for s in starts]) if with_targets else None
    return xs, ys


def meta_for(rnn, in_norm, out_norm):
    return {
        "format": "recurrent-checkpoint",
        "version": 1,
        "model": {"rnn": rnn, "vocab": None, "head": "last", "out_size": HORIZON * len(TARGETS), "loss": "mse"},
        "task": {
            "task": "forecast",
            "data": {"window": WINDOW, "horizon": HORIZON, "date_column": "date", "header": True},
            "input_columns": INPUTS,
            "target_columns": TARGETS,
            "input_norm": in_norm,
            "target_norm": out_norm,
            "classes": [],
            "vocab": None,
            "channel_norm": None,
        },
    }


def predict_rows(model, cfg, x, dates, out_norm):
    """What `recurrent predict` prints, computed in float64 from the model's (f32) weights."""
    m64 = Model(**cfg).double()
    m64.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    m64.eval()
    with torch.no_grad():
        y = m64(torch.from_numpy(x)).numpy()
    k = len(TARGETS)
    lines = ["date," + ",".join(f"{c}_t+{s}" for s in range(1, HORIZON + 1) for c in TARGETS)]
    for i, row in enumerate(y):
        vals = [float(v) * out_norm["std"][j % k] + out_norm["mean"][j % k] for j, v in enumerate(row)]
        lines.append(dates[i + WINDOW - 1] + "," + ",".join(repr(v) for v in vals))
    return lines, y


def save(model, meta, name):
    path = os.path.join(OUT_DIR, name)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path, metadata={"recurrent": json.dumps(meta)})
    return path


def write_lines(name, lines):
    path = os.path.join(OUT_DIR, name)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def check_reload(path, x, y_expected):
    """Rebuild from the file's metadata alone (README snippet (a)) and compare."""
    with safe_open(path, "pt") as f:
        meta = json.loads(f.metadata()["recurrent"])
    m = Model(**meta["model"]).double()
    m.load_state_dict({k: v.double() for k, v in load_file(path).items()})
    m.eval()
    with torch.no_grad():
        y = m(torch.from_numpy(x)).numpy()
    assert np.array_equal(y, y_expected), f"{path}: reloaded model disagrees"


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    csv_path = write_csv()
    dates, cols = read_csv(csv_path)
    in_norm, out_norm = norm(cols, INPUTS), norm(cols, TARGETS)
    x_all, _ = windows(cols, in_norm, out_norm, with_targets=False)
    xt, yt = windows(cols, in_norm, out_norm, with_targets=True)

    # 1. Trained 2-layer GRU.
    torch.manual_seed(0)
    gru_rnn = {"cell": "gru", "input_size": len(INPUTS), "hidden_size": 6, "num_layers": 2,
               "bidirectional": False, "bias": True, "dropout": 0.0}
    meta = meta_for(gru_rnn, in_norm, out_norm)
    model = Model(**meta["model"])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    xb, yb = torch.from_numpy(xt).float(), torch.from_numpy(yt).float()
    for step in range(300):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(xb), yb)
        loss.backward()
        opt.step()
        if step in (0, 299):
            print(f"GRU step {step + 1}: train mse {loss.item():.5f}")
    model.eval()
    path = save(model, meta, "model.safetensors")
    lines, y = predict_rows(model, meta["model"], x_all, dates, out_norm)
    write_lines("expected.csv", lines)
    check_reload(path, x_all, y)

    # 2. Bidirectional LSTM, seeded random init (cross-loading another cell).
    torch.manual_seed(1)
    lstm_rnn = {"cell": "lstm", "input_size": len(INPUTS), "hidden_size": 4, "num_layers": 1,
                "bidirectional": True, "bias": True, "dropout": 0.0}
    meta2 = meta_for(lstm_rnn, in_norm, out_norm)
    lstm = Model(**meta2["model"])
    lstm.eval()
    path2 = save(lstm, meta2, "lstm_bidir.safetensors")
    lines2, y2 = predict_rows(lstm, meta2["model"], x_all, dates, out_norm)
    write_lines("lstm_bidir_expected.csv", lines2)
    check_reload(path2, x_all, y2)

    total = 0
    for name in sorted(os.listdir(OUT_DIR)):
        size = os.path.getsize(os.path.join(OUT_DIR, name))
        total += size
        print(f"wrote {os.path.join(OUT_DIR, name)} ({size} bytes)")
    print(f"total {total} bytes")


if __name__ == "__main__":
    main()
