"""``autobayes convert``: a deterministic checkpoint -> an autobayes (Bayesian) checkpoint."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from ..api import MODES
from .common import (MODE_HELP, add_bayes_options, add_model_options, bayes_config_from_args, check_hf_model_flags,
                     fill_model_defaults, formatter, model_kwargs_from_args, positive)

__all__ = ["add_parser", "run"]

EXAMPLES = """\
examples:
  # a torchvision ResNet-18 trained on 10 classes of 32x32 images, posterior means at its weights, prior centred
  # on them (without --image-size the input size is recorded as unknown, and predict asks for it)
  autobayes convert resnet18.pt -o resnet18_bnn.safetensors --arch torchvision:resnet18 --num-classes 10 \\
      --image-size 32 --posterior gaussian --init-scale 1e-3 --prior-loc weights --prior-scale 0.1

  # only the classifier becomes Bayesian
  autobayes convert digits_cnn.pt -o digits_bnn.safetensors --arch digits_cnn --in-channels 1 --image-size 8 \\
      --include '6' --include '8' --mean 0.3054 --std 0.3761 --class-names 0 1 2 3 4 5 6 7 8 9

  # a Hugging Face model folder written by save_pretrained (config.json + model.safetensors): no --arch,
  # the class and config come from the folder and are stored in OUT, from which autobayes.load rebuilds it
  autobayes convert bert-tiny/ -o bert_bnn.safetensors --posterior gaussian --init-scale 1e-3
  # ... with a new label head for 3 classes (random weights: fine-tune it), named
  autobayes convert bert-tiny/ -o bert3_bnn.safetensors --num-classes 3 --class-names neg neutral pos

