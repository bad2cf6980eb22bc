"""Summaries of Monte Carlo predictions of a Bayesian network, :func:`predict` to draw them and
:func:`score_ood` to compare the uncertainty of two data sets.

A Bayesian network gives a fresh posterior sample at each forward pass. ``S`` passes over ``N`` examples give
``(S, N, C)`` class probabilities or ``(S, N[, D])`` regression outputs, which these functions reduce to
per-example statistics (mean, median, std, credible interval, class votes, entropy decomposition), each with a
per-example CSV writer. Entropies are in nats.

Where things are: ``summaries.py`` (the two summary types and the functions that build them),
``tokens.py`` (per-token summaries of language models), ``prediction.py`` (:func:`predict`: chunked sampling,
several samples per forward, seeded shared draws),
``ood.py`` (:func:`score_ood`, :class:`OODScores`).
"""

from .ood import OODScores, score_ood
from .prediction import predict
from .summaries import ClassificationSummary, RegressionSummary, classification_summary, regression_summary
from .tokens import TokenSummary, token_summary

__all__ = [
    "ClassificationSummary",
    "RegressionSummary",
    "TokenSummary",
    "OODScores",
    "classification_summary",
    "regression_summary",
    "token_summary",
    "predict",
    "score_ood",
]
