#!/usr/bin/env python3
"""Run recurrent's benchmark and the PyTorch peer side by side and print the ratios (issue 6).

Usage:
  python3 bench/compare.py [--rounds 3] [--mode train,infer,stream] [--configs S,M,L,LM]
                           [--cells rnn,lstm,gru] [--threads 1,2] [--seconds 2] [--pair config|mode]
                           [--recurrent PATH] [--python PATH_WITH_TORCH]

What it does:
  * Each round runs, for every requested mode and configuration (`--pair config`, the default),
    `recurrent bench --mode M --configs C ...` and then the PyTorch peer
    (shared/bench/pytorch_peer.py, same flags, same JSON fields) for the same measurements; odd
    rounds run the peer first, so that neither side always gets the warmer or the quieter slot.
    Pairing per configuration keeps the two sides' runs of one measurement seconds apart: on a
    shared VM whose speed drifts by 10-30 % over minutes, pairing per mode (`--pair mode`: all
    configurations of one side, then all of the other) let that drift into the ratios.
    Both tools print one JSON line per measurement; those lines are collected per round.
  * Then it prints one Markdown table per mode, one row per (mode, config, cell, threads):
      - throughput modes (train, infer): recurrent tokens/s, PyTorch tokens/s and the ratio
        recurrent / PyTorch;
      - stream mode (one cell step, batch 1): recurrent us/step, PyTorch us/step and the ratio
        PyTorch time / recurrent time;
    so a ratio > 1 always means recurrent is faster. Every cell shows the median over rounds,
    followed by the min-max across rounds in brackets (the ratio is computed per round, from the
    two runs of that round, before taking the median).
  * A last column gives the same ratio from each side's fastest repetition (`min_ms` / `min_us`,
    which both tools print) instead of its median: on a shared VM the fastest repetition is the
    one least slowed by other tenants, so where the two columns disagree, the noise decided the
    median ratio. The median ratio is the headline figure; this one is context.
  * `--raw FILE` also writes every JSON line of both tools, with its round and side, so a run can
    be analysed again later.

Defaults:
  --recurrent  target/release/recurrent under the repository root (this script's folder's parent);
               build it with `cargo build --release`.
  --python     python3; it must be able to `import torch`. If it cannot, the script says how to
               get torch (python3 -m venv /tmp/torch && /tmp/torch/bin/pip install torch) and
               exits with status 2.
  The peer script is looked for at bench/pytorch_peer.py, then shared/bench/pytorch_peer.py under
  the repository root, then ../shared/bench/pytorch_peer.py next to the repository.

Standard library only; run it on an otherwise idle machine (check `uptime`), since both sides
are timed by wall clock.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
INSTALL_HINT = "python3 -m venv /tmp/torch && /tmp/torch/bin/pip install torch"


def find_peer():
    for p in (os.path.join(HERE, "pytorch_peer.py"),
              os.path.join(ROOT, "shared", "bench", "pytorch_peer.py"),
              os.path.join(os.path.dirname(ROOT), "shared", "bench", "pytorch_peer.py")):
        if os.path.isfile(p):
            return p
    return None


def run_json(cmd):
    """Run cmd, echo its stderr on failure, and return the JSON objects on its stdout."""
    print("  $ " + " ".join(cmd), file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        sys.exit("command failed with status %d: %s" % (proc.returncode, " ".join(cmd)))
    rows = []
    for line in proc.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            rows.append(json.loads(line))
    return rows


def key(row):
    return (row["mode"], row["config"], row["cell"], int(row["threads"]))


def side_cmds(side, args, mode, configs):
    flags = ["--mode", mode, "--configs", configs, "--cells", args.cells,
             "--threads", args.threads, "--seconds", str(args.seconds)]
    if side == "recurrent":
        return [args.recurrent, "bench"] + flags
    return [args.python, args.peer] + flags


def value(row):
    """tokens/s for throughput modes, us/step for stream."""
    return row["median_us"] if row["mode"] == "stream" else row["tokens_per_s"]


def fastest(row):
    """The fastest repetition's time (ms, or us for stream)."""
    return row["min_us"] if row["mode"] == "stream" else row["min_ms"]


def fmt(vals, digits):
    med = statistics.median(vals)
    if len(vals) == 1:
        return "%.*f" % (digits, med)
    return "%.*f [%.*f-%.*f]" % (digits, med, digits, min(vals), digits, max(vals))


