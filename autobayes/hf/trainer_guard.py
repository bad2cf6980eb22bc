"""What stops a plain ``transformers.Trainer`` at construction on a converted model.

A converted model returns :class:`~autobayes.fx.runtime.BayesOutput` ``(output, kl)``, whose first element
``Trainer.compute_loss`` would take for the loss, failing inside the training loop. ``Trainer.__init__`` reads
``model.accepts_loss_kwargs`` once (nothing else in ``transformers`` does): on every converted root it is a
property that raises :class:`~autobayes.errors.ConfigError` naming :class:`autobayes.hf.BayesTrainer`, unless
the model is being handed to a ``BayesTrainer`` (:func:`building_bayes_trainer`). A ``transformers`` class that
sets ``accepts_loss_kwargs`` itself keeps its value inside ``BayesTrainer``, which computes its own loss anyway.

Nothing here imports ``transformers``.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator

from ..errors import ConfigError

__all__ = ["TrainerGuard", "building_bayes_trainer"]

_BUILDING = contextvars.ContextVar("autobayes_building_bayes_trainer", default=False)


@contextlib.contextmanager
def building_bayes_trainer() -> Iterator[None]:
    """Inside the block (``BayesTrainer.__init__``), ``accepts_loss_kwargs`` of a converted model reads
    ``False``."""
    token = _BUILDING.set(True)
    try:
        yield
    finally:
        _BUILDING.reset(token)


class TrainerGuard:
    """Root mixin of every converted model: ``accepts_loss_kwargs``, read by ``transformers.Trainer.__init__``
    only, raises the error that names ``BayesTrainer`` (see the module docstring)."""

    @property
    def accepts_loss_kwargs(self) -> Any:
        if _BUILDING.get():
            return False  # BayesTrainer computes the loss; the model gets no num_items_in_batch
        raise ConfigError(
            f"transformers.Trainer cannot train the Bayesian {type(self).__name__}: its forward returns "
            f"BayesOutput(output, kl), and the loss to minimise is the ELBO (the model's NLL + beta * KL / N), "
            f"which Trainer does not compute. Use autobayes.hf.BayesTrainer, a drop-in Trainer subclass: "
            f"from autobayes.hf import BayesTrainer; trainer = BayesTrainer(model=bnn, args=training_args, "
            f"train_dataset=train, eval_dataset=test)"
        )
