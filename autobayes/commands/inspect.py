"""``autobayes inspect``: what a conversion would do to an architecture, or what a checkpoint holds."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..api import MODES
from .common import add_bayes_options, add_model_options, bayes_config_from_args, formatter, model_kwargs_from_args

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
    parser.add_argument("--mode", choices=MODES, default="auto",
                        help="conversion route of autobayes.bayesify: fx (graph rewrite), swap (modules swapped), auto (fx, else swap)")
    add_model_options(parser)
    add_bayes_options(parser)
    return parser


def _looks_like_path(target: str) -> bool:
    return "/" in target or "\\" in target or target.lower().endswith(_CHECKPOINT_SUFFIXES)


def run(args: argparse.Namespace) -> int:
    from ..errors import CheckpointError
    from ..io import read_checkpoint_info

    from ..hf.io import is_hf_folder

    from ..io.files import folder_checkpoint

    path = Path(args.target)
    if is_hf_folder(path) and folder_checkpoint(path) is None:  # a Bayesian model's folder is a checkpoint
        return _inspect_hf_folder(path, args)
    if path.exists() or _looks_like_path(args.target):
        if not path.exists():
            raise CheckpointError(f"checkpoint {args.target!r} does not exist")
        info = read_checkpoint_info(path)
        print(json.dumps(info.to_dict(), indent=2) if args.json else info)
        return 0
    return _inspect_arch(args)


def _inspect_arch(args: argparse.Namespace) -> int:
    from ..api import inspect_model
    from ..models import build_model

    config = bayes_config_from_args(args)
    model = build_model(args.target, **model_kwargs_from_args(args))
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
    summary = folder_summary(path)
    report = inspect_model(load_pretrained(path), config=config, mode=args.mode)
    if args.json:
        print(json.dumps({**summary, "report": report.to_dict()}, indent=2, default=str))
    else:
        print(summary_lines(summary))
        print(report)
    return 0
