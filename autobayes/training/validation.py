"""Validation after each epoch: ``n_test`` posterior samples per example, the loss and the metrics of the Monte
Carlo predictive (:mod:`autobayes.metrics`; for regression the predictive of
:func:`autobayes.uncertainty.regression_summary`)."""

from __future__ import annotations

import time
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from torch import Tensor, nn

from .. import metrics
from ..data import DatasetInfo
from ..losses import split_mean_logvar
from ..uncertainty import RegressionSummary, regression_summary
from .logs import chance_nll

__all__ = ["validate", "model_kl", "noise_variance"]


def validate(net: nn.Module, bnn: nn.Module, criterion: nn.Module, loader: Any, n_test: int, device: torch.device,
             info: DatasetInfo) -> Dict[str, Any]:
    """``n_test`` posterior samples per example; the loss (beta = 1) of the first sample, the metrics of the
    Monte Carlo predictive: accuracy, NLL and ECE of the mean probabilities (classification), or RMSE, R^2 and
    Gaussian NLL of the predictive mixture (regression, in the units of the network's targets: standardised
    when the data set standardises them), and ``val_chance_nll``, the NLL of the best constant prediction
    (:func:`~autobayes.training.logs.chance_nll`; not a column of ``log.csv``)."""
    from ..api import kl_disabled

    bnn.eval()
    start = time.perf_counter()
    batch_times: List[float] = []
    loss_sum, n = 0.0, 0
    preds, targets = [], []
    with torch.no_grad():
        kl = model_kl(bnn)
        with kl_disabled(bnn):
            for x, y in loader:
                t0 = time.perf_counter()
                x = x.to(device)
                outs = torch.stack([net(x)[0].float() for _ in range(n_test)]).cpu()
                batch_times.append(time.perf_counter() - t0)
                loss_sum += criterion(outs[0].to(device), y.to(device), kl, beta=1.0).loss.item() * x.shape[0]
                n += x.shape[0]
                preds.append(outs.softmax(-1).mean(0) if info.task == "classification" else outs)
                targets.append(y)
    y = torch.cat(targets)
    row: Dict[str, Any] = {"val_loss": loss_sum / max(n, 1), "val_epoch_time": time.perf_counter() - start,
                           "val_avg_batch_time": float(np.mean(batch_times)) if batch_times else 0.0}
    if n:  # what a constant prediction scores: the run warns when the network does no better
        row["val_chance_nll"] = chance_nll(y, info.task, info.num_classes)
    if info.task == "classification":
        p = torch.cat(preds)
        row.update(val_acc=metrics.accuracy(p, y), val_nll=metrics.nll(p, y),
                   val_ece=metrics.expected_calibration_error(p, y))
    else:
        predictive = _regression_predictive(torch.cat(preds, dim=1), criterion)  # samples (S, N, D)
        mean, var = predictive.mean, predictive.std ** 2
        y = y.reshape(mean.shape)
        row.update(val_rmse=metrics.rmse(mean, y), val_r2=metrics.r2_score(mean, y),
                   val_nll=metrics.gaussian_nll(mean, var, y))
    return row


def _regression_predictive(samples: Tensor, criterion: nn.Module) -> RegressionSummary:
    """The predictive mixture of the sampled outputs ``(S, N, D)`` with the criterion's noise: variance
    ``Var_s[mean_s] + E_s[noise_s]``, the noise learned or fixed, or (heteroscedastic) the exp of the
    log-variance half of the output. In float64, so that ``std ** 2`` gives the variance back exactly enough."""
    samples = samples.double()
    noise = noise_variance(criterion)
    if noise is None:  # heteroscedastic: the output holds mean and log-variance
        mus, log_vars = split_mean_logvar(samples)
        return regression_summary(mus, var_samples=log_vars.exp())
    return regression_summary(samples, var_samples=torch.full_like(samples, noise))


def model_kl(net: nn.Module) -> Tensor:
    """The model's KL without a data pass: the sum of the Bayesian layers' ``kl()``."""
    from ..fx.runtime import kl_units

    terms = [m.kl() for m in kl_units(net).values()]
    return torch.stack(terms).sum() if terms else torch.zeros(())


def noise_variance(criterion: nn.Module) -> Optional[float]:
    """The regression noise variance of a :class:`autobayes.losses.GaussianELBO`: the learned or the fixed
    one; ``None`` when it is heteroscedastic (part of the network's output)."""
    mode = getattr(criterion, "mode", "fixed")
    if mode == "heteroscedastic":
        return None
    if mode == "learned":
        return float(criterion.log_variance.detach().exp())
    return float(criterion.fixed_variance)
