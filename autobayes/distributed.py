"""Data-parallel training across processes (``torch.distributed``): launching, the process group, reductions.

:func:`autobayes.train` uses it in two ways:

* under ``torchrun`` (or any launcher that sets ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` / ``MASTER_ADDR`` /
  ``MASTER_PORT``): every process calls ``train`` and :func:`setup` joins the process group from the environment;
* ``train(..., nproc=N)`` (``autobayes train --nproc N``): :func:`launch` starts ``N`` processes on this machine
  (``spawn``, a free port on the loopback interface ``127.0.0.1``), each running ``train`` as one rank, and returns
  rank 0's result.

The backend is ``gloo`` on the CPU and ``nccl`` on CUDA (rank ``r`` of a node on ``cuda:LOCAL_RANK``).

Shutting down: :meth:`DistContext.close` waits at a barrier before it destroys the group, so that no rank closes its
connections while a peer is still in a collective. A rank that :func:`launch` started then ends without Python's
interpreter teardown (see :func:`_exit_launched_rank`): ``DistributedDataParallel`` keeps the gloo backend alive
after ``destroy_process_group``, and a gloo worker thread that drops the last reference to a Python-owned tensor
while the interpreter finalizes aborts the process (``terminate called without an active exception``).
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import sys
import tempfile
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

import torch
import torch.distributed as dist

from .errors import ConfigError
from .sharding import checkpoint_blocks, checkpoint_context, full_state_dict, shard  # FSDP2: see autobayes.sharding

__all__ = ["DistContext", "setup", "launch", "env_world_size", "noise_seed", "shard", "checkpoint_blocks",
           "checkpoint_context", "full_state_dict"]

_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass
class DistContext:
    """This process's place in the run.

    Attributes:
        rank: global rank (0 in a single-process run).
        world_size: number of processes (1 in a single-process run).
        device: the device this rank trains on.
        owns_group: ``setup`` created the process group (and :meth:`close` destroys it).

    Also a context manager: ``with setup(device) as ctx:`` closes on leaving, with the barrier only when the block
    ended without an exception.
    """

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def active(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that prints, logs and writes checkpoints."""
        return self.rank == 0

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum ``values`` over the ranks (returned on the CPU); the identity in a single-process run."""
        if not self.active:
            return values
        t = values.to(self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.cpu()

    def average_gradients(self, params) -> None:
        """Average the gradients of parameters that DDP does not manage (e.g. a learned noise variance)."""
        if not self.active:
            return
        for p in params:
            if p.grad is not None:
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                p.grad.div_(self.world_size)

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def barrier(self) -> None:
        if self.active:
            dist.barrier(device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def close(self, barrier: Optional[bool] = None) -> None:
        """Leave the process group :func:`setup` created (nothing to do for one it did not create).

        With ``barrier`` (the default unless an exception is propagating, e.g. ``close`` in a ``finally`` after
        a failure, where the peers may never reach a barrier) every rank first waits until all ranks got here:
        a rank that tears its connections down while a peer is still inside a collective fails that peer.

        Example:
            >>> ctx = setup(torch.device("cpu"))
            >>> try:
            ...     pass  # train
            ... finally:
            ...     ctx.close()
        """
        if not (self.owns_group and dist.is_initialized()):
            return
        if barrier is None:
            barrier = sys.exc_info()[1] is None
        try:
            if barrier:
                self.barrier()
        finally:
            dist.destroy_process_group()
            self.owns_group = False

    def __enter__(self) -> "DistContext":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(barrier=exc is None)


def env_world_size() -> int:
    """``WORLD_SIZE`` set by a launcher (torchrun), or 1."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError as err:
        raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") from err


def setup(device: torch.device) -> DistContext:
    """Join the process group a launcher described in the environment (or the one already initialised).

    Returns a single-process :class:`DistContext` when there is none. On CUDA, rank ``r`` uses
    ``cuda:LOCAL_RANK``.
    """
    if dist.is_available() and dist.is_initialized():
        world, rank = dist.get_world_size(), dist.get_rank()
        return DistContext(rank, world, _rank_device(device, _local_rank(rank)), owns_group=False)
    world = env_world_size()
    if world <= 1:
        return DistContext(0, 1, device)
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed; train with one process")
    missing = [k for k in _ENV if k not in os.environ and k != "LOCAL_RANK"]
    if missing:
        raise ConfigError(f"WORLD_SIZE={world} but {missing} are not set; launch with torchrun, or use nproc=N")
    rank = int(os.environ["RANK"])
    dev = _rank_device(device, _local_rank(rank))
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(backend, rank=rank, world_size=world,
                            **({"device_id": dev} if dev.type == "cuda" else {}))
    return DistContext(rank, world, dev, owns_group=True)


