"""The sampling cost of a Bayesian embedding at a fixed batch, as the vocabulary grows.

``BayesEmbedding`` draws only the rows a batch looks up (``unique`` indices, one draw of those rows, indices
remapped: exact for mean-field posteriors), so its sampled forward should cost the same at 1k and 500k rows. For
comparison, the same lookup after drawing the whole table (what the Radial posterior, or a naive layer, does)
grows with the vocabulary. The KL, which covers the whole table whatever the batch, is measured apart: it is
``O(vocabulary)`` by definition (once per step, not per lookup).

Everything runs in one process, interleaved vocabulary by vocabulary; times are medians of ``--reps`` calls
under ``torch.no_grad()`` (the backward's dense gradient of the table is ``O(vocabulary)`` for the
deterministic ``nn.Embedding`` too, unless ``sparse=True``).

    python benchmarks/embedding_rows.py     # batch 32 x 35 tokens, dim 64, vocabularies 5k .. 500k (~30 s)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import report_ratio  # noqa: E402


def median_ms(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=35)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--vocabs", type=int, nargs="+", default=[5_000, 50_000, 500_000])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from autobayes import BayesConfig, BayesEmbedding

    print(f"BayesEmbedding (gaussian, sample) at batch {args.batch} x {args.steps} tokens, dim {args.dim}, "
          f"{torch.get_num_threads()} thread(s), median of {args.reps} calls, torch {torch.__version__}")
    print(f"  {'vocabulary':>10s} {'rows drawn':>11s} {'forward (rows)':>15s} {'whole-table draw':>17s} {'KL (closed)':>12s}")
    rows_ms, full_ms = {}, {}
    for vocab in args.vocabs:
        torch.manual_seed(0)
        emb = BayesEmbedding(vocab, args.dim, config=BayesConfig(posterior="gaussian", kl="closed"))
        tokens = torch.randint(0, min(args.vocabs), (args.batch, args.steps))  # the same batch at every vocabulary
        wp = emb.weight_posterior
        with torch.no_grad():
            rows_ms[vocab] = median_ms(lambda: emb(tokens), args.reps)
            full_ms[vocab] = median_ms(lambda: F.embedding(tokens, wp.sample()), max(3, args.reps // 4))
            kl_ms = median_ms(emb.kl, max(3, args.reps // 4))
        print(f"  {vocab:>10,d} {len(tokens.unique()):>11,d} {rows_ms[vocab]:>12.2f} ms {full_ms[vocab]:>14.2f} ms "
              f"{kl_ms:>9.2f} ms", flush=True)
    small, large = args.vocabs[0], args.vocabs[-1]
    print("\nRatios (fixed batch):")
    report_ratio(f"forward, vocabulary {large:,} / {small:,} (rows drawn)", rows_ms[large], rows_ms[small], 1.5)
    report_ratio(f"whole-table draw, vocabulary {large:,} / {small:,} (for comparison)", full_ms[large],
                 full_ms[small], float("inf"))
    report_ratio(f"whole-table draw / rows drawn at vocabulary {large:,}", full_ms[large], rows_ms[large], 1.0,
                 higher_is_better=True)


if __name__ == "__main__":
    main()
