"""Per-rank memory of a GPT-2-style model, deterministic and converted with each posterior: unsharded (one
process, the whole batch), DDP and FSDP2 (``autobayes.distributed.shard``, per block) with 2 ranks on the CPU
(gloo), with and without activation checkpointing (issue 22).

Columns (MiB, per rank):

* ``params``: the parameters this rank holds (its shards under FSDP2; posterior means and log-variances);
* ``grads``: their gradients after one backward (DDP's communication buckets, one more copy, are not counted);
* ``optim``: Adam's state after one step (two moments per parameter element);
* ``act``: the activations the forward saved for the backward (tensors packed by autograd, each storage once,
  parameters excluded). With activation checkpointing the backward recomputes one block at a time, adding at most
  one block's activations (the unchecked value divided by the number of blocks) at its peak.

The transient all-gathered block of FSDP2 (the largest block's parameters, during its forward and backward) adds
to ``params`` at the peak; it is printed as ``+gather``. CPU only: no GPU was lent to this task, so the GPU run
of the issue (and its 1B-parameter model) is not measured here.

Usage::

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/memory.py [--layers 4 --width 256 --seq 128 --batch 8]
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
from typing import Dict, List, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

MIB = 2 ** 20
POSTERIORS = ("gaussian", "radial", "laplace", "logistic")
WORLD = 2


def gpt2(args: argparse.Namespace) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=args.vocab, n_positions=args.seq, n_embd=args.width,
                                      n_layer=args.layers, n_head=4, bos_token_id=0, eos_token_id=0,
                                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))


def build(posterior: Optional[str], args: argparse.Namespace) -> nn.Module:
    import autobayes

    model = gpt2(args).train()
    if posterior is None:
        return model
    # swap mode: converting is fastest, and a sharded model runs its blocks' own forwards whichever route
    return autobayes.bayesify(model, mode="swap", posterior=posterior, forward="sample", init_scale=1e-3).train()


def blocks_of(model: nn.Module) -> List[nn.Module]:
    from transformers.models.gpt2.modeling_gpt2 import GPT2Block

    return [m for m in model.modules() if isinstance(m, GPT2Block)]


def local_bytes(tensors) -> int:
    total = 0
    for t in tensors:
        t = t.to_local() if hasattr(t, "to_local") else t
        total += t.numel() * t.element_size()
    return total


def step(model: nn.Module, ids: torch.Tensor, bayesian: bool, num_data: int = 10_000) -> Dict[str, float]:
    """One forward / backward / Adam step; the per-rank bytes of each kind."""
    seen, saved = set(), [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        base = t._base if t._base is not None else t
        if not isinstance(base, nn.Parameter):
            key = t.untyped_storage().data_ptr()
            if key not in seen:
                seen.add(key)
                saved[0] += t.untyped_storage().nbytes()
        return t

    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(input_ids=ids)
        if bayesian:
            out, kl = out
        logits = out.logits
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        if bayesian:
            loss = loss + kl / num_data
    loss.backward()
    opt.step()
    params = list(model.parameters())
    return {"params": local_bytes(params) / MIB, "grads": local_bytes(p.grad for p in params if p.grad is not None) / MIB,
            "optim": local_bytes(v for s in opt.state.values() for v in s.values()
                                 if torch.is_tensor(v) and v.dim() > 0) / MIB,
            "act": saved[0] / MIB}


def measure(setup: str, posterior: Optional[str], checkpointing: bool, args: argparse.Namespace, rank: int) -> dict:
    from autobayes import distributed

    model = build(posterior, args)
    bayesian = posterior is not None
    full_block = max(local_bytes(b.parameters()) for b in blocks_of(model)) / MIB
    if setup == "fsdp":
        if bayesian:
            distributed.shard(model, activation_checkpointing=checkpointing)
        else:
            from torch.distributed._composable import checkpoint
            from torch.distributed.fsdp import fully_shard

            for block in blocks_of(model):
                if checkpointing:
                    checkpoint(block)
                fully_shard(block)
            fully_shard(model)
    elif checkpointing:
        if bayesian:
            distributed.checkpoint_blocks(model)
        else:
            from torch.distributed._composable import checkpoint

            for block in blocks_of(model):
                checkpoint(block)
    net = model
    if setup == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model)
    batch = args.batch if setup == "unsharded" else args.batch // WORLD
    g = torch.Generator().manual_seed(rank)
    ids = torch.randint(0, args.vocab, (batch, args.seq), generator=g)
    torch.manual_seed(100 + rank)
    row = step(net, ids, bayesian)
    row["gather"] = full_block if setup == "fsdp" else 0.0
    return row


def worker(rank: int, folder: str, args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=300))
    rows = []
    for posterior in (None, *args.posteriors):
        for checkpointing in (False, True):
            for setup in ("unsharded", "ddp", "fsdp"):
                if setup == "unsharded":  # one process, the whole batch: rank 0 alone
                    row = measure(setup, posterior, checkpointing, args, rank) if rank == 0 else None
                    dist.barrier()
                else:
                    row = measure(setup, posterior, checkpointing, args, rank)
                if rank == 0:
                    rows.append({"model": posterior or "deterministic", "setup": setup, "ac": checkpointing, **row})
                    print(fmt(rows[-1]), flush=True)
    dist.barrier()
    from autobayes.distributed import _exit_launched_rank

    _exit_launched_rank()


def fmt(r: dict) -> str:
    return (f"| {r['model']:<13} | {r['setup']:<9} | {'yes' if r['ac'] else 'no ':<3} | {r['params']:7.2f} | "
            f"{r['grads']:7.2f} | {r['optim']:7.2f} | {r['params'] + r['grads'] + r['optim']:7.2f} | "
            f"{r['act']:7.2f} | {r['gather']:6.2f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8, help="global batch (each of the 2 ranks gets half)")
    parser.add_argument("--posteriors", nargs="+", default=list(POSTERIORS))
    args = parser.parse_args()
    import torch.multiprocessing as mp

    print(f"GPT-2 style: {args.layers} blocks, width {args.width}, vocab {args.vocab}, sequence {args.seq}, "
          f"global batch {args.batch}; torch {torch.__version__}, CPU, gloo, {WORLD} ranks; MiB per rank")
    print("| model         | setup     | AC  |  params |   grads |   optim | p+g+o   |     act | +gather |")
    print("|---|---|---|---|---|---|---|---|---|")
    sys.stdout.flush()
    with tempfile.TemporaryDirectory(prefix="autobayes_memory_") as folder:
        mp.start_processes(worker, args=(folder, args), nprocs=WORLD, join=True, start_method="spawn")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
