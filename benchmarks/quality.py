"""Quality benchmark (issue 15): is the Bayesian model better than what a practitioner would pick instead?

Trains and evaluates, on the same splits and the same MLP, with several seeds each: the deterministic network,
MC dropout, a deep ensemble of 5, IntelLabs' bayesian-torch (``dnn_to_bnn``, its README settings) and autobayes
(its default configuration; Gaussian and Radial posteriors x ``local`` / ``sample`` forwards x ``n_mc`` in
{1, 100, 10^4} with the Monte Carlo KL ``repar``, the Radial's 10^4 only with ``--radial-1e4``; a deterministic
network converted with a prior centred on its weights and fine-tuned). Data, OOD sets and methods: see
``quality_methods.py``; the n_mc study: ``quality_nmc.py``. Writes one markdown table per data set into the
quality section of ``OUT/RESULTS.md`` (between the markers, the rest of the file kept) and one PNG per data set
into ``OUT/figures/``.

``digits_cnn`` (issue 23): the quick start's CNN on the same digits (8 and 9 held out; noise, rotated and
inverted digits as further OOD sets), a rotation ladder of the test digits (0-180 degrees in 15-degree steps:
accuracy, NLL, ECE against the angle; ``quality_shift.py``), two more peers -- IVON (``ivon-opt``) and last-layer
Laplace (``laplace-torch``) -- and the rank-1 posterior (n_mc 4 and 100), with issue 23's targets and the rank-1
KL's gradient noise against n_mc; written into a section of its own (its own markers).

    python benchmarks/quality.py                    # the full run (3 seeds, 3 data sets)
    python benchmarks/quality.py --radial-1e4       # plus the Radial n_mc=10^4 row (~3x the time on a CPU)
    python benchmarks/quality.py --quick            # < 10 min on a 2-core CPU: fewer epochs, 2 seeds, a
                                                    # smaller n_mc study
    python benchmarks/quality.py --quick --datasets breast_cancer --out /tmp/q   # the test's run
    python benchmarks/quality.py --datasets digits_cnn --first-seed 1 --seeds 1 --rows-out r1.json  # one seed
    python benchmarks/quality.py --merge r0.json r1.json r2.json   # ... run in parallel processes, then pooled
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality_methods as qm  # noqa: E402
import quality_nmc  # noqa: E402
import quality_shift  # noqa: E402

EPOCHS = {"digits": 40, "digits_cnn": 40, "breast_cancer": 40, "diabetes": 60}
QUICK_EPOCHS = {"digits": 12, "digits_cnn": 12, "breast_cancer": 12, "diabetes": 20}
DATASETS = ["digits", "digits_cnn", "breast_cancer", "diabetes"]
RANK1_NAME = "autobayes rank1 (K=4, repar n_mc=100)"
#: Rank-1 with every component starting at the converted network (before factor_init_std; the pretrained setting).
RANK1_AT_ONE = "autobayes rank1 (K=4, factor_init_std=0)"
_TEST_SAMPLES = qm.N_TEST_SAMPLES
QUICK_CNN_TEST_SAMPLES = 30
BEGIN, END = "<!-- quality.py: begin -->", "<!-- quality.py: end -->"
#: The CNN's section (issue 23) has markers of its own, so that running one kind of data set keeps the other's.
CNN_BEGIN, CNN_END = "<!-- quality.py digits_cnn: begin -->", "<!-- quality.py digits_cnn: end -->"
DEFAULT_NAME = "autobayes default (rank1, K=4, n_mc=K)"
#: The default of autobayes 0.2 and before, kept as a row of its own.
RADIAL_NAME = "autobayes radial (closed KL, sample; default before 0.3)"

CLS_COLUMNS = [("acc", "accuracy"), ("nll", "NLL"), ("brier", "Brier"), ("ece", "ECE"),
               ("auroc_h", "OOD AUROC entropy"), ("auroc_mi", "OOD AUROC MI"), ("acc80", "acc. 80% most confident"),
               ("train_s", "train s/epoch"), ("test_ms", "test ms/example")]
REG_COLUMNS = [("nll", "NLL"), ("rmse", "RMSE"), ("cov90", "90% coverage"), ("auroc_h", "OOD AUROC total std"),
               ("auroc_mi", "OOD AUROC epistemic std"), ("rmse80", "RMSE 80% most confident"),
               ("train_s", "train s/epoch"), ("test_ms", "test ms/example")]


def cnn_methods(quick: bool) -> Dict[str, object]:
    """The rows of ``digits_cnn`` (issue 23): the peers, the default (rank-1, one KL draw per component), rank-1
    with n_mc=100 (the n_mc question) and with its components starting at the network (``factor_init_std=0``),
    the Radial (the former default) and a Gaussian posterior."""
    out = {
        "deterministic": qm.deterministic,
        f"MC dropout (p={qm.DROPOUT})": qm.mc_dropout,
        f"deep ensemble ({qm.ENSEMBLE})": qm.ensemble,
        "bayesian-torch dnn_to_bnn": qm.bayesian_torch,
        "IVON (ivon-opt)": qm.ivon,
        "last-layer Laplace (laplace-torch, marglik)": qm.last_layer_laplace,
        DEFAULT_NAME: qm.autobayes_method(),
        RANK1_NAME: qm.rank1_method(n_mc=100),
        RANK1_AT_ONE: qm.rank1_method(factor_init_std=0.0),
        RADIAL_NAME: qm.autobayes_method(posterior="radial"),
        "autobayes gaussian (closed KL, local)": qm.autobayes_method(posterior="gaussian"),
    }
    return out


def methods(quick: bool, radial_1e4: bool = False, dataset: str = "digits") -> Dict[str, object]:
    if dataset == "digits_cnn":
        return cnn_methods(quick)
    out = {
        "deterministic": qm.deterministic,
        f"MC dropout (p={qm.DROPOUT})": qm.mc_dropout,
        f"deep ensemble ({qm.ENSEMBLE})": qm.ensemble,
        "bayesian-torch dnn_to_bnn": qm.bayesian_torch,
        DEFAULT_NAME: qm.autobayes_method(),
        RADIAL_NAME: qm.autobayes_method(posterior="radial"),
        "autobayes converted pretrained": qm.converted_pretrained,
    }
    for posterior in ("gaussian", "radial"):
        for forward in ("local", "sample"):
            for n_mc in (1, 100, 10_000):
                # the Radial's n_mc=10^4 KL draws its M samples: ~0.2 s a step alone, 0.6 s on the shared 2 cores,
                # 3x a whole run of every other row; only with --radial-1e4 (its forward: sample, the Radial's own;
                # the KL does not depend on the forward). The n_mc study measures its gradient noise either way.
                if posterior == "radial" and n_mc == 10_000 and (quick or forward == "local" or not radial_1e4):
                    continue
                out[f"autobayes {posterior} {forward} repar n_mc={n_mc}"] = qm.autobayes_method(
                    posterior=posterior, forward=forward, kl="repar", n_mc=n_mc)
    return out


def run_dataset(name: str, seeds: int, quick: bool, log, radial_1e4: bool = False,
                epochs: Optional[int] = None, first_seed: int = 0) -> Dict[str, List[Dict[str, float]]]:
    """``{method: [row of each seed]}`` for seeds ``first_seed, ..., first_seed + seeds - 1`` (with the rotation
    ladder's columns for the CNN); :func:`summarise` turns it into means and stds."""
    data = qm.load(name)
    epochs = epochs or (QUICK_EPOCHS if quick else EPOCHS)[name]
    first_ood = next(iter(data.ood))
    rows: Dict[str, List[Dict[str, float]]] = {}
    for seed in range(first_seed, first_seed + seeds):
        cache: dict = {}
        for method, fn in methods(quick, radial_1e4, name).items():
            start = time.perf_counter()
            fitted = fn(data, epochs, seed, cache)
            row = qm.evaluate(fitted, data, seed)
            if name == "digits_cnn":
                row.update(quality_shift.ladder(fitted, data, seed))
            row["auroc_h"], row["auroc_mi"] = row[f"auroc_h:{first_ood}"], row[f"auroc_mi:{first_ood}"]
            rows.setdefault(method, []).append(row)
            log(f"{name} seed {seed} {method}: {time.perf_counter() - start:.1f} s "
                f"({', '.join(f'{k} {v:.3f}' for k, v in row.items() if ':' not in k)})")
    return rows


def summarise(rows: Dict[str, List[Dict[str, float]]]) -> Dict[str, Dict[str, tuple]]:
    """``{method: {column: (mean, std)}}`` over the seeds (std: ``nan`` for one seed)."""
    return {m: {k: (float(np.mean([r[k] for r in rs])), float(np.std([r[k] for r in rs], ddof=1)) if len(rs) > 1
                    else math.nan) for k in rs[0]} for m, rs in rows.items()}


def _cell(v: tuple, key: str) -> str:
    mean, std = v
    if math.isnan(mean):
        return "—"
    digits = 2 if key in ("train_s", "test_ms") else 3
    fmt = f"{{:.{digits}f}}" if key not in ("train_s", "test_ms") else "{:.3g}"
    return fmt.format(mean) + ("" if math.isnan(std) else " ± " + fmt.format(std))


def table(stats: Dict[str, Dict[str, tuple]], columns) -> List[str]:
    lines = ["| method | " + " | ".join(label for _, label in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for method, row in stats.items():
        lines.append(f"| {method} | " + " | ".join(_cell(row[k], k) for k, _ in columns) + " |")
    return lines


def ood_table(stats: Dict[str, Dict[str, tuple]], ood_names: List[str]) -> List[str]:
    cols = [(f"auroc_{s}:{n}", f"{n} ({'entropy' if s == 'h' else 'MI'})") for n in ood_names for s in ("h", "mi")]
    return table(stats, cols)


def figure(stats: Dict[str, Dict[str, tuple]], columns, title: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [c for c in columns if c[0] not in ("train_s", "test_ms")]
    names = list(stats)
    fig, axes = plt.subplots(1, len(shown), figsize=(3.1 * len(shown), 0.32 * len(names) + 1.6), sharey=True)
    y = np.arange(len(names))
    for ax, (key, label) in zip(axes, shown):
        m = np.array([stats[n][key][0] for n in names])
        s = np.nan_to_num(np.array([stats[n][key][1] for n in names]))
        colors = ["0.55" if not n.startswith("autobayes") else ("C3" if n == DEFAULT_NAME else "C0") for n in names]
        ax.barh(y, np.nan_to_num(m), xerr=s, color=colors, capsize=2)
        ax.set_title(label, fontsize=9)
        finite = m[np.isfinite(m)]
        if len(finite):
            lo, hi = finite.min(), finite.max()
            pad = 0.15 * (hi - lo) + 1e-3
            ax.set_xlim(max(0.0, lo - pad) if key.startswith(("acc", "auroc", "cov")) else 0.0, hi + pad)
    axes[0].set_yticks(y)
    axes[0].set_yticklabels(names, fontsize=7)
    axes[0].invert_yaxis()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def default_targets(stats: Dict[str, Dict[str, tuple]]) -> List[str]:
    """The issue's targets for the default configuration on digits."""
    d, det, drop = stats[DEFAULT_NAME], stats["deterministic"], stats[f"MC dropout (p={qm.DROPOUT})"]
    best_auroc = max(d["auroc_mi"][0], d["auroc_h"][0])
    checks = [
        ("NLL below the deterministic network's", d["nll"][0] < det["nll"][0],
         f"{d['nll'][0]:.3f} vs {det['nll'][0]:.3f}"),
        ("ECE below the deterministic network's", d["ece"][0] < det["ece"][0],
         f"{d['ece'][0]:.3f} vs {det['ece'][0]:.3f}"),
        ("accuracy within 0.5 points of the deterministic network's", d["acc"][0] >= det["acc"][0] - 0.005,
         f"{100 * d['acc'][0]:.1f}% vs {100 * det['acc'][0]:.1f}% ({100 * (d['acc'][0] - det['acc'][0]):+.1f} points)"),
        ("held-out-class OOD AUROC (MI or entropy, the better) above MC dropout's (its better)",
         best_auroc > max(drop["auroc_mi"][0], drop["auroc_h"][0]),
         f"{best_auroc:.3f} vs {max(drop['auroc_mi'][0], drop['auroc_h'][0]):.3f}"),
    ]
    return [f"* {'MET ' if ok else 'MISS'}: {what}: {detail}" for what, ok, detail in checks]


RANK1_NMCS = (4, 100, 1000)


def rank1_nmc_lines(noise) -> List[str]:
    """The rank-1 n_mc study's table (see :func:`quality_nmc.gradient_noise`)."""
    return ["### The n_mc question for rank-1 (digits_cnn, `kl=\"repar\"`, K=4)", "",
            "Trace of the gradient covariance for a fixed trained rank-1 network (12 epochs): the KL term alone "
            "(the mixture's Monte Carlo KL / N, entropy included), the loss on one fixed batch, the loss on random "
            "batches (what SGD sees); the quality rows of the default (`n_mc=4`, one draw per component) and `n_mc=100` "
            "above give the end result:", ""
            ] + quality_nmc.summary_lines(noise) + [""]


def _pm(row: Dict[str, tuple], key: str) -> str:
    mean, std = row[key]
    return f"{mean:.3f}" + ("" if math.isnan(std) else f" ± {std:.3f}")


def _best_auroc(row: Dict[str, tuple]) -> tuple:
    """The better of the held-out-class AUROC by entropy and by mutual information (the deterministic
    network's MI is undefined: its entropy)."""
    h, mi = row["auroc_h"], row["auroc_mi"]
    return h if math.isnan(mi[0]) or h[0] >= mi[0] else mi


def cnn_targets(stats: Dict[str, Dict[str, tuple]]) -> List[str]:
    """Issue 23's targets on digits_cnn (means over seeds; the seed std shown beside each mean)."""
    d, det, ens = stats[DEFAULT_NAME], stats["deterministic"], stats[f"deep ensemble ({qm.ENSEMBLE})"]
    lines = []
    for key, label in (("nll", "NLL below"), ("ece", "ECE below")):
        ok = d[key][0] < det[key][0]
        lines.append(f"* {'MET ' if ok else 'MISS'}: default's {label} the deterministic network's: "
                     f"{_pm(d, key)} vs {_pm(det, key)}")
    a_d, a_det = _best_auroc(d), _best_auroc(det)
    lines.append(f"* {'MET ' if a_d[0] > a_det[0] else 'MISS'}: default's held-out-class AUROC (better of entropy / "
                 f"MI) above the deterministic network's (entropy): {a_d[0]:.3f} ± {a_d[1]:.3f} vs "
                 f"{a_det[0]:.3f} ± {a_det[1]:.3f}")
    budget = 2.0 * det["train_s"][0]
    a_ens = _best_auroc(ens)
    met = []
    for name, row in stats.items():
        if not name.startswith("autobayes"):
            continue
        cheap = row["train_s"][0] <= budget
        a = _best_auroc(row)
        if cheap and row["nll"][0] <= ens["nll"][0] and a[0] >= a_ens[0]:
            met.append(name)
        lines.append(f"  * {name}: NLL {_pm(row, 'nll')} (ensemble {_pm(ens, 'nll')}), AUROC {a[0]:.3f} ± {a[1]:.3f} "
                     f"(ensemble {a_ens[0]:.3f} ± {a_ens[1]:.3f}), train time "
                     f"{row['train_s'][0] / det['train_s'][0]:.2f}x the deterministic network's")
    head = (f"* {'MET ' if met else 'MISS'}: an autobayes configuration matches or beats the deep ensemble of "
            f"{qm.ENSEMBLE} on NLL and held-out-class AUROC at <= 2x one deterministic network's training time"
            + (f" ({', '.join(met)})" if met else "") + ":")
    top = [ln for ln in lines if not ln.startswith("  *")]
    return top + [head] + [ln for ln in lines if ln.startswith("  *")]


def write_section(path: Path, body: List[str], begin: str = BEGIN, end: str = END) -> None:
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    section = begin + "\n" + "\n".join(body).rstrip() + "\n" + end
    if begin in text and end in text:
        text = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: section, text, flags=re.S)
    else:  # first run: after the file's first section of prose (before the first "## ")
        at = text.find("\n## ")
        text = (text + "\n" + section + "\n") if at < 0 else text[:at + 1] + section + "\n" + text[at:]
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer epochs and seeds, no Radial n_mc=10^4 rows")
    parser.add_argument("--datasets", nargs="+", default=DATASETS, choices=DATASETS)
    parser.add_argument("--epochs", type=int, default=None, help="override the epochs of every data set (smoke runs)")
    parser.add_argument("--test-samples", type=int, default=None,
                        help=f"posterior samples per test example (default {qm.N_TEST_SAMPLES}; smoke runs)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent), help="folder of RESULTS.md, figures/")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3; 2 with --quick)")
    parser.add_argument("--radial-1e4", action="store_true",
                        help="add the Radial n_mc=10^4 row (its KL draws 10^4 samples a step: slow on a CPU)")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first_seed, first_seed + 1, ...")
    parser.add_argument("--rows-out", default=None,
                        help="write the per-seed rows to this JSON file instead of RESULTS.md (run seeds in "
                             "parallel processes, then --merge their files)")
    parser.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                        help="build RESULTS.md from --rows-out files (their seeds pooled) instead of training")
    parser.add_argument("--no-nmc-study", action="store_true", help="skip the gradient-noise study (digits)")
    args = parser.parse_args(argv)
    seeds = args.seeds or (2 if args.quick else 3)
    qm.N_TEST_SAMPLES = args.test_samples or _TEST_SAMPLES
    out = Path(args.out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f} s] {msg}", flush=True)

    cmd = "python benchmarks/quality.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    now = datetime.datetime.now(datetime.timezone.utc)
    where = f"({os.cpu_count()}-core {platform.machine()}, {now:%Y-%m-%d}, torch {torch.__version__}; `{cmd}`)"
    mlp_body = [f"## CPU: quality.py, is the Bayesian model better? {where}", ""]
    cnn_body = [f"## CPU: quality.py on a CNN and under shift (issue 23) {where}", ""]
    all_stats = {}
    merged: Dict[str, Dict[str, List[Dict[str, float]]]] = {}
    for path in args.merge or ():
        for name, rows in json.loads(Path(path).read_text()).items():
            for method, method_rows in rows.items():
                merged.setdefault(name, {}).setdefault(method, []).extend(method_rows)
    if args.merge:
        args.datasets = [d for d in DATASETS if d in merged]
        seeds = max(len(r) for rows in merged.values() for r in rows.values())
    raw = {}
    for name in args.datasets:
        body = cnn_body if name == "digits_cnn" else mlp_body
        if name == "digits_cnn" and args.quick and not args.test_samples:
            qm.N_TEST_SAMPLES = QUICK_CNN_TEST_SAMPLES  # 18 test sets (OOD, 13 angles) per row: the quick run's cost
        raw[name] = merged.get(name) or run_dataset(name, seeds, args.quick, log, args.radial_1e4, args.epochs,
                                                    args.first_seed)
        used_samples, qm.N_TEST_SAMPLES = qm.N_TEST_SAMPLES, args.test_samples or _TEST_SAMPLES
        if args.rows_out:
            continue
        stats = summarise(raw[name])
        all_stats[name] = stats
        data = qm.load(name)
        columns = CLS_COLUMNS if data.task == "classification" else REG_COLUMNS
        first_ood = next(iter(data.ood))
        figure(stats, columns, f"{name}: mean ± std over {seeds} seeds", out / "figures" / f"quality_{name}.png")
        body += [f"### {name} ({data.task}; {len(data.train)} training / {len(data.test)} test examples; "
                 f"{args.epochs or (QUICK_EPOCHS if args.quick else EPOCHS)[name]} epochs; {used_samples} samples per test "
                 f"example; OOD: {first_ood})", ""]
        body += table(stats, columns) + ["", f"![{name}](figures/quality_{name}.png)", ""]
        if len(data.ood) > 1:
            body += [f"Other OOD sets of {name} (AUROC):", ""] + ood_table(stats, list(data.ood)[1:]) + [""]
        if name == "digits_cnn":
            quality_shift.figure(stats, out / "figures" / "quality_rotation.png",
                                 f"digits_cnn, test digits rotated: mean ± std over {seeds} seeds")
            body += ["Rotation ladder (Ovadia et al. 2019): the test digits rotated by 0-180 degrees.", "",
                     "![rotation](figures/quality_rotation.png)", ""]
            for key, label in quality_shift.METRICS:
                body += [f"{label} against the angle:", ""] + quality_shift.table(stats, key) + [""]
            body += ["Targets of issue 23 (digits_cnn, mean ± seed std; training times measured side by side in "
                     "this run):", ""] + cnn_targets(stats) + [""]
        if name == "digits":
            body += ["Targets of issue 15 for the default configuration (digits, mean over seeds):", ""]
            body += default_targets(stats) + [""]
    if args.rows_out:
        Path(args.rows_out).write_text(json.dumps(raw))
        log(f"wrote the rows to {args.rows_out}")
        return 0
    if "digits_cnn" in args.datasets and not args.no_nmc_study and not args.merge:
        log("n_mc study: gradient noise of the rank-1 KL (digits_cnn)")
        noise = quality_nmc.gradient_noise(qm.load("digits_cnn"), RANK1_NMCS, repeats=12 if args.quick else 40,
                                           epochs=QUICK_EPOCHS["digits_cnn"], study=(("rank1", "local"),))
        cnn_body += rank1_nmc_lines(noise)
    if "digits" in args.datasets and not args.no_nmc_study and not args.merge:
        log("n_mc study: gradient noise")
        data = qm.load("digits")
        n_mcs = (1, 10, 100, 1000, 10_000)
        noise = quality_nmc.gradient_noise(data, n_mcs, repeats=12 if args.quick else 40,
                                           epochs=QUICK_EPOCHS["digits"])
        quality_nmc.figure(noise, quality_nmc.grid_rows(all_stats["digits"]), out / "figures" / "quality_nmc.png")
        mlp_body += ["### The n_mc question (digits MLP, `kl=\"repar\"`)", "",
                 "Trace of the gradient covariance for a fixed trained network: the KL term alone, the loss on one "
                 "fixed batch, the loss on random batches (what SGD sees):", ""]
        mlp_body += quality_nmc.summary_lines(noise) + ["", "![n_mc](figures/quality_nmc.png)", ""]
    elapsed = time.perf_counter() - started
    footer = [f"Run: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, torch {torch.__version__}, "
             f"{torch.get_num_threads()} thread(s), {seeds} seeds, MLP hidden {qm.HIDDEN}, "
             f"{qm.N_TEST_SAMPLES} test samples per example; "
             + (f"rows pooled from {', '.join(Path(p).name for p in args.merge)} (one --rows-out run each). "
                if args.merge else f"took {elapsed / 60:.1f} min. ") + f"Cells: mean ± std over "
             f"seeds; `—`: not defined (a deterministic network's mutual information and epistemic std are 0 for "
             f"every input, and its one noise variance ranks no regression example above another). Train time per "
             f"epoch: all five members "
             f"for the ensemble, the fine-tuning epochs for the converted network (after the deterministic network's "
             f"training)."]
    if "digits_cnn" in args.datasets:
        cnn_body += ["Training time per epoch (`train s/epoch`) was measured side by side in this run on a shared, "
                     "busy CPU: compare ratios within the table, not absolute times. IVON's epoch is its own "
                     "optimiser's; last-layer Laplace's is the deterministic network's plus its fit spread over "
                     "the epochs.", ""]
        write_section(out / "RESULTS.md", cnn_body + footer, CNN_BEGIN, CNN_END)
    if len(mlp_body) > 2:
        write_section(out / "RESULTS.md", mlp_body + footer)
    log(f"done in {elapsed / 60:.1f} min; wrote {out / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
