"""Samples per second of ``autobayes.predict`` against a plain loop of forward passes, on the same model.

The model is ``bayesify(digits_cnn)`` (untrained: throughput does not depend on the weights) on the digits
validation images. The plain loop runs one forward per sample and batch (``n_samples x batches`` forwards,
as the paper repository's evaluation does); ``predict`` batches several samples per forward when the model
draws its noise per example (local reparameterisation), within its memory budget.

    python benchmarks/predict_throughput.py [--n-samples 100] [--arch digits_cnn]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader

import autobayes


def plain_loop(bnn, loader, n_samples):
    probs = []
    with torch.no_grad(), autobayes.kl_disabled(bnn):
        for x, _ in loader:
            probs.append(torch.stack([torch.softmax(bnn(x).output, -1) for _ in range(n_samples)]))
    return torch.cat(probs, dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-samples", type=int, default=100)
    parser.add_argument("--arch", default="digits_cnn")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()

    _, val_set, info = autobayes.load_dataset("digits")
    loader = DataLoader(val_set, batch_size=args.batch_size)
    n = len(val_set) * args.n_samples
    print(f"{args.arch} on {len(val_set)} digits images, {args.n_samples} samples each, "
          f"{torch.get_num_threads()} threads")
    for posterior, forward in (("gaussian", "local"), ("radial", "sample")):
        torch.manual_seed(0)
        model = autobayes.build_model(args.arch, num_classes=info.num_classes, in_channels=info.in_channels,
                                      image_size=info.image_size)
        bnn = autobayes.bayesify(model, posterior=posterior, forward=forward).eval()
        plain_loop(bnn, [next(iter(loader))], 2)  # warm-up
        t0 = time.perf_counter()
        plain_loop(bnn, loader, args.n_samples)
        loop_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        autobayes.predict(bnn, loader, n_samples=args.n_samples, progress=False)
        predict_s = time.perf_counter() - t0
        print(f"  {posterior:8s} {forward:6s}  plain loop {n / loop_s:10.0f} samples/s   predict {n / predict_s:10.0f} "
              f"samples/s   predict / loop {loop_s / predict_s:5.2f}x")


if __name__ == "__main__":
    main()
