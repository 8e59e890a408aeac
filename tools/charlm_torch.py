#!/usr/bin/env python3
"""PyTorch reference for `recurrent reproduce charlm` (character-level language model).

Runs the same configuration as recurrent's reproduction suite (src/reproduce.rs "charlm",
src/train/task.rs `charlm`, the stream branch of src/train/mod.rs, src/bptt.rs):

  data    tiny-shakespeare, read as UTF-8 (a leading BOM dropped), split contiguously by
          characters: first 90% train, next 10% validation (round(n * 0.1) characters).
          Vocabulary = sorted unique characters of the training part + one <unk> id at the end.
  streams the train ids cut into B=32 parallel streams of L = (len-1)//B steps;
          stream r: inputs ids[r*L : r*L+L], targets ids[r*L+1 : r*L+L+1].
  model   Embedding(V, 64) -> LSTM or GRU(64, 256, 1 layer) -> Linear(256, V) on every step;
          PyTorch default initialisation, torch.manual_seed(seed).
  train   truncated BPTT, k1 = k2 = 100: one Adam step (lr 2e-3, betas (0.9, 0.999),
          eps 1e-8) per window of 100 steps (the last window may be shorter), gradient
          clipped to global L2 norm 1.0; the state is carried (detached) between windows
          and starts from zeros each epoch; loss = mean cross-entropy over the window's
          B * steps positions; no dropout; 3 epochs.
  val     after every epoch: validation ids cut into B streams the same way, windows of k1
          steps with the state carried, no gradient; mean cross-entropy over all positions
          (nats) and bits per character (nats / ln 2).

Prints one JSON line per epoch and run:
  {"lib", "cell", "epoch", "step", "train_loss", "val_loss", "val_bpc", "wall_s"}

Usage (from the repository root):
  python tools/charlm_torch.py --cells lstm gru --epochs 3 --threads 1
"""

import argparse
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def load(path, val_fraction, test_fraction):
    with open(path, "rb") as f:
        text = f.read().decode("utf-8")
    if text.startswith("\ufeff"):
        text = text[1:]
    n = len(text)  # characters (code points), as Rust's chars()
    nv = max(int(round_half_away(n * val_fraction)), int(val_fraction > 0))
    nt = max(int(round_half_away(n * test_fraction)), int(test_fraction > 0))
    ntr = n - nv - nt
    train_text = text[:ntr]
    vocab = sorted(set(train_text))  # code-point order, as BTreeSet<char>
    unk = len(vocab)
    index = {c: i for i, c in enumerate(vocab)}

    def enc(s):
        return [index.get(c, unk) for c in s]

    return enc(train_text), enc(text[ntr:ntr + nv]), len(vocab) + 1


def round_half_away(x):
    # Rust's f64::round rounds half away from zero (Python's round is banker's rounding).
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


def stream_batch(ids, b):
    l = (len(ids) - 1) // b
    if l == 0:
        raise SystemExit(f"a stream of {len(ids)} tokens is too short for {b} parallel streams")
    x = torch.tensor([ids[r * l:r * l + l] for r in range(b)], dtype=torch.long)
    y = torch.tensor([ids[r * l + 1:r * l + l + 1] for r in range(b)], dtype=torch.long)
    return x, y  # [B, L]


class CharLM(nn.Module):
    def __init__(self, cell, vocab, emb, hidden):
        super().__init__()
        self.emb = nn.Embedding(vocab, emb)
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.rnn = rnn(emb, hidden, num_layers=1, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, x, state):
        h, state = self.rnn(self.emb(x), state)
        return self.head(h), state


def detach(state):
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


def zero_state(cell, b, hidden):
    z = torch.zeros(1, b, hidden)
    return (z, z.clone()) if cell == "lstm" else z


@torch.no_grad()
def evaluate(model, cell, ids, b, k, hidden):
    model.eval()
    x, y = stream_batch(ids, min(b, max(len(ids) - 1, 1)))
    state = zero_state(cell, x.shape[0], hidden)
    total, count = 0.0, 0
    for s in range(0, x.shape[1], k):
        e = min(s + k, x.shape[1])
        logits, state = model(x[:, s:e], state)
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y[:, s:e].reshape(-1),
                                 reduction="sum").item()
        count += y[:, s:e].numel()
    model.train()
    return total / count


def run(cell, args, train_ids, val_ids, vocab):
    torch.manual_seed(args.seed)
    model = CharLM(cell, vocab, args.emb, args.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8)
    x, y = stream_batch(train_ids, args.batch)
    steps_total = x.shape[1]
    step = 0
    t0 = time.time()
    for epoch in range(1, args.epochs + 1):
        state = zero_state(cell, args.batch, args.hidden)
        losses = []
        for s in range(0, steps_total, args.k1):
            if args.max_steps and step >= args.max_steps:
                break
            e = min(s + args.k1, steps_total)
            logits, state = model(x[:, s:e], state)
            loss = F.cross_entropy(logits.reshape(-1, vocab), y[:, s:e].reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if args.clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            opt.step()
            state = detach(state)
            losses.append(loss.item())
            step += 1
            if args.progress and step % args.progress == 0:
                print(f"# {cell} epoch {epoch} step {step} loss {loss.item():.4f} "
                      f"{time.time() - t0:.1f}s", file=sys.stderr, flush=True)
        val = evaluate(model, cell, val_ids, args.batch, args.k1, args.hidden)
        line = {
            "lib": f"torch-{torch.__version__}",
            "cell": cell,
            "epoch": epoch,
            "step": step,
            "train_loss": sum(losses) / max(len(losses), 1),
            "val_loss": val,
            "val_bpc": val / math.log(2),
            "wall_s": round(time.time() - t0, 2),
        }
        print(json.dumps(line), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data/tinyshakespeare/input.txt")
    p.add_argument("--cells", nargs="+", default=["lstm", "gru"], choices=["lstm", "gru"])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: no limit)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--k1", type=int, default=100)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--emb", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--progress", type=int, default=0, help="print a progress line to stderr every N steps")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    train_ids, val_ids, vocab = load(args.data, args.val_fraction, 0.0)
    print(f"# {len(train_ids)} train / {len(val_ids)} val characters, vocab {vocab}, "
          f"{(len(train_ids) - 1) // args.batch} steps per stream, "
          f"{math.ceil(((len(train_ids) - 1) // args.batch) / args.k1)} windows per epoch",
          file=sys.stderr, flush=True)
    for cell in args.cells:
        run(cell, args, train_ids, val_ids, vocab)


if __name__ == "__main__":
    main()
