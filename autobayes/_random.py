"""Parallel random draws on the CPU.

PyTorch's CPU normal sampler and numpy's gamma sampler fill a tensor on one thread. For the large tensors of the
KL statistics and of local reparameterisation, :func:`normal_` and :func:`standard_gamma` split the tensor into a
fixed number of parts, each with its own stream seeded from torch's global generator, and fill the parts on
``torch.get_num_threads()`` threads (both samplers release the GIL). The split is fixed, so the draws depend on
``torch.manual_seed`` only, not on the number of threads. Small tensors, other devices and code being compiled by
``torch.compile`` take the plain single-stream path.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

__all__ = ["normal_", "randn", "standard_gamma", "PARALLEL_MIN_ELEMENTS", "PARTS"]

#: Tensors with at least this many elements are drawn in :data:`PARTS` streams.
PARALLEL_MIN_ELEMENTS = 1 << 18
PARTS = 8
_POOL: Optional[ThreadPoolExecutor] = None


def _parallel(fill: Callable[[int], None]) -> None:
    global _POOL
    threads = torch.get_num_threads()
    if threads < 2:
        for i in range(PARTS):
            fill(i)
        return
    if _POOL is None or _POOL._max_workers < threads:
        _POOL = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="autobayes-random")
    list(_POOL.map(fill, range(PARTS)))


def _seed() -> int:
    return int(torch.randint(0, 2**62, (1,)).item())


def _plain(t: Tensor) -> bool:
    return t.device.type != "cpu" or t.numel() < PARALLEL_MIN_ELEMENTS or not t.is_contiguous() or torch.compiler.is_compiling()


def normal_(t: Tensor) -> Tensor:
    """Fill ``t`` with standard normal draws, in place (in parallel streams for large CPU tensors)."""
    if _plain(t):
        return t.normal_()
    flat = t.view(-1)
    bounds = np.linspace(0, flat.numel(), PARTS + 1).astype(np.int64)
    seed = _seed()

    def fill(i: int) -> None:
        gen = torch.Generator().manual_seed(seed + i)
        flat[bounds[i]:bounds[i + 1]].normal_(generator=gen)

    _parallel(fill)
    return t


def randn(shape: Tuple[int, ...], *, device=None, dtype=None) -> Tensor:
    """``torch.randn(shape)``, drawn by :func:`normal_`."""
    return normal_(torch.empty(shape, device=device, dtype=dtype))


def standard_gamma(alpha: float, shape: Tuple[int, ...], *, device=None, dtype=None) -> Tensor:
    """Exact ``Gamma(alpha, 1)`` draws with one shape ``alpha`` for a whole tensor.

    On CUDA, and in code being compiled, this is ``torch._standard_gamma``. On the CPU, where that kernel is
    several times slower, numpy's ``Generator.standard_gamma`` (Marsaglia-Tsang with ziggurat normals) fills
    the tensor -- large tensors in :data:`PARTS` streams (:meth:`numpy.random.SeedSequence.spawn`) -- seeded
    from torch's generator so that ``torch.manual_seed`` keeps runs reproducible.
    """
    dtype = dtype or torch.get_default_dtype()
    if torch.device(device or "cpu").type != "cpu" or torch.compiler.is_compiling():
        return torch._standard_gamma(torch.full(shape, float(alpha), device=device, dtype=dtype))
    np_dtype = np.float32 if dtype in (torch.float32, torch.float16, torch.bfloat16) else np.float64
    n = math.prod(shape)
    seed = _seed()
    if n < PARALLEL_MIN_ELEMENTS:
        draws = np.random.default_rng(seed).standard_gamma(alpha, size=n, dtype=np_dtype)
    else:
        draws = np.empty(n, dtype=np_dtype)
        bounds = np.linspace(0, n, PARTS + 1).astype(np.int64)
        streams = np.random.SeedSequence(seed).spawn(PARTS)

        def fill(i: int) -> None:
            np.random.default_rng(streams[i]).standard_gamma(alpha, out=draws[bounds[i]:bounds[i + 1]], dtype=np_dtype)

        _parallel(fill)
    return torch.from_numpy(draws).reshape(shape).to(dtype)
