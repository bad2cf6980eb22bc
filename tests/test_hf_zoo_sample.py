"""Zoo test on a seeded sample of transformers' architectures (beyond the fifteen of ``tests/test_hf_zoo.py``),
and on the architectures that broke the capture route (project issue 21), each built from a tiny config with
random weights (nothing downloaded).

The sample: for each of transformers' auto mappings ``MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES``,
``MODEL_FOR_CAUSAL_LM_MAPPING_NAMES`` and ``MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES``, the model types
sorted and shuffled by ``random.Random(SEED)``; the first ``PER_MAPPING`` of them not in :data:`EXCLUDED`
(each excluded one with its reason, as timm's model tests do) nor already in ``tests/test_hf_zoo.py``. The draw
is recorded in :data:`DRAWN` (checked against a fresh draw under the transformers version it was made with).

Each model is converted once with ``autobayes.bayesify(model)`` (``mode="auto"``, example inputs from
``autobayes.hf.example_inputs``), then at two batch sizes / sequence lengths (2 x 8 and 3 x 12; images: batch
only) it must run, return the model's own output type with the model's logits shape, and a finite KL > 0.
The named problem models also check their route note: Funnel / Jamba (a sequence length fixed without
torch.export declaring it: captured statically), M2M100 (``no_grad`` regions: the export route, not swap),
MobileBERT (a zero-element weight: skipped with its reason), Swin (image sides static, only the batch dynamic),
CvT / PvT-v2 / TextNet (the fx route keeps the ``ModelOutput`` type).

Run with ``pytest -m zoo tests/test_hf_zoo_sample.py`` (about 90 s on an idle CPU core).
"""

from __future__ import annotations

import copy
import functools
import random
import sys
from pathlib import Path
from typing import Any, Callable, Dict

import pytest
import torch

import autobayes
from autobayes.hf import example_inputs

sys.path.insert(0, str(Path(__file__).parent))
from _zoo_check import bayesify_or_error, require_converted  # noqa: E402

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
pytestmark = [pytest.mark.zoo, pytest.mark.usefixtures("one_thread")]

SEED = 21
PER_MAPPING = 2
DRAWN_WITH = "5.25"  # the transformers version the draw below was made with
#: ``{mapping: [model types]}``: the seeded draw (see the module docstring).
DRAWN = {
    "sequence_classification": ["doge", "mpnet"],
    "causal_lm": ["qwen3_moe", "exaone4"],
    "image_classification": ["convnext", "data2vec-vision"],
}
#: Model types in ``tests/test_hf_zoo.py`` already.
IN_ZOO = {"bert", "roberta", "distilbert", "modernbert", "gpt2", "llama", "qwen2", "mistral", "gpt_neox", "opt",
          "phi", "t5", "bart", "vit", "whisper"}
#: Drawn model types left out, and why.
EXCLUDED = {
    "timm_wrapper": "wraps a timm model named in its config: built from timm, not from a transformers config",
    "efficientnet": "the small common sizes give a batch norm of the wrong width (running_mean 2560 vs 64)",
    "mobilevitv2": "its default strides shrink a 32-pixel image to nothing (2 x 2 for a 4 x 4 unfold)",
    "emu3": "a multimodal config (text + VQ-VAE image tokenizer): the common small fields do not build it",
}
_MAPPINGS = {
    "sequence_classification": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    "causal_lm": "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
    "image_classification": "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES",
}
#: Common size fields, set where a config has them (hidden size 32, 2 layers, 2 heads, vocabulary 100, ...).
SMALL = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
             intermediate_size=64, max_position_embeddings=64, head_dim=16, moe_intermediate_size=32,
             num_experts=2, num_experts_per_tok=1, pad_token_id=0, image_size=32, patch_size=4, num_channels=3,
             num_labels=3, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, embedding_size=16)


def _mapping(task: str) -> Dict[str, Any]:
    from transformers.models.auto import modeling_auto

    return getattr(modeling_auto, _MAPPINGS[task])


