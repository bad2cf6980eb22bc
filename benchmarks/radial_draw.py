"""Why Radial prediction cost more than it needed on the CPU, and what the fused draw saves.

In ``forward="sample"`` (the Radial's default) every forward draws every weight tensor afresh, and
``autobayes.predict`` cannot put several samples in one forward (the batch shares the draw), so a prediction of
``S`` samples over ``B`` batches makes ``S x B`` draws of every tensor. A draw used to be six passes over the
tensor: ``0.5 * log_var``, ``exp`` (the scale), the normal draw, its norm, ``eps * (r / ||eps||)`` and the
``addcmul``; it is now three: the normal draw, its norm and one ``addcmul`` with the scalar ``r / ||eps||``
folded in (``Radial.sample_weights``), the scale being computed once per ``predict`` call
(``autobayes.nn.parameter.cached_scales``). On small inputs those passes, not the convolutions, are much of a
forward's time, and each is one more parallel region when PyTorch uses several threads.

Prints, for one ResNet-18-sized tensor (512 x 512 x 3 x 3) and for the whole of a bayesified ResNet-18, the time
of one draw the old way and the new way, and their ratio.

    python benchmarks/radial_draw.py [--reps 20]
"""

from __future__ import annotations

import argparse
import time

import torch

import autobayes
from autobayes.nn.parameter import BayesParameter, cached_scales
from autobayes.posteriors import Posterior, Radial


def old_draw(p: BayesParameter) -> torch.Tensor:
    """The draw before the change: the generic sample_noise path with the scale recomputed."""
    scale = torch.exp(0.5 * p.log_var)
    return Posterior.sample_weights(p.posterior, p.mu, scale)


def new_draw(p: BayesParameter) -> torch.Tensor:
    return p.sample()


def timed(fn, params, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        for p in params:
            fn(p)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    print(f"{torch.get_num_threads()} threads; best of {args.reps}")
    torch.manual_seed(0)
    one = BayesParameter(torch.randn(512, 512, 3, 3), autobayes.BayesConfig(posterior="radial"))
    net = autobayes.build_model("torchvision:resnet18", num_classes=10)
    params = [m for m in autobayes.bayesify(net, posterior="radial").modules() if isinstance(m, BayesParameter)]
    assert isinstance(one.posterior, Radial)
    with torch.no_grad():
        for name, group in (("one 512x512x3x3 tensor", [one]), (f"ResNet-18 ({len(params)} tensors)", params)):
            with cached_scales(torch.nn.ModuleList(group)):
                new_draw(group[0])  # fills the cache (once per predict call)
                t_old, t_new = timed(old_draw, group, args.reps), timed(new_draw, group, args.reps)
            print(f"  {name:28s} old draw {t_old * 1e3:8.2f} ms   new draw {t_new * 1e3:8.2f} ms   "
                  f"old / new {t_old / t_new:5.2f}x")


if __name__ == "__main__":
    main()
