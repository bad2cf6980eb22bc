"""Training time against the number of Monte Carlo samples of the KL: n_mc=1000 vs n_mc=1 on digits.

The quick start's setting (digits, ``digits_cnn``, batch 64) with the Gaussian posterior and the ``repar`` KL
estimator: the estimator draws the per-weight statistics of M noise samples exactly in law with two random numbers
per weight, so a training step should cost the same whatever M is. Runs alternate between the two settings
(``--repeats`` times each) so that a busy machine slows both alike; the ratio is of the median training time per
epoch (validation excluded).

    python benchmarks/train_digits_nmc.py                 # Gaussian, repar: ratio ~1.0, target <= 1.2
    python benchmarks/train_digits_nmc.py --posterior radial   # the Radial draws M samples: grows with M
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from autobayes.training import train


def epoch_times(n_mc: int, args: argparse.Namespace) -> tuple:
    result = train(
        "digits_cnn", "digits", epochs=args.epochs, batch_size=64, lr=3e-3, seed=args.seed, n_test=args.n_test,
        progress=False, posterior=args.posterior, kl=args.kl, n_mc=n_mc, init_scale=args.init_scale,
    )
    times = [row["train_epoch_time"] for row in result.history[1:]]  # epoch 1 includes one-off warm-up
    return times, result.final["val_acc"]


def kl_time_ms(n_mc: int, args: argparse.Namespace, calls: int = 100) -> float:
    """Time of one evaluation of the model's KL (with its backward), the only part of a step that depends on M."""
    import autobayes
    from autobayes.models import build_model

    bnn = autobayes.bayesify(build_model("digits_cnn", num_classes=10, in_channels=1, image_size=8),
                             posterior=args.posterior, kl=args.kl, n_mc=n_mc, init_scale=args.init_scale)
    layers = [m for m in bnn.modules() if isinstance(m, autobayes.BayesLayer)]
    for _ in range(5):
        sum(layer.kl() for layer in layers).backward()
    start = time.perf_counter()
    for _ in range(calls):
        sum(layer.kl() for layer in layers).backward()
    return (time.perf_counter() - start) / calls * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posterior", default="gaussian")
    parser.add_argument("--kl", default="repar")
    parser.add_argument("--n-mc", type=int, nargs=2, default=(1, 1000), metavar=("LOW", "HIGH"))
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run (the first is not timed)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per setting, alternating")
    parser.add_argument("--init-scale", type=float, default=1e-2, help="initial posterior scale")
    parser.add_argument("--n-test", type=int, default=1, help="posterior samples per validation example")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--limit", type=float, default=1.2, help="the ratio this benchmark must stay under")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    low, high = args.n_mc
    times = {low: [], high: []}
    accs = {low: [], high: []}
    for _ in range(args.repeats):
        for n_mc in (low, high):
            t, acc = epoch_times(n_mc, args)
            times[n_mc].extend(t)
            accs[n_mc].append(acc)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med[high] / med[low]
    print(f"digits, digits_cnn, posterior={args.posterior}, kl={args.kl}, batch 64, {torch.get_num_threads()} threads, "
          f"{args.repeats} alternating runs x {args.epochs - 1} timed epochs")
    print(f"{'n_mc':>6} {'median s/epoch':>15} {'min':>8} {'max':>8} {'val acc':>8}")
    for k in (low, high):
        print(f"{k:>6} {med[k]:>15.3f} {min(times[k]):>8.3f} {max(times[k]):>8.3f} {statistics.mean(accs[k]):>8.3f}")
    kl_ms = {k: kl_time_ms(k, args) for k in (low, high)}
    steps = math.ceil(1437 / 64)
    print(f"KL + its backward per step: {kl_ms[low]:.2f} ms (n_mc={low}), {kl_ms[high]:.2f} ms (n_mc={high}); "
          f"a step takes {med[low] / steps * 1e3:.1f} ms at n_mc={low}")
    verdict = "OK" if ratio <= args.limit else "ABOVE LIMIT"
    print(f"time(n_mc={high}) / time(n_mc={low}) = {ratio:.3f}  (limit {args.limit}: {verdict})")
    return 0 if ratio <= args.limit else 1


if __name__ == "__main__":
    raise SystemExit(main())
