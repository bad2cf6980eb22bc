"""Small Hugging Face transformers models with random weights (nothing downloaded), and inputs for them.

Each entry of :data:`HF_ZOO` builds one architecture from a tiny config (hidden size 32, 2 layers, vocabulary
100) with a task head, and makes its inputs at any batch size and sequence length. Used by
``tests/test_hf_zoo.py``; transformers is imported only when a model is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict

import torch

VOCAB = 100
HIDDEN = 32
LAYERS = 2
HEADS = 2
FFN = 64
MAX_POS = 64
IMAGE = 16  # ViT image side (patch 4 -> 16 patches)
MEL_FRAMES = 32  # Whisper: the encoder expects exactly 2 * max_source_positions frames


@dataclass(frozen=True)
class HFCase:
    """One architecture: ``build(seed)`` -> model (eval mode, weights from ``seed``), ``inputs(batch, seq)`` ->
    keyword inputs (the same tensors for the same shape)."""

    family: str  # encoder / decoder / encoder-decoder / vision / speech
    build: Callable[..., Any]
    inputs: Callable[[int, int], Dict[str, torch.Tensor]]
    note: str = ""


def _tokens(batch: int, seq: int, *, low: int = 3) -> torch.Tensor:
    """Token ids in ``[low, VOCAB)``: ids 0..2 are the pad / bos / eos ids of the configs below."""
    g = torch.Generator().manual_seed(1000 * batch + seq)
    return torch.randint(low, VOCAB, (batch, seq), generator=g)


def _text(batch: int, seq: int) -> Dict[str, torch.Tensor]:
    ids = _tokens(batch, seq)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _causal(batch: int, seq: int) -> Dict[str, torch.Tensor]:
    return {**_text(batch, seq), "use_cache": False}


def _seq2seq(batch: int, seq: int) -> Dict[str, torch.Tensor]:
    dec = _tokens(batch, max(seq // 2, 2))
    return {**_text(batch, seq), "decoder_input_ids": dec, "use_cache": False}


def _image(batch: int, seq: int) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * batch + seq)
    return {"pixel_values": torch.randn(batch, 3, IMAGE, IMAGE, generator=g)}


def _speech(batch: int, seq: int) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * batch + seq)
    return {
        "input_features": torch.randn(batch, 8, MEL_FRAMES, generator=g),
        "decoder_input_ids": _tokens(batch, seq),
        "use_cache": False,
    }


def _make(config_name: str, model_name: str, **config: Any) -> Callable[..., Any]:
    def build(seed: int = 0) -> Any:
        import transformers

        torch.manual_seed(seed)
        cfg = getattr(transformers, config_name)(**config)
        model = getattr(transformers, model_name)(cfg)
        return model.eval()

    return build


_IDS = dict(vocab_size=VOCAB, pad_token_id=0, bos_token_id=1, eos_token_id=2)
_BERTLIKE = dict(_IDS, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                 intermediate_size=FFN, max_position_embeddings=MAX_POS)
_LLAMALIKE = dict(_IDS, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                  num_key_value_heads=1, intermediate_size=FFN, max_position_embeddings=MAX_POS)

#: name -> case. Sizes: hidden 32, 2 layers, 2 heads, vocabulary 100 (a few thousand to ~30k parameters).
HF_ZOO: Dict[str, HFCase] = {
    # encoders
    "bert": HFCase("encoder", _make("BertConfig", "BertForMaskedLM", **_BERTLIKE), _text,
                   "decoder tied to the word embedding; cls.predictions.bias tied to its decoder.bias"),
    "roberta": HFCase("encoder", _make("RobertaConfig", "RobertaForMaskedLM", **dict(_BERTLIKE, max_position_embeddings=MAX_POS + 2)),
                      _text, "lm_head.bias tied to lm_head.decoder.bias"),
    "distilbert": HFCase("encoder", _make("DistilBertConfig", "DistilBertForMaskedLM", vocab_size=VOCAB, dim=HIDDEN,
                                          n_layers=LAYERS, n_heads=HEADS, hidden_dim=FFN, max_position_embeddings=MAX_POS,
                                          pad_token_id=0), _text, "vocab_projector tied to the word embedding"),
    "modernbert": HFCase("encoder", _make("ModernBertConfig", "ModernBertForMaskedLM", **dict(
        _BERTLIKE, global_attn_every_n_layers=2, local_attention=8, cls_token_id=1, sep_token_id=2)), _text,
        "alternating local / global attention"),
    # decoders
    "gpt2": HFCase("decoder", _make("GPT2Config", "GPT2LMHeadModel", vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS,
                                    n_head=HEADS, n_positions=MAX_POS, bos_token_id=1, eos_token_id=2), _causal,
                   "transformers Conv1D matrices; lm_head tied to wte"),
    "llama": HFCase("decoder", _make("LlamaConfig", "LlamaForCausalLM", **_LLAMALIKE), _causal, "RoPE, GQA"),
    "qwen2": HFCase("decoder", _make("Qwen2Config", "Qwen2ForCausalLM", **dict(_LLAMALIKE, tie_word_embeddings=True)),
                    _causal, "lm_head tied to embed_tokens"),
    "mistral": HFCase("decoder", _make("MistralConfig", "MistralForCausalLM", **dict(_LLAMALIKE, sliding_window=8)),
                      _causal, "sliding-window attention"),
    "gpt_neox": HFCase("decoder", _make("GPTNeoXConfig", "GPTNeoXForCausalLM", **_BERTLIKE), _causal,
                       "fused query_key_value, parallel residual"),
    "opt": HFCase("decoder", _make("OPTConfig", "OPTForCausalLM", **dict(_IDS, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                                                          num_attention_heads=HEADS, ffn_dim=FFN,
                                                                          word_embed_proj_dim=HIDDEN,
                                                                          max_position_embeddings=MAX_POS)), _causal,
                  "lm_head tied to embed_tokens"),
    "phi": HFCase("decoder", _make("PhiConfig", "PhiForCausalLM", **dict(_LLAMALIKE, num_key_value_heads=HEADS)), _causal,
                  "partial rotary embedding"),
    # encoder-decoders
    "t5": HFCase("encoder-decoder", _make("T5Config", "T5ForConditionalGeneration", vocab_size=VOCAB, d_model=HIDDEN,
                                          d_kv=16, d_ff=FFN, num_layers=LAYERS, num_heads=HEADS, pad_token_id=0,
                                          eos_token_id=2, decoder_start_token_id=0), _seq2seq,
                 "relative position bias; shared embedding tied to lm_head"),
    "bart": HFCase("encoder-decoder", _make("BartConfig", "BartForConditionalGeneration", **dict(
        _IDS, d_model=HIDDEN, encoder_layers=LAYERS, decoder_layers=LAYERS, encoder_attention_heads=HEADS,
        decoder_attention_heads=HEADS, encoder_ffn_dim=FFN, decoder_ffn_dim=FFN, max_position_embeddings=MAX_POS,
        decoder_start_token_id=2)), _seq2seq, "shared embedding tied to encoder, decoder and lm_head"),
    # vision
    "vit": HFCase("vision", _make("ViTConfig", "ViTForImageClassification", hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                  num_attention_heads=HEADS, intermediate_size=FFN, image_size=IMAGE, patch_size=4,
                                  num_labels=5), _image, "patch embedding Conv2d; fixed image size (seq unused)"),
    # speech
    "whisper": HFCase("speech", _make("WhisperConfig", "WhisperForConditionalGeneration", **dict(
        _IDS, d_model=HIDDEN, encoder_layers=LAYERS, decoder_layers=LAYERS, encoder_attention_heads=HEADS,
        decoder_attention_heads=HEADS, encoder_ffn_dim=FFN, decoder_ffn_dim=FFN, num_mel_bins=8,
        max_source_positions=MEL_FRAMES // 2, max_target_positions=MAX_POS, decoder_start_token_id=1,
        suppress_tokens=None, begin_suppress_tokens=None)), _speech,
        "Conv1d front end on mel features; proj_out tied to embed_tokens"),
}
