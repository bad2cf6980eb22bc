"""The train -> convert -> fine-tune -> evaluate -> predict workflow, end to end, as a user runs it.

A deterministic torchvision ResNet-18 is trained on scikit-learn's digits with plain cross-entropy and saved as a
state dict; then, on the command line, ``autobayes convert`` turns it into a Bayesian checkpoint (recording the
input normalisation), ``autobayes train --init`` fine-tunes it, ``autobayes evaluate --ood-data`` scores it with an
out-of-distribution folder, and ``autobayes predict`` labels PNGs written from the validation set with no
normalisation flag. The numbers a user reads must mean what they say: the accuracy on the PNGs is the validation
accuracy, the mutual information is clearly above zero, and the OOD AUROC is reported.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import autobayes
from autobayes.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def _run(*argv: str) -> None:
    assert main(list(argv)) == 0, f"autobayes {' '.join(argv)} failed"


def _write_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8), mode="L").save(path)


def test_train_convert_finetune_evaluate_predict(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)

    # 1. A deterministic network, trained the ordinary way and saved as a state dict.
    train_set, val_set, info = autobayes.load_dataset("digits")
    model = autobayes.build_model("torchvision:resnet18", **info.model_kwargs())
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(6):
        model.train()
        for x, y in DataLoader(train_set, batch_size=64, shuffle=True):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    torch.save(model.state_dict(), "resnet18.pt")

    # 2. Convert it (the user knows the normalisation they trained with; convert records it).
    mean, std = info.mean, info.std
    _run("convert", "resnet18.pt", "-o", "resnet18_bnn.safetensors", "--arch", "torchvision:resnet18",
         "--num-classes", "10", "--in-channels", "1", "--image-size", "8", "--init-scale", "1e-3",
         "--mean", *map(str, mean), "--std", *map(str, std), "--quiet")

    # 3. Fine-tune the converted checkpoint.
    _run("train", "--init", "resnet18_bnn.safetensors", "--data", "digits", "--epochs", "2", "--lr", "1e-3",
         "--out", "ft")
    ckpt = Path("ft/best.safetensors")
    assert ckpt.is_file()

    # 4. Evaluate with an out-of-distribution folder: the validation digits turned upside down and inverted.
    images = np.stack([val_set[i][0].numpy()[0] * std[0] + mean[0] for i in range(len(val_set))])
    labels = np.array([int(val_set[i][1]) for i in range(len(val_set))])
    for i, image in enumerate(images[:200]):
        _write_png(Path("ood/all") / f"{i:03d}.png", 1.0 - image[::-1])
    _run("evaluate", str(ckpt), "--ood-data", "imagefolder:ood", "--n-samples", "50", "--out", "eval")
    metrics = json.loads(Path("eval/metrics.json").read_text())
    flat = json.dumps(metrics)
    assert "auroc" in flat.lower(), metrics
    aurocs = [v for k, v in _items(metrics) if "auroc" in k.lower() and isinstance(v, float)]
    assert aurocs and all(0.0 <= a <= 1.0 for a in aurocs), metrics
    val_acc = _find(metrics, "accuracy")
    assert val_acc > 0.8, metrics

    # 5. Predict on PNGs of the validation set, with no --mean / --std: the checkpoint knows them.
    for i, image in enumerate(images):
        _write_png(Path("pngs") / f"{i:03d}.png", image)
    _run("predict", str(ckpt), "pngs", "-o", "p.csv", "--n-samples", "50")
    with open("p.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    predicted = {Path(r["path"]).stem: int(r["class"]) for r in rows}
    png_acc = float(np.mean([predicted[f"{i:03d}"] == labels[i] for i in range(len(labels))]))
    # Both accuracies are Monte Carlo estimates from 50 posterior samples on the same 360 images (PNG
    # quantisation moves a pixel by < 1/510): they differ only where an example's vote is near a tie.
    assert abs(png_acc - val_acc) <= 0.02, (png_acc, val_acc)
    mi = np.array([float(r["mutual_information"]) for r in rows])
    assert mi.mean() > 1e-3, f"mean mutual information {mi.mean():.2e}: the Bayesian model shows no uncertainty"


def _items(tree, prefix=""):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _items(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, tree


def _find(metrics: dict, name: str) -> float:
    for key, value in _items(metrics):
        if key.split(".")[-1] == name and "ood" not in key:
            return float(value)
    raise AssertionError(f"no {name!r} in {metrics}")
