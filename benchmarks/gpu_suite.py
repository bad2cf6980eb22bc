"""The GPU benchmark suite of issue 7: one script, a few minutes on one GPU, four tables and the targets.

(a) KL scaling on ResNet-18-sized weights (11.7M numbers): forward + backward of the layer-summed KL for M from 1
    to 10^6 -- Gaussian ``repar`` (O(1) in M), Radial ``repar`` (exact chunked draws, O(M): stopped where the
    extrapolated time passes the budget), ``direct`` (M samples in the graph: until out of memory).
(b) Training step (forward, ELBO, backward, SGD step) of bayesify(resnet18 / resnet50 / densenet121) at batch 32,
    224x224: time and peak memory for n_mc in {1, 100, 1000}, in local-reparameterisation and weight-sampling mode,
    against the deterministic model (and IntelLabs' bayesian-torch, when installed).
(c) The paper's Figure 6 question: the largest n_mc that fits in memory, ``direct`` versus ``repar`` (M doubled
    until the device runs out of memory, one measurement per estimator).
(d) Eager versus ``torch.compile`` training-step time.

The workers of ``kl_scaling.py`` and ``train_step.py`` are reused. On CUDA each measurement runs in this one
process, with the caching allocator emptied, the peak counter reset and torch.compile's caches cleared between
measurements (a fresh process per measurement would spend seconds on start-up and CUDA initialisation each, which a
lent GPU's short lease cannot spare; ``--processes fresh`` restores it). On a CPU each runs in a fresh subprocess
(``_harness.run_worker``), so the peak resident memory belongs to it alone. Timing: ``torch.cuda.synchronize``
around each step, the median of ``--reps`` steps after warm-up (KL: the fastest); memory:
``torch.cuda.max_memory_allocated`` above the level once the model / weights exist (on a CPU: the peak resident
memory above it).

    python benchmarks/gpu_suite.py                          # on a GPU (cuda when available)
    python benchmarks/gpu_suite.py --sections b d           # some tables only
    python benchmarks/gpu_suite.py --device cpu --quick     # a smoke run on a CPU: small sizes (~4 min on 2 cores)

Paste the output into benchmarks/RESULTS.md with the card's name, the date and the command.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import sys
import time
import traceback

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kl_scaling  # noqa: E402
import train_step  # noqa: E402
from _harness import report_ratio, run_worker  # noqa: E402

HERE = os.path.abspath(__file__)


# ---------------------------------------------------------------------------------------------------------------
# workers (each runs in its own process)
# ---------------------------------------------------------------------------------------------------------------
def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


def kl_worker(method: str, posterior: str, n_mc: int, device: str, reps: int) -> dict:
    """kl_scaling's worker, with an out-of-memory error reported instead of raised."""
    try:
        return kl_scaling.worker(method, posterior, n_mc, device, reps)
    except (RuntimeError, MemoryError) as err:
        if _is_oom(err):
            return {"skipped": "out of memory"}
        raise


def fit_worker(method: str, posterior: str, max_m: int, device: str, cap_gb: float, budget: float) -> dict:
    """Double M from 1 while one KL forward + backward on resnet18-sized weights fits (and takes < budget s).

    On CUDA the limit is the device's memory (an OutOfMemoryError); on a CPU, a cap on the predicted size of the
    direct estimator's graph (5 float32 copies of the M weight samples), so the machine never swaps.
    """
    from autobayes.kl import direct_kl, repar_kl
    from autobayes.posteriors import POSTERIORS
    from autobayes.priors import PRIORS

    torch.manual_seed(0)
    post = POSTERIORS.get(posterior)()
    prior = PRIORS.get("normal").from_config(torch.tensor(0.0), 1.0).to(device)
    shapes = kl_scaling.resnet18_shapes()
    numel = sum(math.prod(s) for s in shapes)
    params = [((0.05 * torch.randn(s, device=device)).requires_grad_(True),
               torch.full(s, -6.0, device=device).requires_grad_(True)) for s in shapes]
    estimator = {"repar": repar_kl, "direct": direct_kl}[method]
    largest, peak, stop, m = None, None, None, 1
    while m <= max_m:
        if device != "cuda" and method == "direct" and 5 * m * numel * 4 > cap_gb * 2**30:
            stop = f"M={m} over the {cap_gb:g} GB cap"
            break
        try:
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            t0 = time.perf_counter()
            total = sum(estimator(post, prior, mu, torch.exp(0.5 * lv), m) for mu, lv in params)
            total.backward()
            if device == "cuda":
                torch.cuda.synchronize()
                peak = (torch.cuda.max_memory_allocated() - base) / 2**20
            elapsed = time.perf_counter() - t0
            del total
        except (RuntimeError, MemoryError) as err:
            if not _is_oom(err):
                raise
            stop = f"M={m} out of memory"
            break
        finally:
            for mu, lv in params:
                mu.grad = lv.grad = None
            if device == "cuda":
                torch.cuda.empty_cache()
        largest = m
        if elapsed * 2 > budget:
            stop = f"M={2 * m} over the {budget:g} s time budget"
            break
        m *= 2
    return {"largest": largest, "peak_mb": peak, "stop": stop or f"reached the largest M tried ({max_m})"}


