"""`BayesParameter`: the variational posterior (and prior) of one weight tensor."""

from __future__ import annotations

import contextlib
import functools
import math
import threading
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from ..config import DEFAULT_N_MC, BayesConfig
from ..kl import kl_divergence, require_closed_form, resolve_kl_method
from ..posteriors import POSTERIORS
from ..priors import PRIORS

__all__ = ["BayesParameter", "cached_scales", "shared_draws", "current_draws", "checkpoint_context", "seeded_draws",
           "seeded_rng", "spawn_seeds", "initial_log_var"]

_MIN_SCALE = 1e-8
#: The default range of the log of a tensor's total initial posterior variance (see :func:`initial_log_var`).
_DEFAULT_TOTAL_LOG_VAR = (-3.0, -2.0)


#: The :class:`BayesParameter` subclass of each kind of posterior family other than location-scale.
_KINDS: Dict[str, type] = {}


class BayesParameter(nn.Module):
    """The posterior ``q(w) : w = mu + sigma * xi`` of one tensor, with its prior and KL settings.

    Parameters: ``mu`` (the posterior mean) and ``log_var`` (``log sigma^2``, per element): the family's own
    scale ``sigma``, not the weight's standard deviation. A weight's posterior variance is
    ``sigma^2 E[xi_j^2]`` (:attr:`variance`; ``E[xi_j^2]`` is the family's
    :meth:`~autobayes.posteriors.Posterior.second_moment`: 1 for the Gaussian, ``1/d`` for the Radial of a
    ``d``-element tensor, 2 for the Laplace, ``pi^2/3`` for the logistic). The prior is the submodule ``prior``
    (its tensors are buffers, saved in the state dict).

    The initial ``log_var`` is set from the per-weight standard deviation the configuration asks for
    (``init_scale``, ``moped_delta`` or ``init_log_var``): ``log_var = log(std^2) - log E[xi_j^2]``, so every
    family, a registered one included, starts with the same per-weight spread. A state dict holds ``log_var``
    itself, so loading one restores the parameters as saved (nothing is re-derived).

    Calling the module returns a weight sample (one draw of the posterior) or, under
    :func:`autobayes.use_mean`, the posterior mean: this is what replaces a raw parameter read in a traced
    graph (a weight used functionally, e.g. ``F.linear(x, self.weight)``). Inside :func:`shared_draws` (entered
    by a converted model's forward) every call returns the same draw, so all reads of one tensor in a forward --
    a tensor tied between an embedding and an output head included -- see one sample.

    Args:
        mean: the initial posterior mean (a converted layer's weights, or a fresh initialisation).
        config: the layer's :class:`BayesConfig`.
        from_weights: ``mean`` holds trained weights; ``moped_delta`` then applies.

    Example:
        >>> p = BayesParameter(torch.zeros(3, 4), BayesConfig(posterior="gaussian", kl="closed"))
        >>> p().shape, p.kl().dim()
        (torch.Size([3, 4]), 0)
    """

    per_example_noise = False

    def __new__(cls, mean: Optional[Tensor] = None, config: Optional[BayesConfig] = None, **kwargs):
        """A multiplicative family (``posterior="rank1"``) builds a :class:`~autobayes.nn.rank1.Rank1Parameter`,
        so every place that makes a tensor Bayesian (layers, posterior attributes, ties) makes the right kind."""
        if cls is BayesParameter and config is not None and POSTERIORS.get(config.posterior).multiplicative:
            cls = _KINDS["multiplicative"]
        return super().__new__(cls)

    def __init_subclass__(cls, kind: Optional[str] = None, **kwargs: Any) -> None:
        """``class Rank1Parameter(BayesParameter, kind="multiplicative")`` makes it the class :meth:`__new__` builds
        for the posterior families of that kind (registered where it is defined: no import back from here)."""
        super().__init_subclass__(**kwargs)
        if kind is not None:
            _KINDS[kind] = cls

    def __init__(self, mean: Tensor, config: BayesConfig, *, from_weights: bool = False) -> None:
        super().__init__()
        mean = mean.detach()
        self.mu = nn.Parameter(mean.clone())
        self.posterior = POSTERIORS.get(config.posterior)()
        self.log_var = nn.Parameter(initial_log_var(mean, config, self.posterior.second_moment(mean.numel()),
                                                    from_weights=from_weights))
        loc = mean.clone() if config.prior_loc == "weights" else torch.tensor(float(config.prior_loc), dtype=mean.dtype)
        self.prior = PRIORS.get(config.prior).from_config(
            loc.to(mean.device), config.prior_scale, **config.prior_kwargs
        ).to(device=mean.device, dtype=mean.dtype)
        self.kl_method = resolve_kl_method(config.kl, self.posterior, self.prior)
        if config.kl == "closed":  # fail at conversion time, not at the first forward
            require_closed_form(self.posterior, self.prior)
        self.n_mc = DEFAULT_N_MC if config.n_mc is None else config.n_mc
        self.mc_chunk_size = config.mc_chunk_size
        self.use_mean = False
        #: When not ``None``, :meth:`sample` draws its noise from this seed (the same weights at every call).
        self.draw_seed: Optional[int] = None
        self._cache: Optional[dict] = None  # scale / variance kept between forwards, see cached_scales

    # Class-level defaults of the plain attributes added after 0.1.0: a whole model pickled by 0.1.0 restores its
    # instances' __dict__ without __init__, so these must exist without it (tests/test_compat.py).
    draw_seed: Optional[int] = None
    _cache: Optional[dict] = None

    @property
    def scale(self) -> Tensor:
        """Posterior scale ``sigma = exp(log_var / 2)``."""
        return torch.exp(0.5 * self.log_var)

    @property
    def mean(self) -> Tensor:
        """The posterior mean of the tensor: ``mu`` here (a multiplicative family computes its own)."""
        return self.mu

    @property
    def std(self) -> Tensor:
        """Per-element posterior standard deviation ``sigma sqrt(E[xi_j^2])`` (what ``init_scale`` sets)."""
        return self.variance.sqrt()

    @property
    def variance(self) -> Tensor:
        """Per-element posterior variance ``sigma^2 E[xi_j^2]``."""
        return self._cached("variance", self._variance)

    def _variance(self) -> Tensor:
        m2 = self.posterior.second_moment(self.mu.numel())
        return torch.exp(self.log_var) if m2 == 1.0 else torch.exp(self.log_var) * m2

    def sample(self) -> Tensor:
        """One draw ``mu + sigma * xi`` (differentiable in ``mu`` and ``log_var``).

        When :attr:`draw_seed` is set, the noise ``xi`` is drawn from that seed alone (the global random state
        is saved and restored around the draw), so every call gives the same weights until it is cleared;
        :func:`autobayes.uncertainty.predict` with ``seed=`` uses it to give every batch and every data set
        the same posterior draws.
        """
        scale = self._cached("scale", lambda: self.scale)
        if self.draw_seed is None:
            return self.posterior.sample_weights(self.mu, scale)
        with seeded_rng(self.draw_seed, self.mu.device):
            return self.posterior.sample_weights(self.mu, scale)

    def _cached(self, name: str, compute):
        """``compute()``, kept between calls inside :func:`cached_scales` while no gradient is recorded (and
        recomputed whenever ``log_var`` changes)."""
        if self._cache is None or torch.is_grad_enabled() or torch.compiler.is_compiling():
            return compute()
        lv = self.log_var
        key = (lv._version, lv.data_ptr(), lv.dtype, lv.device)
        hit = self._cache.get(name)
        if hit is None or hit[0] != key:
            hit = self._cache[name] = (key, compute())
        return hit[1]

    def forward(self) -> Tensor:
        if self.use_mean:
            return self.mean
        draws = _SCOPE.draws
        if draws is None:
            return self.sample()
        draw = draws.get(id(self))
        if draw is None:
            draw = draws[id(self)] = self.sample()
        return draw

    def kl(self) -> Tensor:
        """``KL(q || p)`` of this tensor (summed over its elements), by the configured estimator."""
        return kl_divergence(
            self.posterior, self.prior, self.mu, self.scale, self.kl_method, self.n_mc, self.mc_chunk_size
        )

    def extra_repr(self) -> str:
        return (
            f"shape={tuple(self.mu.shape)}, posterior={self.posterior.name}, kl={self.kl_method}, n_mc={self.n_mc}"
        )


