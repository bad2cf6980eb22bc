"""The network a run trains: the default architecture, building and converting it, checking that a given one fits
the data."""

from __future__ import annotations

from typing import Any, Dict

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..data import DatasetInfo
from ..errors import ConfigError, DataMismatchError

__all__ = ["default_arch", "bayesian_model", "check_fits"]


def default_arch(info: DatasetInfo) -> str:
    """The architecture ``train`` picks when none is given: ``digits_cnn`` for 8x8 images, ``fcnet`` for tabular
    data, ``preact_resnet18`` for other images."""
    if info.image_size is None:
        return "fcnet"
    return "digits_cnn" if info.image_size <= 16 else "preact_resnet18"


def bayesian_model(model: Any, info: DatasetInfo, model_kwargs: Dict[str, Any], config: Any,
                   bayes_options: Dict[str, Any]) -> nn.Module:
    """The Bayesian network to train: ``model`` (an architecture name, sized to the data; ``None`` for
    :func:`default_arch`; a deterministic module) converted by :func:`autobayes.bayesify`, or an already
    Bayesian module as it is (then no Bayesian options may be given)."""
    from ..api import bayesify
    from ..models import build_model

    if model is None:
        model = default_arch(info)
    if isinstance(model, str):
        sizing = info.model_kwargs()
        overlap = sorted(set(sizing) & set(model_kwargs))
        if overlap:
            raise ConfigError(f"model_kwargs {overlap} are set from the data ({info.name}); remove them")
        model = build_model(model, **sizing, **model_kwargs)
    elif not isinstance(model, nn.Module):
        raise ConfigError(f"model must be an architecture name, an nn.Module or None, got {type(model).__name__}")
    elif model_kwargs:
        raise ConfigError("model_kwargs only apply when model is an architecture name")
    if hasattr(model, "bayes_config"):
        if bayes_options or config is not None:
            raise ConfigError("the model is already Bayesian (it has bayes_config): drop the Bayesian options, or "
                              "pass the deterministic model to have train() convert it")
        return model
    return bayesify(model, config, **bayes_options)


def check_fits(bnn: nn.Module, info: DatasetInfo, train_set: Dataset, device: torch.device) -> None:
    """A model that was not sized from this data (given as a module, e.g. a loaded checkpoint) must fit it: the
    sizes its architecture spec records, then one forward of a training example.

    Raises:
        DataMismatchError: the classes, channels or features differ, or the forward fails.
    """
    spec = getattr(bnn, "autobayes_arch", None) or {}
    recorded = spec.get("kwargs") or {}
    wanted = info.model_kwargs()
    keys = ["num_classes"] + (["num_features"] if info.image_size is None else ["in_channels"])
    differ = [k for k in keys if recorded.get(k) is not None and wanted.get(k) is not None and recorded[k] != wanted[k]]
    if differ:
        have = ", ".join(f"{k}={recorded[k]}" for k in differ)
        need = ", ".join(f"{k}={wanted[k]}" for k in differ)
        flags = " ".join(f"--{k.replace('_', '-')} {wanted[k]}" for k in differ if k != "num_features")
        raise DataMismatchError(
            f"the model ({spec.get('arch', type(bnn).__name__)}) was built for {have}, but the data set "
            f"{info.name!r} has {need}; fine-tune it on data of that shape, or convert the deterministic network "
            f"for this data (autobayes convert ... {flags or '--model-arg ...'})"
        )
    try:
        x = train_set[0][0]
    except Exception:  # noqa: BLE001 - a data set we cannot index: nothing to check here
        return
    if not isinstance(x, Tensor):
        return
    from ..api import kl_disabled

    was_training = bnn.training
    bnn.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
                kl_disabled(bnn):
            out = bnn(x.unsqueeze(0).to(device))
    except Exception as err:  # noqa: BLE001 - any failure here means the model does not take this data
        raise DataMismatchError(
            f"the model ({spec.get('arch', type(bnn).__name__)}) does not accept the inputs of {info.name!r} "
            f"(one example of shape {list(x.shape)}): {type(err).__name__}: {err}; use data of the shape it was "
            f"built for (e.g. --image-size), or a model built for this data"
        ) from err
    finally:
        bnn.train(was_training)
    logits = out[0] if isinstance(out, tuple) else out
    if info.task == "classification" and isinstance(logits, Tensor) and logits.shape[-1] != info.num_classes:
        raise DataMismatchError(
            f"the model ({spec.get('arch', type(bnn).__name__)}) has {logits.shape[-1]} outputs, but the data set "
            f"{info.name!r} has {info.num_classes} classes; fine-tune it on data with {logits.shape[-1]} classes, "
            f"or convert the deterministic network with --num-classes {info.num_classes}"
        )
