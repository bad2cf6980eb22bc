"""autobayes.fx.derive: converted models of both routes, whose classes are derived from the model's own, survive
``deepcopy``, ``load_state_dict`` into a fresh conversion and a whole-module pickle."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
from torch.nn.functional import normalize

import autobayes

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _nets import Functional, SmallCNN, pickle_roundtrip, same_mean_output  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("mode", ["fx", "swap"])
def test_deepcopy_state_dict_and_pickle(mode):
    bnn = autobayes.bayesify(SmallCNN(), mode=mode, posterior="gaussian", filter_fn=lambda m, n: True)
    x = torch.randn(2, 3, 8, 8)
    same_mean_output(bnn, copy.deepcopy(bnn), x)
    fresh = autobayes.bayesify(SmallCNN(), mode=mode, posterior="gaussian")
    fresh.load_state_dict(bnn.state_dict())
    same_mean_output(bnn, fresh, x)
    clone = pickle_roundtrip(bnn)
    assert type(clone).__name__ == type(bnn).__name__
    same_mean_output(bnn, clone, x)
    functional = autobayes.bayesify(Functional())
    xs = (torch.randn(2, 4), torch.randn(2, 3, 6, 6))
    clone = pickle_roundtrip(functional)
    functional.eval(), clone.eval()
    with autobayes.use_mean(functional), autobayes.use_mean(clone):
        torch.testing.assert_close(clone(*xs).output["h"], functional(*xs).output["h"])


class _Autowrapped(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(normalize(x))


def test_compiling_a_forward_with_autowrapped_functions_leaves_later_traces_working():
    # torch.fx writes `torch.fx._symbolic_trace.wrap("<dotted name>")` into the code of a graph with autowrapped
    # functions; executing it registered the dotted name in torch.fx's global patch table, and every later trace in
    # the process failed with KeyError (an fx-mode conversion after an LSTM model with autowrap_functions did).
    bnn = autobayes.bayesify(_Autowrapped(), mode="fx", autowrap_functions=[normalize])
    assert bnn(torch.randn(2, 4)).output.shape == (2, 3)
    assert "torch.nn.functional.normalize" in bnn.code
    torch.fx.symbolic_trace(torch.nn.Sequential(torch.nn.Linear(2, 2)))
    assert autobayes.bayesify(SmallCNN(), mode="fx").bayes_report.mode == "fx"
