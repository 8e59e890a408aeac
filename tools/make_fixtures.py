"""Generate the PyTorch reference fixtures used by the Rust tests.

Writes three JSON files under tests/fixtures/:

  torch_rnn.json    forward + backward of small [Embedding ->] RNN/LSTM/GRU -> Linear
                    models (uni/bidirectional, multi-layer, packed ragged batches,
                    batch-first and time-major, "last"/"every" heads, mse/ce/bce
                    losses), computed once in float64 and once in float32 from the
                    same f32-exact parameters and inputs.
  torch_optim.json  three steps of SGD / RMSprop / Adagrad / Adam / AdamW in float64,
                    plus clip_grad_norm_ and clip_grad_value_ cases.
  torch_sched.json  20 epochs of learning rates for StepLR, ExponentialLR,
                    LinearLR+CosineAnnealingLR (SequentialLR) and ReduceLROnPlateau.

Every tensor is stored as {"shape": [...], "data": [flat row-major numbers]};
floats are written by Python's json (repr, round-trip exact).

Run by hand from the repository root, with a Python that has torch and numpy
(e.g. a venv outside the repo: python3 -m venv /tmp/torch &&
/tmp/torch/bin/pip install torch numpy):

    /tmp/torch/bin/python tools/make_fixtures.py

Output is deterministic (fixed torch.manual_seed, single thread, oneDNN off).
After writing, the script re-checks every RNN case's float64 "out", "h_n",
"c_n", "y" and "loss" against an independent NumPy implementation that reads
the JSON back, and fails loudly on a mismatch.
"""

import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "crates", "recurrent", "tests", "fixtures")

torch.set_num_threads(1)
torch.backends.mkldnn.enabled = False


# --------------------------------------------------------------------------
# encoding
# --------------------------------------------------------------------------

def enc(t):
    """Tensor -> {"shape", "data"}; ints stay ints, floats become Python floats."""
    t = t.detach().cpu()
    data = t.reshape(-1).tolist()
    if t.dtype in (torch.int64, torch.int32):
        data = [int(v) for v in data]
    else:
        data = [float(v) for v in data]
        for v in data:
            if not math.isfinite(v):
                raise ValueError("non-finite value in fixture")
    return {"shape": list(t.shape), "data": data}


def dec(d, dtype=np.float64):
    return np.array(d["data"], dtype=dtype).reshape(d["shape"])


def write(name, obj):
    path = os.path.join(OUT_DIR, name)
    with open(path, "w") as f:
        json.dump(obj, f, separators=(",", ":"), allow_nan=False)
        f.write("\n")
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


# --------------------------------------------------------------------------
# 1. RNN cases
# --------------------------------------------------------------------------

def rnn_cfg(name, cell, I, H, L, bi, bias, bf, B, T, lengths, head, O, loss,
            vocab=None, emb_dim=None, ignore_valid=None):
    if vocab is not None:
        assert I == emb_dim
    if lengths is not None:
        assert len(lengths) == B and all(1 <= n <= T for n in lengths)
    cfg = {"cell": cell, "input_size": I, "hidden_size": H, "num_layers": L,
           "bidirectional": bi, "bias": bias, "batch_first": bf, "batch": B,
           "seq_len": T, "lengths": lengths, "head": head, "out_size": O,
           "loss": loss, "vocab": vocab, "emb_dim": emb_dim}
    # ignore_valid: (b, t) of a *valid* position whose ce target is set to -100
    # (for head "last" t is ignored and target[b] is set).
    return {"name": name, "config": cfg, "ignore_valid": ignore_valid}


