"""ELBO losses with one scaling convention: the negative ELBO per data point.

For a data set of ``N`` examples, a mini-batch of ``B`` examples, a likelihood ``p(y | x, w)`` and the KL of the
posterior ``q(w)`` from the prior (the ``kl`` a Bayesian model returns next to its output),

.. math::

    \\mathrm{loss} = \\frac{1}{N}\\Big(\\frac{N}{B}\\sum_{i \\in \\mathrm{batch}} \\mathrm{NLL}_i
        + \\beta\\,\\mathrm{KL}\\Big)
      = \\underbrace{\\frac{1}{B}\\sum_{i} \\mathrm{NLL}_i}_{\\text{mean NLL of the batch}}
        + \\beta\\,\\frac{\\mathrm{KL}}{N}.

With ``beta = 1`` this is an unbiased estimate of ``-ELBO / N`` (the batch is a uniform sample of the data set and
the network output one posterior sample), so its size does not depend on ``N`` or ``B`` and learning rates carry
over between data sets. ``NLL_i`` is the negative log-likelihood of the whole example ``i``: summed over its
pixels or output dimensions, never averaged (an average would weaken the likelihood against the KL).
KL weight schedules (:mod:`autobayes.schedules`) return the ``beta`` of this formula.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checks import check_int, check_nonnegative, check_positive
from .errors import ConfigError

__all__ = ["ELBOTerms", "ELBOLoss", "CategoricalELBO", "GaussianELBO", "split_mean_logvar"]

_LOG_2PI = math.log(2.0 * math.pi)


class ELBOTerms(NamedTuple):
    """The terms of one ELBO evaluation, to optimise (``loss``) and to log (the rest).

    Attributes:
        loss: ``nll + beta * kl / num_data``, a 0-dim tensor to call ``backward()`` on.
        nll: mean negative log-likelihood per example of the batch (0-dim tensor).
        kl: the KL the model returned, unscaled (0-dim tensor).
        beta: the KL weight used.
    """

    loss: Tensor
    nll: Tensor
    kl: Tensor
    beta: float


class ELBOLoss(nn.Module):
    """Base class: ``loss = mean NLL over the batch + beta * KL / num_data``.

    Subclasses implement :meth:`per_example_nll`. Calling the loss returns :class:`ELBOTerms`.

    Args:
        num_data: ``N``, the number of examples in the training set (not the number of batches).
        beta: default KL weight; a ``beta`` passed to the call (e.g. from a schedule) replaces it.

    Example:
        >>> criterion = CategoricalELBO(num_data=len(train_set))  # doctest: +SKIP
        >>> out, kl = bnn(x)                                      # doctest: +SKIP
        >>> terms = criterion(out, y, kl, beta=schedule(step, epoch, i, len(loader)))  # doctest: +SKIP
        >>> terms.loss.backward()                                 # doctest: +SKIP
    """

    def __init__(self, num_data: int, beta: float = 1.0) -> None:
        super().__init__()
        self.num_data = check_int(num_data, "num_data", 1,
                                  hint="the number of training examples, e.g. num_data=len(train_loader.dataset)")
        self.beta = _check_beta(beta)

    def per_example_nll(self, output: Tensor, target: Tensor) -> Tensor:
        """Negative log-likelihood of each example, shape ``(B,)``; implemented by subclasses."""
        raise NotImplementedError(f"{type(self).__name__} must implement per_example_nll(output, target)")

    def forward(self, output: Any, target: Tensor, kl: Union[Tensor, float, None] = None,
                beta: Optional[float] = None) -> ELBOTerms:
        """Compute the loss of one batch.

        Args:
            output: the model output for the batch; or the whole ``(output, kl)`` pair a Bayesian model
                returns, when ``kl`` is not given.
            target: the targets of the batch.
            kl: the model's KL (a 0-dim tensor or a float); ``None`` takes it from ``output``.
            beta: KL weight of this step (default: the ``beta`` given to the constructor).

        Returns:
            :class:`ELBOTerms` ``(loss, nll, kl, beta)``.

        Example:
            >>> terms = CategoricalELBO(num_data=100)(torch.zeros(4, 3), torch.tensor([0, 1, 2, 0]), kl=5.0)
            >>> round(terms.loss.item(), 4)  # log(3) + 5 / 100
            1.1486
        """
        if kl is None:
            if isinstance(output, (tuple, list)) and len(output) == 2:
                output, kl = output
            else:
                raise ConfigError(
                    f"{type(self).__name__} needs the model's KL: call it as criterion(out, y, kl) or pass the "
                    f"(output, kl) pair a Bayesian model returns, criterion(bnn(x), y); got output of type "
                    f"{type(output).__name__} and kl=None"
                )
        if not isinstance(output, Tensor):
            raise ConfigError(f"{type(self).__name__}: output must be a tensor, got {type(output).__name__}")
        kl = _as_scalar_kl(kl, output)
        beta = self.beta if beta is None else _check_beta(beta)
        nll = self.per_example_nll(output, target)
        nll = nll.mean()
        loss = nll + beta * kl / self.num_data
        return ELBOTerms(loss, nll, kl, beta)

    def extra_repr(self) -> str:
        return f"num_data={self.num_data}, beta={self.beta}"


class CategoricalELBO(ELBOLoss):
    """ELBO with a categorical likelihood on logits (cross-entropy).

    ``output`` holds logits of shape ``(B, C)`` or ``(B, C, d1, ...)`` (e.g. segmentation); ``target`` class
    indices of shape ``(B,)`` / ``(B, d1, ...)``, or class probabilities of the logits' shape. The NLL of an
    example is summed over its ``d1, ...`` positions.

    Args:
        num_data: number of training examples ``N``.
        beta: default KL weight.

    Example:
        >>> criterion = CategoricalELBO(num_data=60000)
        >>> terms = criterion(torch.randn(8, 10), torch.randint(0, 10, (8,)), kl=torch.tensor(1200.0))
        >>> terms.loss.shape
        torch.Size([])
    """

    def per_example_nll(self, output: Tensor, target: Tensor) -> Tensor:
        name = type(self).__name__
        if output.dim() < 2:
            raise ConfigError(
                f"{name}: logits must have shape (batch, classes, ...), got {tuple(output.shape)}; for one "
                f"output per example (binary), return 2 logits per example or use GaussianELBO for regression"
            )
        if not isinstance(target, Tensor):
            raise ConfigError(f"{name}: target must be a tensor, got {type(target).__name__}")
        if target.is_floating_point() and target.shape == output.shape:
            per_elem = F.cross_entropy(output, target, reduction="none")
        else:
            expected = (output.shape[0],) + tuple(output.shape[2:])
            if target.is_floating_point():
                raise ConfigError(
                    f"{name}: target of dtype {target.dtype} and shape {tuple(target.shape)}: give class indices "
                    f"(an integer tensor of shape {expected}, e.g. y.long()) or class probabilities of the "
                    f"logits' shape {tuple(output.shape)}"
                )
            if tuple(target.shape) != expected:
                raise ConfigError(
                    f"{name}: target shape {tuple(target.shape)} does not match logits of shape "
                    f"{tuple(output.shape)}; expected class indices of shape {expected}"
                )
            per_elem = F.cross_entropy(output, target.long(), reduction="none")
        return per_elem.reshape(per_elem.shape[0], -1).sum(dim=1)


class GaussianELBO(ELBOLoss):
    """ELBO with a Gaussian likelihood ``y ~ N(mean, variance)``.

    The NLL of an example is ``sum_d 0.5 * (log(2 pi var_d) + (y_d - mean_d)^2 / var_d)`` over its output
    entries (all dimensions but the first).

    Args:
        num_data: number of training examples ``N``.
        variance: ``float > 0``: a fixed noise variance, the output is the mean; ``"learned"``: one learned
            (homoscedastic) log-variance, the parameter :attr:`log_variance` (add ``criterion.parameters()`` to
            the optimiser); ``"heteroscedastic"``: the output has ``2 * D`` channels along its last dimension,
            the mean and the log-variance (see :func:`split_mean_logvar`).
        beta: default KL weight.
        init_log_variance: initial value of the learned log-variance (``variance="learned"``).

    Example:
        >>> criterion = GaussianELBO(num_data=1000, variance="heteroscedastic")
        >>> out = torch.zeros(16, 2)  # mean and log-variance of a 1-d target
        >>> terms = criterion(out, torch.zeros(16, 1), kl=0.0)
        >>> round(terms.nll.item(), 4)  # 0.5 * log(2 pi)
        0.9189
    """

    def __init__(self, num_data: int, variance: Union[float, str] = 1.0, beta: float = 1.0,
                 init_log_variance: float = 0.0) -> None:
        super().__init__(num_data, beta)
        self.log_variance: Optional[nn.Parameter] = None
        if isinstance(variance, str):
            mode = variance.lower()
            if mode not in ("learned", "heteroscedastic"):
                raise ConfigError(
                    f"GaussianELBO: variance must be a float > 0, 'learned' or 'heteroscedastic', got {variance!r}"
                )
            if mode == "learned":
                self.log_variance = nn.Parameter(torch.tensor(float(init_log_variance)))
            self.mode = mode
            self.fixed_variance: Optional[float] = None
        else:
            self.fixed_variance = check_positive(variance, "GaussianELBO: a fixed variance",
                                                 hint="or use variance='learned' / 'heteroscedastic'")
            self.mode = "fixed"

    def per_example_nll(self, output: Tensor, target: Tensor) -> Tensor:
        name = type(self).__name__
        if not isinstance(target, Tensor):
            raise ConfigError(f"{name}: target must be a tensor, got {type(target).__name__}")
        if self.mode == "heteroscedastic":
            mean, log_var = split_mean_logvar(output)
        else:
            mean = output
            if self.mode == "learned":
                log_var = self.log_variance.expand_as(mean)
            else:
                log_var = torch.full_like(mean, math.log(self.fixed_variance))
        if target.shape != mean.shape:
            hint = ""
            if target.dim() == mean.dim() - 1 and mean.shape[-1] == 1:
                hint = "; use target.unsqueeze(-1)"
            elif mean.dim() == target.dim() - 1 and target.shape[-1] == 1:
                hint = "; use target.squeeze(-1)"
            raise ConfigError(
                f"{name}: target shape {tuple(target.shape)} does not match the predicted mean's shape "
                f"{tuple(mean.shape)}{hint} (shapes must be equal: broadcasting would silently pair every "
                f"prediction with every target)"
            )
        if mean.dim() < 1 or mean.shape[0] == 0:
            raise ConfigError(f"{name}: output must have a batch dimension, got shape {tuple(output.shape)}")
        per_elem = 0.5 * (_LOG_2PI + log_var + (target - mean) ** 2 * torch.exp(-log_var))
        return per_elem.reshape(per_elem.shape[0], -1).sum(dim=1)

    def extra_repr(self) -> str:
        variance = self.fixed_variance if self.mode == "fixed" else repr(self.mode)
        return f"{super().extra_repr()}, variance={variance}"


def split_mean_logvar(output: Tensor) -> Tuple[Tensor, Tensor]:
    """Split a heteroscedastic output of ``2 * D`` channels along its last dimension into mean and log-variance.

    Args:
        output: tensor ``(..., 2 * D)``: the first ``D`` channels are the mean, the last ``D`` the log-variance.

    Returns:
        ``(mean, log_var)``, each ``(..., D)``.

    Example:
        >>> mean, log_var = split_mean_logvar(torch.tensor([[1.0, 2.0, -1.0, 0.0]]))
        >>> mean, log_var
        (tensor([[1., 2.]]), tensor([[-1.,  0.]]))
    """
    if not isinstance(output, Tensor) or output.dim() < 1:
        raise ConfigError(
            f"split_mean_logvar: expected a tensor (..., 2 * D), got "
            f"{tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__}"
        )
    channels = output.shape[-1]
    if channels % 2 != 0:
        raise ConfigError(
            f"a heteroscedastic output needs an even number of channels in its last dimension (mean and "
            f"log-variance of each of D outputs), got shape {tuple(output.shape)}; make the last layer output "
            f"2 * D features, e.g. nn.Linear(hidden, 2 * D)"
        )
    half = channels // 2
    return output[..., :half], output[..., half:]


def _check_beta(beta: Any) -> float:
    if isinstance(beta, Tensor) and beta.numel() == 1:
        beta = beta.item()
    return check_nonnegative(beta, "beta (the KL weight)")


def _as_scalar_kl(kl: Any, like: Tensor) -> Tensor:
    if isinstance(kl, numbers.Real) and not isinstance(kl, bool):
        return torch.tensor(float(kl), dtype=like.dtype, device=like.device)
    if not isinstance(kl, Tensor):
        raise ConfigError(f"kl must be a 0-dim tensor or a float, got {type(kl).__name__}")
    if kl.numel() != 1:
        raise ConfigError(
            f"kl must be a single value (the summed KL of the model), got shape {tuple(kl.shape)}; with "
            f"nn.DataParallel each replica returns the same KL, so pass kl.mean()"
        )
    return kl.reshape(())
