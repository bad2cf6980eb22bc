"""Small dummy inputs for a Hugging Face ``transformers`` model, worked out from its config alone.

The capture route of :func:`autobayes.bayesify` (``mode="export"``) needs example inputs to capture a forward;
for a ``transformers`` model they need not be given: :func:`example_inputs` builds them from
``model.config`` and ``model.main_input_name`` (token ids and an attention mask for text, pixels for vision,
log-mel features for Whisper-like speech models, raw samples for wav2vec2-like audio models, and decoder token
ids for encoder-decoder models). Nothing here imports ``transformers``.
"""

from __future__ import annotations

import sys
from typing import Any, Dict

import torch
from torch import nn

__all__ = ["example_inputs", "is_hf_model"]


def is_hf_model(model: Any) -> bool:
    """Whether ``model`` is a ``transformers.PreTrainedModel`` (without importing ``transformers``: a model can only
    be one when ``transformers`` is imported already).

    Example:
        >>> is_hf_model(torch.nn.Linear(2, 2))
        False
    """
    transformers = sys.modules.get("transformers")
    if transformers is None or not isinstance(model, nn.Module):
        return False
    try:
        base = transformers.PreTrainedModel
    except AttributeError:  # a partly imported or stubbed module
        return False
    return isinstance(model, base)


def _device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _float_dtype(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.get_default_dtype()


def _get(config: Any, *names: str, default: Any = None) -> Any:
    """The first of ``names`` that ``config`` (or its text / vision / audio sub-config) sets."""
    for holder in (config, getattr(config, "text_config", None), getattr(config, "vision_config", None),
                   getattr(config, "audio_config", None), getattr(config, "encoder", None)):
        if holder is None:
            continue
        for name in names:
            value = getattr(holder, name, None)
            if value is not None:
                return value
    return default


def _token_ids(config: Any, batch_size: int, seq_len: int, device: torch.device, gen: torch.Generator) -> torch.Tensor:
    vocab = int(_get(config, "vocab_size", default=2) or 2)
    # ids 4.. avoid the special tokens (pad / bos / eos) most tokenizers put first, where the vocabulary allows
    low = 4 if vocab > 8 else 0
    return torch.randint(low, vocab, (batch_size, seq_len), generator=gen).to(device)


def _audio_length(config: Any) -> int:
    """A raw-sample count long enough for a wav2vec2-style convolutional feature extractor (a few frames)."""
    kernels = list(getattr(config, "conv_kernel", None) or [10, 3, 3, 3, 3, 2, 2])
    strides = list(getattr(config, "conv_stride", None) or [5, 2, 2, 2, 2, 2, 2])
    # output frames wanted: more than twice SpecAugment's mask length (training masks spans of that many frames)
    length = max(16, 2 * int(getattr(config, "mask_time_length", 0) or 0) + 2)
    for k, s in reversed(list(zip(kernels, strides))):
        length = (length - 1) * s + k
    return max(length, int(getattr(config, "num_mel_bins", 0) or 0))


def example_inputs(model: nn.Module, batch_size: int = 2, seq_len: int = 8, *, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Small dummy keyword inputs for a ``transformers`` model, from ``model.config`` and
    ``model.main_input_name``.

    * text (``input_ids``): random token ids of shape ``(batch_size, seq_len)`` and an all-ones
      ``attention_mask``;
    * vision (``pixel_values``): ``(batch_size, num_channels, image_size, image_size)``;
    * Whisper-like speech (``input_features``): ``(batch_size, num_mel_bins, length)``, the length the encoder
      requires (``2 * max_source_positions``);
    * raw audio (``input_values``): ``(batch_size, samples)`` with enough samples for the feature extractor;
    * encoder-decoder models (``config.is_encoder_decoder``) also get ``decoder_input_ids``.

    The values are random but fixed by ``seed``; they are meant for capturing a graph, not for predictions.

    Args:
        model: a ``transformers.PreTrainedModel`` (anything with a ``config`` and ``main_input_name``).
        batch_size: examples per batch.
        seq_len: tokens per sequence (text and decoder inputs).
        seed: the seed of the random values.

    Returns:
        ``{argument name: tensor}`` on the model's device (floating inputs in its dtype), for ``model(**inputs)``.

    Raises:
        TypeError: ``model`` has no ``config`` (not a ``transformers`` model).

    Example:
        >>> inputs = autobayes.hf.example_inputs(model, batch_size=2, seq_len=8)  # doctest: +SKIP
        >>> out = model(**inputs)  # doctest: +SKIP
    """
    config = getattr(model, "config", None)
    if config is None:
        raise TypeError(
            f"example_inputs works out inputs from a transformers model's config; {type(model).__name__} has no "
            f"`config`. Pass the inputs yourself: bayesify(model, example_inputs={{'x': torch.randn(2, 4)}})"
        )
    device, dtype = _device(model), _float_dtype(model)
    gen = torch.Generator().manual_seed(seed)
    main = getattr(model, "main_input_name", "input_ids") or "input_ids"
    inputs: Dict[str, torch.Tensor] = {}
    if main == "pixel_values":
        size = _get(config, "image_size", default=32)
        height, width = (size, size) if isinstance(size, int) else tuple(size)[:2]
        channels = int(_get(config, "num_channels", default=3))
        inputs[main] = torch.randn(batch_size, channels, height, width, generator=gen).to(device, dtype)
    elif main == "input_features":
        bins = int(_get(config, "num_mel_bins", "feature_size", default=80))
        positions = _get(config, "max_source_positions")
        length = 2 * int(positions) if positions is not None else seq_len
        inputs[main] = torch.randn(batch_size, bins, length, generator=gen).to(device, dtype)
    elif main == "input_values":
        inputs[main] = torch.randn(batch_size, _audio_length(config), generator=gen).to(device, dtype)
    else:
        inputs[main] = _token_ids(config, batch_size, seq_len, device, gen)
        inputs["attention_mask"] = torch.ones(batch_size, seq_len, dtype=torch.long, device=device)
    if getattr(config, "is_encoder_decoder", False):
        decoder = getattr(config, "decoder", None) or config
        inputs["decoder_input_ids"] = _token_ids(decoder, batch_size, seq_len, device, gen)
    return inputs
