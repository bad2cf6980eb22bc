"""Out-of-distribution scoring: :func:`score_ood` predicts an in-distribution and an out-of-distribution set
with the same posterior draws and reports how well the uncertainty separates them (:class:`OODScores`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Union

from torch import Tensor, nn

from ..checks import check_int
from ..errors import ConfigError
from .prediction import predict
from .summaries import ClassificationSummary

__all__ = ["OODScores", "score_ood"]


@dataclass
class OODScores:
    """Uncertainty of an in-distribution and an out-of-distribution set, scored with the same posterior draws.

    Attributes:
        in_distribution: :class:`ClassificationSummary` of the in-distribution set.
        out_of_distribution: :class:`ClassificationSummary` of the OOD set.
        auroc_mutual_information: AUROC of mutual information as a score of "out of distribution"
            (0.5: no separation, 1: every OOD example scores higher than every in-distribution one).
        auroc_predictive_entropy: the same for predictive entropy.
        n_samples: posterior draws per example, the same draws for both sets.
        seed: the seed the draws were made from.
    """

    in_distribution: ClassificationSummary
    out_of_distribution: ClassificationSummary
    auroc_mutual_information: float
    auroc_predictive_entropy: float
    n_samples: int
    seed: int


def score_ood(bnn: nn.Module, in_data: Union[Tensor, Iterable], ood_data: Union[Tensor, Iterable],
              n_samples: int = 100, *, seed: int = 0, **predict_options: Any) -> OODScores:
    """Score how well the model's uncertainty separates ``ood_data`` from ``in_data``, fairly.

    Both sets are predicted by :func:`predict` with the same ``seed``: the ``s``-th of the ``n_samples``
    predictions of every example, in either set and in any batch, uses the same draw of every weight tensor
    that the model samples (per-example noise, as in local reparameterisation, is independent per example
    anyway). Predicting the sets separately, each batch with its own draws, makes a model whose weights are
    sampled once per forward (``forward="sample"``, the Radial's default) score the draws each set happened to
    get: a copy of the in-distribution set could reach an AUROC near 0 or 1. With shared draws the copy scores
    0.5 and a difference in the AUROC is a difference in the data.

    The mutual information and entropy of each example are plug-in estimates from ``n_samples`` draws: more
    samples give less noisy scores (100 is a sound default; 10 is enough for a rough look).

    Args:
        bnn: the Bayesian classifier.
        in_data: in-distribution inputs (a tensor or an iterable of ``x`` / ``(x, y, ...)`` batches).
        ood_data: out-of-distribution inputs, likewise.
        n_samples: posterior draws per example (>= 1), the same draws for both sets.
        seed: seed of the draws (the result is a function of it).
        **predict_options: passed to :func:`predict` (e.g. ``device``, ``progress``, ``interval``);
            ``task`` is ``"classification"``.

    Returns:
        :class:`OODScores`.

    Example:
        >>> noise = torch.rand(360, 1, 8, 8)  # doctest: +SKIP
        >>> scores = score_ood(bnn, DataLoader(val_set, batch_size=256), noise, n_samples=100)  # doctest: +SKIP
        >>> scores.auroc_mutual_information  # doctest: +SKIP
        0.97
    """
    from ..metrics import auroc

    for key in ("task", "seed", "n_samples"):
        if key in predict_options:
            raise ConfigError(f"score_ood: {key!r} is set by score_ood itself; remove {key}={predict_options[key]!r}")
    seed = check_int(seed, "score_ood: seed", 0)
    s_in = predict(bnn, in_data, n_samples, task="classification", seed=int(seed), **predict_options)
    s_out = predict(bnn, ood_data, n_samples, task="classification", seed=int(seed), **predict_options)
    return OODScores(
        in_distribution=s_in, out_of_distribution=s_out,
        auroc_mutual_information=auroc(s_in.mutual_information, s_out.mutual_information),
        auroc_predictive_entropy=auroc(s_in.predictive_entropy, s_out.predictive_entropy),
        n_samples=int(n_samples), seed=int(seed),
    )
