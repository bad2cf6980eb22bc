"""``autobayes train``: train a Bayesian network on a data set (see :func:`autobayes.training.train`)."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from .common import add_bayes_options, bayes_config_from_args, bayes_flags_given, formatter, key_values

__all__ = ["add_parser", "run"]

EXAMPLES = """\
examples:
  # the quick start: a Bayesian CNN (rank-1 posterior) on scikit-learn's digits, offline, ~1 minute on 2 CPU cores
  autobayes train

  # the same, spelled out, with a log and checkpoints in runs/digits (log.csv, best/last.safetensors)
  autobayes train --data digits --arch digits_cnn --epochs 30 --out runs/digits
  autobayes train --data digits --arch digits_cnn --epochs 40 --out runs/digits --resume   # 10 more epochs
  autobayes train --data digits --epochs 5 --out runs/digits --force      # replace the run in runs/digits

  # fine-tune a converted (or earlier) autobayes checkpoint: its architecture and Bayesian options come with it
  autobayes train --init runs/digits/best.safetensors --data digits --epochs 5 --lr 1e-3 --out runs/digits_ft

  # tabular classification and regression (a fully connected net), a Gaussian posterior
  autobayes train --data breast_cancer --arch fcnet --posterior gaussian --init-scale 1e-3
  autobayes train --data diabetes --arch fcnet --model-arg 'hidden=[64]' --epochs 200

  # CIFAR-10 from ./data (add --download the first time), pre-activation ResNet-18, on a GPU
  autobayes train --data cifar10 --data-root ./data --arch preact_resnet18 --augment --device cuda \\
      --epochs 100 --batch-size 128 --posterior gaussian --init-scale 1e-3 --beta warmup

  # data-parallel: 2 processes on this machine (gloo on the CPU; on CUDA, nccl and one GPU per process)
  autobayes train --nproc 2 --out runs/ddp
  # sharded (FSDP2, per block): each process holds 1/N of the model; activations recomputed in the backward pass
  autobayes train --nproc 2 --fsdp --activation-checkpointing --out runs/fsdp
  # several nodes: torchrun starts the processes (every rank runs the same command; only rank 0 writes)
  torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \
      -m autobayes train --data cifar10 --arch preact_resnet18 --device cuda --amp bf16 --out runs/cifar

  # a torchvision / timm network (weights never downloaded) or your own factory
  autobayes train --data digits --image-size 32 --arch torchvision:resnet18
  autobayes train --data imagefolder:path/to/images --arch my_models:make_net   # ./my_models.py

