"""The training loop: :func:`run` trains one process's share of a run (all of it without ``torch.distributed``),
:func:`train_epoch` one epoch of it. :func:`autobayes.train` checks the options and starts the processes."""

from __future__ import annotations

import math
import time
import warnings
from typing import Any, Callable, Dict, List

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from .. import distributed
from ..data import DatasetInfo, load_dataset
from ..errors import ConfigError
from ..io import OutputExistsError
from ..losses import CategoricalELBO, GaussianELBO
from .checkpoints import checkpoint_arch, prepare_run_folder, save_checkpoint
from .logs import CSV_FIELDS, epoch_line, json_row, occupied_mb, warn_if_no_better_than_chance, write_log
from .model import bayesian_model, check_fits
from .optim import Stepper, beta_schedule, make_optimizer
from .result import TrainResult
from .resume import RESUME_FILE, epoch_seed, load_resume, save_resume, seed_everything
from .settings import TrainSettings
from .sharded import gathered_state, prepare, unsharded_copy
from .validation import noise_variance, validate

__all__ = ["run", "train_epoch"]


def run(ctx: "distributed.DistContext", model: Any, data: Any, settings: TrainSettings) -> TrainResult:
    """Train ``model`` on ``data`` with ``settings`` in this process (``ctx``: its place in the process group,
    ``ctx.device`` = ``settings.device``). Warnings point at the caller of :func:`autobayes.train`, which calls
    this directly."""
    s, device, out_path = settings, settings.device, settings.out_dir
    seed_everything(s.seed)  # the same on every rank: the same split and the same initial parameters
    if out_path is not None:  # rank 0 looks at (and with overwrite clears) the folder; every rank gets its verdict
        problem = None
        if ctx.is_main:
            try:
                prepare_run_folder(out_path, s.resume, s.overwrite)
            except OutputExistsError as err:
                problem = str(err)
        problem = ctx.broadcast(problem)
        if problem is not None:
            raise OutputExistsError(problem)

    if isinstance(data, str):
        train_set, val_set, info = load_dataset(data, s.data_root, val_fraction=s.val_fraction, seed=s.seed,
                                                augment=s.augment, image_size=s.image_size, download=s.download)
    else:
        try:
            train_set, val_set, info = data
        except (TypeError, ValueError) as err:
            raise ConfigError("data must be a dataset name or a (train_set, val_set, DatasetInfo) triple") from err
    bnn = bayesian_model(model, info, dict(s.model_kwargs or {}), s.config, s.bayes_options).to(device)
    if isinstance(model, nn.Module):  # sized by someone else (e.g. a checkpoint): does it fit this data?
        check_fits(bnn, info, train_set, device)
    prepare(bnn, ctx, s.fsdp, s.activation_checkpointing, s.resume)

    num_data = len(train_set)  # N of the ELBO: the whole training set, on every rank
    criterion = (CategoricalELBO(num_data) if info.task == "classification"
                 else GaussianELBO(num_data, variance=s.variance)).to(device)
    params = list(bnn.parameters()) + list(criterion.parameters())
    opt = make_optimizer(s.optimizer, params, s.lr, s.weight_decay)
    loader_gen = torch.Generator()
    sampler = None
    if ctx.active:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=s.seed)
    train_loader = DataLoader(train_set, batch_size=s.batch_size, shuffle=sampler is None, sampler=sampler,
                              generator=None if ctx.active else loader_gen, num_workers=s.num_workers,
                              pin_memory=device.type == "cuda")
    val_loader = DataLoader(val_set, batch_size=max(s.batch_size, 256), shuffle=False, num_workers=s.num_workers)
    num_batches = len(train_loader)
    schedule = beta_schedule(s.beta, dict(s.beta_kwargs or {}), s.epochs * num_batches)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=s.epochs) if s.lr_schedule == "cosine" else None
    # the KL's Monte Carlo samples as the layers use them (n_mc=None: each family's own default; the largest)
    n_mc = max((p.n_mc for p in bnn.modules() if isinstance(getattr(p, "n_mc", None), int)), default=None)

    history: List[Dict[str, Any]] = []
    start_epoch, best_epoch, best_nll = 0, 0, math.inf
    if s.resume:
        state = load_resume(out_path, bnn, opt, criterion, sched)
        start_epoch, history = state["epoch"], state["history"]
        best_epoch, best_nll = state["best_epoch"], state["best_nll"]
        if start_epoch >= s.epochs:
            done = f"{start_epoch} epoch{'' if start_epoch == 1 else 's'}"
            warnings.warn(f"resume: {out_path} already holds {done} (>= epochs={s.epochs}); nothing to train, pass a "
                          f"larger epochs", stacklevel=3)
        if ctx.is_main:  # the log as of the checkpoint (a crash after the log was written leaves no extra row)
            write_log(out_path / "log.csv", history)
    elif out_path is not None and ctx.is_main:
        out_path.mkdir(parents=True, exist_ok=True)
        write_log(out_path / "log.csv", [])

    if s.fsdp:
        net = bnn  # sharded in place (sharded.prepare)
    elif ctx.active:
        from torch.nn.parallel import DistributedDataParallel

        # after the resume state is loaded: DDP broadcasts rank 0's parameters and buffers here
        net: nn.Module = DistributedDataParallel(bnn, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        net = nn.DataParallel(bnn, device_ids=list(range(s.gpus))) if s.gpus > 1 and device.type == "cuda" else bnn
    val_net = bnn if ctx.active else net  # validation: rank 0 alone, on the unwrapped model under DDP
    validating = ctx.is_main or s.fsdp  # a sharded forward is a collective: every rank runs it
    if s.torch_compile:
        net = torch.compile(net, **({} if s.torch_compile is True else {"backend": s.torch_compile}))
    step = Stepper(device, s.amp, ctx, criterion)
    chance_warned, chance = False, None
    arch = checkpoint_arch(bnn) if out_path is not None and ctx.is_main and start_epoch < s.epochs else None

    for epoch in range(start_epoch, s.epochs):
        loader_gen.manual_seed(epoch_seed(s.seed, epoch))
        if ctx.active:
            sampler.set_epoch(epoch)
            torch.manual_seed(distributed.noise_seed(s.seed, epoch, ctx.rank))
        row = train_epoch(net, bnn, criterion, opt, train_loader, schedule, epoch, s.epochs, info, s.progress, step)
        if validating:  # validation on rank 0, on the unwrapped model; the others wait for its row
            with step.autocast():
                row.update(validate(val_net, bnn, criterion, val_loader, s.n_test, device, info))
        row = ctx.broadcast(row)
        row.update(epoch=epoch + 1, n_mc_iter=n_mc, n_test_iter=s.n_test, occupied_mb=occupied_mb(device),
                   lr=opt.param_groups[0]["lr"])
        if sched is not None:
            sched.step()
        chance = row.get("val_chance_nll", chance)
        row = {k: row.get(k) for k in CSV_FIELDS}
        history.append(row)
        improved = row["val_nll"] is not None and row["val_nll"] < best_nll
        if improved:
            best_epoch, best_nll = epoch + 1, row["val_nll"]
        if s.progress:
            from tqdm import tqdm

            tqdm.write(epoch_line(row, info))
        if ctx.is_main and not chance_warned:
            chance_warned = warn_if_no_better_than_chance(history, chance, info.task)
        state = gathered_state(bnn, s.fsdp) if out_path is not None else None
        if out_path is not None and ctx.is_main:
            write_log(out_path / "log.csv", history)  # the whole log, atomically: never a torn row
            meta = {"epoch": epoch + 1, "dataset": info.to_dict(), "metrics": json_row(row)}
            if info.task == "regression":  # `autobayes evaluate` / `predict` add this noise to the predictive
                meta["likelihood"] = {"variance": criterion.mode, "noise_variance": noise_variance(criterion)}
            save_checkpoint(bnn, out_path / "last.safetensors", meta, arch, state)
            if improved:
                save_checkpoint(bnn, out_path / "best.safetensors", meta, arch, state)
            if not s.fsdp:
                save_resume(out_path / RESUME_FILE, bnn, opt, criterion, sched, epoch + 1, history, best_epoch,
                            best_nll)
    ctx.barrier()  # no rank leaves (and tears the group down) while rank 0 still writes
    if s.fsdp:  # rank 0 returns an unsharded model holding the gathered parameters
        state = gathered_state(bnn, True)
        bnn = unsharded_copy(lambda: bayesian_model(model, info, dict(s.model_kwargs or {}), s.config,
                                                    s.bayes_options), state) if ctx.is_main else None
        if bnn is None:
            return TrainResult(None, history, info, best_epoch, out_path, criterion)
    bnn.eval()
    return TrainResult(bnn, history, info, best_epoch, out_path, criterion)


def train_epoch(net: nn.Module, bnn: nn.Module, criterion: nn.Module, opt: torch.optim.Optimizer, loader: Any,
                schedule: Callable[..., float], epoch: int, epochs: int, info: DatasetInfo, progress: bool,
                step: Stepper) -> Dict[str, Any]:
    """One pass over ``loader``: ``out, kl = net(x)``, the ELBO terms, ``step`` (backward and optimiser step).
    Returns the epoch's training columns of ``log.csv``, summed over the processes of a distributed run."""
    from tqdm import tqdm

    device = step.device
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