The rank-1 posterior (the default) starts every mixture component at the checkpoint's weights here
(--factor-init-std 0; bayesify's default, 0.5, spreads them around the weights for training from scratch): each
posterior draw predicts as the checkpoint did until it is fine-tuned. Pass --factor-init-std 0.5 for members
that start apart (more diverse, but each away from the trained function; their average weight is the
checkpoint's).

--mean / --std (the per-channel normalisation of the [0, 1] pixels the network was trained on), --class-names
and --task are stored in OUT, where `autobayes predict` and `autobayes evaluate` use them and `autobayes
inspect OUT` shows them.

SOURCE is a state dict saved with torch.save (read with weights_only=True: pickled objects are refused), a dict
holding one under 'state_dict' / 'model' / 'model_state_dict' ('module.' prefixes are removed), or a
safetensors file, or a Hugging Face model folder (read offline with transformers: the class named in its
config.json from the transformers namespace only, never trust_remote_code, weights from model.safetensors
only, one file or shards with their index). Every weight of the model must come from the folder with its
shape and every weight there must belong to the model, else the error names them (--allow-missing-keys keeps
absent ones random); --num-classes re-initialises a Hugging Face classifier's label head, --class-names must
name its labels, and image flags (--in-channels, --image-size, --model-arg, --mean, --std) are refused there.
The posterior means start at SOURCE's weights. OUT is written atomically, never onto or inside SOURCE (or
--config), even with --force; an existing OUT needs --force. A folder already holding an autobayes checkpoint
is refused: `autobayes inspect` / autobayes.load read it."""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "convert",
        help="turn a deterministic checkpoint into a Bayesian checkpoint",
        description="Load a deterministic checkpoint into ARCH, convert it with autobayes.bayesify (posterior "
        "means := its weights), print the conversion report and save the Bayesian network.",
        epilog=EXAMPLES,
        formatter_class=formatter,
    )
    parser.add_argument("source", type=Path, metavar="SOURCE",
                        help="deterministic checkpoint (.pt/.pth/.safetensors) or a Hugging Face model folder")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUT", help="output .safetensors file")
    parser.add_argument("--arch", default=None,
                        help="architecture: torchvision:NAME, timm:NAME, a built-in name or module:factory (required "
                        "unless SOURCE is a Hugging Face model folder)")
    parser.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    parser.add_argument("--mode", choices=MODES, default="auto", help=MODE_HELP)
    parser.add_argument("--allow-missing-keys", action="store_true",
                        help="Hugging Face folder: keep the model's weights that its safetensors lack randomly "
                        "initialised (listed in a warning and in OUT's metadata) instead of refusing the folder")
    parser.add_argument("--allow-deterministic", action="store_true",
                        help="save even when the layer filters convert no layer (a deterministic network)")
    parser.add_argument("--mean", type=float, nargs="+", default=None, metavar="M",
                        help="per-channel input normalisation mean, stored for `autobayes predict`")
    parser.add_argument("--std", type=float, nargs="+", default=None, metavar="S",
                        help="per-channel input normalisation std, stored for `autobayes predict`")
    parser.add_argument("--class-names", nargs="+", default=None, metavar="NAME",
                        help="names of the classes in label order, stored for `autobayes predict`")
    parser.add_argument("--task", choices=("classification", "regression"), default=None,
                        help="what the network predicts, stored for `autobayes predict` (default classification)")
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
    from ..hf.io import is_hf_folder
    from ..io import check_output, save

    # usage errors first, before any file is read; the source holds trained weights: rank-1 components start at them
    config = bayes_config_from_args(args, defaults={"factor_init_std": 0.0})
    _check_source(args)
    hf = is_hf_folder(args.source)
    if not hf:
        fill_model_defaults(args)
    preprocessing = _preprocessing(args)
    # Refuse a bad output before the (possibly slow) conversion; atomic_output checks again when writing.
    check_output(args.output, overwrite=args.force, inputs=(args.source, args.config))
    metadata: dict = {"converted_from": args.source.name}
    model = _hf_model(args, preprocessing, metadata) if hf else _state_dict_model(args)
    options = {"mode": args.mode, **({"allow_deterministic": True} if args.allow_deterministic else {})}
    bnn = bayesify(model, config=config, **options)
    if not args.quiet:
        print(bnn.bayes_report)
    if args.source.is_file():
        metadata["source_sha256"] = _sha256(args.source)
    if preprocessing:
        metadata["preprocessing"] = preprocessing
    save(bnn, args.output, metadata=metadata, overwrite=args.force)
    print(f"wrote {args.output}")
    return 0


def _check_source(args: argparse.Namespace) -> None:
    """SOURCE exists, and is a file or a Hugging Face folder; ``--arch`` is given exactly when it is a file."""
    from ..errors import CheckpointError, ConfigError
    from ..hf.io import is_hf_folder

    source = args.source
    if not source.exists():
        raise CheckpointError(f"SOURCE {str(source)!r} does not exist")
    if source.is_dir() and not is_hf_folder(source):
        raise CheckpointError(f"{str(source)!r} is a folder without config.json: give a checkpoint file, or a "
                              f"Hugging Face model folder written by model.save_pretrained(DIR)")
    if source.is_dir() and args.arch is not None:
        raise ConfigError(f"{str(source)!r} is a Hugging Face model folder: its config.json names the "
                          f"architecture; drop --arch {args.arch}")
    if not source.is_dir() and args.arch is None:
        raise ConfigError(f"convert {str(source)!r} needs --arch (the architecture the state dict belongs to), e.g. "
                          f"--arch torchvision:resnet18; only a Hugging Face model folder needs none")
    if not source.is_dir() and args.allow_missing_keys:
        raise ConfigError("--allow-missing-keys applies to Hugging Face model folders; a state dict must fit --arch "
                          "exactly: drop --allow-missing-keys")


def _state_dict_model(args: argparse.Namespace):
    """``--arch`` built with the size flags, the state dict of SOURCE loaded strictly."""
    from ..io import load_checked, load_state_dict_file
    from ..models import build_model

    state = load_state_dict_file(args.source)
    model = build_model(args.arch, **model_kwargs_from_args(args))
    load_checked(
        model, state, f"checkpoint {str(args.source)!r}",
        f" (architecture {args.arch!r} built with --num-classes {args.num_classes} --in-channels "
        f"{args.in_channels}; check --arch, --num-classes, --in-channels and --model-arg)",
    )
    return model


def _hf_model(args: argparse.Namespace, preprocessing: dict, metadata: dict):
    """The model of a Hugging Face folder, every weight checked (:func:`autobayes.hf.io.read_pretrained`), its
    label head re-initialised for ``--num-classes``, ``--task`` / ``--class-names`` checked against its labels
    and written into its config (which the checkpoint stores); what was initialised randomly goes to ``metadata``."""
    from ..hf.io import read_pretrained
    from ..hf.labels import apply_labels

    check_hf_model_flags(args, args.source)
    loaded = read_pretrained(args.source, num_labels=args.num_classes, allow_missing=args.allow_missing_keys,
                             progress=not args.quiet)
    apply_labels(loaded.model, preprocessing, str(args.source))
    if loaded.resized_head:
        n = loaded.model.config.num_labels
        print(f"note: the label head ({', '.join(loaded.resized_head)}) was re-initialised for {n} classes "
              f"(--num-classes {n}): its weights are random until the model is fine-tuned")
        metadata["reinitialised_head"] = {"num_labels": n, "keys": loaded.resized_head}
    if loaded.missing:
        metadata["missing_keys_initialised"] = loaded.missing
    return loaded.model


def _preprocessing(args: argparse.Namespace) -> dict:
    """What ``autobayes predict`` / ``evaluate`` read back (see :meth:`autobayes.data.DatasetInfo.from_checkpoint`)."""
    from ..data import check_normalisation
    from ..errors import ConfigError

    out: dict = {}
    if args.class_names is not None and args.task == "regression":
        raise ConfigError("--class-names names the classes of a classifier; drop it with --task regression")
    if args.source.is_dir():  # a Hugging Face folder: its config sizes the model, not --in-channels
        return _hf_preprocessing(args)
    mean, std = check_normalisation(args.mean, args.std, args.in_channels, names=("--mean", "--std"))
    if mean is not None:
        out.update(mean=mean, std=std)
    if args.class_names is not None:
        if len(args.class_names) != args.num_classes:
            raise ConfigError(f"--class-names gives {len(args.class_names)} names for {args.num_classes} classes "
                              f"(--num-classes {args.num_classes})")
        out["class_names"] = list(args.class_names)
    if args.task is not None:
        out["task"] = args.task
    positive(args.image_size, "--image-size")
    out["image_size"] = args.image_size  # None: the user gave no size and the inputs' size is unknown, not 32
    return out


def _hf_preprocessing(args: argparse.Namespace) -> dict:
    """The class names of a Hugging Face folder (``--class-names``, checked against its labels once the model is
    read) and the task; ``--mean`` / ``--std`` describe images and are refused here."""
    from ..errors import ConfigError

    if args.mean is not None or args.std is not None:
        raise ConfigError("--mean / --std normalise image inputs; a Hugging Face model folder takes its inputs as "
                          "the model's processor prepares them: drop --mean / --std")
    out: dict = {}
    if args.class_names is not None:
        out["class_names"] = list(args.class_names)
    if args.task is not None:
        out["task"] = args.task
    return out