def fmt_tok(vals):
    med = statistics.median(vals)
    if len(vals) == 1:
        return "%.0f" % med
    return "%.0f [%.0f-%.0f]" % (med, min(vals), max(vals))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mode", default="train,infer,stream")
    ap.add_argument("--configs", default="S,M,L,LM")
    ap.add_argument("--cells", default="rnn,lstm,gru")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--recurrent", default=os.path.join(ROOT, "target", "release", "recurrent"))
    ap.add_argument("--python", default="python3")
    ap.add_argument("--peer", default=None, help="path to pytorch_peer.py (default: searched, see above)")
    ap.add_argument("--pair", choices=["config", "mode"], default="config",
                    help="run the two sides back to back per (mode, configuration) or per mode (see above)")
    ap.add_argument("--raw", default=None, help="write every measurement (JSON lines, with round and side) here")
    args = ap.parse_args()

    modes = [m for m in args.mode.split(",") if m]
    for m in modes:
        if m not in ("train", "infer", "stream"):
            ap.error("unknown mode %r (train, infer, stream)" % m)
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")

    check = subprocess.run([args.python, "-c", "import torch"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL) if _exists(args.python) else None
    if check is None or check.returncode != 0:
        print("torch is not importable by %s. Install it with:\n  %s\nand pass --python /tmp/torch/bin/python"
              % (args.python, INSTALL_HINT), file=sys.stderr)
        return 2
    if not os.path.isfile(args.recurrent):
        print("no recurrent binary at %s; build it with `cargo build --release` or pass --recurrent"
              % args.recurrent, file=sys.stderr)
        return 2
    args.peer = args.peer or find_peer()
    if not args.peer or not os.path.isfile(args.peer):
        print("pytorch_peer.py not found; pass --peer", file=sys.stderr)
        return 2

    # results[key][round] = {"recurrent": row, "torch": row}
    results = {}
    torch_lib = recurrent_lib = None
    raw = open(args.raw, "w") if args.raw else None
    for r in range(args.rounds):
        order = ["recurrent", "torch"] if r % 2 == 0 else ["torch", "recurrent"]
        print("round %d/%d (%s first)" % (r + 1, args.rounds, order[0]), file=sys.stderr, flush=True)
        # (mode, configs) units, each run by both sides back to back; stream has no configs.
        if args.pair == "config":
            units = [(m, c) for m in modes for c in ([args.configs] if m == "stream" else args.configs.split(","))]
            runs = [(side, m, c) for (m, c) in units for side in order]
        else:
            runs = [(side, m, args.configs) for side in order for m in modes]
        for side, mode, configs in runs:
            for row in run_json(side_cmds(side, args, mode, configs)):
                if side == "torch":
                    torch_lib = row.get("lib", torch_lib)
                else:
                    recurrent_lib = row.get("lib", recurrent_lib)
                results.setdefault(key(row), {}).setdefault(r, {})[side] = row
                if raw is not None:
                    raw.write(json.dumps({"round": r + 1, "side": side, **row}) + "\n")
                    raw.flush()

    if raw is not None:
        raw.close()
    print("recurrent: %s (%s); peer: %s (%s); %d round(s), %gs per measurement, sides paired per %s\n"
          % (recurrent_lib, args.recurrent, torch_lib, args.python, args.rounds, args.seconds, args.pair))
    order_cfg = {c: i for i, c in enumerate(["S", "M", "L", "LM", "stream"])}
    order_cell = {c: i for i, c in enumerate(["rnn", "lstm", "gru"])}
    for mode in modes:
        keys = sorted((k for k in results if k[0] == mode),
                      key=lambda k: (order_cfg.get(k[1], 99), order_cell.get(k[2], 99), k[3]))
        if not keys:
            continue
        stream = mode == "stream"
        print("### %s\n" % mode)
        if stream:
            print("| config | cell | threads | recurrent us/step | PyTorch us/step | PyTorch/recurrent time"
                  " | same, fastest reps |")
        else:
            print("| config | cell | threads | recurrent tokens/s | PyTorch tokens/s | recurrent/PyTorch"
                  " | same, fastest reps |")
        print("|---|---|---|---:|---:|---:|---:|")
        for k in keys:
            rounds = [v for v in results[k].values() if "recurrent" in v and "torch" in v]
            if not rounds:
                continue
            rec = [value(v["recurrent"]) for v in rounds]
            tor = [value(v["torch"]) for v in rounds]
            ratio = [(t / x) if stream else (x / t) for x, t in zip(rec, tor)]
            # Fastest repetitions: times, so torch / recurrent is > 1 when recurrent is faster.
            best = [fastest(v["torch"]) / fastest(v["recurrent"]) for v in rounds]
            if stream:
                cols = (fmt(rec, 1), fmt(tor, 1))
            else:
                cols = (fmt_tok(rec), fmt_tok(tor))
            print("| %s | %s | %d | %s | %s | %s | %s |"
                  % (k[1], k[2], k[3], cols[0], cols[1], fmt(ratio, 2), fmt(best, 2)))
        print()
    return 0


def _exists(prog):
    if os.path.sep in prog:
        return os.path.isfile(prog) and os.access(prog, os.X_OK)
    from shutil import which
    return which(prog) is not None


if __name__ == "__main__":
    sys.exit(main())
