"""Bayesian ``nn.LSTM``, ``nn.GRU`` and ``nn.RNN``: one weight draw per forward, run by the fused kernel.

A recurrent weight is one tensor applied at every time step, so its Bayesian meaning is one draw of the posterior
per forward, shared by every step (and by every sequence of the batch). The layer samples each weight once and
hands the whole list to the deterministic layer's own forward -- the fused kernel (``torch.lstm`` /
``torch.gru`` / ``torch.rnn_tanh`` / ``torch.rnn_relu``; cuDNN on a GPU) -- so every option of the twin works
unchanged: ``num_layers``, ``bidirectional``, ``batch_first``, ``proj_size``, ``bias``, ``dropout``,
``nonlinearity``, packed sequences, unbatched input and an initial state.

Forward modes: ``"sample"`` (one draw per forward, as above) and ``"mean"`` (the posterior means: exactly the
deterministic layer). Local reparameterisation samples the *pre-activations* independently per example, which
for a weight reused over time steps would need an independent draw at every step -- a different model, not a
cheaper estimator of this one -- so for these layers ``"local"`` and ``"auto"`` mean ``"sample"``.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar, Dict, List, Optional

import torch
from torch import Tensor, nn

from ..config import BayesConfig
from ..kl.fused import fused_kl
from .base import BayesLayer
from .parameter import BayesParameter

__all__ = ["BayesLSTM", "BayesGRU", "BayesRNN"]

# cuDNN warns at each call that fresh weights are "not part of single contiguous chunk of memory": a posterior
# sample is a new tensor every forward, so the copy into cuDNN's buffer is the price of sampling, not a mistake.
_CUDNN_COPY_WARNING = "RNN module weights are not part of single contiguous chunk of memory"


class _BayesRNNBase(BayesLayer):
    """Shared by the Bayesian recurrent layers: a :class:`BayesParameter` per weight of the twin
    (``weight_ih_l0_posterior``, ``weight_hh_l0_posterior``, ``bias_ih_l0_posterior``, ..., ``weight_hr_l0`` with
    ``proj_size``, ``..._reverse`` when bidirectional), and a parameterless copy of the twin whose forward runs
    with the sampled weights."""

    _HYPERPARAMETERS: ClassVar[tuple] = ("input_size", "hidden_size", "num_layers", "bias", "batch_first",
                                         "dropout", "bidirectional")

    def _setup(self, twin: nn.Module, config: BayesConfig, *, from_weights: bool) -> None:
        for name in self._HYPERPARAMETERS:
            setattr(self, name, getattr(twin, name))
        self.config = config
        self._weight_names = tuple(twin._flat_weights_names)
        for name in self._weight_names:
            self.add_module(name + "_posterior", BayesParameter(getattr(twin, name), config, from_weights=from_weights))
        self.forward_mode = "mean" if config.forward == "mean" else "sample"
        self.__dict__["_runner"] = self._make_runner()

    def _make_runner(self) -> nn.Module:
        """The twin's structure without parameters (not a submodule: no state, not in ``modules()``)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the twin warned already (e.g. dropout with num_layers=1)
            runner = self._DETERMINISTIC(**self._twin_kwargs(), device="meta")
        for name in self._weight_names:
            del runner._parameters[name]
            setattr(runner, name, None)  # RNNBase keeps _flat_weights in step: [None, ...]
        return runner

    def __setstate__(self, state: Dict[str, Any]) -> None:
        super().__setstate__(state)
        if "_runner" not in self.__dict__:
            self.__dict__["_runner"] = self._make_runner()

    # ------------------------------------------------------------------ views
    @property
    def weight_posterior(self) -> BayesParameter:
        """The first posterior (``weight_ih_l0_posterior``): what code reading a layer's device / mode looks at."""
        return self._modules[self._weight_names[0] + "_posterior"]

    @property
    def bias_posterior(self) -> None:  # the biases are among posteriors(); the base class's weight + bias KL is not used
        return None

    @property
    def weight(self) -> Tensor:  # nn.LSTM has no ``weight``: answered by __getattr__
        return self.__getattr__("weight")

    #: Whether the layer has biases (a flag, as on ``nn.LSTM``; the base class's ``bias`` tensor view does not apply).
    bias: bool = True

    def __getattr__(self, name: str) -> Any:
        """``layer.weight_ih_l0`` (any weight name of the twin): the posterior mean, read-only view."""
        names = self.__dict__.get("_weight_names", ())
        if name in names:
            return self.__dict__["_modules"][name + "_posterior"].mu
        if name == "weight" and names:
            raise AttributeError(f"{type(self).__name__} has no 'weight'; its weights are {list(names)} "
                                 f"(layer.weight_ih_l0 is a posterior mean, drawn from layer.weight_ih_l0_posterior)")
        return super().__getattr__(name)

    def posteriors(self) -> List[BayesParameter]:
        """The layer's :class:`BayesParameter` modules, in the twin's ``_flat_weights_names`` order."""
        return [self._modules[name + "_posterior"] for name in self._weight_names]

    @property
    def use_mean(self) -> bool:
        return self.weight_posterior.use_mean

    # ------------------------------------------------------------------ maths
    def weights(self) -> List[Tensor]:
        """The weights of this forward: one draw of every posterior, or the means under ``"mean"`` mode."""
        if self.use_mean or self.forward_mode == "mean":
            return [p.mean for p in self.posteriors()]
        return [p.sample() for p in self.posteriors()]

    def forward(self, input: Any, hx: Any = None) -> Any:
        """The twin's forward with :meth:`weights` (same inputs and outputs as ``nn.LSTM`` / ``nn.GRU`` /
        ``nn.RNN``)."""
        # a shallow copy of the parameterless twin holding this forward's weights: nothing shared is mutated (replicas
        # of DataParallel run in threads), and no sample outlives the forward
        template = self.__dict__["_runner"]
        runner = object.__new__(type(template))
        runner.__dict__.update(template.__dict__)
        weights = self.weights()
        runner.__dict__.update(_flat_weights=weights, training=self.training)
        if weights[0].is_cuda:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=_CUDNN_COPY_WARNING)
                return runner(input, hx)
        return runner(input, hx)

    def kl(self) -> Tensor:
        """``KL(q || p)`` of the layer: the sum over every weight and bias posterior (:func:`autobayes.kl.fused_kl`)."""
        return fused_kl(self.posteriors())

    # ------------------------------------------------------------------ contract
    def _twin_kwargs(self) -> Dict[str, Any]:
        return {name: getattr(self, name) for name in self._HYPERPARAMETERS}

    def to_deterministic(self) -> nn.Module:
        """The deterministic twin holding the posterior means."""
        mu = self.weight_posterior.mu
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            twin = self._DETERMINISTIC(**self._twin_kwargs(), device=mu.device, dtype=mu.dtype)
        with torch.no_grad():
            for name, p in zip(self._weight_names, self.posteriors()):
                getattr(twin, name).copy_(p.mean)
        twin.train(self.training)
        return twin

    def extra_repr(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self._twin_kwargs().items())
        wp = self.weight_posterior
        return f"{args}, posterior={wp.posterior.name}, kl={wp.kl_method}, forward={self.forward_mode}"


