"""Training-step cost of bayesify(resnet18) against the deterministic resnet18 and IntelLabs' bayesian-torch.

One step = forward, ELBO (cross-entropy + KL / N), backward, SGD step, on the same batch. Configurations:

* ``deterministic``      -- torchvision resnet18 (weights=None);
* ``ours <posterior> <forward> kl=<kl> n_mc=<M>`` -- ``autobayes.bayesify(resnet18, ...)``, Gaussian and Radial,
  forward modes ``local`` and ``sample``, ``kl=repar`` with n_mc in {1, 100, 1000}, and ``kl=closed``;
* ``bayesian-torch``      -- ``dnn_to_bnn(resnet18, type="Reparameterization")`` (one weight draw per forward,
  closed-form KL), when the optional benchmark dependency is installed: ``pip install -e .[bench]``.

Each configuration runs in a fresh subprocess (time: the median of ``--reps`` steps after one warm-up; memory:
peak resident memory above the level once the model exists, or CUDA's peak allocation), then the ratios that
issue 3 targets are printed.

    python benchmarks/train_step.py                       # batch 32 at 128x128 on the CPU (~15 min)
    python benchmarks/train_step.py --batch 32 --size 224 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import cross_entropy_step, peak_rss_mb, report_ratio, run_worker  # noqa: E402

NUM_DATA = 50_000  # the N of the ELBO (a CIFAR-sized training set)


def build(kind: str, posterior: str, forward: str, kl: str, n_mc: int, arch: str = "resnet18"):
    import torchvision

    model = getattr(torchvision.models, arch)(weights=None, num_classes=10)
    if kind == "deterministic":
        return model, lambda out: (out, None)
    if kind == "bayesian-torch":
        from bayesian_torch.models.dnn_to_bnn import dnn_to_bnn, get_kl_loss

        dnn_to_bnn(model, {"prior_mu": 0.0, "prior_sigma": 1.0, "posterior_mu_init": 0.0, "posterior_rho_init": -3.0,
                           "type": "Reparameterization", "moped_enable": False})
        return model, lambda out: (out, get_kl_loss(model))
    import autobayes

    bnn = autobayes.bayesify(model, posterior=posterior, forward=forward, kl=kl, n_mc=n_mc)
    return bnn, lambda out: (out.output, out.kl)


def worker(kind, posterior, forward, kl, n_mc, batch, size, device, reps, arch="resnet18", backend="eager") -> dict:
    """One configuration's median step time and peak memory; ``backend`` other than ``"eager"`` compiles the
    model with ``torch.compile(backend=backend)`` (two warm-up steps: compilation, then one more)."""
    torch.manual_seed(0)
    model, split = build(kind, posterior, forward, kl, int(n_mc), arch)
    model = model.to(device).train()
    net = model if backend == "eager" else torch.compile(model, backend=backend)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(int(batch), 3, int(size), int(size), device=device)
    y = torch.randint(0, 10, (int(batch),), device=device)

    step = cross_entropy_step(opt, lambda: split(net(x)), y, NUM_DATA, device)

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    base_rss = peak_rss_mb()
    t0 = time.perf_counter()
    step()  # warm-up (also the first allocation of gradients and optimizer state)
    if backend != "eager":
        step()
    warmup = time.perf_counter() - t0
    times = []
    for _ in range(int(reps)):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if device == "cuda" else peak_rss_mb() - base_rss
    return {"time": statistics.median(times), "peak_mb": peak, "warmup": warmup}


def configs(full: bool):
    yield ("deterministic", "-", "-", "-", 0)
    for posterior in ("gaussian", "radial"):
        for forward in ("local", "sample"):
            for n_mc in (1, 100, 1000):
                if posterior == "radial" and n_mc == 1000 and not full:
                    continue  # exact radial statistics draw M full noise tensors: ~a minute per step on 2 cores
                yield ("ours", posterior, forward, "repar", n_mc)
            yield ("ours", posterior, forward, "closed", 1)
    yield ("bayesian-torch", "gaussian", "sample", "closed", 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--arch", default="resnet18", help="a torchvision classification model name")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--full", action="store_true", help="include Radial repar at n_mc=1000 (slow on a CPU)")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.batch, args.size, args.device, args.reps, args.arch)))
        return

    print(f"Training step of {args.arch}, batch {args.batch} at {args.size}x{args.size}, device={args.device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.reps} steps")
    results = {}
    for cfg in configs(args.full):
        res = run_worker(__file__, [*cfg, "--batch", args.batch, "--size", args.size, "--device", args.device,
                                    "--reps", args.reps, "--arch", args.arch], timeout=1800)
        results[cfg] = res
        name = cfg[0] if cfg[0] != "ours" else f"ours {cfg[1]} {cfg[2]} kl={cfg[3]} n_mc={cfg[4]}"
        print(f"  {name:48s} " + (f"{res['time'] * 1000:9.1f} ms   peak +{res['peak_mb']:8.1f} MB" if "time" in res else res["skipped"]), flush=True)

    def t(*cfg):
        return results.get(cfg, {}).get("time")

    det = t("deterministic", "-", "-", "-", 0)
    print("\nRatios (targets from issue 3, CPU):")
    for posterior in ("gaussian", "radial"):
        for forward in ("local", "sample"):
            report_ratio(f"{posterior} {forward} repar: step(n_mc=1000) / step(n_mc=1)",
                         t("ours", posterior, forward, "repar", 1000), t("ours", posterior, forward, "repar", 1),
                         1.2 if posterior == "gaussian" else float("inf"))
    report_ratio("ours gaussian sample kl=closed / bayesian-torch Reparameterization",
                 t("ours", "gaussian", "sample", "closed", 1), t("bayesian-torch", "gaussian", "sample", "closed", 1), 1.05)
    report_ratio("ours gaussian local kl=closed / deterministic", t("ours", "gaussian", "local", "closed", 1), det, 2.5)
    report_ratio("ours gaussian sample kl=closed / deterministic", t("ours", "gaussian", "sample", "closed", 1), det, float("inf"))
    report_ratio("bayesian-torch / deterministic", t("bayesian-torch", "gaussian", "sample", "closed", 1), det, float("inf"))


if __name__ == "__main__":
    main()