@contextlib.contextmanager
def cached_scales(model: nn.Module) -> Iterator[None]:
    """Compute each posterior's scale and variance once, not at every forward, while no gradient is recorded.

    Monte Carlo prediction runs hundreds of forwards with fixed parameters; sampling the weights costs passes over
    every tensor, and ``exp(log_var / 2)`` was one of them. Inside this context (used by
    :func:`autobayes.predict`) a :class:`BayesParameter` keeps them until the context ends or ``log_var``
    changes (its version counter); with gradients enabled nothing is kept.

    Example:
        >>> with torch.no_grad(), cached_scales(bnn):  # doctest: +SKIP
        ...     samples = [bnn(x).output for _ in range(100)]
    """
    params = [m for m in model.modules() if isinstance(m, BayesParameter)]
    for p in params:
        p._cache = {}
    try:
        yield
    finally:
        for p in params:
            p._cache = None


class _DrawScope(threading.local):
    def __init__(self) -> None:  # runs in every thread; the attribute always exists (torch.compile guards on it)
        self.draws: Optional[Dict[int, Tensor]] = None  # id(BayesParameter) -> its draw in the current forward


_SCOPE = _DrawScope()


@contextlib.contextmanager
def shared_draws() -> Iterator[None]:
    """Inside the block, each :class:`BayesParameter` returns one draw however often it is called.

    A converted model's forward enters it (both routes), so a weight read several times in one forward -- a
    tensor tied between an input embedding and an output head, read by both -- is one sample of one random
    variable, with its KL counted once; the next forward draws anew. Nested blocks share the outermost one's
    draws; outside any block every call draws. The draws are plain tensors of the forward's graph (gradients flow
    to ``mu`` and ``log_var`` through every read); ``use_mean`` and ``draw_seed`` keep their meaning.
    Per thread.

    Example:
        >>> p = BayesParameter(torch.zeros(3), BayesConfig())
        >>> with shared_draws():
        ...     torch.equal(p(), p())
        True
    """
    if _SCOPE.draws is not None:
        yield
        return
    _SCOPE.draws = {}
    try:
        yield
    finally:
        _SCOPE.draws = None


