"""Bayesian ``nn.Conv{1,2,3}d`` and ``nn.ConvTranspose{1,2,3}d``: one N-d implementation."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.conv import _ConvTransposeNd

from .base import BayesLayer

__all__ = [
    "BayesConv1d",
    "BayesConv2d",
    "BayesConv3d",
    "BayesConvTranspose1d",
    "BayesConvTranspose2d",
    "BayesConvTranspose3d",
]

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


class _BayesConvNd(BayesLayer):
    """Shared by every Bayesian convolution: every option of the twin is kept (stride, padding incl. ``'same'``
    and ``padding_mode``, dilation, groups, bias, output_padding, ``output_size`` at call time)."""

    def _copy_hyperparameters(self, twin: nn.Module) -> None:
        for name in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                     "padding_mode", "output_padding", "transposed", "_reversed_padding_repeated_twice"):
            setattr(self, name, getattr(twin, name))
        self.n_dims = len(twin.kernel_size)

    def _twin_kwargs(self) -> Dict[str, Any]:
        kwargs = dict(
            in_channels=self.in_channels, out_channels=self.out_channels, kernel_size=self.kernel_size,
            stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups,
            bias=self.bias_posterior is not None, padding_mode=self.padding_mode,
        )
        if self.transposed:
            kwargs["output_padding"] = self.output_padding
        return kwargs

    def _unbatched_dim(self) -> int:
        return self.n_dims + 1

    def _per_channel(self, t: Tensor, dims: int) -> Tensor:
        return t.reshape(*t.shape, *([1] * (dims - 2)))

    def _factor_axes(self, first: Tensor, second: Tensor):
        # weight (out, in / groups, ...) or, transposed, (in, out / groups, ...): dim 1 repeats once per group
        second = second.repeat(1, self.groups)
        return (second, first) if self.transposed else (first, second)

    def _op(self, x: Tensor, weight: Tensor, bias: Optional[Tensor], output_size: Optional[List[int]] = None) -> Tensor:
        if self.transposed:
            output_padding = _ConvTransposeNd._output_padding(
                self, x, output_size, self.stride, self.padding, self.kernel_size, self.n_dims, self.dilation
            )
            return _CONV_T[self.n_dims](x, weight, bias, self.stride, self.padding, output_padding, self.groups, self.dilation)
        conv = _CONV[self.n_dims]
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return conv(x, weight, bias, self.stride, 0, self.dilation, self.groups)
        return conv(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)


class BayesConv1d(_BayesConvNd):
    """Bayesian twin of ``nn.Conv1d``."""

    _DETERMINISTIC = nn.Conv1d


class BayesConv2d(_BayesConvNd):
    """Bayesian twin of ``nn.Conv2d``.

    Example:
        >>> layer = BayesConv2d(3, 8, 3, padding="same", padding_mode="reflect")
        >>> layer(torch.randn(2, 3, 16, 16)).shape
        torch.Size([2, 8, 16, 16])
    """

    _DETERMINISTIC = nn.Conv2d


class BayesConv3d(_BayesConvNd):
    """Bayesian twin of ``nn.Conv3d``."""

    _DETERMINISTIC = nn.Conv3d


class BayesConvTranspose1d(_BayesConvNd):
    """Bayesian twin of ``nn.ConvTranspose1d``."""

    _DETERMINISTIC = nn.ConvTranspose1d


class BayesConvTranspose2d(_BayesConvNd):
    """Bayesian twin of ``nn.ConvTranspose2d``."""

    _DETERMINISTIC = nn.ConvTranspose2d


class BayesConvTranspose3d(_BayesConvNd):
    """Bayesian twin of ``nn.ConvTranspose3d``."""

    _DETERMINISTIC = nn.ConvTranspose3d