def noise_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of rank ``rank``'s posterior noise in epoch ``epoch``: independent streams per rank, and a
    resumed run draws what an uninterrupted one would."""
    return (seed * 1_000_003 + epoch * 7_919 + rank * 0x9E3779B1 + 1) % 2**63


def launch(fn: Callable[..., Any], kwargs: Dict[str, Any], nproc: int, device: torch.device,
           threads: Optional[int] = None) -> Any:
    """Run ``fn(**kwargs)`` in ``nproc`` fresh processes forming one process group; return rank 0's result.

    The processes are started with ``spawn`` (so ``kwargs`` must pickle: no lambdas or local classes), on the
    loopback interface with a free port. An exception in any rank is raised here. A rank whose ``fn`` returned
    leaves the process group (if ``fn`` did not) and ends without interpreter teardown: see
    :func:`_exit_launched_rank`.
    """
    import torch.multiprocessing as mp

    if device.type == "cuda" and nproc > torch.cuda.device_count():
        raise ConfigError(f"nproc={nproc} processes on CUDA need {nproc} GPUs, this machine has "
                          f"{torch.cuda.device_count()}; pass nproc <= {torch.cuda.device_count()}")
    if threads is None:
        threads = max(1, torch.get_num_threads() // nproc) if device.type == "cpu" else torch.get_num_threads()
    folder = tempfile.mkdtemp(prefix="autobayes_ddp_")
    result_path = os.path.join(folder, "rank0.pt")
    try:
        mp.start_processes(_worker, args=(nproc, _free_port(), fn, kwargs, result_path, threads), nprocs=nproc,
                           join=True, start_method="spawn")
        return torch.load(result_path, map_location="cpu", weights_only=False)  # our own file, written by rank 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _worker(rank: int, world: int, port: int, fn: Callable[..., Any], kwargs: Dict[str, Any], result_path: str,
            threads: int) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(threads)
    result = fn(**kwargs)
    if rank == 0:
        torch.save(result, result_path)
    del result
    _exit_launched_rank()


def _exit_launched_rank() -> None:
    """End a rank whose work is done: leave the group, do what a normal exit does, skip interpreter teardown.

    ``DistributedDataParallel`` keeps a reference to the gloo backend that outlives the DDP object, so
    ``destroy_process_group`` does not stop the backend's worker threads (measured with torch 2.14: after a DDP
    was built, its ``pt_gloo_runloop`` threads are still running after ``destroy_process_group()`` and
    ``gc.collect()``; without DDP they are joined). Such a thread drops its reference to a collective's tensors
    just after the collective completes; when the main thread has already let go of a tensor, that drop needs the
    GIL, and once the interpreter is finalizing a thread taking the GIL is ended inside a C++ destructor:
    ``std::terminate`` (``terminate called without an active exception``, SIGABRT) in a run whose results were
    already written. So, after the barrier of :meth:`DistContext.close`: join Python's own non-daemon threads,
    run the ``atexit`` handlers (logging, multiprocessing's finalizers), flush, and ``os._exit(0)`` -- what a
    ``fork``-started multiprocessing child does anyway.
    """
    if dist.is_available() and dist.is_initialized():  # fn joined the group (setup) and did not leave it
        dist.barrier()
        dist.destroy_process_group()
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):  # closed or replaced streams: nothing left to flush
            pass
    os._exit(0)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _local_rank(rank: int) -> int:
    return int(os.environ.get("LOCAL_RANK", rank))


def _rank_device(device: torch.device, local_rank: int) -> torch.device:
    if device.type != "cuda":
        return device
    if local_rank >= torch.cuda.device_count():
        raise ConfigError(f"LOCAL_RANK={local_rank} but this node has {torch.cuda.device_count()} GPUs; start at "
                          f"most one process per GPU (torchrun --nproc-per-node)")
    return torch.device("cuda", local_rank)