def current_draws() -> Optional[Dict[int, Tensor]]:
    """The draws of the :func:`shared_draws` block this thread is in (``id(parameter) -> draw``; a subclass may
    keep other per-forward values under keys of its own), or ``None`` outside any block."""
    return _SCOPE.draws


def checkpoint_context() -> Tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
    """The ``context_fn`` of a non-reentrant ``torch.utils.checkpoint`` region inside a converted model: the
    recomputation sees the forward's draws (:func:`shared_draws`) as they were when the region was entered, so it
    draws what the forward drew (torch restores the generator state; see :mod:`autobayes.sharding`).

    Regions written without it recompute correctly when each posterior they read is read once per forward and
    first read inside the region (torch restores the generator); with it, also when it is read several times or
    read before the region (a tied weight).

    Example:
        >>> from torch.utils.checkpoint import checkpoint
        >>> y = checkpoint(self.block, x, use_reentrant=False, context_fn=autobayes.distributed.checkpoint_context)
    """
    entry: List[Optional[dict]] = []

    @contextlib.contextmanager
    def forward() -> Iterator[None]:
        draws = _SCOPE.draws
        entry.append(None if draws is None else dict(draws))
        yield

    @contextlib.contextmanager
    def recompute() -> Iterator[None]:
        previous = _SCOPE.draws
        _SCOPE.draws = None if entry[0] is None else dict(entry[0])
        try:
            yield
        finally:
            _SCOPE.draws = previous

    return forward(), recompute()


