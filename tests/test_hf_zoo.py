"""Zoo test: bayesify Hugging Face transformers models built from small configs (random weights, no download).

Fifteen architectures (``tests/_hf_configs.py``): encoders (BERT, RoBERTa, DistilBERT, ModernBERT), decoders
(GPT-2, Llama, Qwen2, Mistral, GPT-NeoX, OPT, Phi), encoder-decoders (T5, BART), vision (ViT) and speech
(Whisper), each with its task head. Each is converted once with ``autobayes.bayesify(model,
example_inputs=...)`` (``mode="auto"``; the inputs come from ``autobayes.hf.example_inputs(model)`` where that
exists, else from the case), and checked:

* ``output_kl``: the call returns ``BayesOutput(output, kl)``; ``output`` has the model's own type (a
  ``ModelOutput`` stays one) and logits shape; ``kl`` is a finite 0-dim tensor > 0 that carries a gradient.
* ``use_mean``: in eval mode under ``autobayes.use_mean`` the logits equal the deterministic model's
  (``rtol=1e-4, atol=1e-5``: float32 round-off of a few reordered sums), at the conversion shape and a second one.
* ``second_shape``: forward and backward in train mode at a second batch size and sequence length (3 x 12
  against 2 x 8; ViT: batch only, its image size is fixed); every parameter of the converted model gets a
  gradient from the logits alone (the KL would give every posterior one anyway); the ones that do not are named.
  Parameters the model itself freezes (``requires_grad=False``: Whisper's sinusoidal encoder positions) are
  not expected to get one.
* ``coverage``: at least 90% of the weights of the matrix layers carry a posterior. Definition: the matrix layers
  are the modules of the deterministic model of type ``nn.Linear``, ``nn.ConvNd``, ``nn.ConvTransposeNd`` or
  transformers' ``Conv1D`` (their ``weight``), and ``nn.MultiheadAttention`` (``in_proj_weight``,
  ``q/k/v_proj_weight``); a tensor tied to an ``nn.Embedding``'s weight (an output head sharing the input
  embedding) is excluded, as embeddings are. The share is counted in elements; biases are not counted.
* ``ties``: every tensor the deterministic model shares between several modules (``named_parameters(
  remove_duplicate=False)``) is one object in the converted model: one ``BayesParameter`` all its owners hold,
  or one deterministic parameter.
* ``state_dict``: the converted model's state dict loads (strict) into a fresh conversion of the same
  architecture built from other random weights, and the use_mean logits then match.
* ``report``: ``bnn.bayes_report.mode`` names the route (fx / export / swap); a model not converted by fx has
  notes saying why the earlier routes were not taken.

And over the zoo: at least 80% of the models convert by a graph route (``report.mode`` in fx / export).

Run with ``pytest -m zoo tests/test_hf_zoo.py`` (about a minute on one CPU core).
"""

from __future__ import annotations

import copy
import functools
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _hf_configs import HF_ZOO  # noqa: E402
from _zoo_check import bayesify_or_error, require_converted  # noqa: E402

import autobayes  # noqa: E402
from autobayes.nn import BayesLayer, BayesParameter  # noqa: E402

transformers = pytest.importorskip("transformers")  # the optional extra autobayes[hf]
from transformers.pytorch_utils import Conv1D  # noqa: E402

pytestmark = [pytest.mark.zoo, pytest.mark.usefixtures("one_thread")]

NAMES = sorted(HF_ZOO)
SHAPE, SECOND_SHAPE = (2, 8), (3, 12)
GRAPH_ROUTES = ("fx", "export")
MATRIX_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                nn.ConvTranspose3d, Conv1D)
MHA_WEIGHTS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")
MIN_COVERAGE = 0.90
MIN_GRAPH_SHARE = 0.80


# ---------------------------------------------------------------------------------------------------------------
# conversion (once per model) and helpers
# ---------------------------------------------------------------------------------------------------------------
def _example_inputs(name: str, model: nn.Module):
    try:
        from autobayes.hf import example_inputs  # written by the capture branch
    except ImportError:
        return HF_ZOO[name].inputs(*SHAPE)
    return example_inputs(model)


@functools.lru_cache(maxsize=None)
def _converted(name: str):
    """``(deterministic model, converted model)``, or ``(model, the exception bayesify raised)``."""
    model = HF_ZOO[name].build()
    return model, bayesify_or_error(copy.deepcopy(model), example_inputs=_example_inputs(name, model))


