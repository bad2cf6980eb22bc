"""A Bayesian CNN trained on digits knows what it has not seen.

Uniform-noise images (each pixel uniform over the training images' range) must have a higher mean mutual
information (epistemic uncertainty) than the held-out digits, and the mutual information must separate the two
sets with AUROC > 0.9.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

import autobayes
from autobayes.metrics import auroc


def test_mutual_information_flags_uniform_noise_images():
    torch.manual_seed(0)
    result = autobayes.train("digits_cnn", "digits", epochs=10, progress=False, seed=0)
    train_set, val_set, _ = autobayes.load_dataset("digits")
    images = torch.stack([train_set[i][0] for i in range(len(train_set))])
    low, high = images.min().item(), images.max().item()
    noise = low + (high - low) * torch.rand(len(val_set), *images.shape[1:])

    torch.manual_seed(1)
    digits = autobayes.predict(result.model, DataLoader(val_set, batch_size=512), n_samples=50, progress=False)
    ood = autobayes.predict(result.model, noise, n_samples=50, progress=False)

    assert autobayes.accuracy(digits.mean, digits.targets) > 0.9
    assert ood.mutual_information.mean() > digits.mutual_information.mean()
    assert auroc(digits.mutual_information, ood.mutual_information) > 0.9
