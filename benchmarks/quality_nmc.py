"""The n_mc question of ``quality.py``: does a Monte Carlo KL with more samples give a better model?

1. Gradient noise, for a fixed network and a fixed batch: the digits MLP trained for a few epochs with
   ``kl="repar"`` (Gaussian, local reparameterisation; Radial, weight sampling), then for each ``n_mc`` the
   gradient of the loss (``CategoricalELBO``: mean batch NLL + KL / N) is drawn ``repeats`` times. Reported: the
   trace of its covariance (sum over parameters of the per-coordinate variance) of

   * the KL term alone (``KL / N``): the only part that ``n_mc`` changes;
   * the whole loss on the fixed batch (KL noise + the likelihood's weight noise);
   * the whole loss on a fresh random batch each time: what SGD sees (adds the minibatch noise).

2. The final NLL / ECE / accuracy against ``n_mc``: read from the digits rows of the main table.
"""

from __future__ import annotations

import warnings
from typing import Dict, List

import numpy as np
import torch
from torch.utils.data import DataLoader

import autobayes
from autobayes.nn import BayesParameter

from quality_methods import DEFAULTS, Data, make_net

STUDY = (("gaussian", "local"), ("radial", "sample"))


def _grad_vector(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None]).clone()


def _trace_var(grads: List[torch.Tensor]) -> float:
    g = torch.stack(grads).double()
    return float(g.var(dim=0, unbiased=True).sum())


def gradient_noise(data: Data, n_mcs, repeats: int, epochs: int, seed: int = 0,
                   study=STUDY) -> Dict[str, Dict[str, list]]:
    """``{"gaussian local": {"n_mc": [...], "kl": [...], "batch": [...], "minibatch": [...]}, ...}`` for the
    ``(posterior, forward)`` pairs of ``study`` (``(("rank1", "local"),)`` on digits_cnn: the rank-1 mixture's
    Monte Carlo KL, entropy included)."""
    out: Dict[str, Dict[str, list]] = {}
    n = len(data.train)
    gen = torch.Generator().manual_seed(seed)
    x_fixed, y_fixed = next(iter(DataLoader(data.train, batch_size=DEFAULTS.batch_size, shuffle=True, generator=gen)))
    for posterior, forward in study:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bnn = autobayes.train(make_net(data, seed), (data.train, data.test, data.info), epochs=epochs, seed=seed,
                                  progress=False, posterior=posterior, forward=forward, kl="repar", n_mc=1).model
        bnn.train()
        crit = autobayes.CategoricalELBO(n)
        params = [m for m in bnn.modules() if isinstance(m, BayesParameter)]
        rec = {"n_mc": [], "kl": [], "batch": [], "minibatch": []}
        loader = DataLoader(data.train, batch_size=DEFAULTS.batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(seed + 1), drop_last=True)
        for n_mc in n_mcs:
            for p in params:
                p.n_mc = int(n_mc)
            kl_g, batch_g, mini_g = [], [], []
            batches = iter(loader)
            torch.manual_seed(10_000 + int(n_mc))  # once per n_mc: the repeats are consecutive, independent draws
            for _ in range(repeats):
                bnn.zero_grad(set_to_none=True)
                (bnn(x_fixed).kl / n).backward()
                kl_g.append(_grad_vector(bnn))
                bnn.zero_grad(set_to_none=True)
                crit(bnn(x_fixed), y_fixed).loss.backward()
                batch_g.append(_grad_vector(bnn))
                try:
                    xb, yb = next(batches)
                except StopIteration:
                    batches = iter(loader)
                    xb, yb = next(batches)
                bnn.zero_grad(set_to_none=True)
                crit(bnn(xb), yb).loss.backward()
                mini_g.append(_grad_vector(bnn))
            rec["n_mc"].append(int(n_mc))
            rec["kl"].append(_trace_var(kl_g))
            rec["batch"].append(_trace_var(batch_g))
            rec["minibatch"].append(_trace_var(mini_g))
        out[f"{posterior} {forward}"] = rec
    return out


def grid_rows(stats: Dict[str, Dict[str, tuple]]) -> Dict[str, Dict[int, Dict[str, tuple]]]:
    """``{"gaussian local": {n_mc: {metric: (mean, std)}}}`` from the digits table's grid rows."""
    out: Dict[str, Dict[int, Dict[str, tuple]]] = {}
    for posterior, forward in STUDY:
        for method, row in stats.items():
            prefix = f"autobayes {posterior} {forward} repar n_mc="
            if method.startswith(prefix):
                out.setdefault(f"{posterior} {forward}", {})[int(method[len(prefix):])] = row
    return out


def figure(noise: Dict[str, Dict[str, list]], grid: Dict[str, Dict[int, Dict[str, tuple]]], path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(18, 4.2))
    ax = axes[0]
    for (name, rec), color in zip(noise.items(), ("C0", "C3")):
        ax.loglog(rec["n_mc"], rec["kl"], "o-", color=color, label=f"{name}: KL/N term only")
        ax.loglog(rec["n_mc"], rec["batch"], "s--", color=color, label=f"{name}: loss, fixed batch")
        ax.loglog(rec["n_mc"], rec["minibatch"], "^:", color=color, label=f"{name}: loss, random batches")
    ax.set_xlabel("n_mc (Monte Carlo samples of the KL)")
    ax.set_ylabel("trace of the gradient covariance")
    ax.set_title("gradient noise vs n_mc (digits MLP)")
    ax.legend(fontsize=7)
    for ax, (metric, label) in zip(axes[1:], (("nll", "test NLL"), ("ece", "test ECE"), ("acc", "test accuracy"))):
        for (name, rows), color in zip(grid.items(), ("C0", "C3")):
            ks = sorted(rows)
            m = np.array([rows[k][metric][0] for k in ks])
            s = np.array([rows[k][metric][1] for k in ks])
            ax.errorbar(ks, m, yerr=np.nan_to_num(s), fmt="o-", color=color, capsize=3, label=name)
        ax.set_xscale("log")
        ax.set_xlabel("n_mc")
        ax.set_title(f"{label} vs n_mc (mean ± std over seeds)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary_lines(noise: Dict[str, Dict[str, list]]) -> List[str]:
    lines = ["| posterior, forward | n_mc | Var KL/N term | Var loss, fixed batch | Var loss, random batches |",
             "|---|---:|---:|---:|---:|"]
    for name, rec in noise.items():
        for i, k in enumerate(rec["n_mc"]):
            lines.append(f"| {name} | {k} | {rec['kl'][i]:.3g} | {rec['batch'][i]:.3g} | {rec['minibatch'][i]:.3g} |")
    return lines
