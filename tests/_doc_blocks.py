"""Code blocks of Markdown files (the README, the docs pages) and the files their commands assume the reader has.

Shared by tests/test_readme.py and tests/test_docs.py, which run the blocks as written.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def blocks(text: str, language: str) -> list:
    """The fenced blocks of ``language`` in ``text``, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def command_lines(text: str) -> list:
    """The lines of the ``bash`` blocks, comments and line continuations stripped."""
    lines = []
    for block in blocks(text, "bash"):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).rstrip(" \\").strip()
            if line:
                lines.append(line)
    return lines


def prepare(folder: Path) -> None:
    """What the documented commands assume the reader already has: a trained ``resnet18.pt``, a folder
    ``images/``, ``rows.csv`` of diabetes features and ``gpt2_dir/``, a transformers ``save_pretrained`` folder."""
    import numpy as np
    import torch
    import torchvision
    from PIL import Image
    from sklearn.datasets import load_diabetes

    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), folder / "resnet18.pt")
    (folder / "images").mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), mode="RGB").save(folder / f"images/{i}.png")
    diabetes = load_diabetes()
    with open(folder / "rows.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(diabetes.feature_names)
        writer.writerows(diabetes.data[:5].tolist())
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError:
        return
    GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=1, n_head=2)).save_pretrained(
        folder / "gpt2_dir")
