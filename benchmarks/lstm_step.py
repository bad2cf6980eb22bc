"""Training-step time of a Bayesian LSTM language model against the deterministic one, measured side by side.

The model: ``nn.Embedding -> nn.LSTM -> nn.Linear`` (the embedding stays deterministic: embeddings are opt-in),
bayesified with the Gaussian posterior, ``forward="sample"`` (one weight draw per forward, shared by every time
step), ``kl="repar"`` at ``n_mc`` 1 and 1000, and ``kl="closed"``; once with the LSTM and the head Bayesian (the
default conversion), once with only the LSTM (``include=["lstm"]``). One step = forward, ELBO (cross-entropy + KL /
N), backward, SGD step, on the same batch.

The configurations run in one process, interleaved step by step (deterministic, then each Bayesian one, then
again), so that a shared machine's load changes slow them alike; each reports the median of ``--reps`` steps
after two warm-up steps. Target (issue 16): the Bayesian step within 1.5x of the deterministic one at n_mc=1000.

    python benchmarks/lstm_step.py                    # batch 32, 35 steps, hidden 256 on the CPU (~2 min on a shared CPU)
    python benchmarks/lstm_step.py --device cuda      # the cuDNN path
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import cross_entropy_step, report_ratio  # noqa: E402

NUM_DATA = 100_000  # the N of the ELBO


class LanguageModel(nn.Module):
    def __init__(self, vocab: int, dim: int, hidden: int, layers: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.lstm = nn.LSTM(dim, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, tokens):
        return self.head(self.lstm(self.embed(tokens))[0])


def make_step(model, bayesian: bool, tokens, device):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x, y = tokens[:, :-1], tokens[:, 1:]

    def forward():
        out = model(x)
        return (out.output, out.kl) if bayesian else (out, None)

    return cross_entropy_step(opt, forward, y, NUM_DATA, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=35, help="sequence length")
    parser.add_argument("--vocab", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1: steadier on a shared machine)")
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import autobayes

    torch.manual_seed(0)
    base = LanguageModel(args.vocab, args.dim, args.hidden, args.layers)
    tokens = torch.randint(0, args.vocab, (args.batch, args.steps + 1), device=args.device)
    configs = {"deterministic": (base.to(args.device), False)}
    for scope, include in (("", None), ("lstm only: ", ["lstm"])):
        for kl, n_mc in (("repar", 1), ("repar", 1000), ("closed", 1)):
            bnn = autobayes.bayesify(base, posterior="gaussian", forward="sample", kl=kl, n_mc=n_mc, include=include)
            configs[f"{scope}gaussian sample kl={kl} n_mc={n_mc}"] = (bnn.to(args.device).train(), True)
    steps = {name: make_step(model, bayes, tokens, args.device) for name, (model, bayes) in configs.items()}
    times = {name: [] for name in steps}
    for rep in range(args.reps + 2):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            if rep >= 2:  # two warm-up rounds
                times[name].append(time.perf_counter() - t0)

    n_lstm = sum(p.numel() for p in base.lstm.parameters())
    print(f"LSTM LM training step: batch {args.batch} x {args.steps} steps, vocab {args.vocab}, dim {args.dim}, "
          f"hidden {args.hidden}, {args.layers} layer(s) ({n_lstm:,} LSTM weights), device={args.device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), median of {args.reps} interleaved steps")
    med = {name: statistics.median(t) for name, t in times.items()}
    for name, t in med.items():
        print(f"  {name:50s} {t * 1000:9.1f} ms")
    det = med["deterministic"]
    for scope, what in (("", "LSTM and head Bayesian"), ("lstm only: ", "only the LSTM Bayesian")):
        print(f"\nRatios, {what}:")
        report_ratio("gaussian sample repar n_mc=1000 / deterministic", med[f"{scope}gaussian sample kl=repar n_mc=1000"],
                     det, 1.5)
        report_ratio("gaussian sample repar n_mc=1 / deterministic", med[f"{scope}gaussian sample kl=repar n_mc=1"],
                     det, 1.5)
        report_ratio("gaussian sample closed / deterministic", med[f"{scope}gaussian sample kl=closed n_mc=1"], det, 1.5)
        report_ratio("gaussian sample repar: n_mc=1000 / n_mc=1", med[f"{scope}gaussian sample kl=repar n_mc=1000"],
                     med[f"{scope}gaussian sample kl=repar n_mc=1"], 1.2)


if __name__ == "__main__":
    main()