def draw(task: str) -> list:
    order = sorted(_mapping(task))
    random.Random(SEED).shuffle(order)
    return [t for t in order if t not in EXCLUDED and t not in IN_ZOO][:PER_MAPPING]


def _small(model_type: str, **extra: Any):
    config_class = type(transformers.CONFIG_MAPPING[model_type]) if not isinstance(
        transformers.CONFIG_MAPPING[model_type], type) else transformers.CONFIG_MAPPING[model_type]
    fields = config_class().to_dict()
    return config_class(**{k: v for k, v in SMALL.items() if k in fields}, **extra)


def _drawn(task: str, model_type: str) -> Callable[[], torch.nn.Module]:
    def build():
        name = _mapping(task)[model_type]
        return getattr(transformers, name if isinstance(name, str) else name[0])(_small(model_type))
    return build


T = transformers
#: The architectures named in issue 21, with configs small enough to build in a second.
NAMED: Dict[str, Callable[[], torch.nn.Module]] = {
    "funnel": lambda: T.FunnelForSequenceClassification(T.FunnelConfig(
        vocab_size=100, d_model=32, n_head=2, d_head=16, d_inner=64, block_sizes=[1, 1], num_decoder_layers=1)),
    "jamba": lambda: T.JambaForSequenceClassification(T.JambaConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
        intermediate_size=64, attn_layer_period=2, attn_layer_offset=1, expert_layer_period=2,
        expert_layer_offset=1, num_experts=2, mamba_d_state=4, mamba_d_conv=2, mamba_expand=2, mamba_dt_rank=4,
        pad_token_id=0)),
    "cvt": lambda: T.CvtForImageClassification(T.CvtConfig(  # depth[i] > i: CvT indexes its drop-path rates so
        image_size=32, embed_dim=[8, 16, 16], num_heads=[1, 1, 2], depth=[1, 2, 3], num_labels=3)),
    "pvt_v2": lambda: T.PvtV2ForImageClassification(T.PvtV2Config(
        image_size=32, num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
        patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2], num_labels=3)),
    "textnet": lambda: T.TextNetForImageClassification(T.TextNetConfig(
        stem_out_channels=8, conv_layer_kernel_sizes=[[[3, 3]], [[3, 3]]], conv_layer_strides=[[2], [2]],
        hidden_sizes=[8, 8, 16], num_labels=3, image_size=[32, 32])),
    "m2m100": lambda: T.M2M100ForConditionalGeneration(T.M2M100Config(
        vocab_size=100, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64)),
    "mobilebert": lambda: T.MobileBertForMaskedLM(T.MobileBertConfig(  # embedding_size == hidden_size: the MLM
        vocab_size=100, hidden_size=32, embedding_size=32, num_hidden_layers=2,  # head's extra matrix is empty
        num_attention_heads=2, intermediate_size=32, intra_bottleneck_size=16, true_hidden_size=16,
        num_feedforward_networks=1)),
    "swin": lambda: T.SwinForImageClassification(T.SwinConfig(
        image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4, num_labels=3)),
}
CASES: Dict[str, Callable[[], torch.nn.Module]] = {
    **NAMED, **{f"{task}:{t}": _drawn(task, t) for task, types in DRAWN.items() for t in types}}
SHAPES = ((2, 8), (3, 12))


@functools.lru_cache(maxsize=None)
def _converted(name: str):
    torch.manual_seed(0)
    model = CASES[name]().eval()
    return model, bayesify_or_error(model)


def _bnn(name: str):
    return require_converted(name, *_converted(name))


def _logits(out):
    return out.logits if hasattr(out, "logits") else out[0]


def test_the_draw_is_reproducible():
    if not transformers.__version__.startswith(DRAWN_WITH):
        pytest.skip(f"the draw was made with transformers {DRAWN_WITH}; {transformers.__version__} has other "
                    f"mappings")
    assert {task: draw(task) for task in DRAWN} == DRAWN


