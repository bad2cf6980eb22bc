"""How the KL estimators scale with the number of Monte Carlo samples M, on ResNet-18-sized weights.

For every weight tensor of torchvision's resnet18 (conv and linear weights, the fc bias: 11.7M numbers) it times
one forward + backward of the layer-summed KL, and records the peak memory it adds, for

* ``repar``  -- ours (Gaussian: exact (a, b) statistics, O(1) in M; Radial: exact chunked draws),
* ``direct`` -- plain Monte Carlo with the M weight samples in the autograd graph (until a memory cap),
* ``loop``   -- a re-implementation of the paper repository's estimator: M full noise tensors drawn one at a
  time in a Python loop, accumulating the same statistics (Normal prior only).

With ``--prior`` another prior family (e.g. ``scale_mixture``, Blundell et al.'s two-component mixture with its
defaults pi = 1/2, sigma1 = 1, sigma2 = e^-6): ``repar`` is then the generic surrogate estimator (value and
derivatives accumulated chunk by chunk without a graph), whose time grows with M but whose memory does not, and
the ratios printed are those of issue 8: repar peak memory flat from M=1 to the largest M, direct's growing with
M, and repar's time against direct's at the largest M direct fits.

Each measurement runs in a fresh subprocess, so the peak resident memory it reports (``ru_maxrss`` above the
process's level once the weights exist) belongs to that estimator alone. Then it prints the ratios the core
issue targets, measured side by side in this one run.

    python benchmarks/kl_scaling.py            # full table (~20-30 min on a 2-core CPU; radial M=10^4 dominates)
    python benchmarks/kl_scaling.py --quick    # M up to 1000, a smaller time budget
    python benchmarks/kl_scaling.py --device cuda --max-m 1000000
    python benchmarks/kl_scaling.py --prior scale_mixture --posteriors gaussian   # issue 8, a non-Normal prior
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import peak_rss_mb, report_ratio, run_worker  # noqa: E402


def resnet18_shapes():
    from torchvision.models import resnet18

    model = resnet18()
    shapes = [tuple(m.weight.shape) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    return shapes + [tuple(model.fc.bias.shape)]


def loop_kl(posterior, prior, mu, scale, n_mc):
    """The paper repository's approach: draw M full noise tensors one at a time and accumulate the statistics
    (no graph), then the same closed expression in (mu, sigma, a, b)."""
    from autobayes.kl import normal_cross_entropy

    a = torch.zeros_like(mu)
    b = torch.zeros_like(mu)
    radial = posterior.name == "radial"
    with torch.no_grad():
        sampler = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
        for _ in range(n_mc):
            xi = sampler.sample()
            if radial:
                xi = xi / torch.norm(xi) * torch.randn(()).item()
            a += xi / n_mc
            b += xi**2 / n_mc
    return normal_cross_entropy(mu, scale, prior, a, b) - posterior.entropy(scale)


def worker(method: str, posterior_name: str, n_mc: int, device: str, reps: int, prior_name: str = "normal") -> dict:
    from autobayes.kl import direct_kl, repar_kl
    from autobayes.posteriors import POSTERIORS
    from autobayes.priors import PRIORS

    torch.manual_seed(0)
    posterior = POSTERIORS.get(posterior_name)()
    prior = PRIORS.get(prior_name).from_config(torch.tensor(0.0), 1.0).to(device)  # each family's defaults
    params = []
    for shape in resnet18_shapes():
        mu = (0.05 * torch.randn(shape, device=device)).requires_grad_(True)
        lv = torch.full(shape, -6.0, device=device).requires_grad_(True)
        params.append((mu, lv))
    estimator = {"repar": repar_kl, "direct": direct_kl, "loop": loop_kl}[method]

    def step():
        total = sum(estimator(posterior, prior, mu, torch.exp(0.5 * lv), n_mc) for mu, lv in params)
        total.backward()
        if device == "cuda":
            torch.cuda.synchronize()
        return total.item()

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    base_rss = peak_rss_mb()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        value = step()
        times.append(time.perf_counter() - t0)
    if device == "cuda":
        peak_mb = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak_mb = peak_rss_mb() - base_rss
    return {"time": min(times), "peak_mb": peak_mb, "kl": value}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", nargs=3, metavar=("METHOD", "POSTERIOR", "M"), help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="M up to 1000 and a 300 s budget per measurement")
    parser.add_argument("--max-m", type=int, default=10000)
    parser.add_argument("--memory-cap-gb", type=float, default=6.0, help="skip direct when it would need more")
    parser.add_argument("--time-budget", type=float, default=900.0, help="skip a measurement predicted to take longer (s)")
    parser.add_argument("--prior", default="normal", help="prior family (loc 0, scale 1, its default options), "
                        "e.g. scale_mixture, laplace, student_t")
    parser.add_argument("--posteriors", nargs="+", default=["gaussian", "radial"], metavar="NAME",
                        help="posterior families to measure")
    args = parser.parse_args()
    if args.worker:
        method, posterior, n_mc = args.worker
        print(json.dumps(worker(method, posterior, int(n_mc), args.device, args.reps, args.prior)))
        return

    from autobayes.priors import PRIORS

    PRIORS.get(args.prior)  # a typo fails here, naming the registered priors
    if args.quick:
        args.max_m, args.time_budget = min(args.max_m, 1000), min(args.time_budget, 300.0)
    ms = [m for m in (1, 10, 100, 1000, 10000, 100000, 1000000) if m <= args.max_m]
    numel = sum(math.prod(s) for s in resnet18_shapes())
    normal = args.prior == "normal"
    print(f"KL forward+backward on resnet18-sized weights ({numel / 1e6:.1f}M numbers), device={args.device}, "
          f"prior={args.prior}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    results = {}
    for posterior in args.posteriors:
        for method in ("repar", "direct", "loop") if normal else ("repar", "direct"):
            last = None
            for m in ms:
                key = (posterior, method, m)
                if method == "direct" and 5 * m * numel * 4 > args.memory_cap_gb * 2**30:
                    results[key] = {"skipped": f"> {args.memory_cap_gb:g} GB cap"}
                    continue
                predicted = None if last is None else last[1]["time"] * m / last[0]
                if method != "repar" or posterior != "gaussian" or not normal:
                    if predicted is not None and predicted > args.time_budget:
                        results[key] = {"skipped": f"est. {predicted:.0f} s", "est_time": predicted}
                        continue
                reps = 1 if (predicted or 0) > 20 else args.reps
                res = run_worker(__file__, [method, posterior, m, "--device", args.device, "--reps", reps, "--prior", args.prior],
                                 timeout=max(60.0, 3 * (predicted or 60) * reps))
                results[key] = res
                if "time" in res:
                    last = (m, res)
                print(f"  {posterior:8s} {method:6s} M={m:<7d} " + (
                    f"time {res['time']:8.3f} s  peak +{res['peak_mb']:8.1f} MB  kl {res['kl']:.4g}" if "time" in res else res["skipped"]
                ), flush=True)

    def t(p, meth, m):
        r = results.get((p, meth, m), {})
        return r.get("time", r.get("est_time"))

    def mem(p, meth, m):
        return results.get((p, meth, m), {}).get("peak_mb")

    hi = ms[-1]
    if not normal:
        _non_normal_ratios(args, results, t, mem, ms)
        return

    print("\nRatios (targets from the core issue, CPU):")

    report_ratio(f"gaussian repar time(M={hi})/time(M=10)", t("gaussian", "repar", hi), t("gaussian", "repar", 10), 1.2)
    report_ratio("gaussian repar time(M=1000)/time(M=1)", t("gaussian", "repar", 1000), t("gaussian", "repar", 1), 2.0)
    for p in ("gaussian", "radial"):
        m1, mh = mem(p, "repar", 1), mem(p, "repar", hi)
        if m1 is not None and mh is not None:
            print(f"  {p + ' repar peak memory M=1 -> M=' + str(hi):58s} {m1:8.1f} -> {mh:.1f} MB "
                  f"({(mh - m1) / max(m1, 1e-9) * 100:+.1f}%; target <= +10%)")
    report_ratio("loop/repar time at M=1000, gaussian (x faster)", t("gaussian", "loop", 1000), t("gaussian", "repar", 1000), 100, True)
    report_ratio("loop/repar time at M=1000, radial (x faster)", t("radial", "loop", 1000), t("radial", "repar", 1000), 2, True)
    direct_ms = [m for m in ms if "time" in results.get(("gaussian", "direct", m), {})]
    if direct_ms:
        m = direct_ms[-1]
        print(f"  direct fits up to M={m} under the {args.memory_cap_gb:g} GB cap "
              f"(peak +{mem('gaussian', 'direct', m):.0f} MB vs repar +{mem('gaussian', 'repar', m):.0f} MB)")
    print("  (est. = extrapolated linearly from the largest M measured, where the run would exceed the time budget)")


def _non_normal_ratios(args, results, t, mem, ms) -> None:
    """Issue 8, for a non-Normal prior: repar memory flat in M, direct's growing, repar time vs direct's."""
    print(f"\nRatios (targets from issue 8, prior={args.prior}):")
    for p in args.posteriors:
        measured = [m for m in ms if "time" in results.get((p, "repar", m), {})]
        if measured:
            m1, mh, hi = mem(p, "repar", measured[0]), mem(p, "repar", measured[-1]), measured[-1]
            print(f"  {p + ' repar peak memory M=' + str(measured[0]) + ' -> M=' + str(hi):58s} {m1:8.1f} -> {mh:.1f} MB "
                  f"({(mh - m1) / max(m1, 1e-9) * 100:+.1f}%; target <= +10%)")
        direct_ms = [m for m in ms if "time" in results.get((p, "direct", m), {})]
        if direct_ms:
            lo, top = direct_ms[0], direct_ms[-1]
            print(f"  {p + ' direct peak memory M=' + str(lo) + ' -> M=' + str(top):58s} {mem(p, 'direct', lo):8.1f} -> "
                  f"{mem(p, 'direct', top):.1f} MB (x{mem(p, 'direct', top) / max(mem(p, 'direct', lo), 1e-9):.1f} for "
                  f"x{top // lo} samples; fits up to M={top} under the {args.memory_cap_gb:g} GB cap)")
            report_ratio(f"{p} repar/direct time at M={top} (largest M direct fits)",
                         t(p, "repar", top), t(p, "direct", top), 1.5)
        else:
            print(f"  {p} direct: no M fits under the {args.memory_cap_gb:g} GB cap")
    print("  (est. = extrapolated linearly from the largest M measured, where the run would exceed the time budget)")


if __name__ == "__main__":
    main()
