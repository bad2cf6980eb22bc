"""Train a Bayesian network by variational inference: ``autobayes.train(...)`` and ``autobayes train``.

One epoch: for each mini-batch, ``out, kl = bnn(x)``, the loss ``mean NLL + beta * KL / N``
(:mod:`autobayes.losses`, ``beta`` from :mod:`autobayes.schedules`), a step of the optimiser. Then validation with
``n_test`` posterior samples per example: accuracy, NLL and ECE of the Monte Carlo predictive (classification) or
RMSE, R^2 and Gaussian NLL (regression).

With ``out_dir``: a CSV log (``log.csv``, one row per epoch, the columns of :data:`CSV_FIELDS`), the checkpoints
``best.safetensors`` (lowest validation NLL) and ``last.safetensors`` in the self-describing format of
:func:`autobayes.save`, and ``last.resume.pt`` (optimiser, epoch, random state, history: tensors and plain values,
read back with ``torch.load(..., weights_only=True)``) for ``resume=True``. These are the files of a run
(:data:`RUN_FILES`); a folder that holds any of them is refused unless ``resume=True`` (continue that run) or
``overwrite=True`` (``--force``: its run files are deleted before the new run starts, so the folder never mixes
two runs; other files are left alone). Checkpoints are written atomically (a temporary file renamed into place),
and a resumed run rewrites ``log.csv`` from the saved history, so the log matches the checkpoint.

What the progress shows: the loss is ``NLL + beta * KL / N`` (per training example), and with few examples and
many weights the KL term can be most of it (digits: ~170 nats per example against an NLL below 0.5). The
progress bar and the per-epoch line show the two apart; when the KL term is more than :data:`KL_WARN_RATIO` times
the NLL for :data:`KL_WARN_EPOCHS` consecutive epochs, ``train`` warns once, with the usual fixes.

Reproducibility: ``seed`` seeds torch, numpy and Python; each epoch's shuffling uses its own generator seeded from
``(seed, epoch)``, and the random state is saved with the checkpoint, so a resumed run continues exactly as an
uninterrupted one would on the same machine.

**Several processes** (``nproc=N``, ``autobayes train --nproc N``, or every process of a ``torchrun`` launch,
multi-node included): PyTorch's ``DistributedDataParallel`` with ``gloo`` on the CPU and ``nccl`` on CUDA (see
:mod:`autobayes.distributed`). Every rank builds the model from the same seed (and DDP broadcasts rank 0's
parameters anyway); the training set is split by a seeded ``DistributedSampler`` (``set_epoch`` each epoch); each
rank draws its own posterior noise (seeded from ``(seed, epoch, rank)``, so a resumed run stays exact). Each rank's
loss is the single-process expression on its local batch of ``B`` examples,
``loss_r = mean NLL of batch r + beta * KL_r / N`` with ``N = len(train_set)`` (the whole set, not the shard), and
DDP averages the gradients over the ``R`` ranks::

    mean_r grad loss_r = grad [mean NLL over the global batch of R * B examples]
                         + beta / N * mean_r grad KL_r

The first term is exactly the single-process gradient on the global batch (all ranks see the same ``B``:
``DistributedSampler`` pads the shards to equal length). The second is the average of ``R`` independent estimates
of ``grad KL``: with ``kl="closed"`` (and under :func:`autobayes.use_mean`) every ``KL_r`` is the same number and
the step equals the single-process step on the same global batch; with a Monte Carlo KL it is an unbiased
estimate with ``R`` times less variance (as if ``n_mc`` were ``R * n_mc``). Parameters DDP does not manage (the
learned noise variance of a regression run) have their gradients averaged the same way. Training metrics (loss,
NLL, KL, accuracy) are summed over the ranks with ``all_reduce``; validation runs on rank 0 (the full validation
set, on the unwrapped model) and its row is broadcast. Only rank 0 prints, logs and writes checkpoints. DDP runs
with ``find_unused_parameters=False``: every Bayesian parameter enters the KL, so every parameter gets a gradient
unless the network itself leaves a layer unused in training.

**Mixed precision** (``amp="bf16"`` / ``"fp16"``): the forward and the loss run under ``torch.autocast`` (fp16
with a ``GradScaler``); the KL is always computed in float32 (autocast is switched off around each layer's KL).
``torch_compile=True`` (or a backend name) wraps the network in ``torch.compile``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from . import distributed
from .data import DatasetInfo, load_dataset
from .errors import CheckpointError, ConfigError, UnknownNameError
from .io import OutputExistsError, atomic_output
from .losses import CategoricalELBO, GaussianELBO
from .registry import did_you_mean
from .schedules import get_beta_schedule

__all__ = ["train", "TrainResult", "CSV_FIELDS", "RUN_FILES", "OPTIMIZERS", "AMP_MODES", "default_arch",
           "KL_WARN_RATIO", "KL_WARN_EPOCHS"]

#: Columns of ``log.csv``: the paper repository's fields, then the validation NLL / ECE, regression metrics and
#: the ELBO terms. Empty cells where a field does not apply (accuracy of a regression run). ``train_kl`` is the
#: model's KL (unscaled), ``train_nll`` the mean NLL per example and ``train_kl_term`` the KL's share of
#: ``train_loss``, ``beta * KL / N`` per example (so ``train_loss = train_nll + train_kl_term``).
CSV_FIELDS = (
    "epoch", "train_loss", "train_acc", "train_avg_batch_time", "train_epoch_time", "n_mc_iter",
    "val_loss", "val_acc", "val_avg_batch_time", "val_epoch_time", "n_test_iter", "occupied_mb", "train_kl",
    "val_nll", "val_ece", "val_rmse", "val_r2", "train_nll", "beta", "lr", "train_kl_term",
)

#: The files of a run in ``out_dir``: a folder holding any of them needs ``resume=True`` or ``overwrite=True``.
RUN_FILES = ("log.csv", "best.safetensors", "last.safetensors", "last.resume.pt")

#: ``train`` warns (once) when the KL term ``beta * KL / N`` exceeds ``KL_WARN_RATIO`` times the training NLL
#: (its absolute value: a regression NLL can be negative) for ``KL_WARN_EPOCHS`` consecutive epochs.
KL_WARN_RATIO = 10.0
KL_WARN_EPOCHS = 3

#: Optimisers by name.
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
#: Mixed-precision modes of ``train(amp=...)``.
AMP_MODES = ("none", "bf16", "fp16")
_LR_SCHEDULES = ("none", "cosine")


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        model: the Bayesian network after the last epoch (in eval mode).
        history: one dict per epoch, keyed by :data:`CSV_FIELDS` (``None`` where not applicable).
        info: the data set's :class:`DatasetInfo`.
        best_epoch: the epoch with the lowest validation NLL (1-based).
        out_dir: where the log and checkpoints are, if anywhere.
        criterion: the ELBO loss (holds the learned noise variance of a regression run).
    """

    model: nn.Module
    history: List[Dict[str, Any]]
    info: DatasetInfo
    best_epoch: int
    out_dir: Optional[Path] = None
    criterion: Optional[nn.Module] = None

    @property
    def final(self) -> Dict[str, Any]:
        """The last epoch's row."""
        return self.history[-1]

    @property
    def best(self) -> Dict[str, Any]:
        """The best epoch's row."""
        return next(row for row in self.history if row["epoch"] == self.best_epoch)

    def loss_terms(self) -> str:
        """One line splitting the final training loss into its NLL and KL terms.

        Example:
            >>> result.loss_terms()  # doctest: +SKIP
            'training loss 141.2 = NLL 0.0132 + KL term 141.2 (beta * KL / N; KL 2.03e+05, N 1437, beta 1)'
        """
        row = self.final
        n = getattr(self.criterion, "num_data", None)
        kl_term = row.get("train_kl_term")
        if kl_term is None:  # a history from before the column existed
            kl_term = row["train_loss"] - row["train_nll"]
        return (f"training loss {row['train_loss']:.4g} = NLL {row['train_nll']:.4g} + KL term {kl_term:.4g} "
                f"(beta * KL / N; KL {row['train_kl']:.3g}, N {n}, beta {row['beta']:.3g})")

    def summary(self) -> str:
        """One line with the final validation metrics."""
        row = self.final
        if self.info.task == "classification":
            return (f"validation accuracy {row['val_acc']:.4f}, NLL {row['val_nll']:.4f}, ECE {row['val_ece']:.4f} "
                    f"(epoch {row['epoch']}, {row['n_test_iter']} posterior samples)")
        return (f"validation RMSE {row['val_rmse']:.4f}, R^2 {row['val_r2']:.4f}, NLL {row['val_nll']:.4f} "
                f"(standardised targets; epoch {row['epoch']}, {row['n_test_iter']} posterior samples)")


