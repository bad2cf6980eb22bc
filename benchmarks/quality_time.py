"""Training time of quality.py's digits_cnn rows, measured alone (issue 23's budget: <= 2x one deterministic network).

``quality.py`` records each row's seconds per epoch as it goes, but its rows run minutes apart, and on a shared
2-core machine the load changes in between. This script times the rows that the budget compares within one
round, rounds interleaved: the deterministic network (``quality_methods.fit_plain``), the autobayes rows
(``autobayes.train``, the same loop a user runs), ``--rounds`` times, and prints the median ratio to the
deterministic network with the spread over the rounds. Run it with nothing else on the machine.

    python benchmarks/quality_time.py                 # 5 rounds of 6 epochs each (~3 min on 2 cores)
    python benchmarks/quality_time.py --rounds 9 --epochs 10
"""

from __future__ import annotations

import argparse
import statistics
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality_methods as qm  # noqa: E402

import autobayes  # noqa: E402

ROWS = {
    "autobayes default (rank1, K=4, n_mc=K)": {},
    "autobayes rank1 (K=4, repar n_mc=100)": {"n_mc": 100},
    "autobayes radial (closed KL, sample)": {"posterior": "radial"},
    "autobayes gaussian (closed KL, local)": {"posterior": "gaussian"},
}


def autobayes_epoch(data, epochs: int, **options) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = autobayes.train(qm.make_net(data, 0), (data.train, data.test, data.info), epochs=epochs, seed=0,
                                 progress=False, n_test=1, **options)
    return qm._epoch_time([row["train_epoch_time"] for row in result.history])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=6, help="epochs per timing (the first is left out)")
    args = parser.parse_args(argv)
    data = qm.load("digits_cnn")
    ratios = {name: [] for name in ROWS}
    dets = []
    for r in range(args.rounds):
        det = qm.fit_plain(qm.make_net(data, 0), data, args.epochs, 0)[2]
        dets.append(det)
        for name, options in ROWS.items():
            ratios[name].append(autobayes_epoch(data, args.epochs, **options) / det)
        print(f"round {r + 1}/{args.rounds}: deterministic {det:.3f} s/epoch; "
              + ", ".join(f"{n.split(' (')[0].replace('autobayes ', '')} {v[-1]:.2f}x" for n, v in ratios.items()),
              flush=True)
    print(f"\ndigits_cnn, {args.epochs} epochs a timing, {args.rounds} rounds, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s); deterministic network: median {statistics.median(dets):.3f} s/epoch")
    print("| row | train time / deterministic (median) | min - max over rounds |")
    print("|---|---:|---:|")
    print(f"| deep ensemble ({qm.ENSEMBLE}) | {qm.ENSEMBLE:.2f}x | (its members are deterministic networks) |")
    for name, values in ratios.items():
        print(f"| {name} | {statistics.median(values):.2f}x | {min(values):.2f} - {max(values):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