def compile_worker(kind, posterior, forward, kl, n_mc, batch, size, device, reps, arch, backend) -> dict:
    """One configuration of train_step's step, eager or compiled (``backend="eager"`` means not compiled)."""
    return train_step.worker(kind, posterior, forward, kl, n_mc, batch, size, device, reps, arch, backend)


def _release() -> None:
    gc.collect()
    torch.compiler.reset()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def measure(args, call, script: str, argv: list, timeout: float) -> dict:
    """One measurement: ``call()`` in this process (``args.in_process``), else ``script --worker argv`` in a
    fresh subprocess. Either way a failure comes back as ``{"skipped": reason}`` (in-process: its traceback on
    stderr), and an out-of-memory error as ``{"skipped": "out of memory"}``."""
    if not args.in_process:
        res = run_worker(script, argv, timeout)
        if "skipped" in res and "out of memory" in res["skipped"].lower():
            res = {"skipped": "out of memory"}
        return res
    _release()
    try:
        return call()
    except Exception as err:  # noqa: BLE001 -- one failed measurement must not end the suite
        if _is_oom(err):
            return {"skipped": "out of memory"}
        traceback.print_exc()
        return {"skipped": f"failed: {type(err).__name__}: {(str(err).splitlines() or ['?'])[0][:70]}"}
    finally:
        _release()


# ---------------------------------------------------------------------------------------------------------------
# the four tables
# ---------------------------------------------------------------------------------------------------------------
def section_a(args) -> dict:
    ms = [m for m in (1, 10, 100, 1000, 10_000, 100_000, 1_000_000) if m <= args.max_m]
    numel = sum(math.prod(s) for s in kl_scaling.resnet18_shapes())
    print(f"\n(a) KL forward + backward on resnet18-sized weights ({numel / 1e6:.1f}M numbers), Normal prior")
    results = {}
    for posterior, method in (("gaussian", "repar"), ("radial", "repar"), ("gaussian", "direct")):
        last = None
        for m in ms:
            predicted = None if last is None else last[1]["time"] * m / last[0]
            if args.device != "cuda" and method == "direct" and 5 * m * numel * 4 > args.cpu_cap_gb * 2**30:
                res = {"skipped": f"skipped: over the {args.cpu_cap_gb:g} GB CPU memory cap"}
            elif (posterior, method) != ("gaussian", "repar") and predicted is not None and predicted > args.kl_budget:
                res = {"skipped": f"skipped: est. {predicted:.0f} s > the {args.kl_budget:g} s budget"}
            else:
                reps = 1 if (predicted or 0) > 2 else args.reps
                res = measure(args, lambda: kl_worker(method, posterior, m, args.device, reps), HERE,
                              ["kl", method, posterior, m, "--device", args.device, "--reps", reps],
                              timeout=max(120.0, 3 * (predicted or 30) * reps))
            results[(posterior, method, m)] = res
            if "time" in res:
                last = (m, res)
            print(f"  {posterior:8s} {method:6s} M={m:<8d} " + (
                f"time {res['time'] * 1000:10.2f} ms   peak +{res['peak_mb']:9.1f} MB   kl {res['kl']:.5g}"
                if "time" in res else res["skipped"]), flush=True)
            if res.get("skipped") == "out of memory":
                break

    def t(p, meth, m):
        return results.get((p, meth, m), {}).get("time")

    measured = [m for m in ms if t("gaussian", "repar", m) is not None]
    top = measured[-1] if measured else ms[-1]
    report_ratio(f"gaussian repar time(M={top}) / time(M=1)", t("gaussian", "repar", top), t("gaussian", "repar", 1),
                 1.5)
    return results