Writes nothing without --out; an --out folder that already holds a run needs --force (replace it) or --resume
(continue it). The architecture is sized from the data (classes, channels, image size). The progress shows the
loss as NLL + KL term (beta * KL / N, per example); a warning says when the validation NLL has been no better
than chance (always predicting the class frequencies, or the mean) for 3 epochs, with the likely cause.
A filter that converts no layer (--include / --exclude / --layer-types) is an error unless --allow-deterministic.
--out never lies inside imagefolder:PATH data, and the run files written or deleted (--force) there never
include --init or --config."""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from ..data import dataset_names
    from ..training import OPTIMIZERS

    parser = subparsers.add_parser(
        "train",
        help="train a Bayesian network (default: a CNN on scikit-learn's digits, offline)",
        description="Build ARCH for the data, convert it with autobayes.bayesify and train it by variational "
        "inference (loss = mean NLL + beta * KL / N); print per-epoch progress and the final validation accuracy, "
        "NLL and ECE (RMSE and R^2 for regression).",
        epilog=EXAMPLES,
        formatter_class=formatter,
    )
    data = parser.add_argument_group("data")
    data.add_argument("--data", default="digits", metavar="NAME",
                      help=f"data set: {', '.join(dataset_names())}")
    data.add_argument("--data-root", default="./data", metavar="DIR", help="folder of the torchvision data sets")
    data.add_argument("--download", action="store_true", help="let torchvision download a missing data set")
    data.add_argument("--val-fraction", type=float, default=0.2, metavar="F",
                      help="held-out share for validation (scikit-learn sets, single-folder ImageFolder)")
    data.add_argument("--augment", action="store_true", help="standard augmentation (random shifts / crops, flips)")
    data.add_argument("--image-size", type=int, default=None, metavar="PX",
                      help="resize images to PX x PX (e.g. 32 for torchvision / timm stems on 8x8 digits)")

    model = parser.add_argument_group("model")
    model.add_argument("--arch", default=None,
                       help="digits_cnn, fcnet, alexnet, vgg11/13/16/19, preact_resnet18/34, densenet, "
                       "torchvision:NAME, timm:NAME or module:factory (default: digits_cnn for digits, fcnet for "
                       "tabular data, preact_resnet18 for other images)")
    model.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                       help="architecture option, VALUE as JSON (e.g. --model-arg width=32); repeatable")
    model.add_argument("--init", type=Path, default=None, metavar="CHECKPOINT",
                       help="fine-tune this autobayes checkpoint (from autobayes convert or an earlier train) instead "
                       "of building --arch; it brings its architecture and Bayesian options")
    model.add_argument("--allow-deterministic", action="store_true",
                       help="train even when the layer filters convert no layer (a deterministic network)")

    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=int, default=30, help="epochs in total (a resumed run counts earlier ones)")
    opt.add_argument("--batch-size", type=int, default=64, metavar="B", help="examples per step")
    opt.add_argument("--lr", type=float, default=3e-3, help="learning rate")
    opt.add_argument("--optimizer", choices=OPTIMIZERS, default="adam", help="optimiser")
    opt.add_argument("--weight-decay", type=float, default=0.0, metavar="WD", help="optimiser weight decay")
    opt.add_argument("--lr-schedule", choices=("none", "cosine"), default="none", help="learning-rate schedule")
    opt.add_argument("--beta", default="none", metavar="SCHEDULE",
                     help="KL weight schedule: none (the ELBO), constant, blundell, linear/warmup, cyclical")
    opt.add_argument("--beta-arg", action="append", default=[], metavar="KEY=VALUE",
                     help="schedule option, e.g. --beta-arg warmup_steps=500; repeatable")
    opt.add_argument("--variance", default="learned", metavar="V",
                     help="regression noise variance: a number, 'learned' or 'heteroscedastic'")
    opt.add_argument("--mode", choices=("auto", "fx", "swap"), default="auto", help="conversion route of bayesify")

    run_ = parser.add_argument_group("run")
    run_.add_argument("--n-test", type=int, default=20, metavar="S", help="posterior samples per validation example")
    run_.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    run_.add_argument("--gpus", type=int, default=1, metavar="N", help="GPUs to replicate over (nn.DataParallel)")
    run_.add_argument("--nproc", type=int, default=1, metavar="N",
                      help="data-parallel processes on this machine (DistributedDataParallel: gloo on the CPU, nccl "
                      "on CUDA, one GPU each); --batch-size is per process. Under torchrun leave it out")
    run_.add_argument("--fsdp", action="store_true",
                      help="shard the model over the --nproc processes (FSDP2, per block) instead of replicating it")
    run_.add_argument("--activation-checkpointing", action="store_true",
                      help="recompute the blocks' activations in the backward pass (same weight and noise draws)")
    run_.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none",
                      help="mixed-precision training (autocast; fp16 with a GradScaler); the KL stays float32")
    run_.add_argument("--compile", nargs="?", const=True, default=False, metavar="BACKEND",
                      help="torch.compile the network (optionally with BACKEND, e.g. aot_eager)")
    run_.add_argument("--workers", type=int, default=0, metavar="N", help="DataLoader worker processes")
    run_.add_argument("--seed", type=int, default=0, help="seed of initialisation, split, shuffling and samples")
    run_.add_argument("--out", type=Path, default=None, metavar="DIR",
                      help="write log.csv, best.safetensors, last.safetensors and last.resume.pt here")
    run_.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    run_.add_argument("--force", action="store_true",
                      help="replace the run already in --out (its log and checkpoints are deleted first)")
    run_.add_argument("--threads", type=int, default=None, metavar="N", help="torch CPU threads")
    run_.add_argument("--no-progress", action="store_true", help="no progress bars or per-epoch lines")
    add_bayes_options(parser)
    return parser


def _posterior(bnn) -> str:
    """``"radial posterior"``, or ``"deterministic (no Bayesian layer)"``: never a posterior the model has not."""
    from ..nn import BayesLayer, BayesParameter

    if not any(isinstance(m, (BayesLayer, BayesParameter)) for m in bnn.modules()):
        return "deterministic (no Bayesian layer)"
    return f"{bnn.bayes_config.posterior} posterior"


def _check_arch(args: argparse.Namespace) -> None:
    from ..errors import ConfigError

    arch = args.arch
    if arch is not None and (arch.endswith((".safetensors", ".pt", ".pth")) or Path(arch).is_file()):
        raise ConfigError(f"--arch {arch}: --arch takes an architecture name (e.g. digits_cnn, torchvision:resnet18); "
                          f"to fine-tune the checkpoint {arch!r} use --init {arch}")
    if args.init is None:
        return
    given = [flag for flag, value in (("--arch", arch), ("--model-arg", args.model_arg),
                                      ("--allow-deterministic", args.allow_deterministic),
                                      ("--mode", args.mode != "auto")) if value]
    given += bayes_flags_given(args)
    if given:
        raise ConfigError(f"--init {args.init}: the checkpoint brings its architecture and Bayesian options; drop "
                          f"{', '.join(given)} (or convert the deterministic network again with the options you want)")


def _check_outputs(args: argparse.Namespace) -> None:
    """--out and the run files written (or, with --force, deleted) in it stay out of what the run reads: --init,
    the ImageFolder data, --config."""
    from ..data import data_path
    from ..io import check_inputs_untouched
    from ..training import RUN_FILES

    if args.out is not None:
        check_inputs_untouched([args.init, data_path(args.data), args.config],
                               [args.out, *(args.out / name for name in RUN_FILES)])


def _init_model(args: argparse.Namespace):
    from ..io import load

    return load(args.init)


def _variance(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def run(args: argparse.Namespace) -> int:
    import torch

    from ..errors import ConfigError
    from ..training import train
    from .common import device_from_args

    device = device_from_args(args)
    if args.resume and args.out is None:
        raise ConfigError("--resume needs --out DIR, the folder of the run to continue")
    if args.resume and args.force:
        raise ConfigError("--resume continues the run in --out and --force replaces it; pass one")
    _check_arch(args)
    _check_outputs(args)
    if args.init is not None:
        model, config, bayes_options = _init_model(args), None, {}
    else:
        model, config = args.arch, bayes_config_from_args(args)
        bayes_options = {"mode": args.mode, **({"allow_deterministic": True} if args.allow_deterministic else {})}
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    beta: object = args.beta
    start = time.perf_counter()
    result = train(
        model, args.data, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
        weight_decay=args.weight_decay, lr_schedule=args.lr_schedule, beta=beta,
        beta_kwargs=key_values(args.beta_arg, "--beta-arg"), n_test=args.n_test, device=device, gpus=args.gpus,
        seed=args.seed, out_dir=args.out, resume=args.resume, overwrite=args.force,
        model_kwargs=key_values(args.model_arg, "--model-arg"),
        data_root=args.data_root, val_fraction=args.val_fraction, augment=args.augment, image_size=args.image_size,
        download=args.download, variance=_variance(args.variance), num_workers=args.workers,
        progress=not args.no_progress, config=config, nproc=args.nproc, amp=args.amp,
        torch_compile=args.compile, fsdp=args.fsdp, activation_checkpointing=args.activation_checkpointing,
        **bayes_options,
    )
    elapsed = time.perf_counter() - start
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 reports
        return 0
    arch = getattr(result.model, "autobayes_arch", {}).get("arch", type(result.model).__name__)
    epochs = result.final["epoch"]
    print(f"\n{arch} on {result.info.name}, {_posterior(result.model)}, {epochs} epoch{'' if epochs == 1 else 's'}, "
          f"{elapsed:.1f}s")
    print(result.summary())
    print(result.loss_terms())
    if result.out_dir is not None:
        print(f"log: {result.out_dir / 'log.csv'}; checkpoints: {result.out_dir / 'best.safetensors'} "
              f"(epoch {result.best_epoch}), {result.out_dir / 'last.safetensors'}")
    return 0
