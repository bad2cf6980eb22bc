"""``autobayes inspect``: what a conversion would do to an architecture, or what a checkpoint holds."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..api import MODES
from .common import (MODE_HELP, add_bayes_options, add_model_options, bayes_config_from_args, bayes_flags_given,
                     check_hf_model_flags, formatter, model_kwargs_from_args)

__all__ = ["add_parser", "run"]

EXAMPLES = """\
examples:
  # which layers of a ResNet-18 would become Bayesian, which stay deterministic and why
  autobayes inspect torchvision:resnet18 --num-classes 10 --exclude conv1

  autobayes inspect timm:resnet18 --posterior gaussian --json
  autobayes inspect digits_cnn --in-channels 1 --image-size 8

  # the architecture, Bayesian configuration, task, class names, input normalisation, data set, versions
  # and metadata stored in a checkpoint (what `autobayes predict` and `evaluate` use)
  autobayes inspect resnet18_bnn.safetensors

  # a Hugging Face model folder (save_pretrained): its class and files, and what a conversion would do
  autobayes inspect bert-tiny/ --posterior gaussian"""

_CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "inspect",
        help="report what bayesify would convert in an architecture, or describe a checkpoint",
        description="With an architecture name: build it and print the conversion report of autobayes.inspect_model "
        "(which layers become Bayesian, which stay deterministic and why). With an autobayes checkpoint: print "
        "its architecture, Bayesian configuration, task and class names, input shape and normalisation, data set, "
        "tensors, versions and metadata (nothing is built).",
        epilog=EXAMPLES,
        formatter_class=formatter,
    )
    parser.add_argument("target", metavar="ARCH|CHECKPOINT|DIR",
                        help="an architecture name, an autobayes .safetensors file or a Hugging Face model folder")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--mode", choices=MODES, default="auto", help=MODE_HELP)
    add_model_options(parser)
    add_bayes_options(parser)
    return parser


def _looks_like_path(target: str) -> bool:
    return "/" in target or "\\" in target or target.lower().endswith(_CHECKPOINT_SUFFIXES)


def run(args: argparse.Namespace) -> int:
    from ..errors import CheckpointError
    from ..hf.io import autobayes_weights, is_hf_folder

    path = Path(args.target)
    bayesian = autobayes_weights(path) if path.is_dir() else None
    if bayesian is not None:  # a folder holding an autobayes checkpoint: describe it
        path = bayesian
    elif is_hf_folder(path):
        return _inspect_hf_folder(path, args)
    elif path.is_dir():
        raise CheckpointError(f"{args.target!r} is a folder without config.json: neither a Hugging Face model folder "
                              f"(model.save_pretrained(DIR) writes config.json) nor an autobayes checkpoint (a "
                              f".safetensors file)")
    if path.exists() or _looks_like_path(args.target):
        return _inspect_checkpoint(path, args)
    return _inspect_arch(args)


def _inspect_checkpoint(path: Path, args: argparse.Namespace) -> int:
    """The header of an autobayes checkpoint; the options that build or convert a model do not apply."""
    from ..errors import CheckpointError, ConfigError
    from ..io import read_checkpoint_info

    if not path.exists():
        raise CheckpointError(f"checkpoint {args.target!r} does not exist")
    given = bayes_flags_given(args) + [f for f, v in (("--num-classes", args.num_classes), ("--in-channels",
                                       args.in_channels), ("--image-size", args.image_size),
                                       ("--model-arg", args.model_arg), ("--mode", args.mode != "auto")) if v]
    if given:
        raise ConfigError(f"{str(path)!r} is a checkpoint: inspect describes what it holds, which {', '.join(given)} "
                          f"cannot change; drop {given[0]}")
    info = read_checkpoint_info(path)
    print(json.dumps(info.to_dict(), indent=2) if args.json else info)
    return 0


def _inspect_arch(args: argparse.Namespace) -> int:
    from ..api import inspect_model
    from ..errors import UnknownNameError
    from ..models import build_model

    config = bayes_config_from_args(args)
    try:
        model = build_model(args.target, **model_kwargs_from_args(args))
    except UnknownNameError as err:
        if ":" in args.target:
            raise
        raise UnknownNameError(f"{args.target!r} is no file or folder here, nor an architecture name: {err}") from err
    options = {"mode": args.mode}
    report = inspect_model(model, config=config, **options)
    print(json.dumps(report.to_dict(), indent=2, default=str) if args.json else report)
    return 0


def _inspect_hf_folder(path: Path, args: argparse.Namespace) -> int:
    """A Hugging Face model folder: its class, model type and files, then the conversion report of the model
    (loaded offline from the folder, see :func:`autobayes.hf.io.load_pretrained`)."""
    from ..api import inspect_model
    from ..hf.io import folder_summary, load_pretrained, summary_lines

    config = bayes_config_from_args(args)
    check_hf_model_flags(args, path)
    summary = folder_summary(path)
    report = inspect_model(load_pretrained(path, num_labels=args.num_classes), config=config, mode=args.mode)
    if args.json:
        print(json.dumps({**summary, "report": report.to_dict()}, indent=2, default=str))
    else:
        print(summary_lines(summary))
        print(report)
    return 0