def section_b(args) -> dict:
    print(f"\n(b) training step, batch {args.batch} at {args.size}x{args.size}, SGD, loss = CE + KL / "
          f"{train_step.NUM_DATA}; median of {args.reps} steps after one warm-up")
    configs = [("deterministic", "-", "-", "-", 0)]
    for forward in ("local", "sample"):
        for n_mc in args.n_mc:
            configs.append(("ours", "gaussian", forward, "repar", n_mc))
    if args.bayesian_torch:
        configs.append(("bayesian-torch", "gaussian", "sample", "closed", 1))
    results = {}
    for arch in args.archs:
        print(f"  {arch}")
        for cfg in configs:
            res = measure(args, lambda: train_step.worker(*cfg, args.batch, args.size, args.device, args.reps, arch),
                          train_step.__file__, [*cfg, "--batch", args.batch, "--size", args.size, "--device",
                                                args.device, "--reps", args.reps, "--arch", arch], timeout=900)
            results[(arch, *cfg)] = res
            name = cfg[0] if cfg[0] != "ours" else f"ours gaussian {cfg[2]:6s} repar n_mc={cfg[4]}"
            print(f"    {name:44s} " + (f"{res['time'] * 1000:9.1f} ms   peak +{res['peak_mb']:9.1f} MB"
                                         if "time" in res else res["skipped"]), flush=True)

    def t(arch, *cfg):
        return results.get((arch, *cfg), {}).get("time")

    hi, lo = max(args.n_mc), min(args.n_mc)
    print("  ratios (issue 7 targets are for resnet50 at batch 32, 224x224, on a GPU):")
    for arch in args.archs:
        det = t(arch, "deterministic", "-", "-", "-", 0)
        for forward in ("local", "sample"):
            report_ratio(f"{arch} {forward}: step(n_mc={hi}) / step(n_mc={lo})",
                         t(arch, "ours", "gaussian", forward, "repar", hi), t(arch, "ours", "gaussian", forward, "repar", lo), 1.2)
        report_ratio(f"{arch} sample n_mc={hi} / deterministic", t(arch, "ours", "gaussian", "sample", "repar", hi), det, 2.0)
        report_ratio(f"{arch} local n_mc={hi} / deterministic", t(arch, "ours", "gaussian", "local", "repar", hi), det, 3.0)
        if args.bayesian_torch:
            report_ratio(f"{arch} bayesian-torch Reparameterization / deterministic (reference: 2.9 on an H200)",
                         t(arch, "bayesian-torch", "gaussian", "sample", "closed", 1), det, float("inf"))
    return results


def section_c(args) -> dict:
    print(f"\n(c) largest n_mc whose KL forward + backward fits (resnet18-sized weights, Gaussian posterior; M doubled "
          f"from 1 up to {args.fit_max_m}, {args.fit_budget:g} s per step at most)")
    results = {}
    for method in ("direct", "repar"):
        res = measure(args, lambda: fit_worker(method, "gaussian", args.fit_max_m, args.device, args.cpu_cap_gb,
                                               args.fit_budget),
                      HERE, ["fit", method, "gaussian", args.fit_max_m, "--device", args.device, "--cpu-cap-gb",
                             args.cpu_cap_gb, "--fit-budget", args.fit_budget], timeout=900)
        results[method] = res
        if "largest" in res:
            peak = "" if res["peak_mb"] is None else f", peak +{res['peak_mb']:.0f} MB"
            print(f"  {method:6s} fits M={res['largest']}{peak}; stopped: {res['stop']}", flush=True)
        else:
            print(f"  {method:6s} {res['skipped']}", flush=True)
    d, r = results["direct"].get("largest"), results["repar"].get("largest")
    if d and r:
        print(f"  repar fits {r / d:.0f}x more Monte Carlo samples than direct")
    return results