def rnn_cases():
    cs = []
    cells = ["rnn_tanh", "rnn_relu", "lstm", "gru"]
    for cell in cells:
        # (a) 1 layer, unidirectional, batch-first, equal lengths, last head, mse
        cs.append(rnn_cfg(f"{cell}_1l_uni_bf_last_mse", cell, 3, 4, 1, False, True, True,
                          2, 4, None, "last", 2, "mse"))
        # (b) 2 layers, bidirectional, ragged, every head, ce
        iv = (0, 2) if cell in ("rnn_tanh", "gru") else None
        cs.append(rnn_cfg(f"{cell}_2l_bi_ragged_every_ce", cell, 2, 3, 2, True, True, True,
                          3, 5, [5, 3, 1], "every", 3, "ce", ignore_valid=iv))
        # (c) bidirectional, time-major, ragged (unsorted), last head, bce
        cs.append(rnn_cfg(f"{cell}_bi_tm_ragged_last_bce", cell, 3, 2, 1, True, True, False,
                          4, 6, [6, 4, 1, 5], "last", 2, "bce"))
        # (d) edge: B=1, H=1, T=1
        cs.append(rnn_cfg(f"{cell}_edge_b1_h1_t1", cell, 2, 1, 1, False, True, True,
                          1, 1, None, "last", 1, "mse"))
    # bias=False
    cs.append(rnn_cfg("gru_nobias_2l_last_bce", "gru", 3, 3, 2, False, False, True,
                      2, 4, None, "last", 2, "bce"))
    cs.append(rnn_cfg("lstm_nobias_2l_ragged_every_mse", "lstm", 3, 3, 2, False, False, True,
                      2, 4, [4, 2], "every", 2, "mse"))
    cs.append(rnn_cfg("rnn_tanh_nobias_2l_bi_tm_every_mse", "rnn_tanh", 2, 2, 2, True, False,
                      False, 2, 3, None, "every", 1, "mse"))
    # odd sizes
    for cell, bf in [("rnn_tanh", True), ("rnn_relu", False), ("lstm", True), ("gru", False)]:
        tag = "bf" if bf else "tm"
        cs.append(rnn_cfg(f"{cell}_odd_2l_bi_{tag}_ragged_every_mse", cell, 5, 3, 2, True, True,
                          bf, 3, 5, [2, 5, 4], "every", 2, "mse"))
    # embeddings
    cs.append(rnn_cfg("lstm_emb_ragged_every_ce", "lstm", 4, 3, 1, False, True, True,
                      3, 5, [5, 2, 4], "every", 3, "ce", vocab=7, emb_dim=4))
    # max(lengths) < seq_len here: pad_packed_sequence(total_length=T) pads to T.
    cs.append(rnn_cfg("gru_emb_2l_bi_tm_ragged_last_ce", "gru", 4, 2, 2, True, True, False,
                      3, 4, [3, 1, 2], "last", 3, "ce", vocab=7, emb_dim=4, ignore_valid=(1, 0)))
    # extras
    cs.append(rnn_cfg("lstm_3l_bi_tm_ragged_every_bce", "lstm", 2, 2, 3, True, True, False,
                      2, 4, [2, 4], "every", 2, "bce"))
    cs.append(rnn_cfg("gru_packed_equal_lengths_every_bce", "gru", 2, 3, 1, True, True, True,
                      2, 3, [3, 3], "every", 1, "bce"))
    return cs


def build_modules(cfg, dtype):
    cell = cfg["cell"]
    kw = dict(num_layers=cfg["num_layers"], bias=cfg["bias"],
              batch_first=cfg["batch_first"], bidirectional=cfg["bidirectional"])
    I, H = cfg["input_size"], cfg["hidden_size"]
    if cell == "rnn_tanh":
        rnn = nn.RNN(I, H, nonlinearity="tanh", **kw)
    elif cell == "rnn_relu":
        rnn = nn.RNN(I, H, nonlinearity="relu", **kw)
    elif cell == "lstm":
        rnn = nn.LSTM(I, H, **kw)
    elif cell == "gru":
        rnn = nn.GRU(I, H, **kw)
    else:
        raise ValueError(cell)
    D = 2 if cfg["bidirectional"] else 1
    mods = {}
    if cfg["vocab"] is not None:
        mods["emb"] = nn.Embedding(cfg["vocab"], cfg["emb_dim"])
    mods["rnn"] = rnn
    mods["fc"] = nn.Linear(D * H, cfg["out_size"])
    return nn.ModuleDict(mods).to(dtype)


def valid_mask(cfg):
    """[B,T] (batch-first view) bool mask of valid positions."""
    B, T = cfg["batch"], cfg["seq_len"]
    lens = cfg["lengths"] or [T] * B
    m = torch.zeros(B, T, dtype=torch.bool)
    for b, n in enumerate(lens):
        m[b, :n] = True
    return m