def _bnn(name: str):
    return require_converted(name, *_converted(name))


def _logits(out) -> torch.Tensor:
    return out.logits if hasattr(out, "logits") else out[0]


def _holder(root: nn.Module, module_name: str, param: str):
    """What holds parameter ``param`` of module ``module_name`` in a converted model: its ``BayesParameter``
    (a swapped layer's, a posterior attribute's or one inside a parametrization), the raw parameter, or None."""
    module = root.get_submodule(module_name)
    posterior = module._modules.get(param + "_posterior")
    if isinstance(posterior, BayesParameter):
        return posterior
    parametrizations = getattr(module, "parametrizations", None)
    if parametrizations is not None and param in parametrizations:
        found = [m for m in parametrizations[param].modules() if isinstance(m, BayesParameter)]
        if found:
            return found[0]
    return module._parameters.get(param)


def _split(qualified: str):
    module, _, param = qualified.rpartition(".")
    return module, param


def _ties(model: nn.Module):
    groups = {}
    for qualified, p in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(p), []).append(qualified)
    return [names for names in groups.values() if len(names) > 1]


def _matrix_weights(model: nn.Module):
    """``[(module name, parameter name, numel)]`` of the matrix weights (see the module docstring), without
    tensors tied to an embedding."""
    embedded = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    found = []
    for name, module in model.named_modules():
        if isinstance(module, MATRIX_TYPES):
            params = ("weight",)
        elif isinstance(module, nn.MultiheadAttention):
            params = MHA_WEIGHTS
        else:
            continue
        for p in params:
            tensor = module._parameters.get(p)
            if tensor is not None and id(tensor) not in embedded:
                found.append((name, p, tensor.numel()))
    return found


def _assert_close_logits(name: str, what: str, got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.shape == want.shape, f"{name}: {what}: logits shape {tuple(got.shape)} != {tuple(want.shape)}"
    diff = (got - want).abs().max().item()
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-5), (
        f"{name}: {what}: logits differ from the deterministic model's by up to {diff:.3g} "
        f"(|want| up to {want.abs().max().item():.3g}; rtol=1e-4, atol=1e-5)"
    )


# ---------------------------------------------------------------------------------------------------------------
# per-model checks
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_output_kl(name):
    model, bnn = _bnn(name)
    inputs = HF_ZOO[name].inputs(*SHAPE)
    bnn.train()
    result = bnn(**inputs)
    assert isinstance(result, autobayes.BayesOutput), f"{name}: returned {type(result).__name__}, not BayesOutput"
    out, kl = result
    with torch.no_grad():
        ref = model(**inputs)
    assert type(out) is type(ref), f"{name}: output type {type(out).__name__}, the model's is {type(ref).__name__}"
    assert _logits(out).shape == _logits(ref).shape, f"{name}: logits {tuple(_logits(out).shape)} != {tuple(_logits(ref).shape)}"
    assert kl.dim() == 0 and torch.isfinite(kl) and kl.item() > 0, f"{name}: kl = {kl!r}"
    assert kl.requires_grad, f"{name}: kl carries no gradient"


@pytest.mark.parametrize("name", NAMES)
def test_use_mean(name):
    model, bnn = _bnn(name)
    bnn.eval()
    for shape in (SHAPE, SECOND_SHAPE):
        inputs = HF_ZOO[name].inputs(*shape)
        with torch.no_grad(), autobayes.use_mean(bnn):
            got = _logits(bnn(**inputs).output)
            want = _logits(model(**inputs))
        _assert_close_logits(name, f"use_mean at batch x seq {shape}", got, want)


