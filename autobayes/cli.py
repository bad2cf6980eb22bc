"""The ``autobayes`` command (also ``python -m autobayes``): train, evaluate, convert, inspect, predict.

Exit codes: 0 success, 2 usage error (bad flag, unknown name, invalid option value), 1 failure (missing or
corrupt file, checkpoint that does not match its architecture or the data, output that exists without ``--force``, ...). Expected failures
print one line, ``autobayes: error: ...``, on stderr (a usage error ends with ``(see autobayes COMMAND --help)``);
set ``AUTOBAYES_DEBUG=1`` to see the traceback. Long options are never abbreviated (``--init`` is not
``--init-scale``). The current directory is on ``sys.path``, as under ``python -m``, so ``--arch
my_models:make_net`` finds ``./my_models.py``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
import warnings
from typing import Optional, Sequence

from .errors import AutobayesError, ConfigError

__all__ = ["main", "build_parser", "COMMANDS"]

#: Subcommands, each a module of :mod:`autobayes.commands` exposing ``add_parser(subparsers)`` and ``run(args)``.
COMMANDS = ("train", "evaluate", "convert", "inspect", "predict")

_EPILOG = """\
examples:
  autobayes train --arch digits_cnn --data digits --out runs/digits
  autobayes convert resnet18.pt -o resnet18_bnn.safetensors --arch torchvision:resnet18 --num-classes 10 --image-size 32 --init-scale 1e-3
  autobayes inspect torchvision:resnet18 --posterior gaussian --exclude conv1
  autobayes inspect resnet18_bnn.safetensors
  autobayes predict resnet18_bnn.safetensors images/ -o predictions.csv
  autobayes evaluate resnet18_bnn.safetensors --data cifar10 --out runs/eval

`autobayes COMMAND --help` describes each command. Exit codes: 0 success, 1 failure, 2 usage error."""


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line and whose long options must be spelled out.

    A usage error prints ``autobayes: error: MESSAGE (see autobayes COMMAND --help)`` on stderr and exits with
    2 (argparse's own error prints the whole usage block first). ``allow_abbrev=False``: a prefix such as
    ``--init`` is not read as ``--init-scale``. The subcommands' parsers are of this class too (``add_subparsers``
    makes its parsers with the class of its parent).
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"autobayes: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per available command.

    Example:
        >>> build_parser().parse_args(["inspect", "digits_cnn"]).command
        'inspect'
    """
    from . import __version__

    parser = _Parser(
        prog="autobayes",
        description="Turn deterministic PyTorch networks into Bayesian neural networks; train, convert, inspect, "
        "predict with and evaluate them.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"autobayes {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"autobayes.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"autobayes.commands.{name}":
                raise
            continue  # a command whose module is not installed is simply not offered
        module.add_parser(subparsers)
        subparsers.choices[name].set_defaults(_run=module.run)
    parser.commands = subparsers.choices  # name -> subparser: an unknown flag is reported by its command's parser
    return parser


def _current_directory_on_path() -> None:
    """Put the current directory on ``sys.path`` (first, as ``python -m`` does), so that ``--arch
    my_models:make_net`` finds ``./my_models.py`` from the ``autobayes`` console script too."""
    cwd = os.getcwd()
    if not any(os.path.abspath(p or os.curdir) == cwd for p in sys.path):
        sys.path.insert(0, cwd)


def _error(message: str) -> None:
    print(f"autobayes: error: {message}", file=sys.stderr)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``) and return its exit code.

    Example:
        >>> main(["inspect", "digits_cnn", "--in-channels", "1", "--image-size", "8"])  # doctest: +SKIP
        0
    """
    _current_directory_on_path()
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, extras = parser.parse_known_args(argv)
        if extras:
            command = parser.commands.get(getattr(args, "command", None) or "", parser)
            command.error(f"unrecognized arguments: {' '.join(extras)}")
    except SystemExit as exit_:  # --help, --version (0) and usage errors (2)
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
    run = getattr(args, "_run", None)
    if run is None:
        parser.print_help(sys.stderr)
        return 2
    debug = os.environ.get("AUTOBAYES_DEBUG", "") not in ("", "0")
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return int(run(args) or 0)
    except ConfigError as err:  # an invalid or unknown option value: a usage error
        if debug:
            traceback.print_exc()
        _error(_one_line(err))
        return 2
    except (AutobayesError, OSError) as err:
        if debug:
            traceback.print_exc()
        _error(_one_line(err))
        return 1
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except Exception as err:  # an unexpected failure: one line, the traceback on request
        if debug:
            traceback.print_exc()
        _error(f"{type(err).__name__}: {_one_line(err)} (set AUTOBAYES_DEBUG=1 to see the traceback)")
        return 1


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings raised while a command runs: ``autobayes: warning: ...`` on stderr (no source line)."""
    print(f"autobayes: warning: {message}", file=sys.stderr if file is None else file)


def _one_line(err: BaseException) -> str:
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        return f"{err.strerror}: {err.filename!r}"
    text = " ".join(str(err).split())
    return text or type(err).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