def make_inputs(case):
    cfg = case["config"]
    B, T, I, H, O = (cfg["batch"], cfg["seq_len"], cfg["input_size"],
                     cfg["hidden_size"], cfg["out_size"])
    D = 2 if cfg["bidirectional"] else 1
    L = cfg["num_layers"]
    bf = cfg["batch_first"]
    mods = build_modules(cfg, torch.float32)  # default torch init, float32
    inputs = {}
    for k, v in mods.state_dict().items():
        inputs[k] = v.detach().clone()
    if cfg["vocab"] is not None:
        x = torch.randint(0, cfg["vocab"], (B, T), dtype=torch.int64)
    else:
        x = torch.randn(B, T, I)
    if not bf:
        x = x.transpose(0, 1).contiguous()
    inputs["x"] = x
    inputs["h0"] = torch.randn(L * D, B, H) * 0.5
    if cfg["cell"] == "lstm":
        inputs["c0"] = torch.randn(L * D, B, H) * 0.5
    mask = valid_mask(cfg)  # [B,T]
    if cfg["head"] == "last":
        tshape = (B,)
        if cfg["loss"] == "ce":
            target = torch.randint(0, O, tshape, dtype=torch.int64)
            if case["ignore_valid"] is not None:
                target[case["ignore_valid"][0]] = -100
        elif cfg["loss"] == "bce":
            target = torch.randint(0, 2, (B, O)).to(torch.float32)
        else:
            target = torch.randn(B, O)
    else:
        if cfg["loss"] == "ce":
            target = torch.randint(0, O, (B, T), dtype=torch.int64)
            target[~mask] = -100
            if case["ignore_valid"] is not None:
                b, t = case["ignore_valid"]
                assert mask[b, t]
                target[b, t] = -100
        elif cfg["loss"] == "bce":
            target = torch.randint(0, 2, (B, T, O)).to(torch.float32)
        else:
            target = torch.randn(B, T, O)
        if not bf:
            target = target.transpose(0, 1).contiguous()
    inputs["target"] = target
    return inputs


def run_rnn(cfg, inputs, dtype):
    mods = build_modules(cfg, dtype)
    sd = {k: v.to(dtype) for k, v in inputs.items() if k.split(".")[0] in ("emb", "rnn", "fc")}
    mods.load_state_dict(sd, strict=True)
    B, T = cfg["batch"], cfg["seq_len"]
    bf = cfg["batch_first"]
    lens = cfg["lengths"]
    lens_eff = lens or [T] * B

    if cfg["vocab"] is not None:
        x = inputs["x"].clone()
        xin = mods["emb"](x)
    else:
        x = inputs["x"].to(dtype).clone().requires_grad_(True)
        xin = x
    h0 = inputs["h0"].to(dtype).clone().requires_grad_(True)
    if cfg["cell"] == "lstm":
        c0 = inputs["c0"].to(dtype).clone().requires_grad_(True)
        hx = (h0, c0)
    else:
        c0 = None
        hx = h0
    if lens is not None:
        packed = pack_padded_sequence(xin, torch.tensor(lens, dtype=torch.int64),
                                      batch_first=bf, enforce_sorted=False)
        out_p, hn = mods["rnn"](packed, hx)
        out, _ = pad_packed_sequence(out_p, batch_first=bf, total_length=T)
    else:
        out, hn = mods["rnn"](xin, hx)
    if cfg["cell"] == "lstm":
        h_n, c_n = hn
    else:
        h_n, c_n = hn, None

    if cfg["head"] == "last":
        ob = out if bf else out.transpose(0, 1)
        idx = torch.tensor(lens_eff, dtype=torch.int64) - 1
        feat = ob[torch.arange(B), idx]
        y = mods["fc"](feat)
        mask = None
    else:
        y = mods["fc"](out)
        mask = valid_mask(cfg)
        if not bf:
            mask = mask.transpose(0, 1)

    target = inputs["target"]
    kind = cfg["loss"]
    if kind == "ce":
        tgt = target
        loss = F.cross_entropy(y.reshape(-1, y.shape[-1]), tgt.reshape(-1),
                               ignore_index=-100, reduction="mean")
    else:
        tgt = target.to(dtype)
        if kind == "mse":
            el = (y - tgt) ** 2
        else:
            el = F.binary_cross_entropy_with_logits(y, tgt, reduction="none")
        if mask is None:
            loss = el.mean()
        else:
            m = mask.unsqueeze(-1).expand_as(el).to(dtype)
            loss = (el * m).sum() / m.sum()
    loss.backward()

    res = {"out": out, "h_n": h_n}
    if c_n is not None:
        res["c_n"] = c_n
    res["y"] = y
    res["loss"] = loss
    for mod_name in ("emb", "rnn", "fc"):
        if mod_name not in mods:
            continue
        for pn, p in mods[mod_name].named_parameters():
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            res[f"grad.{mod_name}.{pn}"] = g
    if cfg["vocab"] is None:
        res["grad.x"] = x.grad
    res["grad.h0"] = h0.grad
    if c0 is not None:
        res["grad.c0"] = c0.grad
    return res


