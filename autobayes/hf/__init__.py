"""Hugging Face ``transformers`` support: model folders and checkpoint specs (:mod:`~autobayes.hf.io`) and
``generate()`` on a Bayesian model (:mod:`~autobayes.hf.generate`).

``transformers`` is an optional extra (``pip install autobayes[hf]``): nothing here imports it at import time;
the functions that read a model folder import it when called.
"""

from .generate import GenerateRoot, can_generate, one_draw
from .io import HF_PREFIX, build_from_spec, hf_spec, is_hf_folder, load_pretrained

__all__ = ["GenerateRoot", "can_generate", "one_draw", "HF_PREFIX", "build_from_spec", "hf_spec", "is_hf_folder",
           "load_pretrained"]
