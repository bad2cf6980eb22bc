"""Small networks shared by the conversion tests (tests/test_api.py, tests/fx/): each exercises one thing the
conversion must handle; and helpers that copy a converted model and compare two of them."""

from __future__ import annotations

import io

import torch
import torch.nn.functional as F
from torch import nn

import autobayes


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(32, 5)

    def forward(self, x):
        return self.fc(self.drop(self.features(x).flatten(1)))

class Shared(nn.Module):
    """One layer called twice, and registered under two names."""

    def __init__(self):
        super().__init__()
        self.block = nn.Linear(6, 6)
        self.alias = self.block
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        return self.head(self.alias(torch.relu(self.block(x))))

class Functional(nn.Module):
    """Weights used functionally, next to parameters and buffers that must stay deterministic."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(8, 4) * 0.1)
        self.b = nn.Parameter(torch.zeros(8))
        self.gamma = nn.Parameter(torch.ones(8))  # layer scale: multiplies activations
        self.pos = nn.Parameter(torch.zeros(1, 4))  # added to activations
        self.kernel = nn.Parameter(torch.randn(3, 3, 3, 3) * 0.1)
        self.register_buffer("blur", torch.ones(3, 1, 3, 3) / 9)  # blur-pool kernel: a buffer

    def forward(self, x, img):
        h = F.linear(x + self.pos, self.w * 1.0, self.b) * self.gamma
        k = self.kernel - self.kernel.mean(dim=(1, 2, 3), keepdim=True)  # weight standardisation
        y = F.conv2d(F.conv2d(img, self.blur, padding=1, groups=3), k, padding=1)
        return {"h": h, "y": (y, y.mean())}

class Gate(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            return x
        return -x

class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 4)
        self.gate = Gate()
        self.fc2 = nn.Linear(4, 3)
        self.unused = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc2(self.gate(self.fc1(x)))


def pickle_roundtrip(module):
    """``torch.save`` then ``torch.load`` (a whole-module pickle, as users save converted models)."""
    buf = io.BytesIO()
    torch.save(module, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


def same_mean_output(a, b, *args):
    """Assert that ``a`` and ``b`` give the same output and KL in eval mode under ``use_mean``."""
    a.eval()
    b.eval()
    with torch.no_grad(), autobayes.use_mean(a), autobayes.use_mean(b):
        torch.testing.assert_close(a(*args).output, b(*args).output)
        torch.testing.assert_close(a(*args).kl, b(*args).kl)