def make_rnn():
    torch.manual_seed(1234)
    out_cases = []
    for case in rnn_cases():
        cfg = case["config"]
        inputs = make_inputs(case)
        r64 = run_rnn(cfg, inputs, torch.float64)
        r32 = run_rnn(cfg, inputs, torch.float32)
        out_cases.append({
            "name": case["name"],
            "config": cfg,
            "inputs": {k: enc(v) for k, v in inputs.items()},
            "f64": {k: enc(v) for k, v in r64.items()},
            "f32": {k: enc(v) for k, v in r32.items()},
        })
    return {"cases": out_cases}


# --------------------------------------------------------------------------
# 2. optimizers
# --------------------------------------------------------------------------

OPT_CASES = [
    ("sgd_plain", "sgd", dict(lr=0.1, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0)),
    ("sgd_momentum", "sgd", dict(lr=0.1, momentum=0.9, dampening=0.0, nesterov=False, weight_decay=0.0)),
    ("sgd_nesterov_wd", "sgd", dict(lr=0.1, momentum=0.9, dampening=0.0, nesterov=True, weight_decay=0.01)),
    ("sgd_momentum_dampening", "sgd", dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=False, weight_decay=0.0)),
    ("rmsprop_default", "rmsprop", dict(lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False)),
    ("rmsprop_momentum_centered_wd", "rmsprop", dict(lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.01, momentum=0.9, centered=True)),
    ("adagrad_default", "adagrad", dict(lr=0.01, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10)),
    ("adagrad_decay_wd_init", "adagrad", dict(lr=0.01, lr_decay=0.1, weight_decay=0.01, initial_accumulator_value=0.1, eps=1e-10)),
    ("adam_default", "adam", dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False)),
    ("adam_wd_amsgrad", "adam", dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, amsgrad=True)),
    ("adamw_default", "adamw", dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, amsgrad=False)),
    ("adamw_lr_wd_amsgrad", "adamw", dict(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1, amsgrad=True)),
]


def make_optimizer(kind, p, hp):
    hp = dict(hp)
    if kind == "sgd":
        return torch.optim.SGD([p], foreach=False, **hp)
    if kind == "rmsprop":
        return torch.optim.RMSprop([p], foreach=False, **hp)
    if kind == "adagrad":
        return torch.optim.Adagrad([p], foreach=False, **hp)
    if kind in ("adam", "adamw"):
        betas = (hp.pop("beta1"), hp.pop("beta2"))
        cls = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
        return cls([p], betas=betas, foreach=False, **hp)
    raise ValueError(kind)


def make_optim():
    torch.manual_seed(4321)
    cases = []
    for name, kind, hp in OPT_CASES:
        p0 = torch.randn(7, dtype=torch.float64)
        grads = [torch.randn(7, dtype=torch.float64) for _ in range(3)]
        p = p0.clone().requires_grad_(True)
        opt = make_optimizer(kind, p, hp)
        params = []
        for g in grads:
            p.grad = g.clone()
            opt.step()
            params.append(p.detach().clone())
        cases.append({"name": name, "optimizer": kind, "hparams": hp, "p0": enc(p0),
                      "grads": [enc(g) for g in grads], "params": [enc(q) for q in params]})

    clip = []
    for max_norm, scale in [(1.0, 2.0), (100.0, 1.0)]:
        gs = [torch.randn(3, 2, dtype=torch.float64) * scale, torch.randn(4, dtype=torch.float64) * scale]
        ps = [torch.zeros_like(g, requires_grad=True) for g in gs]
        for q, g in zip(ps, gs):
            q.grad = g.clone()
        total = torch.nn.utils.clip_grad_norm_(ps, max_norm, norm_type=2.0, foreach=False)
        clip.append({"grads": [enc(g) for g in gs], "max_norm": max_norm,
                     "total_norm": float(total), "clipped": [enc(q.grad) for q in ps]})
    assert clip[0]["total_norm"] > clip[0]["max_norm"]
    assert clip[1]["total_norm"] < clip[1]["max_norm"]

    clip_value = []
    gs = [torch.randn(3, 2, dtype=torch.float64), torch.randn(4, dtype=torch.float64)]
    ps = [torch.zeros_like(g, requires_grad=True) for g in gs]
    for q, g in zip(ps, gs):
        q.grad = g.clone()
    torch.nn.utils.clip_grad_value_(ps, 0.5, foreach=False)
    clip_value.append({"grads": [enc(g) for g in gs], "clip_value": 0.5,
                       "clipped": [enc(q.grad) for q in ps]})
    return {"cases": cases, "clip": clip, "clip_value": clip_value}


