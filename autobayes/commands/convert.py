"""``autobayes convert``: a deterministic checkpoint -> an autobayes (Bayesian) checkpoint."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from ..api import MODES
from .common import add_bayes_options, add_model_options, bayes_config_from_args, formatter, model_kwargs_from_args

__all__ = ["add_parser", "run"]

EXAMPLES = """\
examples:
  # a torchvision ResNet-18 trained on 10 classes, posterior means at its weights, prior centred on them
  autobayes convert resnet18.pt -o resnet18_bnn.safetensors --arch torchvision:resnet18 --num-classes 10 \\
      --posterior gaussian --init-scale 1e-3 --prior-loc weights --prior-scale 0.1

  # only the classifier becomes Bayesian
  autobayes convert digits_cnn.pt -o digits_bnn.safetensors --arch digits_cnn --in-channels 1 --image-size 8 \\
      --include '6' --include '8'

SOURCE is a state dict saved with torch.save (read with weights_only=True: pickled objects are refused), a dict
holding one under 'state_dict' / 'model' / 'model_state_dict' ('module.' prefixes are removed), or a
safetensors file. The posterior means start at SOURCE's weights. OUT is written atomically and never
overwrites SOURCE; an existing OUT needs --force."""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "convert",
        help="turn a deterministic checkpoint into a Bayesian checkpoint",
        description="Load a deterministic checkpoint into ARCH, convert it with autobayes.bayesify (posterior "
        "means := its weights), print the conversion report and save the Bayesian network.",
        epilog=EXAMPLES,
        formatter_class=formatter,
    )
    parser.add_argument("source", type=Path, metavar="SOURCE", help="deterministic checkpoint (.pt/.pth/.safetensors)")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUT", help="output .safetensors file")
    parser.add_argument("--arch", required=True, help="architecture: torchvision:NAME, timm:NAME, a built-in name or module:factory")
    parser.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    parser.add_argument("--mode", choices=MODES, default="auto",
                        help="conversion route of autobayes.bayesify: fx (graph rewrite), swap (modules swapped), auto (fx, else swap)")
    parser.add_argument("--mean", type=float, nargs="+", default=None, metavar="M",
                        help="per-channel input normalisation mean, stored for `autobayes predict`")
    parser.add_argument("--std", type=float, nargs="+", default=None, metavar="S",
                        help="per-channel input normalisation std, stored for `autobayes predict`")
    parser.add_argument("--quiet", action="store_true", help="do not print the conversion report")
    add_model_options(parser)
    add_bayes_options(parser)
    return parser


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run(args: argparse.Namespace) -> int:
    from ..api import bayesify
    from ..io import _load_checked, check_output, load_state_dict_file, save
    from ..models import build_model

    config = bayes_config_from_args(args)  # usage errors first, before any file is read
    preprocessing = _preprocessing(args)
    # Refuse a bad output before the (possibly slow) conversion; atomic_output checks again when writing.
    check_output(args.output, overwrite=args.force, inputs=(args.source,))
    state = load_state_dict_file(args.source)
    model = build_model(args.arch, **model_kwargs_from_args(args))
    _load_checked(
        model, state, f"checkpoint {str(args.source)!r}",
        f" (architecture {args.arch!r} built with --num-classes {args.num_classes} --in-channels "
        f"{args.in_channels}; check --arch, --num-classes, --in-channels and --model-arg)",
    )
    options = {"mode": args.mode}
    bnn = bayesify(model, config=config, **options)
    if not args.quiet:
        print(bnn.bayes_report)
    metadata = {"converted_from": args.source.name, "source_sha256": _sha256(args.source)}
    if preprocessing:
        metadata["preprocessing"] = preprocessing
    save(bnn, args.output, metadata=metadata, overwrite=args.force)
    print(f"wrote {args.output}")
    return 0


def _preprocessing(args: argparse.Namespace) -> dict:
    from ..errors import ConfigError

    if (args.mean is None) != (args.std is None):
        raise ConfigError("--mean and --std go together (the input normalisation (x - mean) / std)")
    if args.mean is None:
        return {}
    if len(args.mean) != len(args.std):
        raise ConfigError(f"--mean has {len(args.mean)} values and --std {len(args.std)}; give one per channel (or one for all)")
    if any(s <= 0 for s in args.std):
        raise ConfigError(f"--std values must be > 0, got {args.std}")
    return {"mean": args.mean, "std": args.std}
