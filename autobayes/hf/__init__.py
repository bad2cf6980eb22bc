"""Hugging Face ``transformers`` support: small example inputs for a model (:func:`example_inputs`) and a check
that never imports ``transformers`` itself (:func:`is_hf_model`).

``transformers`` is an optional extra (``pip install autobayes[hf]``): nothing here imports it; a model can only
be a ``transformers`` model when the caller has imported ``transformers`` already.

Example:
    >>> from transformers import BertConfig, BertForSequenceClassification  # doctest: +SKIP
    >>> model = BertForSequenceClassification(BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2,
    ...                                                  num_attention_heads=4, intermediate_size=37))
    >>> autobayes.hf.example_inputs(model)["input_ids"].shape  # doctest: +SKIP
    torch.Size([2, 8])
"""

from .inputs import example_inputs, is_hf_model

__all__ = ["example_inputs", "is_hf_model"]