@pytest.mark.parametrize("name", NAMES)
def test_second_shape(name):
    model, bnn = _bnn(name)
    inputs = HF_ZOO[name].inputs(*SECOND_SHAPE)
    with torch.no_grad():
        want_shape = _logits(model(**inputs)).shape
    bnn.train()
    bnn.zero_grad(set_to_none=True)
    try:
        out, kl = bnn(**inputs)
        logits = _logits(out)
        assert logits.shape == want_shape, f"{name}: logits {tuple(logits.shape)} != {tuple(want_shape)}"
        logits.float().pow(2).mean().backward()
    finally:
        bnn.eval()
    missing = [n for n, p in bnn.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"{name}: {len(missing)} parameter(s) get no gradient from the logits: {missing}"
    bad = [n for n, p in bnn.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"{name}: non-finite gradients in {bad}"
    bnn.zero_grad(set_to_none=True)


@pytest.mark.parametrize("name", NAMES)
def test_coverage(name):
    model, bnn = _bnn(name)
    weights = _matrix_weights(model)
    assert weights, f"{name}: no matrix layer found (the definition misses this architecture)"
    total = sum(n for _, _, n in weights)
    deterministic = [(m, p, n) for m, p, n in weights if not isinstance(_holder(bnn, m, p), BayesParameter)]
    share = 1 - sum(n for _, _, n in deterministic) / total
    shown = ", ".join(f"{m}.{p} ({n})" for m, p, n in deterministic[:10])
    more = f", ... ({len(deterministic)} in all)" if len(deterministic) > 10 else ""
    assert share >= MIN_COVERAGE, (
        f"{name} (mode={bnn.bayes_report.mode}): {share:.1%} of {total} matrix weights carry a posterior "
        f"(need {MIN_COVERAGE:.0%}); deterministic: {shown}{more}"
    )


@pytest.mark.parametrize("name", NAMES)
def test_ties(name):
    model, bnn = _bnn(name)
    broken = []
    for names in _ties(model):
        holders = {q: _holder(bnn, *_split(q)) for q in names}
        kinds = ", ".join(f"{q}: {'None' if h is None else type(h).__name__}" for q, h in holders.items())
        first = holders[names[0]]
        if first is None or any(h is not first for h in holders.values()):
            untied = [q for q, h in holders.items() if h is None or h is not first]
            broken.append(f"{names} untied, {untied} hold other tensors than {names[0]} ({kinds})")
    assert not broken, f"{name} (mode={bnn.bayes_report.mode}): " + "; ".join(broken)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict(name):
    _, bnn = _bnn(name)
    other = HF_ZOO[name].build(seed=1)  # other random weights: the load must bring the outputs back
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fresh = autobayes.bayesify(other, example_inputs=_example_inputs(name, other))
    state = bnn.state_dict()
    fresh.load_state_dict(state, strict=True)
    fresh_state = fresh.state_dict()
    assert set(fresh_state) == set(state), f"{name}: keys differ: {sorted(set(state) ^ set(fresh_state))[:10]}"
    bnn.eval()
    fresh.eval()
    for shape in (SHAPE, SECOND_SHAPE):
        inputs = HF_ZOO[name].inputs(*shape)
        with torch.no_grad(), autobayes.use_mean(bnn), autobayes.use_mean(fresh):
            want = _logits(bnn(**inputs).output)
            got = _logits(fresh(**inputs).output)
        _assert_close_logits(name, f"state_dict round trip at {shape}", got, want)


@pytest.mark.parametrize("name", NAMES)
def test_report(name):
    _, bnn = _bnn(name)
    report = bnn.bayes_report
    assert report.mode in ("fx", "export", "swap"), f"{name}: report.mode = {report.mode!r}"
    assert report.to_dict()["mode"] == report.mode
    notes = " ".join(report.notes).lower()
    earlier = {"fx": (), "export": ("fx",), "swap": ("fx", "export")}[report.mode]
    unexplained = [route for route in earlier if route not in notes]
    assert not unexplained, (
        f"{name}: converted by {report.mode!r}, but the report's notes do not say why {unexplained} was not "
        f"taken: {report.notes}"
    )


# ---------------------------------------------------------------------------------------------------------------
# over the zoo
# ---------------------------------------------------------------------------------------------------------------
def test_graph_route_share():
    routes = {}
    for name in NAMES:
        _, bnn = _converted(name)
        routes[name] = f"error ({type(bnn).__name__})" if isinstance(bnn, Exception) else bnn.bayes_report.mode
    graph = [n for n, r in routes.items() if r in GRAPH_ROUTES]
    assert len(graph) >= MIN_GRAPH_SHARE * len(NAMES), (
        f"{len(graph)} of {len(NAMES)} models convert by a graph route (need {MIN_GRAPH_SHARE:.0%}): {routes}"
    )


def test_zoo_spans_families():
    families = {case.family for case in HF_ZOO.values()}
    assert len(HF_ZOO) >= 12 and {"encoder", "decoder", "encoder-decoder", "vision", "speech"} <= families