@contextlib.contextmanager
def seeded_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Draw from ``seed`` on ``device`` (and on the CPU), restoring both random states afterwards."""
    accelerator = device.type != "cpu"
    with torch.random.fork_rng(devices=[device] if accelerator else [],
                               device_type=device.type if accelerator else "cuda"):
        torch.random.default_generator.manual_seed(seed)
        if device.type == "cuda":
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        elif accelerator:
            getattr(torch, device.type).manual_seed(seed)
        yield


def initial_log_var(mean: Tensor, config: BayesConfig, second_moment: float, *, from_weights: bool = False) -> Tensor:
    """The initial ``log sigma^2`` of a tensor of posterior means ``mean``, from the configured per-weight std.

    The configuration sets each weight's posterior standard deviation ``s`` (the same meaning for every family);
    the family's scale is then ``sigma = s / sqrt(E[xi_j^2])``, with ``second_moment = E[xi_j^2]``:

    * ``moped_delta`` (with ``from_weights``): ``s = moped_delta * |w|``, floored at 1e-8;
    * ``init_scale``: ``s = init_scale``;
    * ``init_log_var = (low, high)``: ``log s^2`` uniform in ``(low, high)``;
    * ``init_log_var = None`` (the default): ``log s^2`` uniform in ``(-3 - log d, -2 - log d)`` for a
      ``d``-element tensor, i.e. the tensor's total posterior variance ``sum_j s_j^2`` starts between
      ``e^-3`` and ``e^-2``: small per weight in large tensors (the Radial posterior's scale of the paper
      repository, ``log sigma^2`` uniform in ``(-3, -2)``, exactly).

    Example:
        >>> cfg = BayesConfig(posterior="radial", init_scale=1e-2)
        >>> lv = initial_log_var(torch.zeros(10, 10), cfg, second_moment=1 / 100)
        >>> round(float((lv.exp() / 100).sqrt()[0, 0]), 6)  # the per-weight std, sigma sqrt(1/d)
        0.01
    """
    shift = math.log(second_moment)  # log sigma^2 = log s^2 - log E[xi_j^2]
    if config.moped_delta is not None and from_weights:
        std = (config.moped_delta * mean.abs()).clamp_min(_MIN_SCALE)
        return 2.0 * torch.log(std) - shift
    if config.init_scale is not None:
        return torch.full_like(mean, 2.0 * math.log(config.init_scale) - shift)
    if config.init_log_var is None:
        shift = math.log(mean.numel() * second_moment)  # 0 for the Radial (E[xi_j^2] = 1/d)
        low, high = _DEFAULT_TOTAL_LOG_VAR
    else:
        low, high = config.init_log_var
    return torch.empty_like(mean).uniform_(low - shift, high - shift)


@functools.lru_cache(maxsize=4096)
def spawn_seeds(entropy: Union[int, Tuple[int, ...]], n: int) -> Tuple[int, ...]:
    """``n`` independent 63-bit seeds spawned from ``entropy`` with numpy's ``SeedSequence`` (cached: Monte Carlo
    prediction asks for the same ones at every batch).

    Example:
        >>> spawn_seeds((0, 1), 2) == spawn_seeds((0, 1), 2)
        True
    """
    entropy = list(entropy) if isinstance(entropy, tuple) else entropy
    return tuple(int(child.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
                 for child in np.random.SeedSequence(entropy).spawn(n))


@contextlib.contextmanager
def seeded_draws(model: nn.Module, entropy: Union[int, Sequence[int]], *, unseeded_only: bool = False) -> Iterator[None]:
    """Inside the block every :class:`BayesParameter` of ``model`` draws from a seed of its own, spawned from
    ``entropy`` (:func:`spawn_seeds`): the same weights at every forward; the seeds are cleared on exit.
    ``unseeded_only`` leaves parameters that have a seed already (and clears only those it set).

    Example:
        >>> with torch.no_grad(), seeded_draws(bnn, (0, 3)):  # doctest: +SKIP
        ...     a, b = bnn(x).output, bnn(x).output  # the same network twice
    """
    params = [m for m in model.modules()
              if isinstance(m, BayesParameter) and not (unseeded_only and m.draw_seed is not None)]
    key = tuple(entropy) if isinstance(entropy, (list, tuple)) else entropy
    for param, seed in zip(params, spawn_seeds(key, len(params))):
        param.draw_seed = seed
    try:
        yield
    finally:
        for param in params:
            param.draw_seed = None