def section_d(args) -> dict:
    print(f"\n(d) eager vs torch.compile (backend {args.compile_backend}), {args.compile_arch}, batch {args.batch} at "
          f"{args.size}x{args.size}; median of {args.reps} steps after two warm-ups (the first compiles)")
    hi = max(args.n_mc)
    configs = [("deterministic", "-", "-", "-", 0), ("ours", "gaussian", "local", "repar", hi),
               ("ours", "gaussian", "sample", "repar", hi)]
    results = {}
    for cfg in configs:
        row = {}
        for backend in ("eager", args.compile_backend):
            row[backend] = measure(
                args, lambda: compile_worker(*cfg, args.batch, args.size, args.device, args.reps, args.compile_arch,
                                             backend),
                HERE, ["compile", *cfg, backend, "--device", args.device, "--reps", args.reps, "--batch", args.batch,
                       "--size", args.size, "--arch", args.compile_arch], timeout=900)
        results[cfg] = row
        name = cfg[0] if cfg[0] != "ours" else f"ours gaussian {cfg[2]} n_mc={cfg[4]}"
        e, c = row["eager"], row[args.compile_backend]
        text = f"eager {e['time'] * 1000:9.1f} ms" if "time" in e else f"eager {e['skipped']}"
        if "time" in c:
            text += f"   compiled {c['time'] * 1000:9.1f} ms (compile + warm-up {c['warmup']:.0f} s)"
            if "time" in e:
                text += f"   speed-up x{e['time'] / c['time']:.2f}"
        else:
            text += f"   compiled {c['skipped']}"
        print(f"  {name:36s} {text}", flush=True)
    return results


# ---------------------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes for a CPU smoke run: resnet18 at batch 4, 32x32, n_mc {1, 1000}, M <= 1000")
    parser.add_argument("--sections", nargs="+", default=["a", "b", "c", "d"], choices=["a", "b", "c", "d"])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--max-m", type=int, default=1_000_000, help="(a) largest M")
    parser.add_argument("--kl-budget", type=float, default=30.0, help="(a) skip a KL run predicted to take longer (s)")
    parser.add_argument("--archs", nargs="+", default=["resnet18", "resnet50", "densenet121"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--n-mc", type=int, nargs="+", default=[1, 100, 1000])
    parser.add_argument("--fit-max-m", type=int, default=2**20, help="(c) stop doubling M here")
    parser.add_argument("--fit-budget", type=float, default=30.0, help="(c) stop when a step would take longer (s)")
    parser.add_argument("--cpu-cap-gb", type=float, default=4.0, help="direct on a CPU: memory cap instead of OOM")
    parser.add_argument("--compile-backend", default=None, help="(d) default: inductor on CUDA, aot_eager on a CPU")
    parser.add_argument("--compile-arch", default="resnet18")
    parser.add_argument("--no-bayesian-torch", dest="bayesian_torch", action="store_false")
    parser.add_argument("--processes", choices=["one", "fresh"], default=None,
                        help="run the measurements in this one process, or each in a fresh subprocess "
                             "(default: one on CUDA, fresh on a CPU, where peak memory is the process's)")
    args = parser.parse_args()
    args.in_process = (args.processes or ("one" if args.device == "cuda" else "fresh")) == "one"

    if args.worker:
        kind, rest = args.worker[0], args.worker[1:]
        if kind == "kl":
            out = kl_worker(rest[0], rest[1], int(rest[2]), args.device, args.reps)
        elif kind == "fit":
            out = fit_worker(rest[0], rest[1], int(rest[2]), args.device, args.cpu_cap_gb, args.fit_budget)
        else:
            out = compile_worker(*rest[:5], args.batch, args.size, args.device, args.reps, args.compile_arch, rest[5])
        print(json.dumps(out))
        return

    if args.quick:
        args.reps = min(args.reps, 3)
        args.max_m = min(args.max_m, 1000)
        args.kl_budget = min(args.kl_budget, 20.0)
        args.archs = ["resnet18"]
        args.batch, args.size = min(args.batch, 4), min(args.size, 32)
        args.n_mc = [1, 1000]
        args.fit_max_m = min(args.fit_max_m, 4096)
        args.fit_budget = min(args.fit_budget, 10.0)
        args.cpu_cap_gb = min(args.cpu_cap_gb, 2.0)
    if args.compile_backend is None:
        args.compile_backend = "inductor" if args.device == "cuda" else "aot_eager"
    if args.bayesian_torch:
        import importlib.util

        args.bayesian_torch = importlib.util.find_spec("bayesian_torch") is not None

    card = "CPU: " + (platform.processor() or platform.machine())
    if args.device == "cuda":
        card = torch.cuda.get_device_name(0)  # initialises CUDA in this process (~0.5 GB): the workers have the rest
    print(f"autobayes GPU suite -- {card}, {datetime.date.today().isoformat()}, torch {torch.__version__}, "
          f"CUDA {torch.version.cuda}, {torch.get_num_threads()} CPU threads")
    print(f"command: python {' '.join(sys.argv)}")
    start = time.perf_counter()
    for name in args.sections:
        {"a": section_a, "b": section_b, "c": section_c, "d": section_d}[name](args)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