# --------------------------------------------------------------------------
# 3. schedulers
# --------------------------------------------------------------------------

PLATEAU_METRICS = [1.0, 0.8, 0.6, 0.5, 0.5, 0.49999, 0.5, 0.5, 0.5, 0.4,
                   0.3, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2]


def make_sched():
    S = torch.optim.lr_scheduler
    base_lr = 0.1
    epochs = 20
    specs = [
        ("step", "step", {"step_size": 3, "gamma": 0.5}, None),
        ("exponential", "exponential", {"gamma": 0.9}, None),
        ("cosine_warmup", "cosine_warmup",
         {"warmup_epochs": 4, "start_factor": 0.1, "total_epochs": 20, "eta_min": 1e-4}, None),
        ("plateau", "plateau",
         {"mode": "min", "factor": 0.5, "patience": 2, "threshold": 1e-4,
          "threshold_mode": "rel", "cooldown": 1, "min_lr": 1e-4}, PLATEAU_METRICS),
    ]
    cases = []
    for name, kind, hp, metrics in specs:
        p = torch.zeros(1, requires_grad=True)
        opt = torch.optim.SGD([p], lr=base_lr)
        if kind == "step":
            sch = S.StepLR(opt, step_size=hp["step_size"], gamma=hp["gamma"])
        elif kind == "exponential":
            sch = S.ExponentialLR(opt, gamma=hp["gamma"])
        elif kind == "cosine_warmup":
            w = hp["warmup_epochs"]
            warm = S.LinearLR(opt, start_factor=hp["start_factor"], end_factor=1.0, total_iters=w)
            cos = S.CosineAnnealingLR(opt, T_max=hp["total_epochs"] - w, eta_min=hp["eta_min"])
            sch = S.SequentialLR(opt, [warm, cos], milestones=[w])
        else:
            sch = S.ReduceLROnPlateau(opt, **hp)
        lrs = []
        for k in range(epochs):
            lrs.append(float(opt.param_groups[0]["lr"]))
            p.grad = torch.zeros_like(p)
            opt.step()
            if metrics is None:
                sch.step()
            else:
                sch.step(metrics[k])
        cases.append({"name": name, "kind": kind, "hparams": hp, "base_lr": base_lr,
                      "metrics": metrics, "lrs": lrs})
    return {"cases": cases}


# --------------------------------------------------------------------------
# independent NumPy re-check of the RNN forward (float64)
# --------------------------------------------------------------------------

def _sig(v):
    return 1.0 / (1.0 + np.exp(-v))


