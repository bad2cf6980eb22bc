"""autobayes.fx.tracer: which modules stay opaque (``leaf_modules``), how ``concrete_args`` and ``example_inputs``
pick a branch, and the error that names the untraceable module and gives the fixes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import autobayes
from autobayes import UntraceableModelError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _nets import Gate, Untraceable  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def test_untraceable_fx_mode_error_names_module_and_fixes():
    with pytest.raises(UntraceableModelError) as info:
        autobayes.bayesify(Untraceable(), mode="fx")
    msg = str(info.value)
    assert "'gate' (Gate)" in msg and "x.sum() > 0" in msg
    assert "leaf_modules=[" in msg and "mode='swap'" in msg and "inspect_model" in msg


def test_leaf_modules_option_makes_untraceable_model_traceable():
    bnn = autobayes.bayesify(Untraceable(), mode="fx", leaf_modules=[Gate])
    assert bnn.bayes_report.mode == "fx"
    assert bnn.bayes_report.get("unused").used is False


def test_example_inputs_catch_wrong_branch():
    class Scaled(nn.Module):  # a placeholder is no tensor: fx traces the branch for scale=None
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x, scale=1.0):
            if isinstance(scale, torch.Tensor):
                x = x * scale
            return self.fc(x)

    x, scale = torch.randn(2, 4), torch.full((2, 4), 3.0)
    with pytest.raises(UntraceableModelError, match="concrete_args"):
        autobayes.bayesify(Scaled(), mode="fx", example_inputs=(x, scale))
    bnn = autobayes.bayesify(Scaled(), mode="fx", concrete_args={"scale": 1.0}, example_inputs=(x,))
    assert bnn(x).output.shape == (2, 4)
    with pytest.warns(UserWarning, match="falling back"):
        bnn = autobayes.bayesify(Scaled(), example_inputs=(x, scale))
    assert bnn.bayes_report.mode == "swap"
