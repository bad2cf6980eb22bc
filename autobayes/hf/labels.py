"""``--task`` and ``--class-names`` of a Hugging Face model, checked against its labels and written into its config.

A ``transformers`` model keeps its labels in its config (``num_labels``, ``id2label``, ``problem_type``), which an
autobayes checkpoint stores whole: the names given on the command line replace the config's ``LABEL_0..`` there,
so that ``autobayes inspect``, ``autobayes.load`` and transformers' own pipelines all see the same names.
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from ..errors import ConfigError
from .io import has_label_head

__all__ = ["apply_labels"]


def apply_labels(model: nn.Module, preprocessing: Mapping[str, Any], where: str) -> None:
    """Check ``preprocessing["task"]`` / ``["class_names"]`` against ``model``'s label head and record them in
    ``model.config`` (``problem_type``, ``id2label`` / ``label2id``).

    A task or class names need a label head (:func:`autobayes.hf.io.has_label_head`); regression needs a
    sequence-level head; class names must name every label. A model whose config says regression, or which has a
    single output (transformers reads ``num_labels=1`` as regression), is not a classifier.

    Raises:
        ConfigError: a flag that does not fit the model (the message says which and what to do instead).

    Example:
        >>> apply_labels(model, {"class_names": ["neg", "pos"]}, "bert-tiny/")  # doctest: +SKIP
        >>> model.config.id2label  # doctest: +SKIP
        {0: 'neg', 1: 'pos'}
    """
    task, names = preprocessing.get("task"), preprocessing.get("class_names")
    if task is None and names is None:
        return
    config, cls = model.config, type(model).__name__
    flags = " / ".join(f for f, v in (("--task", task), ("--class-names", names)) if v is not None)
    if not has_label_head(cls):
        raise ConfigError(f"{flags} describe{'s' if ' / ' not in flags else ''} a label head, and the {cls} of "
                          f"{where!r} has none: drop {flags.split(' / ')[0]}")
    labels = int(config.num_labels)
    regression = config.problem_type == "regression" or (labels == 1 and config.problem_type is None)
    if task == "regression":
        if not cls.endswith("ForSequenceClassification"):
            raise ConfigError(f"--task regression needs one prediction per sequence; {cls} of {where!r} predicts "
                              f"per token or per image: drop --task regression")
        config.problem_type = "regression"
        return
    if regression:
        why = "its config's problem_type is 'regression'" if config.problem_type else \
            "it has 1 output, which transformers reads as regression"
        raise ConfigError(f"{flags} make{'s' if ' / ' not in flags else ''} {where!r} a classifier, but {why}; pass "
                          f"--task regression, or --num-classes N to re-initialise its head for N classes")
    if names is not None:
        if len(names) != labels:
            raise ConfigError(f"--class-names gives {len(names)} names for the {labels} labels of {where!r} (its "
                              f"config's num_labels); give {labels} names, or --num-classes {len(names)} to "
                              f"re-initialise its label head for {len(names)} classes")
        config.id2label = {i: str(name) for i, name in enumerate(names)}
        config.label2id = {str(name): i for i, name in enumerate(names)}
