"""Options shared by the subcommands: the model to build, the Bayesian configuration, output files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..checks import check_int
from ..config import BayesConfig, FORWARD_MODES, KL_METHODS
from ..errors import ConfigError

__all__ = [
    "MODE_HELP",
    "MODEL_DEFAULTS",
    "add_model_options",
    "fill_model_defaults",
    "check_hf_model_flags",
    "model_kwargs_from_args",
    "key_values",
    "add_bayes_options",
    "bayes_config_from_args",
    "bayes_flags_given",
    "add_runtime_options",
    "device_from_args",
    "positive",
    "refuse_text_checkpoint",
    "formatter",
]


def formatter(prog: str) -> argparse.HelpFormatter:
    """Keep the examples of each ``--help`` epilog as written, and show defaults."""
    return _Formatter(prog, max_help_position=32)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Raw epilog; ``(default: X)`` appended to the help of options whose default is informative."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "%(default)" in text or default is None or default is False or default == [] or default == argparse.SUPPRESS \
                or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


#: ``--mode`` of convert and inspect (autobayes.bayesify's routes; see autobayes.MODES).
MODE_HELP = ("conversion route of autobayes.bayesify: fx (torch.fx graph rewrite), export (torch.export capture on "
             "example inputs; made up for a Hugging Face model), swap (layers swapped in place, no graph), auto "
             "(fx, else export for a Hugging Face model, else swap)")


# ---------------------------------------------------------------------- model
#: The sizes of an architecture whose flag (:func:`add_model_options`) is not given (``--image-size`` has none: an
#: image size not given is not recorded, and build_model builds the architecture at its own default).
MODEL_DEFAULTS = {"num_classes": 10, "in_channels": 3}


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """``--num-classes``, ``--in-channels``, ``--image-size``, ``--model-arg KEY=VALUE`` (unset: ``None``, then
    :data:`MODEL_DEFAULTS`; a Hugging Face folder takes ``--num-classes`` only, see :func:`check_hf_model_flags`)."""
    group = parser.add_argument_group("architecture (see autobayes.models.build_model)")
    group.add_argument("--num-classes", type=int, default=None, metavar="N",
                       help="number of classes (outputs) (default: 10); with a Hugging Face folder: re-initialise "
                       "its label head for N labels")
    group.add_argument("--in-channels", type=int, default=None, metavar="C", help="input image channels (default: 3)")
    group.add_argument("--image-size", type=int, default=None, metavar="PX",
                       help="side of the square input images the network was trained on, recorded for `autobayes "
                       "predict` / `evaluate` (default: not recorded, the size is unknown; an architecture that needs "
                       "one to be built gets 32)")
    group.add_argument(
        "--model-arg", action="append", default=[], metavar="KEY=VALUE",
        help="extra constructor argument of the architecture, VALUE as JSON (e.g. --model-arg width=32); repeatable",
    )


def _model_sizes(args: argparse.Namespace) -> Dict[str, Any]:
    """The :func:`add_model_options` sizes given, the unset ones at their :data:`MODEL_DEFAULTS`."""
    return {name: default if getattr(args, name, None) is None else getattr(args, name)
            for name, default in MODEL_DEFAULTS.items()}


def fill_model_defaults(args: argparse.Namespace) -> None:
    """Give the unset :func:`add_model_options` sizes their :data:`MODEL_DEFAULTS`."""
    for name, value in _model_sizes(args).items():
        setattr(args, name, value)


def check_hf_model_flags(args: argparse.Namespace, folder: Path) -> None:
    """Refuse the :func:`add_model_options` flags a Hugging Face folder does not take (its config.json sizes the
    model; ``--num-classes`` re-initialises a label head and is checked when the model is read)."""
    given = [flag for flag, value in (("--in-channels", args.in_channels), ("--image-size", args.image_size),
                                      ("--model-arg", args.model_arg)) if value]
    if given:
        raise ConfigError(f"{str(folder)!r} is a Hugging Face model folder: its config.json sizes the model, not "
                          f"{' / '.join(given)}; drop {given[0]}")


def key_values(items: List[str], what: str) -> Dict[str, Any]:
    """``{KEY: VALUE}`` of repeated ``KEY=VALUE`` options (``what`` names the flag), each VALUE read as JSON or,
    when it is not JSON, kept as a string.

    Example:
        >>> key_values(["width=32", "act=relu", "hidden=[8, 8]"], "--model-arg")
        {'width': 32, 'act': 'relu', 'hidden': [8, 8]}
    """
    out: Dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{what} expects KEY=VALUE, got {item!r}; e.g. {what} width=32")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value  # a bare word is a string
    return out


def model_kwargs_from_args(args: argparse.Namespace) -> Dict[str, Any]:
    """Keyword arguments of :func:`autobayes.models.build_model` (besides ``arch``)."""
    kwargs = _model_sizes(args)
    if args.image_size is not None:  # else build_model's default: what the architecture is built for, not a record
        kwargs["image_size"] = args.image_size
    kwargs.update(key_values(args.model_arg, "--model-arg"))
    return kwargs


# ---------------------------------------------------------------------- Bayesian configuration
def add_bayes_options(parser: argparse.ArgumentParser) -> None:
    """The :class:`autobayes.BayesConfig` options; unset ones keep the config's defaults."""
    from ..posteriors import POSTERIORS
    from ..priors import PRIORS

    group = parser.add_argument_group("Bayesian options (see autobayes.BayesConfig; unset = its default)")
    group.add_argument("--config", type=Path, metavar="JSON", default=None,
                       help="a JSON file of BayesConfig options (the flags below override it)")
    group.add_argument("--posterior", choices=POSTERIORS.names(), default=None, help="posterior family (default rank1: rank-1 mixtures; radial, gaussian, ... are mean-field)")
    group.add_argument("--components", type=int, default=None, metavar="K",
                       help="mixture components of the rank-1 posteriors (--posterior rank1; default 4)")
    group.add_argument("--factor-init-std", type=float, default=None, metavar="S",
                       help="rank-1 posteriors: the spread S of the components' means around 1 at the start, their average "
                       "weight staying the model's (default 0.5; convert: 0, every component starts at the checkpoint)")
    group.add_argument("--kl", choices=KL_METHODS, default=None, help="KL estimator")
    group.add_argument("--n-mc", type=int, default=None, metavar="M", help="Monte Carlo samples of the KL estimator (default: 100, or "
                       "one per component for rank-1)")
    group.add_argument("--forward", choices=FORWARD_MODES, default=None, help="forward mode of the Bayesian layers")
    group.add_argument("--prior", choices=PRIORS.names(), default=None, help="prior family")
    group.add_argument("--prior-loc", default=None, metavar="LOC",
                       help="prior location: a number, or 'weights' to centre the prior on the converted weights")
    group.add_argument("--prior-scale", type=float, default=None, metavar="S", help="prior scale (> 0)")
    group.add_argument("--prior-arg", action="append", default=[], metavar="KEY=VALUE",
                       help="option of the prior family (BayesConfig.prior_kwargs), VALUE as JSON, e.g. "
                       "--prior scale_mixture --prior-arg pi=0.25 --prior-arg sigma2=0.0025; repeatable")
    group.add_argument("--init-scale", type=float, default=None, metavar="SIGMA",
                       help="initial posterior standard deviation of every weight (any posterior family), e.g. 1e-2 "
                       "to start close to the converted weights")
    group.add_argument("--init-log-var", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                       help="range of each weight's initial posterior log-variance (default: a tensor of d weights "
                       "starts with total variance in (e^-3, e^-2))")
    group.add_argument("--moped-delta", type=float, default=None, metavar="D",
                       help="MOPED initialisation: per-weight posterior std D * |w|")
    group.add_argument("--layer-types", nargs="+", default=None, metavar="TYPE",
                       help="layer types to convert, e.g. Conv2d Linear LSTM (default: linear, convolutional and "
                       "recurrent layers); Embedding, EmbeddingBag and the norms (BatchNorm2d, LayerNorm, ...) "
                       "only when named")
    group.add_argument("--include", action="append", default=None, metavar="PATTERN",
                       help="convert only layers whose qualified name matches (fnmatch, e.g. 'layer4.*'); repeatable")
    group.add_argument("--exclude", action="append", default=None, metavar="PATTERN",
                       help="keep matching layers deterministic (e.g. 'conv1'); repeatable")
    group.add_argument("--override", action="append", default=[], metavar="PATTERN=JSON",
                       help="per-layer options, e.g. --override 'fc={\"prior_scale\": 0.1}' or --override fc=null")


