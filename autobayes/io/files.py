"""Writing files atomically, and refusing outputs that would damage the user's files.

Every file autobayes writes (checkpoints, the training log and resume state, the CLI's CSV / JSON / PNG outputs)
goes through :func:`atomic_output`: the data goes to a temporary file in the destination folder, renamed over
the destination only once complete, so a crash never leaves a half-written file behind.

:func:`check_inputs_untouched` is the one rule every command applies before it writes: no output (file or folder)
is, or lies inside, anything it reads (a checkpoint file, a Hugging Face folder, an ImageFolder, a CSV, ...),
paths compared once symlinks, ``..`` and relative parts are resolved (and hard links by inode).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Set, Tuple, Union

from ..errors import CheckpointError

__all__ = ["PathLike", "OutputExistsError", "InputOverwriteError", "check_inputs_untouched", "check_output",
           "atomic_output", "require_file",
           "FOLDER_CHECKPOINT", "folder_checkpoint"]

PathLike = Union[str, "os.PathLike[str]"]


class OutputExistsError(CheckpointError, FileExistsError):
    """The output file exists and overwriting it was not allowed (``overwrite=False`` / no ``--force``)."""


class InputOverwriteError(CheckpointError):
    """An output path is, or lies inside, a file or folder the command reads (refused even with ``--force``)."""


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _linked(folder: Path) -> Tuple[List[Path], Set[Tuple[int, int]]]:
    """The resolved targets of the symbolic links under ``folder`` (a Hugging Face cache snapshot links its files
    to blobs elsewhere) and the ``(device, inode)`` of its files (a hard link shares the inode)."""
    targets: List[Path] = []
    inodes: Set[Tuple[int, int]] = set()
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            entry = Path(root, name)
            if entry.is_symlink():
                targets.append(entry.resolve())
            elif name in files:
                stat = entry.stat()
                inodes.add((stat.st_dev, stat.st_ino))
    return targets, inodes


def check_inputs_untouched(inputs: Iterable[Optional[PathLike]], outputs: Iterable[Optional[PathLike]]) -> None:
    """Refuse any output (a file, or a folder written into) that is, or lies inside, one of ``inputs`` (files or
    folders the command reads), whether or not overwriting is allowed; ``None`` entries are skipped.

    Paths are compared resolved (symbolic links, ``..``, relative paths) and existing files also by inode (hard
    links); a folder input protects everything under it, including the targets of the links it holds. Call it
    with every path a command reads and every path it writes, or whose files ``--force`` deletes, before
    anything is written.

    Raises:
        InputOverwriteError: an output would replace or write inside an input.

    Example:
        >>> check_inputs_untouched(["bert/"], ["bert/model.safetensors"])  # doctest: +SKIP
        Traceback (most recent call last):
        autobayes.io.files.InputOverwriteError: refusing to write 'bert/model.safetensors': it lies inside ...
    """
    outs = [(Path(o), Path(o).resolve()) for o in outputs if o is not None]
    if not outs:
        return
    for src in (Path(i) for i in inputs if i is not None):
        real = src.resolve()
        protected = [real]
        inodes: Set[Tuple[int, int]] = set()
        if src.is_dir():
            targets, inodes = _linked(src)
            protected += targets
        elif src.is_file():
            stat = src.stat()
            inodes.add((stat.st_dev, stat.st_ino))
        for out, out_real in outs:
            same_inode = out.is_file() and (out.stat().st_dev, out.stat().st_ino) in inodes
            if same_inode or any(_inside(out_real, p) for p in protected):
                where = "is the input" if out_real == real or (same_inode and not src.is_dir()) else \
                    "lies inside the input folder"
                raise InputOverwriteError(
                    f"refusing to write {str(out)!r}: it {where} {str(src)!r}, which this command reads (inputs are "
                    f"never replaced, even with --force); choose an output path outside it"
                )


def check_output(path: PathLike, *, overwrite: bool = False, inputs: Tuple[PathLike, ...] = ()) -> Path:
    """Refuse an output path that is, or lies inside, one of ``inputs`` (:func:`check_inputs_untouched`), a
    directory, in a missing folder, or (unless ``overwrite``) an existing file. Returns ``path`` as a
    :class:`~pathlib.Path`.

    Example:
        >>> check_output("model.safetensors", overwrite=False, inputs=("model.pt",))  # doctest: +SKIP
    """
    path = Path(path)
    check_inputs_untouched(inputs, [path])
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
        inputs: files and folders being read; writing onto or inside one of them is refused even with
            ``overwrite=True``.

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
