"""Hugging Face ``transformers`` support: model folders and checkpoint specs (:mod:`~autobayes.hf.io`),
``generate()`` on a Bayesian model (:mod:`~autobayes.hf.generate`), and small example inputs for a model's
capture (:func:`example_inputs`, with :func:`is_hf_model`, which never imports ``transformers`` itself).

:class:`BayesTrainer` (:mod:`~autobayes.hf.trainer`) is ``transformers.Trainer`` for a Bayesian model: the ELBO as
the loss, Monte Carlo evaluation, autobayes checkpoints; a converted model's ``save_pretrained`` is described in
:mod:`~autobayes.hf.pretrained`.

``transformers`` is an optional extra (``pip install autobayes[hf]``): nothing here imports it at import time;
the functions that read a model folder import it when called, and ``autobayes.hf.BayesTrainer`` on first use.

Example:
    >>> from transformers import BertConfig, BertForSequenceClassification  # doctest: +SKIP
    >>> model = BertForSequenceClassification(BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2,
    ...                                                  num_attention_heads=4, intermediate_size=37))
    >>> autobayes.hf.example_inputs(model)["input_ids"].shape  # doctest: +SKIP
    torch.Size([2, 8])
"""

from .generate import GenerateRoot, can_generate, one_draw
from .inputs import example_inputs, is_hf_model
from .io import HF_PREFIX, build_from_spec, hf_spec, is_hf_folder, load_pretrained

__all__ = ["BayesTrainer", "GenerateRoot", "can_generate", "one_draw", "HF_PREFIX", "build_from_spec", "hf_spec", "is_hf_folder",
           "load_pretrained", "example_inputs", "is_hf_model"]


def __getattr__(name: str):
    if name == "BayesTrainer":  # imports transformers: only when asked for
        from .trainer import BayesTrainer

        return BayesTrainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