def bayes_config_from_args(args: argparse.Namespace, defaults: Optional[Dict[str, Any]] = None) -> BayesConfig:
    """Build the :class:`BayesConfig` from ``defaults`` (the command's own, where they differ from the config's),
    ``--config`` and the flags (flags win, then the file)."""
    base: Dict[str, Any] = dict(defaults or {})
    if args.config is not None:
        if not args.config.is_file():
            raise ConfigError(f"--config: no such file {str(args.config)!r}")
        try:
            loaded = json.loads(args.config.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"--config {str(args.config)!r} is not valid JSON ({err})") from err
        if not isinstance(loaded, dict):
            raise ConfigError(f"--config {str(args.config)!r} must hold a JSON object of BayesConfig options")
        base.update(loaded)
    flags = {
        "posterior": args.posterior, "components": args.components,
        "factor_init_std": args.factor_init_std, "kl": args.kl, "n_mc": args.n_mc, "forward": args.forward, "prior": args.prior,
        "prior_scale": args.prior_scale, "init_scale": args.init_scale, "moped_delta": args.moped_delta,
        "init_log_var": None if args.init_log_var is None else tuple(args.init_log_var),
        "layer_types": None if args.layer_types is None else tuple(args.layer_types),
        "include": None if args.include is None else tuple(args.include),
        "exclude": None if args.exclude is None else tuple(args.exclude),
    }
    if args.prior_loc is not None:
        flags["prior_loc"] = _prior_loc(args.prior_loc)
    if getattr(args, "prior_arg", None):
        flags["prior_kwargs"] = {**(base.get("prior_kwargs") or {}), **key_values(args.prior_arg, "--prior-arg")}
    options = {k: v for k, v in flags.items() if v is not None}
    if args.override:
        overrides = dict(base.get("overrides") or {})
        overrides.update(key_values(args.override, "--override"))
        options["overrides"] = overrides
    return BayesConfig.make(base, **options)


