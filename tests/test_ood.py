"""Out-of-distribution scoring: uncertainty must measure the data, not the weight draws each set got.

A Bayesian CNN trained on digits knows what it has not seen (uniform-noise images are separated from
held-out digits by mutual information, AUROC > 0.9), and the two sets are scored with the same posterior draws (:func:`autobayes.uncertainty.score_ood`, ``autobayes evaluate --ood-data``), so
that a copy of the in-distribution set scores AUROC 0.5.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import DataLoader

import autobayes
from autobayes.cli import main
from autobayes.metrics import auroc
from autobayes.models import build_model
from autobayes.uncertainty import predict, score_ood

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def sample_mode_checkpoint(tmp_path_factory):
    """An untrained Radial digits CNN: weights drawn once per forward (forward="sample"), shared by a batch."""
    torch.manual_seed(0)
    bnn = autobayes.bayesify(build_model("digits_cnn", num_classes=10, in_channels=1, image_size=8), posterior="radial")
    assert all(m.forward_mode == "sample" for m in bnn.modules() if hasattr(m, "forward_mode"))
    path = tmp_path_factory.mktemp("ood") / "radial_digits_cnn.safetensors"
    autobayes.save(bnn, path)
    return path


def test_a_copy_of_the_in_distribution_set_scores_one_half(sample_mode_checkpoint):
    """The copy is batched differently (128 vs 100 per batch), so the shared draws must span batches too.

    Scored with the same 10 draws, an example and its copy get the same uncertainty: AUROC 0.5 (within 0.05).
    The old path -- each set predicted by its own call, each batch with its own draws -- scores the draws: here
    every example of one call scored above every example of the other (AUROC 0 or 1), far outside 0.5 +- 0.05.
    """
    bnn = autobayes.load(sample_mode_checkpoint)
    _, val_set, _ = autobayes.load_dataset("digits")
    digits, copy = DataLoader(val_set, batch_size=128), DataLoader(val_set, batch_size=100)

    torch.manual_seed(0)
    old_in = predict(bnn, digits, n_samples=10, progress=False)
    torch.manual_seed(1)
    old_out = predict(bnn, copy, n_samples=10, progress=False)
    old = auroc(old_in.mutual_information, old_out.mutual_information)
    assert abs(old - 0.5) > 0.05, old  # the defect this test guards against

    scores = score_ood(bnn, digits, copy, n_samples=10, seed=0, progress=False)
    assert abs(scores.auroc_mutual_information - 0.5) <= 0.05
    assert abs(scores.auroc_predictive_entropy - 0.5) <= 0.05
    assert scores.n_samples == 10 and scores.in_distribution.n_samples == scores.out_of_distribution.n_samples == 10
    torch.testing.assert_close(scores.in_distribution.mean, scores.out_of_distribution.mean)


def test_evaluate_ood_data_scores_a_copy_at_one_half(sample_mode_checkpoint, tmp_path):
    """`autobayes evaluate --ood-data digits` on digits: the OOD set is the evaluation set itself.
    Before the fix (separate calls, seeds --seed and --seed + 1) it reported an AUROC far from 0.5."""
    out = tmp_path / "eval"
    code = main(["evaluate", str(sample_mode_checkpoint), "--data", "digits", "--ood-data", "digits",
                 "--n-samples", "10", "--out", str(out)])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert abs(metrics["ood_auroc_mutual_information"] - 0.5) <= 0.05
    assert abs(metrics["ood_auroc_predictive_entropy"] - 0.5) <= 0.05
    assert metrics["ood_n_samples"] == 10


def test_mutual_information_flags_uniform_noise_images():
    """Uniform-noise images (each pixel uniform over the training images' range) have a higher mean mutual
    information than the held-out digits, and the mutual information separates the sets with AUROC > 0.9."""
    torch.manual_seed(0)
    result = autobayes.train("digits_cnn", "digits", epochs=10, progress=False, seed=0)
    train_set, val_set, _ = autobayes.load_dataset("digits")
    images = torch.stack([train_set[i][0] for i in range(len(train_set))])
    low, high = images.min().item(), images.max().item()
    noise = low + (high - low) * torch.rand(len(val_set), *images.shape[1:])

    scores = score_ood(result.model, DataLoader(val_set, batch_size=512), noise, n_samples=50, seed=1, progress=False)
    digits, ood = scores.in_distribution, scores.out_of_distribution
    assert autobayes.accuracy(digits.mean, digits.targets) > 0.9
    assert ood.mutual_information.mean() > digits.mutual_information.mean()
    assert scores.auroc_mutual_information > 0.9