def np_forward(case):
    cfg, inp = case["config"], case["inputs"]
    cell, L, H = cfg["cell"], cfg["num_layers"], cfg["hidden_size"]
    D = 2 if cfg["bidirectional"] else 1
    B, T, bf = cfg["batch"], cfg["seq_len"], cfg["batch_first"]
    lens = cfg["lengths"] or [T] * B
    P = {k: dec(v) for k, v in inp.items() if k != "x" and k != "target"}
    if cfg["vocab"] is not None:
        tok = dec(inp["x"], np.int64)
        if not bf:
            tok = tok.T
        x = P["emb.weight"][tok]  # [B,T,E]
    else:
        x = dec(inp["x"])
        if not bf:
            x = x.transpose(1, 0, 2)
    h0 = P["h0"]
    c0 = P.get("c0")
    out_all = np.zeros((B, T, D * H))
    h_n = np.zeros((L * D, B, H))
    c_n = np.zeros((L * D, B, H))
    for b in range(B):
        n = lens[b]
        layer_in = x[b, :n]
        for l in range(L):
            layer_out = np.zeros((n, D * H))
            for d in range(D):
                sfx = f"_l{l}" + ("_reverse" if d == 1 else "")
                Wih, Whh = P["rnn.weight_ih" + sfx], P["rnn.weight_hh" + sfx]
                bih = P.get("rnn.bias_ih" + sfx, np.zeros(Wih.shape[0]))
                bhh = P.get("rnn.bias_hh" + sfx, np.zeros(Whh.shape[0]))
                h = h0[l * D + d, b].copy()
                c = c0[l * D + d, b].copy() if c0 is not None else None
                order = range(n) if d == 0 else range(n - 1, -1, -1)
                for t in order:
                    gi = Wih @ layer_in[t] + bih
                    gh = Whh @ h + bhh
                    if cell == "rnn_tanh":
                        h = np.tanh(gi + gh)
                    elif cell == "rnn_relu":
                        h = np.maximum(gi + gh, 0.0)
                    elif cell == "lstm":
                        g = gi + gh
                        i_, f_, g_, o_ = np.split(g, 4)
                        c = _sig(f_) * c + _sig(i_) * np.tanh(g_)
                        h = _sig(o_) * np.tanh(c)
                    else:
                        ir, iz, inn = np.split(gi, 3)
                        hr, hz, hn_ = np.split(gh, 3)
                        r, z = _sig(ir + hr), _sig(iz + hz)
                        nn_ = np.tanh(inn + r * hn_)
                        h = (1 - z) * nn_ + z * h
                    layer_out[t, d * H:(d + 1) * H] = h
                h_n[l * D + d, b] = h
                if c is not None:
                    c_n[l * D + d, b] = c
            layer_in = layer_out
        out_all[b, :n] = layer_in
    Wfc, bfc = P["fc.weight"], P["fc.bias"]
    if cfg["head"] == "last":
        feat = np.stack([out_all[b, lens[b] - 1] for b in range(B)])
        y = feat @ Wfc.T + bfc
        mask = np.ones(B, dtype=bool)
    else:
        y = out_all @ Wfc.T + bfc  # [B,T,O]
        mask = np.zeros((B, T), dtype=bool)
        for b in range(B):
            mask[b, :lens[b]] = True
    tgt_raw = inp["target"]
    if cfg["loss"] == "ce":
        tgt = dec(tgt_raw, np.int64)
        if cfg["head"] == "every" and not bf:
            tgt = tgt.T
        yy = y.reshape(-1, y.shape[-1])
        tt = tgt.reshape(-1)
        keep = tt != -100
        lse = np.log(np.exp(yy).sum(-1))
        nll = lse - yy[np.arange(len(tt)), np.where(keep, tt, 0)]
        loss = nll[keep].mean()
    else:
        tgt = dec(tgt_raw)
        if cfg["head"] == "every" and not bf:
            tgt = tgt.transpose(1, 0, 2)
        if cfg["loss"] == "mse":
            el = (y - tgt) ** 2
        else:
            el = np.maximum(y, 0) - y * tgt + np.log1p(np.exp(-np.abs(y)))
        m = np.broadcast_to(mask[..., None], el.shape)
        loss = el[m].mean()
    if not bf:
        out_all = out_all.transpose(1, 0, 2)
        if cfg["head"] == "every":
            y = y.transpose(1, 0, 2)
    res = {"out": out_all, "h_n": h_n, "y": y, "loss": np.array(loss)}
    if cell == "lstm":
        res["c_n"] = c_n
    return res


def check_rnn(path):
    with open(path) as f:
        data = json.load(f)
    worst = 0.0
    for case in data["cases"]:
        ref = np_forward(case)
        for k, v in ref.items():
            got = dec(case["f64"][k])
            assert got.shape == v.shape, (case["name"], k, got.shape, v.shape)
            err = float(np.max(np.abs(got - v))) if v.size else 0.0
            worst = max(worst, err)
            if err > 1e-10:
                raise AssertionError(f"{case['name']}: {k} differs from NumPy by {err}")
            g32 = dec(case["f32"][k])
            e32 = float(np.max(np.abs(g32 - v))) if v.size else 0.0
            if e32 > 1e-4:
                raise AssertionError(f"{case['name']}: f32 {k} differs from f64 by {e32}")
    print(f"numpy re-check of {len(data['cases'])} rnn cases ok (max |f64 - numpy| = {worst:.3g})")


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    print(f"torch {torch.__version__}")
    write("torch_rnn.json", make_rnn())
    write("torch_optim.json", make_optim())
    write("torch_sched.json", make_sched())
    check_rnn(os.path.join(OUT_DIR, "torch_rnn.json"))


if __name__ == "__main__":
    sys.exit(main())
