"""Writing files atomically, and refusing outputs that would damage the user's files.

Every file autobayes writes (checkpoints, the training log and resume state, the CLI's CSV / JSON / PNG outputs)
goes through :func:`atomic_output`: the data goes to a temporary file in the destination folder, renamed over
the destination only once complete, so a crash never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Optional, Tuple, Union

from ..errors import CheckpointError

__all__ = ["PathLike", "OutputExistsError", "check_output", "atomic_output", "require_file", "FOLDER_CHECKPOINT",
           "folder_checkpoint"]

PathLike = Union[str, "os.PathLike[str]"]


class OutputExistsError(CheckpointError, FileExistsError):
    """The output file exists and overwriting it was not allowed (``overwrite=False`` / no ``--force``)."""


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output(path: PathLike, *, overwrite: bool = False, inputs: Tuple[PathLike, ...] = ()) -> Path:
    """Refuse an output path that is one of ``inputs``, a directory, in a missing folder, or (unless
    ``overwrite``) an existing file. Returns ``path`` as a :class:`~pathlib.Path`.

    Example:
        >>> check_output("model.safetensors", overwrite=False, inputs=("model.pt",))  # doctest: +SKIP
    """
    path = Path(path)
    for src in inputs:
        if Path(src).resolve() == path.resolve() or _same_file(Path(src), path):
            raise CheckpointError(f"refusing to write the output onto the input file {str(src)!r}; choose another output path")
    if path.is_dir():
        raise CheckpointError(f"output {str(path)!r} is a directory; give a file name such as {str(path / 'model.safetensors')!r}")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"output {str(path)!r} already exists; pass --force (overwrite=True) to replace it")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise CheckpointError(f"cannot write {str(path)!r}: the folder {str(parent)!r} does not exist")
    return path


@contextlib.contextmanager
def atomic_output(path: PathLike, *, overwrite: bool = False, inputs: Tuple[PathLike, ...] = ()) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only when the block completes.

    Args:
        path: the destination.
        overwrite: replace an existing ``path`` (the CLI's ``--force``); otherwise raise :class:`OutputExistsError`.
        inputs: files being read; writing onto one of them is refused even with ``overwrite=True``.

    On any exception the temporary file is removed and ``path`` is left as it was.

    Example:
        >>> with atomic_output("out.json", overwrite=True) as tmp:  # doctest: +SKIP
        ...     tmp.write_text("{}")
    """
    path = check_output(path, overwrite=overwrite, inputs=inputs)
    parent = path.parent if str(path.parent) else Path(".")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=parent)  # keep the suffix: some writers infer the format from it
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _finalise(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _finalise(tmp: Path) -> None:
    """Flush the temporary file to disk and give it the permissions a plain ``open()`` would (mkstemp: 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())


#: The autobayes checkpoint inside a model folder (``bnn.save_pretrained(DIR)``, ``BayesTrainer`` checkpoints):
#: :func:`autobayes.load` and :func:`autobayes.io.checkpoint.open_checkpoint` given the folder read this file.
FOLDER_CHECKPOINT = "autobayes.safetensors"


def folder_checkpoint(path: PathLike) -> Optional[Path]:
    """The autobayes checkpoint of a model folder (``DIR/autobayes.safetensors``, written by
    ``bnn.save_pretrained(DIR)``), or ``None`` when ``path`` is not a folder holding one.

    Example:
        >>> folder_checkpoint("runs/digits/best.safetensors") is None
        True
    """
    path = Path(path)
    return path / FOLDER_CHECKPOINT if path.is_dir() and (path / FOLDER_CHECKPOINT).is_file() else None


def require_file(path: PathLike, what: str) -> Path:
    """``path`` as a :class:`~pathlib.Path`, or a :class:`CheckpointError` saying that ``what`` (e.g.
    ``"checkpoint"``) is missing or is a directory.

    Example:
        >>> require_file("runs/digits/best.safetensors", "checkpoint")  # doctest: +SKIP
        PosixPath('runs/digits/best.safetensors')
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{what} {str(path)!r} does not exist")
    if path.is_dir():
        raise CheckpointError(f"{what} {str(path)!r} is a directory, not a file")
    return path