@pytest.mark.parametrize("name", sorted(CASES))
def test_converts_and_runs_at_two_sizes(name):
    model, bnn = _bnn(name)
    bnn.eval()
    for batch, seq in SHAPES:
        inputs = example_inputs(model, batch, seq)
        with torch.no_grad():
            ref = model(**inputs)
            out, kl = bnn(**inputs)
        assert type(out) is type(ref), f"{name} at {batch} x {seq}: {type(out).__name__}, not {type(ref).__name__}"
        assert _logits(out).shape == _logits(ref).shape, f"{name} at {batch} x {seq}"
        assert kl.dim() == 0 and torch.isfinite(kl) and kl.item() > 0, f"{name} at {batch} x {seq}: kl = {kl!r}"


@pytest.mark.parametrize("name, mode, note", [
    ("funnel", "export", "captured with static shapes"),
    ("jamba", "export", "captured with static shapes"),
    ("m2m100", "export", "export mode: captured"),
    ("swin", "export", "dynamic input dimensions (one graph for every size): [1]['pixel_values'][dim 0]"),
    ("cvt", "fx", ""), ("pvt_v2", "fx", ""), ("textnet", "fx", ""),
])
def test_route_notes_of_the_named_models(name, mode, note):
    _, bnn = _bnn(name)
    report = bnn.bayes_report
    assert report.mode == mode, f"{name}: converted by {report.mode!r}; notes: {report.notes}"
    assert note in " ".join(report.notes), f"{name}: no note {note!r} in {report.notes}"


def test_a_zero_element_weight_is_skipped_with_its_reason():
    _, bnn = _bnn("mobilebert")
    empty = [r for r in bnn.bayes_report.skipped if "zero elements" in r.reason]
    assert [r.name for r in empty] == ["cls.predictions.dense"]


@pytest.mark.parametrize("name", sorted(NAMED))
def test_use_mean_matches_the_model_and_survives_a_copy(name):
    """Under ``use_mean`` the converted model's logits equal the deterministic model's (rtol 1e-4, atol 1e-5:
    float32 round-off of reordered sums), at both sizes, and a deep copy (which recaptures: the captured graphs
    and region bodies are not copied) gives the same."""
    model, bnn = _bnn(name)
    bnn.eval()
    twin = copy.deepcopy(bnn)
    for batch, seq in SHAPES:
        inputs = example_inputs(model, batch, seq)
        with torch.no_grad(), autobayes.use_mean(bnn), autobayes.use_mean(twin):
            want = _logits(model(**inputs))
            got, copied = _logits(bnn(**inputs).output), _logits(twin(**inputs).output)
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-5), f"{name} at {batch} x {seq}"
        assert torch.allclose(copied, want, rtol=1e-4, atol=1e-5), f"{name} (copy) at {batch} x {seq}"


def test_a_size_fixed_past_the_conversion_check_recaptures_at_run_time(monkeypatch):
    """Funnel with the conversion's doubled-size check switched off: its dynamic graph would crash at another
    sequence length deep inside ("shape '[3, 8, 2, 16]' is invalid"); the call runs the model's own forward
    instead, warns once, and later calls use static captures. Logits under use_mean: as above."""
    from autobayes.fx import capture_root

    monkeypatch.setattr(capture_root, "undeclared_sizes", lambda *args: None)
    torch.manual_seed(0)
    model = NAMED["funnel"]().eval()
    _, bnn = require_converted("funnel", model, bayesify_or_error(model))
    bnn.eval()
    inputs = example_inputs(model, 3, 12)
    with pytest.warns(UserWarning, match="fixes a size torch.export did not declare"):
        with torch.no_grad(), autobayes.use_mean(bnn):
            got = bnn(**inputs).output
    with torch.no_grad(), autobayes.use_mean(bnn):
        want = model(**inputs)
        again = bnn(**inputs).output  # a static capture at 3 x 12
    assert type(got) is type(want) and type(again) is type(want)
    assert torch.allclose(got.logits, want.logits, rtol=1e-4, atol=1e-5)
    assert torch.allclose(again.logits, want.logits, rtol=1e-4, atol=1e-5)
