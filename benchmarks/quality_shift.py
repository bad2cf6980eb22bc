"""The rotation ladder of ``quality.py`` (issue 23): accuracy, NLL and ECE of each method on the test digits
rotated by 0-180 degrees in 15-degree steps, as in Ovadia et al. (NeurIPS 2019), "Can you trust your model's
uncertainty?": a good predictive loses accuracy with the shift but keeps its NLL and ECE from exploding.

Rotation: the pixels in [0, 1] (background 0) are rotated about the image centre with bilinear interpolation,
the corners filled with background, then normalised as the training images were.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch
import torchvision.transforms.functional as TF
from torch import Tensor

from autobayes import classification_summary, metrics

ANGLES = tuple(range(0, 181, 15))
METRICS = (("acc", "accuracy"), ("nll", "NLL"), ("ece", "ECE"))


def rotate(x: Tensor, angle: float, mean: float, std: float) -> Tensor:
    """The normalised images ``x`` (N, 1, H, W) rotated by ``angle`` degrees (counter-clockwise)."""
    raw = x * std + mean
    out = TF.rotate(raw, float(angle), interpolation=TF.InterpolationMode.BILINEAR, fill=0.0)
    return (out - mean) / std


def ladder(fitted, data, seed: int, angles=None) -> Dict[str, float]:
    """``{"rot{angle}:{metric}": value}`` of one trained method (angles: :data:`ANGLES` unless given)."""
    x, y = data.test.tensors
    mean, std = data.info.mean[0], data.info.std[0]
    row: Dict[str, float] = {}
    for angle in ANGLES if angles is None else angles:
        p = classification_summary(fitted.draw(rotate(x, angle, mean, std), seed)[0]).mean
        row[f"rot{angle}:acc"] = metrics.accuracy(p, y)
        row[f"rot{angle}:nll"] = metrics.nll(p, y)
        row[f"rot{angle}:ece"] = metrics.expected_calibration_error(p, y)
    return row


def angles_of(stats: Dict[str, Dict[str, Tuple[float, float]]]) -> List[int]:
    keys = next(iter(stats.values()))
    return sorted({int(k[3:].split(":")[0]) for k in keys if k.startswith("rot")})


def table(stats: Dict[str, Dict[str, Tuple[float, float]]], metric: str) -> List[str]:
    """One markdown table: methods x angles, mean ± std over seeds of ``metric``."""
    angles = angles_of(stats)
    lines = ["| method | " + " | ".join(f"{a}°" for a in angles) + " |", "|---|" + "---:|" * len(angles)]
    for method, row in stats.items():
        cells = [f"{row[f'rot{a}:{metric}'][0]:.3f}" + ("" if np.isnan(row[f"rot{a}:{metric}"][1])
                                                        else f" ± {row[f'rot{a}:{metric}'][1]:.3f}")
                 for a in angles]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def figure(stats: Dict[str, Dict[str, Tuple[float, float]]], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    angles = angles_of(stats)
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.6))
    for ax, (key, label) in zip(axes, METRICS):
        for i, (method, row) in enumerate(stats.items()):
            m = np.array([row[f"rot{a}:{key}"][0] for a in angles])
            s = np.nan_to_num(np.array([row[f"rot{a}:{key}"][1] for a in angles]))
            style = "-" if method.startswith("autobayes") else "--"
            ax.plot(angles, m, style, marker=".", label=method, color=f"C{i % 10}")
            ax.fill_between(angles, m - s, m + s, alpha=0.12, color=f"C{i % 10}")
        ax.set_xlabel("rotation (degrees)")
        ax.set_title(label, fontsize=10)
        ax.set_xticks(angles[::2])
    axes[0].legend(fontsize=6)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
