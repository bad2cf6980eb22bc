"""``autobayes.train``: check the options, start the processes, run the loop (see :mod:`autobayes.training`)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping, Optional, Tuple, Union

import torch
from torch import nn
from torch.utils.data import Dataset

from .. import distributed
from ..data import DatasetInfo
from ..errors import ConfigError
from .checkpoints import prepare_run_folder
from .loop import run
from .result import TrainResult
from .settings import TrainSettings

__all__ = ["train"]


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
    fsdp: bool = False,
    activation_checkpointing: bool = False,
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
        data_root: folder of the torchvision data sets; see :func:`autobayes.data.load_dataset`, as for the next four.
        val_fraction: held-out share for validation.
        augment: standard augmentation of the training images.
        image_size: resize images to this size.
        download: let torchvision download a missing data set.
        variance: regression noise variance of :class:`autobayes.losses.GaussianELBO` (``"learned"`` by default).
        num_workers: ``DataLoader`` worker processes.
        progress: tqdm progress bars and one line per epoch.
        config: a :class:`autobayes.BayesConfig` (or dict) for ``bayesify``.
        nproc: train with this many processes on this machine (``DistributedDataParallel``; one GPU each on
            CUDA). ``batch_size`` is per process. Under ``torchrun`` leave it at 1: the launcher sets the processes.
            The arguments must pickle (the processes are spawned).
        amp: ``"none"``, ``"bf16"`` or ``"fp16"``: autocast training (the KL stays float32).
        torch_compile: ``True`` (default backend) or a ``torch.compile`` backend name, e.g. ``"aot_eager"``.
        fsdp: with ``nproc`` > 1 (or under ``torchrun``), shard the model over the processes with FSDP2
            (:func:`autobayes.distributed.shard`) instead of replicating it (DDP); no resume file is written.
        activation_checkpointing: recompute the blocks' activations in the backward pass
            (:func:`autobayes.distributed.checkpoint_blocks`), with the same weight and noise draws.
        **bayes_options: ``bayesify`` options, e.g. ``posterior="gaussian"``, ``n_mc=100``, ``kl="repar"``,
            ``prior_scale=0.1``, ``init_scale=1e-3``, ``exclude=["conv1"]``; a filter that converts no layer is
            an error unless ``allow_deterministic=True``.

    Warns:
        UserWarning: once, when the validation NLL has been no better than chance (the best constant
            prediction) for :data:`CHANCE_EPOCHS` consecutive epochs (the message names the likely cause).

    Returns:
        :class:`TrainResult` (model, history, info, best epoch).

    Example:
        >>> result = autobayes.train("digits_cnn", "digits", epochs=30, out_dir="runs/digits")  # doctest: +SKIP
        >>> print(result.summary())  # doctest: +SKIP
        validation accuracy 0.98..., NLL 0.05..., ECE 0.01...
    """
    arguments = dict(locals())  # for the processes of nproc > 1
    # every keyword argument but the model and the data is a field of TrainSettings, which checks them
    settings = TrainSettings(**{f.name: arguments[f.name] for f in dataclasses.fields(TrainSettings)})
    if nproc > 1:
        if distributed.env_world_size() > 1:
            raise ConfigError(f"nproc={nproc} under torchrun (WORLD_SIZE={distributed.env_world_size()}): leave nproc "
                              f"at 1, torchrun --nproc-per-node sets the processes")
        if gpus > 1:
            raise ConfigError("nproc > 1 (DistributedDataParallel) replaces gpus > 1 (nn.DataParallel); pass one")
        arguments.update(arguments.pop("bayes_options"), nproc=1, device=settings.device.type)
        if settings.out_dir is not None:  # refuse (or clear) the folder here, before any process starts
            prepare_run_folder(settings.out_dir, resume, overwrite)
        result = distributed.launch(train, arguments, nproc, settings.device)
        result.model.to(settings.device)  # rank 0's model, back on this process's device
        result.criterion.to(settings.device)
        return result
    ctx = distributed.setup(settings.device)
    try:
        return run(ctx, model, data, dataclasses.replace(settings, device=ctx.device, progress=progress and ctx.is_main))
    finally:
        ctx.close()
