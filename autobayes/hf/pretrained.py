"""``save_pretrained`` / ``from_pretrained`` for a converted ``transformers`` model.

``bnn.save_pretrained(DIR)`` writes a folder that both libraries read without surprises::

    DIR/config.json             the model's config, with an "autobayes" entry saying what the folder holds
    DIR/model.safetensors       the POSTERIOR MEANS, in the deterministic model's own layout
    DIR/generation_config.json  (models that generate)
    DIR/autobayes.safetensors   the autobayes checkpoint (autobayes.save): means, variances, priors, the config

* ``autobayes.load(DIR)`` (and ``autobayes inspect DIR``, ``autobayes predict DIR``, ...) reads
  ``autobayes.safetensors``: the Bayesian network, exactly as saved;
* ``transformers``' ``AutoModel...from_pretrained(DIR)`` (or the model's own class) reads ``model.safetensors``:
  the deterministic model at the posterior means, every weight loaded (never a randomly initialised layer); its
  outputs equal ``bnn``'s under :func:`autobayes.use_mean`. ``type(bnn).from_pretrained(DIR)`` gives the
  Bayesian network (:func:`autobayes.load`);
* ``autobayes convert DIR`` refuses the folder as already Bayesian (converting its means afresh would drop the
  learned variances; to do that deliberately, ``bayesify(AutoModel...from_pretrained(DIR))``).

The means are stored twice (``model.safetensors`` and the checkpoint): the folder is about twice the size of
the deterministic model's, plus the variances. ``Trainer.save_model`` and every ``BayesTrainer`` checkpoint
write this folder. :class:`PretrainedRoot` is registered in :data:`autobayes.fx.derive.ROOT_MIXINS` when this
module is imported (``import autobayes`` does). Nothing here imports ``transformers`` at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import torch
from torch import nn

from ..errors import CheckpointError
from ..fx.derive import ROOT_MIXINS
from ..io.files import FOLDER_CHECKPOINT

__all__ = ["PretrainedRoot", "is_pretrained_class", "posterior_mean_model", "CONFIG_MARKER"]

#: The ``config.json`` entry of a folder written by ``bnn.save_pretrained``.
CONFIG_MARKER = "autobayes"


def is_pretrained_class(cls: type) -> bool:
    """Whether ``cls`` derives from ``transformers.PreTrainedModel`` (checked by name: nothing is imported)."""
    return any(c.__name__ == "PreTrainedModel" and c.__module__.startswith("transformers.") for c in cls.__mro__)


def posterior_mean_model(bnn: nn.Module) -> nn.Module:
    """The deterministic ``transformers`` model of ``bnn`` holding the posterior means (its outputs equal
    ``bnn``'s under :func:`autobayes.use_mean`); adapters are folded in (:func:`autobayes.merge_adapters`).

    Raises:
        CheckpointError: a weight of the deterministic model has no counterpart in ``bnn``.

    Example:
        >>> plain = posterior_mean_model(bnn)  # doctest: +SKIP
        >>> plain(**inputs).logits  # equals bnn(**inputs).output.logits under autobayes.use_mean(bnn)
    """
    from ..adapters import merge_adapters
    from ..api import use_mean
    from ..io.state_dict import load_checked
    from .io import build_from_spec, hf_spec

    if isinstance(getattr(bnn, "bayes_adapter", None), dict):
        return merge_adapters(bnn).eval()
    spec = hf_spec(bnn)
    if spec is None:
        raise CheckpointError(f"{type(bnn).__name__} is not a transformers model: save it with autobayes.save")
    model = build_from_spec(spec)
    values: Dict[str, torch.Tensor] = {}
    with use_mean(bnn), torch.no_grad():
        for key in model.state_dict():
            path, _, attr = key.rpartition(".")
            try:
                values[key] = getattr(bnn.get_submodule(path), attr).detach()
            except AttributeError as err:
                raise CheckpointError(f"the posterior mean of {key!r} cannot be read from the Bayesian "
                                      f"{type(bnn).__name__} ({err}); save it with autobayes.save(bnn, path)") from err
    load_checked(model, values, f"the posterior means of {type(bnn).__name__}")
    device = next((v.device for v in values.values()), torch.device("cpu"))
    return model.to(device).eval()


class PretrainedRoot:
    """Root mixin of a converted ``transformers.PreTrainedModel``: ``save_pretrained`` and ``from_pretrained``
    for the folder described in :mod:`autobayes.hf.pretrained`.

    Example:
        >>> bnn.save_pretrained("bert-bayes")  # doctest: +SKIP
        >>> same = autobayes.load("bert-bayes")  # the Bayesian network
        >>> means = AutoModelForSequenceClassification.from_pretrained("bert-bayes")  # its posterior means
    """

    def save_pretrained(self, save_directory: Any, is_main_process: bool = True, state_dict: Any = None,
                        **kwargs: Any) -> None:
        """Write the folder (see :mod:`autobayes.hf.pretrained`). ``state_dict`` (what ``Trainer`` passes) is
        ignored, the network's own state is saved, unless the network is sharded by FSDP2: then ``state_dict``
        is its full state, gathered on every rank by :func:`autobayes.distributed.full_state_dict` and passed on
        rank 0, and the folder's network is rebuilt from it (:func:`autobayes.load`) to write the posterior
        means. Other keyword arguments go to ``transformers``' ``save_pretrained`` of the posterior-mean model
        (``max_shard_size``, ...)."""
        from ..io.checkpoint import load, save
        from ..sharding import is_sharded

        if not is_main_process:
            return
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        if is_sharded(self):
            if state_dict is None:
                raise CheckpointError(
                    f"{type(self).__name__} is sharded: gather its state on every rank, then save on rank 0: "
                    f"state = autobayes.distributed.full_state_dict(bnn); bnn.save_pretrained(DIR, state_dict=state)")
            save(self, folder / FOLDER_CHECKPOINT, state_dict=state_dict, metadata={"saved_by": "save_pretrained"})
            load(folder / FOLDER_CHECKPOINT).save_pretrained(folder, **kwargs)
            return
        plain = posterior_mean_model(self)
        setattr(plain.config, CONFIG_MARKER, {
            "checkpoint": FOLDER_CHECKPOINT,
            "model.safetensors": "the posterior means (a deterministic model)",
            "load": "autobayes.load(DIR) gives the Bayesian network",
        })
        plain.save_pretrained(str(folder), **kwargs)
        save(self, folder / FOLDER_CHECKPOINT, metadata={"saved_by": "save_pretrained"})

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any) -> nn.Module:
        """The Bayesian network of a folder written by :meth:`save_pretrained` (:func:`autobayes.load`; a
        ``device=`` keyword is passed on)."""
        from ..io.checkpoint import load

        return load(pretrained_model_name_or_path, device=kwargs.get("device", "cpu"))


ROOT_MIXINS.append((is_pretrained_class, PretrainedRoot))  # every converted transformers model gets it
