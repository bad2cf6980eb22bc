"""The Bayesian layer contract, shared by every layer type."""

from __future__ import annotations

from typing import Any, ClassVar, Dict, Optional

import torch
from torch import Tensor, nn

from .._random import normal_
from ..config import BayesConfig
from ..errors import ConfigError
from .parameter import BayesParameter

__all__ = ["BayesLayer"]

_MIN_VAR = 1e-16


class BayesLayer(nn.Module):
    """Base of the Bayesian twins of ``nn.Linear`` / ``nn.ConvNd`` / ``nn.ConvTransposeNd``.

    A layer holds a :class:`BayesParameter` for its weight (``weight_posterior``) and bias (``bias_posterior``,
    or ``None``) and computes ``op(x, weight, bias)`` -- the deterministic twin's operation -- in one of three
    forward modes (``config.forward``):

    * ``"local"`` (local reparameterisation): ``op(x, mu_w, mu_b) + sqrt(op(x^2, var_w, var_b)) * eps`` with
      ``eps ~ N(0, 1)`` independent per output element, so per example. Exact for the Gaussian posterior; a
      moment-matched approximation for others (e.g. Radial, see its docstring).
    * ``"sample"``: one weight draw per forward, shared by the whole batch. Exact for every posterior.
    * ``"mean"``: the posterior means (deterministic). :func:`autobayes.use_mean` switches to it temporarily.

    ``"auto"`` picks the posterior's own default (``Gaussian``: local, ``Radial``: sample).

    Subclasses set ``_DETERMINISTIC`` (the twin type) and implement ``_op`` and ``_twin_kwargs``.

    Construct it like its twin (``BayesLinear(20, 10, bias=False, config=BayesConfig(...))``) or from a trained
    module with :meth:`from_deterministic`; :meth:`to_deterministic` returns the posterior-mean twin.
    """

    _DETERMINISTIC: ClassVar[type]

    def __init__(self, *args: Any, config: Optional[BayesConfig] = None, **kwargs: Any) -> None:
        super().__init__()
        twin = self._DETERMINISTIC(*args, **kwargs)  # initialised exactly like the deterministic layer
        self._setup(twin, BayesConfig.make(config), from_weights=False)

    @classmethod
    def from_deterministic(cls, module: nn.Module, config: Optional[BayesConfig] = None) -> "BayesLayer":
        """The Bayesian twin of ``module``: posterior means := its weights, so trained weights are kept.

        Example:
            >>> lin = nn.Linear(4, 2)
            >>> blin = BayesLinear.from_deterministic(lin, BayesConfig(init_scale=1e-3))
            >>> torch.equal(blin.weight_posterior.mu, lin.weight)
            True
        """
        if not isinstance(module, cls._DETERMINISTIC):
            raise ConfigError(
                f"{cls.__name__}.from_deterministic expects an instance of {cls._DETERMINISTIC.__name__}, "
                f"got {type(module).__name__}"
            )
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer._setup(module, BayesConfig.make(config), from_weights=True)
        layer.train(module.training)
        return layer

    def _setup(self, twin: nn.Module, config: BayesConfig, *, from_weights: bool) -> None:
        self._copy_hyperparameters(twin)
        self.config = config
        self.weight_posterior = BayesParameter(twin.weight, config, from_weights=from_weights)
        self.bias_posterior = (
            BayesParameter(twin.bias, config, from_weights=from_weights) if twin.bias is not None else None
        )
        posterior = self.weight_posterior.posterior
        self.forward_mode = posterior.default_forward if config.forward == "auto" else config.forward

    # ------------------------------------------------------------------ subclass hooks
    def _copy_hyperparameters(self, twin: nn.Module) -> None:
        raise NotImplementedError

    def _twin_kwargs(self) -> Dict[str, Any]:
        raise NotImplementedError

    def _op(self, x: Tensor, weight: Tensor, bias: Optional[Tensor], *args: Any) -> Tensor:
        raise NotImplementedError

    # ------------------------------------------------------------------ views
    @property
    def weight(self) -> Tensor:
        """The posterior mean of the weight (read-only view for code that inspects ``layer.weight``)."""
        return self.weight_posterior.mean

    @property
    def bias(self) -> Optional[Tensor]:
        return None if self.bias_posterior is None else self.bias_posterior.mean

    @property
    def use_mean(self) -> bool:
        return self.weight_posterior.use_mean

    @property
    def per_example_noise(self) -> bool:
        """True when each example of a batch gets its own noise (local reparameterisation)."""
        return self.forward_mode == "local" and not self.use_mean

    def posteriors(self):
        """The layer's :class:`BayesParameter` modules (weight, then bias if any)."""
        return [p for p in (self.weight_posterior, self.bias_posterior) if p is not None]

    # ------------------------------------------------------------------ maths
    def forward(self, x: Tensor, *args: Any) -> Tensor:
        mode = "mean" if self.use_mean else self.forward_mode
        bias = self.bias_posterior
        if mode == "mean":
            return self._op(x, self.weight_posterior.mean, None if bias is None else bias.mean, *args)
        if self.weight_posterior.posterior.multiplicative and mode == "local":
            return self._per_example_factors(x, *args)
        if mode == "sample":
            return self._op(x, self.weight_posterior.sample(), None if bias is None else bias.sample(), *args)
        mean = self._op(x, self.weight_posterior.mu, None if bias is None else bias.mu, *args)
        var = self._op(x * x, self.weight_posterior.variance, None if bias is None else bias.variance, *args)
        return torch.addcmul(mean, torch.sqrt(var.clamp_min(_MIN_VAR)), normal_(torch.empty_like(mean)))

    def _per_example_factors(self, x: Tensor, *args: Any) -> Tensor:
        """A rank-1 posterior's forward with its own weight ``W o (r s^T)`` for each example, computed as
        ``op(x o s, W) o r + b`` (:meth:`_factor_axes` says which of the weight's dims 0 and 1 is the input
        side); the same outputs as ``op(x_i, W o (r_i s_i^T)) + b`` example by example."""
        batched = x.dim() > self._unbatched_dim()
        if not batched:
            x = x.unsqueeze(0)
        out_f, in_f = self._factor_axes(*self.weight_posterior.example_factors(x.shape[0]))
        y = self._op(x * self._per_channel(in_f, x.dim()), self.weight_posterior.mu, None, *args)
        if self.bias_posterior is None:
            y = y * self._per_channel(out_f, y.dim())
        else:  # y o r + b in one operation
            y = torch.addcmul(self._per_channel(self.bias_posterior().unsqueeze(0), y.dim()), y,
                              self._per_channel(out_f, y.dim()))
        return y if batched else y.squeeze(0)

    # Linear layout (overridden by the convolutions): features last, weight (out, in).
    def _unbatched_dim(self) -> int:
        return 1

    def _per_channel(self, t: Tensor, dims: int) -> Tensor:
        """``t`` of shape ``(B, C)`` shaped to broadcast over a ``dims``-d activation with channels last."""
        return t.reshape(t.shape[0], *([1] * (dims - 2)), t.shape[1])

    def _factor_axes(self, first: Tensor, second: Tensor):
        """``(output factors, input factors)`` from the factors of the weight's dims 0 and 1."""
        return first, second

    def kl(self) -> Tensor:
        """``KL(q || p)`` of the layer: weight plus bias, summed over elements."""
        total = self.weight_posterior.kl()
        if self.bias_posterior is not None:
            total = total + self.bias_posterior.kl()
        return total

    def to_deterministic(self) -> nn.Module:
        """The deterministic twin holding the posterior means."""
        mu = self.weight_posterior.mean
        twin = self._DETERMINISTIC(**self._twin_kwargs(), device=mu.device, dtype=mu.dtype)
        with torch.no_grad():
            twin.weight.copy_(mu)
            if self.bias_posterior is not None:
                twin.bias.copy_(self.bias_posterior.mean)
        twin.train(self.training)
        return twin

    def extra_repr(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self._twin_kwargs().items())
        wp = self.weight_posterior
        return f"{args}, posterior={wp.posterior.name}, kl={wp.kl_method}, n_mc={wp.n_mc}, forward={self.forward_mode}"
