""":class:`BayesTrainer`: ``transformers.Trainer`` for a Bayesian model -- the ELBO as the loss, Monte Carlo
evaluation, autobayes checkpoints.

One override per concern:

* ``__init__``: the Bayesian options (``num_data``, ``beta``, ``mc_samples``); a converted model lets only this
  class take it (:mod:`autobayes.hf.trainer_guard`);
* ``compute_loss``: ``loss = NLL + beta * KL / N`` (:mod:`autobayes.losses`' convention): the NLL is the model's
  own loss (from ``labels``) or, for a head that computes none, the cross-entropy of its logits
  (:class:`autobayes.CategoricalELBO`); ``beta`` comes from a KL schedule of :mod:`autobayes.schedules`;
* ``log``: every training log gets ``nll``, ``kl_term`` (``beta * KL / N``) and ``beta`` next to ``loss``
  (their means over the steps since the last log, as ``loss``), so ``trainer.state.log_history`` and every
  reporter (TensorBoard, W&B, ...) show the two terms apart;
* ``evaluation_loop`` (``evaluate`` / ``predict``): the Monte Carlo predictive of ``mc_samples`` posterior
  draws per example (:func:`autobayes.predict`), reported as ``loss`` (its NLL: what ``load_best_model_at_end``
  compares by default), ``accuracy``, ``nll``, ``ece``, ``entropy`` and ``mutual_information`` (means over the
  examples) for a classifier, and per-token ``loss`` / ``nll``, ``perplexity``, ``accuracy``, ``entropy`` and
  ``mutual_information`` (means over the target tokens) for a language model;
* ``_load_from_checkpoint`` / ``_load_best_model``: checkpoints are the folders ``bnn.save_pretrained`` writes
  (:mod:`autobayes.hf.pretrained`: posterior means for ``transformers``, ``autobayes.safetensors`` for autobayes),
  read back with :func:`autobayes.io.load_state`;
* with ``Trainer``'s FSDP settings (``TrainingArguments(fsdp=..., fsdp_config=...)``), ``__init__`` shards the
  model per block with :func:`autobayes.distributed.shard` before accelerate sees it, and the checkpoints are
  gathered from the shards (``_save``, ``_save_optimizer_and_scheduler``) and loaded back into them
  (:mod:`autobayes.hf.fsdp`); ``create_optimizer`` builds the optimiser on the shards.

``N`` is ``len(train_dataset)``. The model's own loss of a language model is a mean per token, so there pass
``num_data`` = the number of target tokens of the training set for the ELBO per token.

This module imports ``transformers``; ``autobayes.hf.BayesTrainer`` imports it on first use.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

import torch
import transformers
from torch import Tensor, nn
from transformers.trainer_utils import EvalLoopOutput, EvalPrediction

from .. import metrics
from ..checks import check_int
from ..errors import ConfigError
from ..io.checkpoint import load_state, save
from ..io.files import FOLDER_CHECKPOINT
from ..losses import CategoricalELBO, ELBOTerms
from ..sharding import full_state_dict, is_sharded
from ..training.optim import beta_schedule
from ..uncertainty import ClassificationSummary, predict
from .fsdp import agreed_path, load_optimizer, save_optimizer, shard_for_trainer
from .pretrained import is_pretrained_class
from .tasks import is_causal_lm, next_token_targets
from .trainer_guard import building_bayes_trainer

__all__ = ["BayesTrainer"]


class BayesTrainer(transformers.Trainer):
    """``transformers.Trainer`` for a model converted by :func:`autobayes.bayesify` (see the module docstring).

    Args:
        *args: ``transformers.Trainer``'s arguments (``model``, ``args``, ``train_dataset``, ``eval_dataset``,
            ``data_collator``, ``compute_metrics``, ...), unchanged.
        num_data: ``N`` of the ELBO; default ``len(train_dataset)``.
        beta: the KL weight: a schedule name of :func:`autobayes.get_beta_schedule` (``"none"``: the ELBO,
            ``"warmup"``, ``"cyclical"``, ``"blundell"``, ...), or a callable ``f(step, epoch, batch_idx,
            num_batches) -> float``. Positions count optimiser steps; ``"warmup"`` defaults to half of the
            training steps, ``"cyclical"`` to one cycle over all of them.
        beta_kwargs: options of the named schedule (``{"warmup_steps": 100}``).
        mc_samples: posterior draws per example in evaluation and prediction.
        **kwargs: ``transformers.Trainer``'s keyword arguments.

    Example:
        >>> bnn = autobayes.bayesify(BertForSequenceClassification(config))  # doctest: +SKIP
        >>> args = TrainingArguments("out", eval_strategy="epoch", save_strategy="epoch",
        ...                          load_best_model_at_end=True)  # doctest: +SKIP
        >>> trainer = BayesTrainer(model=bnn, args=args, train_dataset=train, eval_dataset=test,
        ...                        beta="warmup", mc_samples=20)  # doctest: +SKIP
        >>> trainer.train()  # doctest: +SKIP
        >>> trainer.evaluate()["eval_ece"]  # doctest: +SKIP
        >>> same = autobayes.load(trainer.state.best_model_checkpoint)  # doctest: +SKIP
    """

    def __init__(self, *args: Any, num_data: Optional[int] = None, beta: Union[str, Callable[..., float]] = "none",
                 beta_kwargs: Optional[Dict[str, Any]] = None, mc_samples: int = 10, **kwargs: Any) -> None:
        with building_bayes_trainer():
            super().__init__(*args, **kwargs)
        self.sharded = shard_for_trainer(self)  # Trainer's FSDP settings: per-block FSDP2 (autobayes.hf.fsdp)
        self.model_accepts_loss_kwargs = False  # the loss is a per-batch mean: Trainer scales it for accumulation
        self.num_data = None if num_data is None else check_int(num_data, "BayesTrainer: num_data", 1)
        self.mc_samples = check_int(mc_samples, "BayesTrainer: mc_samples", 1)
        self.beta, self.beta_kwargs = beta, dict(beta_kwargs or {})
        self._schedule: Optional[Callable[..., float]] = None
        self._terms: List[ELBOTerms] = []

    # ------------------------------------------------------------------------------------------------ the loss
    def compute_loss(self, model: nn.Module, inputs: Dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        """The ELBO per example, ``NLL + beta * KL / N`` (``beta = 1`` outside training)."""
        labels = inputs.get("labels")
        if labels is not None and not self._takes_labels(model):  # a head that computes no loss
            inputs = {k: v for k, v in inputs.items() if k != "labels"}
        output, kl = model(**inputs)
        beta = self._beta() if model.training else 1.0
        terms = self._elbo(output, labels, kl, beta)
        if model.training:
            self._terms.append(ELBOTerms(*(t.detach() if isinstance(t, Tensor) else t for t in terms)))
        return (terms.loss, output) if return_outputs else terms.loss

    def _elbo(self, output: Any, labels: Optional[Tensor], kl: Tensor, beta: float) -> ELBOTerms:
        own = output.get("loss") if isinstance(output, dict) else None
        if own is not None:
            return ELBOTerms(own + beta * kl / self._num_data(), own, kl, beta)
        logits = output.get("logits") if isinstance(output, dict) else output
        if labels is None or not isinstance(logits, Tensor):
            raise ConfigError(
                f"BayesTrainer: {type(output).__name__} has no loss, and the batch no labels to compute one from "
                f"its logits (keys {sorted(output) if isinstance(output, dict) else type(output).__name__}); give "
                f"the dataset a 'labels' (or 'label') column"
            )
        return CategoricalELBO(self._num_data(), beta)(logits, labels, kl)

    def _takes_labels(self, model: nn.Module) -> bool:
        forward = self.accelerator.unwrap_model(model).forward
        return "labels" in inspect.signature(forward).parameters

    def _num_data(self) -> int:
        if self.num_data is None:
            try:
                self.num_data = len(self.train_dataset)
            except TypeError as err:
                raise ConfigError("BayesTrainer: the training set has no length; pass num_data=N, the number of "
                                  "training examples, e.g. BayesTrainer(..., num_data=120_000)") from err
        return self.num_data

    def _beta(self) -> float:
        """The schedule's beta at the current optimiser step (``epoch``, ``batch_idx`` worked out from it)."""
        steps = max(1, int(self.state.max_steps or 1))
        if self._schedule is None:
            self._schedule = beta_schedule(self.beta, dict(self.beta_kwargs), steps)
        per_epoch = max(1, math.ceil(steps / max(1.0, float(self.state.num_train_epochs or 1))))
        step = int(self.state.global_step)
        return float(self._schedule(step, step // per_epoch, step % per_epoch, per_epoch))

    # ------------------------------------------------------------------------------------------------ logging
    def log(self, logs: Dict[str, float], start_time: Optional[float] = None) -> None:
        """A training log (one with ``loss``) also gets the means of ``nll``, ``kl_term`` and ``beta`` since the
        last log (this process's batches)."""
        if "loss" in logs and self._terms:
            n = len(self._terms)
            logs["nll"] = round(sum(float(t.nll) for t in self._terms) / n, 6)
            logs["kl_term"] = round(sum(float(t.beta * t.kl / self._num_data()) for t in self._terms) / n, 6)
            logs["beta"] = round(sum(t.beta for t in self._terms) / n, 6)
            self._terms.clear()
        super().log(logs, start_time)

    # ------------------------------------------------------------------------------------------------ evaluation
    def evaluation_loop(self, dataloader: Any, description: str, prediction_loss_only: Optional[bool] = None,
                        ignore_keys: Optional[List[str]] = None, metric_key_prefix: str = "eval") -> EvalLoopOutput:
        """The Monte Carlo predictive's metrics (see the module docstring); ``predictions`` are the predictive
        class probabilities of a classifier (``None`` for a language model, whose are ``(N, T, V)``)."""
        model = self.accelerator.unwrap_model(self.model)
        parts = [self._predict_batch(model, batch) for batch in dataloader]
        if not parts:
            raise ConfigError(f"BayesTrainer: the {description.lower()} data yielded no batches")
        if "probs" in parts[0]:
            values, predictions, labels = self._classification_metrics(parts)
        else:
            values, predictions, labels = self._token_metrics(parts), None, None
        values = {f"{metric_key_prefix}_{k}": v for k, v in values.items()}
        return EvalLoopOutput(predictions=predictions, label_ids=labels, metrics=values,
                              num_samples=sum(p["count"] for p in parts))

    def _predict_batch(self, model: nn.Module, batch: Dict[str, Any]) -> Dict[str, Any]:
        """One batch through :func:`autobayes.predict`: its class probabilities, or its per-token values."""
        inputs = {k: v for k, v in self._prepare_inputs(batch).items() if k != "labels"}
        labels = batch.get("labels")
        summary = predict(model, inputs, n_samples=self.mc_samples, progress=False, return_samples=True)
        if isinstance(summary, ClassificationSummary):
            return {"probs": summary.mean, "labels": labels, "entropy": summary.predictive_entropy,
                    "mi": summary.mutual_information, "count": summary.mean.shape[0]}
        probs, entropy, mi = summary.mean, summary.predictive_entropy, summary.mutual_information
        mask = torch.ones(entropy.shape, dtype=torch.bool) if summary.mask is None else summary.mask
        out: Dict[str, Any] = {"count": entropy.shape[0], "entropy": entropy[mask], "mi": mi[mask]}
        if labels is not None:
            labels = labels.cpu()
            if is_causal_lm(model):  # logits[t] predict labels[t + 1]
                labels = next_token_targets(labels)
            keep = labels != -100
            out.update(target_probs=probs[keep], targets=labels[keep])
        return out

    def _classification_metrics(self, parts: List[Dict[str, Any]]) -> Any:
        probs = torch.cat([p["probs"] for p in parts]).double()
        values = {"entropy": float(torch.cat([p["entropy"] for p in parts]).mean()),
                  "mutual_information": float(torch.cat([p["mi"] for p in parts]).mean())}
        labels = None
        if all(p["labels"] is not None for p in parts):
            labels = torch.cat([torch.as_tensor(p["labels"]).cpu() for p in parts]).numpy()
            nll = metrics.nll(probs, labels)
            values.update(loss=nll, accuracy=metrics.accuracy(probs, labels), nll=nll,
                          ece=metrics.expected_calibration_error(probs, labels))
        if self.compute_metrics is not None and labels is not None:
            values.update(self.compute_metrics(EvalPrediction(predictions=probs.numpy(), label_ids=labels)))
        return values, probs.numpy(), labels

    @staticmethod
    def _token_metrics(parts: List[Dict[str, Any]]) -> Dict[str, float]:
        values = {"entropy": float(torch.cat([p["entropy"] for p in parts]).double().mean()),
                  "mutual_information": float(torch.cat([p["mi"] for p in parts]).double().mean())}
        scored = [p for p in parts if "targets" in p and len(p["targets"])]
        if scored:
            count = sum(len(p["targets"]) for p in scored)
            nll = sum(metrics.nll(p["target_probs"].double(), p["targets"]) * len(p["targets"]) for p in scored) / count
            values.update(loss=nll, nll=nll, perplexity=math.exp(nll), accuracy=sum(
                metrics.accuracy(p["target_probs"], p["targets"]) * len(p["targets"]) for p in scored) / count)
        return values

    def create_optimizer(self, model: Optional[nn.Module] = None) -> torch.optim.Optimizer:
        """A sharded model's optimiser holds the shards: a forward before training (``evaluate``) with
        ``reshard_after_forward=False`` leaves the blocks' parameters gathered, so they are resharded first (what
        ``Trainer`` does when accelerate shards)."""
        if self.sharded:
            for module in self.model.modules():
                if is_sharded(module):
                    module.reshard()
        return super().create_optimizer(model)

    # ------------------------------------------------------------------------------------------------ checkpoints
    def _save(self, output_dir: Optional[str] = None, state_dict: Any = None) -> None:
        """``save_model`` and every checkpoint: a ``transformers`` model's ``save_pretrained`` writes the folder of
        :mod:`autobayes.hf.pretrained`; any other model gets its ``autobayes.safetensors`` here. A sharded model's
        state is gathered from the shards first (every rank calls this), and rank 0 writes it."""
        if self.sharded:
            state_dict = full_state_dict(self.model)  # the tensors land on rank 0's CPU
            if not self.args.should_save:
                return
        super()._save(output_dir, state_dict)
        model = self.accelerator.unwrap_model(self.model)
        if self.args.should_save and not is_pretrained_class(type(model)):
            save(model, Path(output_dir or self.args.output_dir) / FOLDER_CHECKPOINT,
                 state_dict=state_dict if self.sharded else None)

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        """A sharded optimiser's state is gathered from the shards (``optimizer.pt`` holds the full state)."""
        if self.sharded:
            save_optimizer(self, output_dir)
        else:
            super()._save_optimizer_and_scheduler(output_dir)

    def _load_optimizer_and_scheduler(self, checkpoint: Optional[str]) -> None:
        """Resume a sharded optimiser: each rank keeps its shard of the full state."""
        if self.sharded:
            load_optimizer(self, checkpoint)
        else:
            super()._load_optimizer_and_scheduler(checkpoint)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Optional[nn.Module] = None) -> None:
        """Resume: the state of the checkpoint folder's ``autobayes.safetensors`` (each rank its shard)."""
        load_state(model if model is not None else self.model, resume_from_checkpoint)

    def _load_best_model(self) -> None:
        """``load_best_model_at_end``: the state of the best checkpoint's ``autobayes.safetensors``; sharded, the
        checkpoint rank 0 chose, each rank its shard."""
        best = self.state.best_model_checkpoint
        load_state(self.model, agreed_path(best) if self.sharded else best)
