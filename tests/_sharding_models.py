"""Tiny language models for the sharding tests and the memory benchmark: one the fx route converts (blocks in an
``nn.ModuleList``) and a GPT-2 the capture route converts (transformers 5), with their data and loss; and
:func:`spawn`, which runs a test's ranks."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

import autobayes

VOCAB = 64
SEQ = 16


class Block(nn.Module):
    """A pre-norm transformer block (causal self-attention, MLP), traceable by torch.fx."""

    def __init__(self, width: int, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.fc1, self.fc2 = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, c)
        x = x + self.proj(a)
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class TinyLM(nn.Module):
    def __init__(self, width: int = 32, layers: int = 2, vocab: int = VOCAB, seq: int = SEQ) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, width), nn.Embedding(seq, width)
        self.blocks = nn.ModuleList(Block(width) for _ in range(layers))
        self.ln_f, self.head = nn.LayerNorm(width), nn.Linear(width, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1], device=ids.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def gpt2(width: int = 32, layers: int = 2, vocab: int = VOCAB, seq: int = SEQ, heads: int = 2) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=vocab, n_positions=seq, n_embd=width, n_layer=layers, n_head=heads,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=False,
                        bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config)


def build(route: str, seed: int = 0, **options) -> nn.Module:
    """A converted tiny LM: ``route`` "fx" (TinyLM) or "export" (GPT-2); the same parameters for the same seed."""
    torch.manual_seed(seed)
    options = {"posterior": "gaussian", "kl": "closed", "init_scale": 0.02, **options}
    if route == "fx":
        bnn = autobayes.bayesify(TinyLM(), mode="fx", **options)
    else:
        bnn = autobayes.bayesify(gpt2(), mode="export", example_inputs={"input_ids": tokens(2, 0)[0]},
                                 **options)
    assert bnn.bayes_report.mode == route
    return bnn.train()


def tokens(batch: int, seed: int):
    """``(inputs, targets)``: sequences counting up modulo the vocabulary from random starts (learnable)."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(0, VOCAB, (batch, 1), generator=g)
    ids = (start + torch.arange(SEQ + 1)) % VOCAB
    return ids[:, :-1], ids[:, 1:]


def logits_of(output) -> torch.Tensor:
    return output.logits if hasattr(output, "logits") else output


def elbo(bnn: nn.Module, ids: torch.Tensor, targets: torch.Tensor, num_data: int) -> torch.Tensor:
    """Mean next-token NLL plus KL / N (the per-example ELBO of autobayes.losses)."""
    out, kl = bnn(input_ids=ids) if hasattr(bnn, "config") else bnn(ids)
    logits = logits_of(out)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)) + kl / (num_data * SEQ)


def spawn(worker: Callable[[int, str], None], out: Path, nprocs: int = 2, timeout: float = 240) -> None:
    """Run ``worker(rank, str(out))`` in ``nprocs`` spawned processes; a rank that fails fails the call, and a run
    longer than ``timeout`` seconds is killed (a hung rank fails the test instead of hanging it). The workers join
    their process group by a file under ``out`` (no port) and write their results there."""
    import torch.multiprocessing as mp

    context = mp.start_processes(worker, args=(str(out),), nprocs=nprocs, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    try:
        while not context.join(timeout=5):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {nprocs} ranks did not finish in {timeout} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()


__all__ = ["Block", "TinyLM", "gpt2", "build", "tokens", "elbo", "logits_of", "spawn", "math"]
