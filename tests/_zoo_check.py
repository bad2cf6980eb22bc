"""Shared checks of a converted model against its deterministic original (used by the zoo and unit tests)."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils import _pytree as pytree

import autobayes
from autobayes.fx.runtime import kl_units
from autobayes.nn import BayesLayer, BayesParameter, get_default_mappings

_BASES = tuple(get_default_mappings())


def _used_layers(model: nn.Module, args) -> set:
    used, handles = set(), []
    for name, m in model.named_modules():
        if isinstance(m, _BASES):
            handles.append(m.register_forward_pre_hook(lambda mod, a, name=name: used.add(name)))
    try:
        with torch.no_grad():
            model(*args)
    finally:
        for h in handles:
            h.remove()
    return used


def _is_bayesian(bnn: nn.Module, name: str) -> bool:
    try:
        m = bnn.get_submodule(name)
    except AttributeError:
        return False
    return isinstance(m, BayesLayer) or isinstance(m._modules.get("weight_posterior"), BayesParameter)


def _structure(out):
    leaves, spec = pytree.tree_flatten(out)
    return spec, [tuple(t.shape) if isinstance(t, torch.Tensor) else t for t in leaves]


def check_conversion(model: nn.Module, *args, rtol: float = 1e-4, atol: float = 1e-5, **options):
    """Convert ``model`` and check the contract; returns the Bayesian model. The posterior is the mean-field
    Radial unless ``options`` name one: its closed-form KL lets the KL of a forward be compared exactly with the
    sum of the layers' own, which checks the graph's KL threading (the same for every family; the rank-1 default's
    own conversion checks are in test_rank1.py)."""
    options.setdefault("posterior", "radial")
    torch.manual_seed(0)
    model = copy.deepcopy(model)
    bnn = autobayes.bayesify(model, **options)
    report = bnn.bayes_report

    # under use_mean, the eval-mode output equals the deterministic one
    model.eval()
    bnn.eval()
    with torch.no_grad():
        ref = model(*args)
        with autobayes.use_mean(bnn):
            mean_out, kl0 = bnn(*args)
    spec_ref, shapes_ref = _structure(ref)
    spec_out, shapes_out = _structure(mean_out)
    assert spec_ref == spec_out and shapes_ref == shapes_out
    for a, b in zip(pytree.tree_leaves(ref), pytree.tree_leaves(mean_out)):
        if isinstance(a, torch.Tensor):
            torch.testing.assert_close(b, a, rtol=rtol, atol=atol)

    # every Linear / Conv the deterministic forward calls is Bayesian, or reported skipped with a reason
    for name in _used_layers(model, args):
        if not _is_bayesian(bnn, name):
            rec = report.get(name)
            assert rec is not None and rec.status == "skipped" and rec.reason, f"{name} silently deterministic"

    # train mode: structure, KL = sum of the used layers' own KL, gradients reach every posterior
    model.train()
    bnn.train()
    with torch.no_grad():
        ref_train = model(*args)
    out, kl = bnn(*args)
    assert _structure(out) == _structure(ref_train)
    assert kl.dim() == 0 and torch.isfinite(kl) and kl > 0
    used = [r.name for r in report.converted if r.used is not False]
    units = [(n, m) for n, m in kl_units(bnn).items() if any(n == u or n.startswith(u + ".") or not u for u in used)]
    assert units
    expected = sum(m.kl() for _, m in units)
    torch.testing.assert_close(kl.detach(), expected.detach(), rtol=1e-4, atol=1e-3)
    loss = sum(t.float().sum() for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor) and t.is_floating_point())
    (loss + kl).backward()
    for n, m in units:
        posts = m.posteriors() if isinstance(m, BayesLayer) else [m]
        for p in posts:
            assert p.mu.grad is not None and p.log_var.grad is not None, f"no gradient for {n}"
    return bnn


def bayesify_or_error(model: nn.Module, **options):
    """``autobayes.bayesify(model, **options)`` with its warnings silenced (``mode="auto"`` warns when it falls
    back; the report says it too), or the exception it raised: each check of the model reports it."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return autobayes.bayesify(model, **options)
        except Exception as err:  # noqa: BLE001 - reported by every check of this model
            return err


def require_converted(name: str, model: nn.Module, bnn):
    """``(model, bnn)``, or the test fails with the exception :func:`bayesify_or_error` returned."""
    import pytest

    if isinstance(bnn, Exception):
        pytest.fail(f"{name}: bayesify raised {type(bnn).__name__}: {bnn}")
    return model, bnn