def bayes_flags_given(args: argparse.Namespace) -> List[str]:
    """The Bayesian options (:func:`add_bayes_options`) set on the command line, as their flags."""
    names = ("config", "posterior", "components", "factor_init_std", "kl", "n_mc", "forward", "prior", "prior_loc", "prior_scale", "prior_arg",
             "init_scale", "init_log_var", "moped_delta", "layer_types", "include", "exclude", "override")
    return [f"--{n.replace('_', '-')}" for n in names if getattr(args, n, None) not in (None, [])]


def _prior_loc(text: str) -> Any:
    if text == "weights":
        return "weights"
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"--prior-loc must be a number or 'weights', got {text!r}") from None


# ---------------------------------------------------------------------- runtime
def add_runtime_options(parser: argparse.ArgumentParser, *, n_samples: bool = True) -> None:
    """``--n-samples``, ``--batch-size``, ``--device``, ``--seed``."""
    group = parser.add_argument_group("prediction")
    if n_samples:
        group.add_argument("--n-samples", type=int, default=100, metavar="S", help="posterior samples per input")
    group.add_argument("--batch-size", type=int, default=256, metavar="B", help="inputs per batch")
    group.add_argument("--device", default=None, help="e.g. cpu, cuda, cuda:1 (default: cuda when available)")
    group.add_argument("--seed", type=int, default=0, help="random seed of the posterior samples")
    group.add_argument("--interval", type=float, default=0.95, metavar="LEVEL", help="credible-interval level")


def device_from_args(args: argparse.Namespace) -> str:
    import torch

    if args.device:
        try:
            torch.device(args.device)
        except (RuntimeError, ValueError) as err:
            raise ConfigError(f"--device: invalid device {args.device!r} ({err}); e.g. cpu, cuda, cuda:0") from err
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"--device {args.device}: CUDA is not available on this machine; use --device cpu")
        return args.device
    return "cuda" if torch.cuda.is_available() else "cpu"


def positive(value: Optional[int], flag: str) -> None:
    """Raise a :class:`ConfigError` unless ``value`` (the option ``flag``) is ``None`` or an integer >= 1.

    Example:
        >>> positive(0, "--n-samples")
        Traceback (most recent call last):
        ...
        autobayes.errors.ConfigError: --n-samples must be an integer >= 1, got 0
    """
    if value is not None:
        check_int(value, flag, 1)


def refuse_text_checkpoint(path: Path, command: str) -> None:
    """A usage error for ``autobayes predict`` / ``evaluate`` given the checkpoint of a ``transformers`` text model:
    they read images (a transformers image classifier's too) and CSV rows; text goes through :func:`autobayes.predict` in Python (nothing is said for a
    file that is not a readable checkpoint: the command's own loading reports that)."""
    from ..errors import CheckpointError
    from ..io import read_checkpoint_info

    from ..hf.tasks import image_inputs

    try:
        record = read_checkpoint_info(path).arch
    except CheckpointError:
        return
    arch = record.get("arch", "")
    if str(arch).startswith("transformers:") and image_inputs(record) is None:  # image classifiers read images
        raise ConfigError(
            f"{str(path)!r} holds a Hugging Face model ({arch}); `autobayes {command}` reads images and CSV rows, "
            f"not text. In Python: bnn = autobayes.load({str(path)!r}); summary = autobayes.predict(bnn, "
            f"dict(tokenizer(texts, return_tensors='pt', padding=True))) gives per-token (language models) or "
            f"per-example (classifiers) entropy and mutual information"
        )