class BayesLSTM(_BayesRNNBase):
    """Bayesian twin of ``nn.LSTM``: same arguments (``proj_size`` included), plus ``config``.

    Example:
        >>> lstm = BayesLSTM(8, 16, num_layers=2, batch_first=True, config=BayesConfig(posterior="gaussian"))
        >>> out, (h, c) = lstm(torch.randn(4, 5, 8))
        >>> out.shape, h.shape
        (torch.Size([4, 5, 16]), torch.Size([2, 4, 16]))
    """

    _DETERMINISTIC = nn.LSTM
    _HYPERPARAMETERS = _BayesRNNBase._HYPERPARAMETERS + ("proj_size",)


class BayesGRU(_BayesRNNBase):
    """Bayesian twin of ``nn.GRU``.

    Example:
        >>> gru = BayesGRU(8, 16, bidirectional=True)
        >>> gru(torch.randn(5, 4, 8))[0].shape
        torch.Size([5, 4, 32])
    """

    _DETERMINISTIC = nn.GRU


class BayesRNN(_BayesRNNBase):
    """Bayesian twin of ``nn.RNN`` (``nonlinearity="tanh"`` or ``"relu"``).

    Example:
        >>> rnn = BayesRNN(8, 16, nonlinearity="relu")
        >>> rnn(torch.randn(5, 8))[0].shape  # unbatched input
        torch.Size([5, 16])
    """

    _DETERMINISTIC = nn.RNN
    _HYPERPARAMETERS = _BayesRNNBase._HYPERPARAMETERS + ("nonlinearity",)