def default_arch(info: DatasetInfo) -> str:
    """The architecture ``train`` picks when none is given: ``digits_cnn`` for 8x8 images, ``fcnet`` for tabular
    data, ``preact_resnet18`` for other images."""
    if info.image_size is None:
        return "fcnet"
    return "digits_cnn" if info.image_size <= 16 else "preact_resnet18"


def train(
    model: Union[str, nn.Module, None] = None,
    data: Union[str, Tuple[Dataset, Dataset, DatasetInfo]] = "digits",
    *,
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 3e-3,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    lr_schedule: str = "none",
    beta: Union[str, Callable[..., float]] = "none",
    beta_kwargs: Optional[Mapping[str, Any]] = None,
    n_test: int = 20,
    device: Union[str, torch.device] = "cpu",
    gpus: int = 1,
    seed: int = 0,
    out_dir: Union[str, os.PathLike, None] = None,
    resume: bool = False,
    overwrite: bool = False,
    model_kwargs: Optional[Mapping[str, Any]] = None,
    data_root: Optional[str] = None,
    val_fraction: float = 0.2,
    augment: bool = False,
    image_size: Optional[int] = None,
    download: bool = False,
    variance: Union[float, str] = "learned",
    num_workers: int = 0,
    progress: bool = True,
    config: Any = None,
    nproc: int = 1,
    amp: str = "none",
    torch_compile: Union[bool, str] = False,
    **bayes_options: Any,
) -> TrainResult:
    """Train a Bayesian network by variational inference (the ELBO of :mod:`autobayes.losses`).

    Args:
        model: an architecture name for :func:`autobayes.models.build_model` (sized to the data), a deterministic
            ``nn.Module`` (converted with :func:`autobayes.bayesify`), a network ``bayesify`` already returned
            or :func:`autobayes.load` read (trained as is: fine-tuning, ``autobayes train --init``), or ``None``
            for :func:`default_arch`. A module is checked against the data first (classes, channels, features
            its checkpoint records; one forward of a training example).
        data: a name for :func:`autobayes.data.load_dataset` or a ``(train_set, val_set, info)`` triple.
        epochs: number of epochs (in total, counting those a resumed run already did).
        batch_size: examples per optimiser step.
        lr: learning rate.
        optimizer: ``"adam"``, ``"adamw"``, ``"sgd"`` (momentum 0.9) or ``"rmsprop"``.
        weight_decay: the optimiser's weight decay (the KL already regularises; usually 0).
        lr_schedule: ``"none"`` or ``"cosine"`` (cosine decay to 0 over ``epochs``).
        beta: KL weight schedule, a name for :func:`autobayes.schedules.get_beta_schedule` or a callable;
            ``"none"`` is the ELBO. ``"linear"`` / ``"warmup"`` default to a warm-up over the first half of
            the steps, ``"cyclical"`` to ``total_steps`` = all steps.
        beta_kwargs: options of the schedule.
        n_test: posterior samples per validation example.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        gpus: with ``device="cuda"``, replicate over this many GPUs (``nn.DataParallel``).
        seed: seeds the model's initialisation, the split, the shuffling and the posterior samples.
        out_dir: folder of ``log.csv`` and the checkpoints (:data:`RUN_FILES`); ``None`` writes nothing. A folder
            that already holds a run is refused unless ``resume`` or ``overwrite``.
        resume: continue from ``out_dir/last.resume.pt`` (same arguments as the first run).
        overwrite: replace the run in ``out_dir`` (``autobayes train --force``): its :data:`RUN_FILES` are
            deleted before training starts; other files in the folder are left alone.
        model_kwargs: extra arguments of the architecture (e.g. ``{"width": 32}``).
        data_root, val_fraction, augment, image_size, download: see :func:`autobayes.data.load_dataset`.
        variance: regression noise variance of :class:`autobayes.losses.GaussianELBO` (``"learned"`` by default).
        num_workers: ``DataLoader`` worker processes.
        progress: tqdm progress bars and one line per epoch.
        config: a :class:`autobayes.BayesConfig` (or dict) for ``bayesify``.
        nproc: train with this many processes on this machine (``DistributedDataParallel``; one GPU each on
            CUDA). ``batch_size`` is per process. Under ``torchrun`` leave it at 1: the launcher sets the processes.
            The arguments must pickle (the processes are spawned).
        amp: ``"none"``, ``"bf16"`` or ``"fp16"``: autocast training (the KL stays float32).
        torch_compile: ``True`` (default backend) or a ``torch.compile`` backend name, e.g. ``"aot_eager"``.
        **bayes_options: ``bayesify`` options, e.g. ``posterior="gaussian"``, ``n_mc=100``, ``kl="repar"``,
            ``prior_scale=0.1``, ``init_scale=1e-3``, ``exclude=["conv1"]``; a filter that converts no layer is
            an error unless ``allow_deterministic=True``.

    Warns:
        UserWarning: once, when the KL term outweighs the NLL :data:`KL_WARN_RATIO`-fold for
            :data:`KL_WARN_EPOCHS` consecutive epochs (the message gives the usual fixes).

    Returns:
        :class:`TrainResult` (model, history, info, best epoch).

    Example:
        >>> result = autobayes.train("digits_cnn", "digits", epochs=30, out_dir="runs/digits")  # doctest: +SKIP
        >>> print(result.summary())  # doctest: +SKIP
        validation accuracy 0.98..., NLL 0.05..., ECE 0.01...
    """
    arguments = dict(locals())  # for the processes of nproc > 1
    _check_int(epochs, "epochs", 1)
    _check_int(batch_size, "batch_size", 1)
    _check_int(n_test, "n_test", 1)
    _check_int(gpus, "gpus", 1)
    _check_int(nproc, "nproc", 1)
    if amp not in AMP_MODES:
        raise UnknownNameError(f"unknown amp {amp!r}; choose one of {list(AMP_MODES)}.{did_you_mean(str(amp), AMP_MODES)}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ConfigError(f"lr must be a finite number > 0, got {lr!r}")
    if lr_schedule not in _LR_SCHEDULES:
        raise UnknownNameError(f"unknown lr_schedule {lr_schedule!r}; choose one of {list(_LR_SCHEDULES)}."
                               f"{did_you_mean(str(lr_schedule), _LR_SCHEDULES)}")
    device = _device(device)
    out_path = Path(out_dir) if out_dir is not None else None
    if resume and out_path is None:
        raise ConfigError("resume=True needs out_dir (the folder holding last.resume.pt of the earlier run)")
    if resume and overwrite:
        raise ConfigError("resume=True continues the run in out_dir and overwrite=True replaces it; pass one "
                          "(--resume or --force)")
    if nproc > 1:
        if distributed.env_world_size() > 1:
            raise ConfigError(f"nproc={nproc} under torchrun (WORLD_SIZE={distributed.env_world_size()}): leave nproc "
                              f"at 1, torchrun --nproc-per-node sets the processes")
        if gpus > 1:
            raise ConfigError("nproc > 1 (DistributedDataParallel) replaces gpus > 1 (nn.DataParallel); pass one")
        arguments.update(arguments.pop("bayes_options"), nproc=1, device=device.type)
        if out_path is not None:  # refuse (or clear) the folder here, before any process starts
            _prepare_run_folder(out_path, resume, overwrite)
        result = distributed.launch(train, arguments, nproc, device)
        result.model.to(device)  # rank 0's model, back on this process's device
        result.criterion.to(device)
        return result
    ctx = distributed.setup(device)
    try:
        return _train(ctx, model, data, epochs, batch_size, lr, optimizer, weight_decay, lr_schedule, beta,
                      beta_kwargs, n_test, ctx.device, gpus, seed, out_path, resume, overwrite, model_kwargs, data_root,
                      val_fraction, augment, image_size, download, variance, num_workers, progress and ctx.is_main,
                      config, amp, torch_compile, bayes_options)
    finally:
        ctx.close()


def _train(ctx, model, data, epochs, batch_size, lr, optimizer, weight_decay, lr_schedule, beta, beta_kwargs, n_test,
           device, gpus, seed, out_path, resume, overwrite, model_kwargs, data_root, val_fraction, augment, image_size,
           download, variance, num_workers, progress, config, amp, torch_compile, bayes_options) -> TrainResult:
    _seed_everything(seed)  # the same on every rank: the same split and the same initial parameters
    if out_path is not None:  # rank 0 looks at (and with overwrite clears) the folder; every rank gets its verdict
        problem = None
        if ctx.is_main:
            try:
                _prepare_run_folder(out_path, resume, overwrite)
            except OutputExistsError as err:
                problem = str(err)
        problem = ctx.broadcast(problem)
        if problem is not None:
            raise OutputExistsError(problem)

    if isinstance(data, str):
        train_set, val_set, info = load_dataset(data, data_root, val_fraction=val_fraction, seed=seed,
                                                augment=augment, image_size=image_size, download=download)
    else:
        try:
            train_set, val_set, info = data
        except (TypeError, ValueError) as err:
            raise ConfigError("data must be a dataset name or a (train_set, val_set, DatasetInfo) triple") from err
    bnn = _bayesian_model(model, info, dict(model_kwargs or {}), config, bayes_options).to(device)
    if isinstance(model, nn.Module):  # sized by someone else (e.g. a checkpoint): does it fit this data?
        _check_fits(bnn, info, train_set, device)

    num_data = len(train_set)  # N of the ELBO: the whole training set, on every rank
    criterion = (CategoricalELBO(num_data) if info.task == "classification"
                 else GaussianELBO(num_data, variance=variance)).to(device)
    params = list(bnn.parameters()) + list(criterion.parameters())
    opt = _optimizer(optimizer, params, lr, weight_decay)
    loader_gen = torch.Generator()
    sampler = None
    if ctx.active:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed)
    train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=sampler is None, sampler=sampler,
                              generator=None if ctx.active else loader_gen, num_workers=num_workers,
                              pin_memory=device.type == "cuda")
    val_loader = DataLoader(val_set, batch_size=max(batch_size, 256), shuffle=False, num_workers=num_workers)
    num_batches = len(train_loader)
    schedule = _beta_schedule(beta, dict(beta_kwargs or {}), epochs * num_batches)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs) if lr_schedule == "cosine" else None
    n_mc = getattr(getattr(bnn, "bayes_config", None), "n_mc", None)

    history: List[Dict[str, Any]] = []
    start_epoch, best_epoch, best_nll = 0, 0, math.inf
    if resume:
        state = _load_resume(out_path, bnn, opt, criterion, sched)
        start_epoch, history = state["epoch"], state["history"]
        best_epoch, best_nll = state["best_epoch"], state["best_nll"]
        if start_epoch >= epochs:
            done = f"{start_epoch} epoch{'' if start_epoch == 1 else 's'}"
            warnings.warn(f"resume: {out_path} already holds {done} (>= epochs={epochs}); nothing to train, pass a "
                          f"larger epochs", stacklevel=3)
        if ctx.is_main:  # the log as of the checkpoint (a crash after a row was appended leaves no extra row)
            _write_log(out_path / "log.csv", history)
    elif out_path is not None and ctx.is_main:
        out_path.mkdir(parents=True, exist_ok=True)
        _write_csv_header(out_path / "log.csv")

    if ctx.active:
        from torch.nn.parallel import DistributedDataParallel

        # after the resume state is loaded: DDP broadcasts rank 0's parameters and buffers here
        net: nn.Module = DistributedDataParallel(bnn, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        net = nn.DataParallel(bnn, device_ids=list(range(gpus))) if gpus > 1 and device.type == "cuda" else bnn
    val_net = bnn if ctx.active else net  # validation: rank 0 alone, on the unwrapped model under DDP
    if torch_compile:
        net = torch.compile(net, **({} if torch_compile is True else {"backend": torch_compile}))
    step = _Stepper(device, amp, ctx, criterion)
    kl_warned = False

    for epoch in range(start_epoch, epochs):
        loader_gen.manual_seed(_epoch_seed(seed, epoch))
        if ctx.active:
            sampler.set_epoch(epoch)
            torch.manual_seed(distributed.noise_seed(seed, epoch, ctx.rank))
        row = _train_epoch(net, bnn, criterion, opt, train_loader, schedule, epoch, epochs, device, info, progress,
                           step)
        if ctx.is_main:  # validation on rank 0, on the unwrapped model; the others wait for its row
            with step.autocast():
                row.update(_validate(val_net, bnn, criterion, val_loader, n_test, device, info, progress))
        row = ctx.broadcast(row)
        row.update(epoch=epoch + 1, n_mc_iter=n_mc, n_test_iter=n_test, occupied_mb=_occupied_mb(device),
                   lr=opt.param_groups[0]["lr"])
        if sched is not None:
            sched.step()
        row = {k: row.get(k) for k in CSV_FIELDS}
        history.append(row)
        improved = row["val_nll"] is not None and row["val_nll"] < best_nll
        if improved:
            best_epoch, best_nll = epoch + 1, row["val_nll"]
        if progress:
            from tqdm import tqdm

            tqdm.write(_epoch_line(row, info))
        if ctx.is_main and not kl_warned:
            kl_warned = _warn_if_kl_dominates(history)
        if out_path is not None and ctx.is_main:
            _append_csv(out_path / "log.csv", row)
            meta = {"epoch": epoch + 1, "dataset": info.to_dict(), "metrics": _json_row(row)}
            if info.task == "regression":  # `autobayes evaluate` / `predict` add this noise to the predictive
                meta["likelihood"] = {"variance": criterion.mode, "noise_variance": _noise_variance(criterion, None)}
            _save_checkpoint(bnn, out_path / "last.safetensors", meta)
            if improved:
                _save_checkpoint(bnn, out_path / "best.safetensors", meta)
            _save_resume(out_path / "last.resume.pt", bnn, opt, criterion, sched, epoch + 1, history,
                         best_epoch, best_nll)
    ctx.barrier()  # no rank leaves (and tears the group down) while rank 0 still writes
    bnn.eval()
    return TrainResult(bnn, history, info, best_epoch, out_path, criterion)


# ---------------------------------------------------------------------- building blocks
def _bayesian_model(model: Any, info: DatasetInfo, model_kwargs: Dict[str, Any], config: Any,
                    bayes_options: Dict[str, Any]) -> nn.Module:
    from .api import bayesify
    from .models import build_model

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


def _optimizer(name: str, params: Sequence[Tensor], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    key = str(name).lower()
    if key == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if key == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if key == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    if key == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay)
    raise UnknownNameError(f"unknown optimizer {name!r}; choose one of {list(OPTIMIZERS)}.{did_you_mean(key, OPTIMIZERS)}")


def _beta_schedule(beta: Any, kwargs: Dict[str, Any], total_steps: int) -> Callable[..., float]:
    if isinstance(beta, str):
        key = beta.lower()
        if key in ("linear", "warmup"):
            kwargs.setdefault("warmup_steps", max(1, total_steps // 2))
        elif key == "cyclical":
            kwargs.setdefault("total_steps", max(1, total_steps))
    return get_beta_schedule(beta, **kwargs)


class _Stepper:
    """Backward and optimiser step with mixed precision (autocast, a GradScaler for fp16) and, across processes,
    the gradient average of the parameters DDP does not hold (the criterion's)."""

    def __init__(self, device: torch.device, amp: str, ctx: "distributed.DistContext", criterion: nn.Module) -> None:
        self.device, self.amp, self.ctx = device, amp, ctx
        self.extra = [p for p in criterion.parameters() if p.requires_grad]
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")

    def autocast(self):
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype, enabled=self.amp != "none")

    def __call__(self, loss: Tensor, opt: torch.optim.Optimizer) -> None:
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.ctx.average_gradients(self.extra)
        self.scaler.step(opt)
        self.scaler.update()


def _train_epoch(net, bnn, criterion, opt, loader, schedule, epoch, epochs, device, info, progress,
                 step: Optional[_Stepper] = None) -> Dict[str, Any]:
    from tqdm import tqdm

    if step is None:
        step = _Stepper(device, "none", distributed.DistContext(device=device), criterion)

    bnn.train()
    num_batches = len(loader)
    totals = {"loss": 0.0, "nll": 0.0, "kl": 0.0, "kl_term": 0.0, "correct": 0, "n": 0}
    num_data = getattr(criterion, "num_data", 1)
    batch_times: List[float] = []
    beta_value = 0.0
    start = time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", leave=False, disable=not progress, dynamic_ncols=True)
    for i, (x, y) in enumerate(bar):
        t0 = time.perf_counter()
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        beta_value = schedule(epoch * num_batches + i, epoch, i, num_batches)
        with step.autocast():
            out, kl = net(x)
            if kl.numel() > 1:  # nn.DataParallel gathers one (identical) KL per replica
                kl = kl.mean()
            terms = criterion(out, y, kl, beta=beta_value)
        step(terms.loss, opt)
        batch_times.append(time.perf_counter() - t0)
        b = x.shape[0]
        totals["loss"] += terms.loss.item() * b
        totals["nll"] += terms.nll.item() * b
        kl_term = float(terms.beta) * terms.kl.item() / num_data  # the KL's share of the loss, per example
        totals["kl"] += terms.kl.item() * b
        totals["kl_term"] += kl_term * b
        totals["n"] += b
        if info.task == "classification":
            totals["correct"] += int((out.argmax(1) == y).sum())
        if progress:
            bar.set_postfix({"loss": f"{terms.loss.item():.4g}", "nll": f"{terms.nll.item():.4g}",
                             "kl_term": f"{kl_term:.4g}"})
    keys = ("loss", "nll", "kl", "kl_term", "correct", "n")
    summed = step.ctx.all_reduce_sum(torch.tensor([float(totals[k]) for k in keys], dtype=torch.float64))
    totals = dict(zip(keys, summed.tolist()))
    n = max(totals["n"], 1)
    return {
        "train_loss": totals["loss"] / n, "train_nll": totals["nll"] / n, "train_kl": totals["kl"] / n,
        "train_kl_term": totals["kl_term"] / n,
        "train_acc": totals["correct"] / n if info.task == "classification" else None,
        "train_avg_batch_time": float(np.mean(batch_times)) if batch_times else 0.0,
        "train_epoch_time": time.perf_counter() - start, "beta": beta_value,
    }


def _validate(net, bnn, criterion, loader, n_test, device, info, progress) -> Dict[str, Any]:
    """``n_test`` posterior samples per example; the loss (beta = 1) of the first sample, the metrics of the
    Monte Carlo predictive."""
    from . import metrics
    from .api import kl_disabled

    bnn.eval()
    start = time.perf_counter()
    batch_times: List[float] = []
    loss_sum, n = 0.0, 0
    preds, targets = [], []
    with torch.no_grad():
        kl = _model_kl(bnn)
        with kl_disabled(bnn):
            for x, y in loader:
                t0 = time.perf_counter()
                x = x.to(device)
                outs = torch.stack([net(x)[0].float() for _ in range(n_test)]).cpu()
                batch_times.append(time.perf_counter() - t0)
                loss_sum += criterion(outs[0].to(device), y.to(device), kl, beta=1.0).loss.item() * x.shape[0]
                n += x.shape[0]
                preds.append(outs.softmax(-1).mean(0) if info.task == "classification" else outs)
                targets.append(y)
    y = torch.cat(targets)
    row: Dict[str, Any] = {"val_loss": loss_sum / max(n, 1), "val_epoch_time": time.perf_counter() - start,
                           "val_avg_batch_time": float(np.mean(batch_times)) if batch_times else 0.0}
    if info.task == "classification":
        p = torch.cat(preds)
        row.update(val_acc=metrics.accuracy(p, y), val_nll=metrics.nll(p, y),
                   val_ece=metrics.expected_calibration_error(p, y))
    else:
        samples = torch.cat(preds, dim=1)  # (S, N, D)
        mean = samples.mean(0)
        noise = _noise_variance(criterion, samples)
        if noise is None:  # heteroscedastic: the output holds mean and log-variance
            from .losses import split_mean_logvar

            mus, log_vars = split_mean_logvar(samples)
            mean = mus.mean(0)
            var = mus.var(0, unbiased=False) + log_vars.exp().mean(0)
        else:
            var = samples.var(0, unbiased=False) + noise
        y = y.reshape(mean.shape).float()
        ss_res = float(((y - mean) ** 2).sum())
        ss_tot = float(((y - y.mean(0)) ** 2).sum())
        row.update(val_rmse=metrics.rmse(mean, y), val_r2=1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
                   val_nll=metrics.gaussian_nll(mean, var, y))
    return row


def _model_kl(net: nn.Module) -> Tensor:
    """The model's KL without a data pass: the sum of the Bayesian layers' ``kl()``."""
    from .fx.runtime import kl_units

    terms = [m.kl() for m in kl_units(net).values()]
    return torch.stack(terms).sum() if terms else torch.zeros(())


def _noise_variance(criterion: nn.Module, like: Tensor) -> Optional[float]:
    mode = getattr(criterion, "mode", "fixed")
    if mode == "heteroscedastic":
        return None
    if mode == "learned":
        return float(criterion.log_variance.detach().exp())
    return float(criterion.fixed_variance)


# ---------------------------------------------------------------------- logging and checkpoints
def _epoch_line(row: Dict[str, Any], info: DatasetInfo) -> str:
    head = (f"epoch {row['epoch']:>3}  loss {row['train_loss']:.4g} = nll {row['train_nll']:.4g} + kl term "
            f"{row['train_kl_term']:.4g} (beta {row['beta']:.3g} * KL {row['train_kl']:.3g} / N)  "
            f"time {row['train_epoch_time']:.1f}s  |  val ")
    if info.task == "classification":
        return head + f"acc {row['val_acc']:.4f}  nll {row['val_nll']:.4f}  ece {row['val_ece']:.4f}"
    return head + f"rmse {row['val_rmse']:.4f}  r2 {row['val_r2']:.4f}  nll {row['val_nll']:.4f}"


def _write_csv_header(path: Path) -> None:
    _write_log(path, [])


def _write_log(path: Path, history: List[Dict[str, Any]]) -> None:
    """``log.csv`` with a header and one row per epoch of ``history``, written atomically."""
    with atomic_output(path, overwrite=True) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(CSV_FIELDS)
            for row in history:
                writer.writerow(["" if row.get(k) is None else row[k] for k in CSV_FIELDS])


def _append_csv(path: Path, row: Dict[str, Any]) -> None:
    with open(path, "a", newline="") as f:
        csv.writer(f).writerow(["" if row.get(k) is None else row[k] for k in CSV_FIELDS])


def _json_row(row: Dict[str, Any]) -> Dict[str, Any]:
    return {k: (None if (isinstance(v, float) and not math.isfinite(v)) else v) for k, v in row.items()}


def _save_checkpoint(bnn: nn.Module, path: Path, metadata: Dict[str, Any]) -> None:
    from .io import save

    try:
        save(bnn, path, metadata=metadata)
    except CheckpointError as err:
        if getattr(bnn, "autobayes_arch", None) is not None:
            raise
        # A model not built by build_model cannot describe its architecture: keep its tensors only.
        from safetensors.torch import save_file

        warnings.warn(f"{path.name}: {err}; saving the state dict only (load it into the same model with "
                      f"load_state_dict)", stacklevel=4)
        with atomic_output(path, overwrite=True) as tmp:
            save_file({k: v.detach().contiguous().cpu() for k, v in bnn.state_dict().items()}, str(tmp),
                      metadata={"autobayes_train": json.dumps(metadata)})


_RESUME_FILE = "last.resume.pt"


def _save_resume(path: Path, bnn, opt, criterion, sched, epoch, history, best_epoch, best_nll) -> None:
    state = {
        "epoch": epoch,
        "model": bnn.state_dict(),
        "optimizer": opt.state_dict(),
        "criterion": criterion.state_dict(),
        "lr_scheduler": None if sched is None else sched.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy_rng": json.dumps(_numpy_state()),
        "python_rng": json.dumps(_python_state()),
        "history": json.dumps([_json_row(r) for r in history]),
        "best_epoch": best_epoch,
        "best_nll": best_nll,
    }
    with atomic_output(path, overwrite=True) as tmp:
        torch.save(state, tmp)


def _load_resume(out_path: Path, bnn, opt, criterion, sched) -> Dict[str, Any]:
    path = out_path / _RESUME_FILE
    if not path.is_file():
        raise CheckpointError(f"resume: no {_RESUME_FILE} in {str(out_path)!r}; start without --resume, or point "
                              f"--out at the folder of the run to continue")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        bnn.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        criterion.load_state_dict(state["criterion"])
        if sched is not None and state["lr_scheduler"] is not None:
            sched.load_state_dict(state["lr_scheduler"])
    except (RuntimeError, KeyError, ValueError) as err:
        raise CheckpointError(f"resume: {str(path)!r} does not match this run ({err}); resume with the same "
                              f"architecture, data and options as the run that wrote it") from err
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    _set_numpy_state(json.loads(state["numpy_rng"]))
    _set_python_state(json.loads(state["python_rng"]))
    history = json.loads(state["history"])
    return {"epoch": int(state["epoch"]), "history": history, "best_epoch": int(state["best_epoch"]),
            "best_nll": float(state["best_nll"])}


def _prepare_run_folder(out_path: Path, resume: bool, overwrite: bool) -> None:
    """Refuse a folder that holds an earlier run (:data:`RUN_FILES`) unless ``resume`` or ``overwrite``; with
    ``overwrite``, delete that run's files, so that the new run never mixes with the old one."""
    if out_path.exists() and not out_path.is_dir():
        raise OutputExistsError(f"out_dir {str(out_path)!r} is a file, not a folder; choose another --out (out_dir)")
    found = [name for name in RUN_FILES if (out_path / name).exists()]
    if not found or resume:
        return
    if not overwrite:
        raise OutputExistsError(
            f"{str(out_path)!r} already holds a training run ({', '.join(found)}); pass --force (overwrite=True) to "
            f"replace it, --resume (resume=True) to continue it, or choose another --out (out_dir)"
        )
    for name in found:
        (out_path / name).unlink()


def _warn_if_kl_dominates(history: List[Dict[str, Any]]) -> bool:
    """Warn when the last :data:`KL_WARN_EPOCHS` epochs all had a KL term over :data:`KL_WARN_RATIO` times the
    NLL; returns whether it warned."""
    recent = history[-KL_WARN_EPOCHS:]
    if len(recent) < KL_WARN_EPOCHS:
        return False
    for row in recent:
        kl_term, nll = row.get("train_kl_term"), row.get("train_nll")
        if kl_term is None or nll is None or not kl_term > KL_WARN_RATIO * abs(nll):
            return False
    last = recent[-1]
    warnings.warn(
        f"the KL term of the loss (beta * KL / N = {last['train_kl_term']:.4g} per example) has been more than "
        f"{KL_WARN_RATIO:g}x the NLL ({last['train_nll']:.4g}) for {KL_WARN_EPOCHS} epochs: the prior, not the data, "
        f"drives training. If the fit or the uncertainty is poor, try a KL warm-up (--beta warmup, beta='warmup'), "
        f"a prior closer to the weights (--prior-scale 0.1 / --prior-loc weights, prior_scale=0.1 / "
        f"prior_loc='weights'), or a larger initial posterior scale (--init-scale 1e-2, init_scale=1e-2)",
        stacklevel=4,  # the caller of train()
    )
    return True


def _check_fits(bnn: nn.Module, info: DatasetInfo, train_set: Dataset, device: torch.device) -> None:
    """A model that was not sized from this data (given as a module, e.g. a loaded checkpoint) must fit it: the
    sizes its architecture spec records, then one forward of a training example."""
    spec = getattr(bnn, "autobayes_arch", None) or {}
    recorded = spec.get("kwargs") or {}
    wanted = info.model_kwargs()
    keys = ["num_classes"] + (["num_features"] if info.image_size is None else ["in_channels"])
    differ = [k for k in keys if recorded.get(k) is not None and wanted.get(k) is not None and recorded[k] != wanted[k]]
    if differ:
        have = ", ".join(f"{k}={recorded[k]}" for k in differ)
        need = ", ".join(f"{k}={wanted[k]}" for k in differ)
        flags = " ".join(f"--{k.replace('_', '-')} {wanted[k]}" for k in differ if k != "num_features")
        raise ConfigError(
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
    from .api import kl_disabled

    was_training = bnn.training
    bnn.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
                kl_disabled(bnn):
            out = bnn(x.unsqueeze(0).to(device))
    except Exception as err:  # noqa: BLE001 - any failure here means the model does not take this data
        raise ConfigError(
            f"the model ({spec.get('arch', type(bnn).__name__)}) does not accept the inputs of {info.name!r} "
            f"(one example of shape {list(x.shape)}): {type(err).__name__}: {err}; use data of the shape it was "
            f"built for (e.g. --image-size), or a model built for this data"
        ) from err
    finally:
        bnn.train(was_training)
    logits = out[0] if isinstance(out, tuple) else out
    if info.task == "classification" and isinstance(logits, Tensor) and logits.shape[-1] != info.num_classes:
        raise ConfigError(
            f"the model ({spec.get('arch', type(bnn).__name__)}) has {logits.shape[-1]} outputs, but the data set "
            f"{info.name!r} has {info.num_classes} classes; fine-tune it on data with {logits.shape[-1]} classes, "
            f"or convert the deterministic network with --num-classes {info.num_classes}"
        )


def _numpy_state() -> List[Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _set_numpy_state(s: List[Any]) -> None:
    np.random.set_state((s[0], np.asarray(s[1], dtype=np.uint32), s[2], s[3], s[4]))


def _python_state() -> List[Any]:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _set_python_state(s: List[Any]) -> None:
    random.setstate((s[0], tuple(s[1]), s[2]))


# ---------------------------------------------------------------------- small helpers
def _seed_everything(seed: int) -> None:
    _check_int(seed, "seed", 0)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % 2**63


def _device(device: Union[str, torch.device]) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"invalid device {device!r}; e.g. 'cpu', 'cuda', 'cuda:1'") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: CUDA is not available on this machine; use device='cpu'")
    return dev


def _occupied_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
    except ImportError:  # pragma: no cover - Windows
        return float("nan")


def _check_int(value: Any, name: str, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
