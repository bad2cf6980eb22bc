"""Files written by autobayes 0.1.0 (``tests/fixtures/make_v0_1_0.py``, before the fx/ + kl/ refactor) still load,
and give the outputs and KL they gave then.

Every comparison is under ``use_mean`` in eval mode, so nothing is random. The tolerances are
``torch.testing.assert_close``'s float32 defaults (rtol 1.3e-6, atol 1e-5): a different CPU or thread count may
sum a convolution in another order (a few float32 ulps); a changed model (other weights, a layer missing from the
KL, a different estimator) is off by orders of magnitude more.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import autobayes
from autobayes.errors import CheckpointError

pytestmark = pytest.mark.usefixtures("one_thread")

FIXTURES = Path(__file__).parent / "fixtures"
EXPECTED = load_file(str(FIXTURES / "expected_v0.1.0.safetensors"))


def _mean_output(bnn, x):
    bnn.eval()
    with torch.no_grad(), autobayes.use_mean(bnn):
        return bnn(x)


def _assert_same(bnn, x_key: str, prefix: str) -> None:
    out, kl = _mean_output(bnn, EXPECTED[x_key])
    torch.testing.assert_close(out, EXPECTED[f"{prefix}_output"])
    torch.testing.assert_close(kl, EXPECTED[f"{prefix}_kl"])


def test_checkpoint_v0_1_0_loads_with_the_same_outputs(tmp_path):
    path = FIXTURES / "digits_cnn_v0.1.0.safetensors"
    bnn = autobayes.load(path)
    assert bnn.bayes_report.mode == "fx"
    _assert_same(bnn, "digits_x", "digits_ckpt")
    # saved again by the current code: the same header (but for versions / date) and the same tensors
    again = autobayes.save(bnn, tmp_path / "again.safetensors", metadata=bnn.autobayes_checkpoint["metadata"])
    old, new = autobayes.read_checkpoint_info(path).spec, autobayes.read_checkpoint_info(again).spec
    for key in ("versions", "created_at"):
        old.pop(key), new.pop(key)
    for key, default in {"tied": "shared", "components": 4, "factor_init_std": 0.5}.items():  # added since 0.1.0
        assert key not in old["bayes_config"] and new["bayes_config"].pop(key) == default
    # entries added since 0.1.0 (optional on loading): no parameter of this network is frozen
    assert "frozen_parameters" not in old and new.pop("frozen_parameters") == []
    assert json.dumps(new, sort_keys=True) == json.dumps(old, sort_keys=True)
    assert new["bayesian_layers"] == ["0", "2", "6", "8"]
    with safe_open(str(path), "pt") as a, safe_open(str(again), "pt") as b:
        assert sorted(a.keys()) == sorted(b.keys())
        for key in a.keys():
            assert torch.equal(a.get_tensor(key), b.get_tensor(key)), key


@pytest.mark.parametrize("name, prefix", [("digits_cnn_v0.1.0_fx.pt", "digits_fx"), ("digits_cnn_v0.1.0_swap.pt", "digits_swap")])
def test_pickled_model_v0_1_0_loads_with_the_same_outputs(name, prefix):
    bnn = torch.load(FIXTURES / name, weights_only=False)  # our own fixture: a whole pickled module
    assert bnn.bayes_report.mode == prefix.split("_")[1]
    _assert_same(bnn, "digits_x", prefix)
    bnn.train()
    out, kl = bnn(EXPECTED["digits_x"])  # sampling forward and the KL runtime still work
    (out.sum() + kl).backward()
    assert all(p.grad is not None for p in bnn.parameters())


def test_pickled_posterior_attributes_v0_1_0_load_with_the_same_outputs():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's own nested-tensor notice about the layer
        bnn = torch.load(FIXTURES / "transformer_layer_v0.1.0_swap.pt", weights_only=False)
    assert type(bnn.self_attn).__name__ == "BayesianMultiheadAttention"
    _assert_same(bnn, "seq_x", "transformer")


def test_resume_state_v0_1_0_continues_the_run(tmp_path):
    """``last.resume.pt`` of a run stopped after epoch 2 (``tests/fixtures/make_resume_v0_1_0.py``, before training/
    became a package) resumes to the epochs an uninterrupted run computes now.

    Epochs 1-2 come from the file and equal a fresh run's to float32 rounding. Epochs 3-4 continue from its
    optimiser and random state; a state restored wrongly (another shuffle, other posterior noise, Adam's moments
    reset) moves the training loss of epoch 3 by ~1e-2 relative, while another CPU summing in another order moves
    it by ~1e-6: rtol 1e-4 lies between.
    """
    import shutil

    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "resume_v0.1.0", run)
    options = dict(epochs=4, model_kwargs={"hidden": [16]}, batch_size=64, lr=3e-3, seed=0, n_test=5, progress=False)
    # the first run used 0.1.0's default posterior (the Radial): today's default (rank-1) does not fit the file
    with pytest.raises(CheckpointError, match="does not match this run"):
        autobayes.train("fcnet", "breast_cancer", out_dir=run, resume=True, **options)
    options["posterior"] = "radial"  # "the same arguments as the first run"
    resumed = autobayes.train("fcnet", "breast_cancer", out_dir=run, resume=True, **options)
    straight = autobayes.train("fcnet", "breast_cancer", **options)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    for a, b in zip(straight.history, resumed.history):
        for key in ("train_loss", "train_nll", "train_kl", "train_acc", "val_loss", "val_nll", "val_acc", "lr"):
            assert a[key] == pytest.approx(b[key], rel=1e-4), (a["epoch"], key)
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)
    assert (run / "log.csv").is_file() and (run / "last.safetensors").is_file()
    # with the run's checkpoint beside the file, the error names the option that differs
    options.update(epochs=5, posterior="rank1")
    with pytest.raises(CheckpointError, match=r"records posterior='radial' \(this run: 'rank1'\)"):
        autobayes.train("fcnet", "breast_cancer", out_dir=run, resume=True, **options)
