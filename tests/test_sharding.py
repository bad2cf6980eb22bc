"""FSDP2 sharding and activation checkpointing of converted models (autobayes.sharding).

Two gloo processes on the CPU shard a tiny transformer converted by the fx route and a tiny GPT-2 converted by the
capture route, per block: each rank holds about half of every parameter; one step under use_mean equals the
unsharded step on the whole batch; sampled training lowers the loss; the gathered state dict and a DCP sharded
save load into an unsharded model and into autobayes.load. The ranks join by a file (no port), with a timeout on
the collectives and on the whole run, so a hung rank fails the test instead of hanging it.

Activation checkpointing (one process): a checkpointed sampled step has the gradient of the unchecked step under a
fixed seed, for sample and local modes, through autobayes' parallel CPU sampler; the saved-for-backward bytes fall.
"""

import copy
import datetime
import functools
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import autobayes
from autobayes import _random, distributed, sharding
from _sharding_models import build, elbo, logits_of, spawn, tokens

WORLD = 2
GLOBAL_BATCH = 8
NUM_DATA = 64
STEPS = 12
LR_SGD = 0.5
RUN_TIMEOUT = 240  # seconds for the whole two-process run
PG_TIMEOUT = 60  # seconds a rank waits in a collective before failing


_CONVERTED_IN = {}  # in a rank: the parent's converted models (unpickled), so that the ranks do not convert again


@functools.lru_cache(maxsize=None)
def _converted(route: str):
    return _CONVERTED_IN[route] if route in _CONVERTED_IN else build(route)  # the capture route takes ~20 s on a busy CPU: convert once


def fresh(route: str, forward: str = "auto"):
    """A copy of the converted model of ``route`` (parameters from seed 0), its layers in ``forward`` mode."""
    bnn = copy.deepcopy(_converted(route))
    if forward != "auto":
        for m in bnn.modules():
            if isinstance(m, autobayes.BayesLayer):
                m.forward_mode = forward
    return bnn


def _call(bnn, ids):
    return bnn(input_ids=ids) if hasattr(bnn, "config") else bnn(ids)


def _route_worker(route: str, out: Path, rank: int) -> dict:
    """One rank's work on one route; returns what the tests check."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict
    import torch.distributed.checkpoint as dcp

    ids, targets = tokens(GLOBAL_BATCH, 1)
    local = slice(rank * GLOBAL_BATCH // WORLD, (rank + 1) * GLOBAL_BATCH // WORLD)
    result = {}

    # (1) one SGD step under use_mean on this rank's half of the global batch
    bnn = fresh(route)
    full = {n: p.numel() for n, p in bnn.named_parameters()}
    sharding.shard(bnn, activation_checkpointing=(route == "export"))
    result["local_numel"] = {n: p.to_local().numel() for n, p in bnn.named_parameters()}
    result["full_numel"] = full
    opt = torch.optim.SGD(bnn.parameters(), lr=LR_SGD)
    with autobayes.use_mean(bnn):
        elbo(bnn, ids[local], targets[local], NUM_DATA).backward()
    opt.step()
    result["stepped"] = distributed.full_state_dict(bnn)

    # (2) sampled training: each rank its own noise stream (as with DDP)
    bnn = fresh(route)
    sharding.shard(bnn)
    torch.manual_seed(distributed.noise_seed(0, 0, rank))
    opt = torch.optim.Adam(bnn.parameters(), lr=1e-2)
    losses = []
    for step in range(STEPS):
        xb, yb = tokens(GLOBAL_BATCH, 100 + step)
        loss = elbo(bnn, xb[local], yb[local], NUM_DATA)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total = loss.detach().reshape(1)
        dist.all_reduce(total)
        losses.append(float(total) / WORLD)
    result["losses"] = losses

    # (3) checkpoints: gathered full state dict (and autobayes.save of it), a DCP sharded save, a probe output
    state = distributed.full_state_dict(bnn)
    dcp.save(get_model_state_dict(bnn), checkpoint_id=str(out / f"dcp_{route}"))
    with torch.no_grad(), autobayes.use_mean(bnn):
        result["probe"] = logits_of(_call(bnn, ids[:2]).output)
    if rank == 0:
        result["state"] = state
        try:
            autobayes.save(bnn, out / "refused.safetensors", arch={"arch": "unused:unused", "kwargs": {}})
        except autobayes.CheckpointError as err:
            result["save_error"] = str(err)
        if route == "export":
            autobayes.save(bnn, out / "gpt2.safetensors", state_dict=state)
    return result


def _worker(rank: int, out: str) -> None:
    torch.set_num_threads(1)
    models = torch.load(Path(out) / "models.pt", weights_only=False)  # our own pickle, written by the fixture
    for route, bnn in models.items():
        _converted.cache_clear()
        _CONVERTED_IN[route] = bnn
    dist.init_process_group("gloo", init_method=f"file://{out}/store", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=PG_TIMEOUT))
    results = {route: _route_worker(route, Path(out), rank) for route in ("fx", "export")}
    # autobayes.train(fsdp=True, activation_checkpointing=True) in this process group (as under torchrun): fcnet has
    # no repeated blocks, so each Bayesian layer is one sharding unit; rank 0 returns an unsharded model
    run = autobayes.train("fcnet", "digits", epochs=2, fsdp=True, activation_checkpointing=True, n_test=2,
                          progress=False, out_dir=Path(out) / "train", seed=3, n_mc=4, batch_size=64)
    results["train"] = {"history": run.history, "state": None if run.model is None else run.model.state_dict()}
    torch.save(results, Path(out) / f"rank{rank}.pt")
    distributed._exit_launched_rank()  # barrier, leave the group, no interpreter teardown (see its docstring)


@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp")
    torch.save({route: _converted(route) for route in ("fx", "export")}, out / "models.pt")
    spawn(_worker, out, WORLD, RUN_TIMEOUT)
    return out, [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.mark.parametrize("route", ["fx", "export"])
def test_each_rank_holds_half_of_every_parameter(sharded_run, route):
    ranks = sharded_run[1]
    full = ranks[0][route]["full_numel"]
    for name, n in full.items():
        held = [r[route]["local_numel"][name] for r in ranks]
        assert sum(held) == n, name  # the shards partition the tensor
        assert max(held) <= -(-n // WORLD) * (1 if n >= WORLD else WORLD), (name, held)  # dim-0 chunks of ceil(n/2)
    total = sum(full.values())
    for r in ranks:
        assert abs(sum(r[route]["local_numel"].values()) / total - 1 / WORLD) < 0.02


@pytest.mark.parametrize("route", ["fx", "export"])
def test_a_sharded_step_equals_the_unsharded_step_on_the_whole_batch(sharded_run, route):
    # Under use_mean the forward has no noise, and the closed-form KL is exact: the mean over the ranks of
    # grad(mean NLL of the rank's half + KL / N) is grad(mean NLL of the global batch + KL / N). The reference is
    # the model as bayesify returned it (the route's own graph); the sharded model ran the blocks' forwards, one
    # of them with activation checkpointing (export).
    ids, targets = tokens(GLOBAL_BATCH, 1)
    bnn = _converted(route)  # itself, not a copy: a copy of a capture-route model captures its graph again (slow)
    before = {n: v.clone() for n, v in bnn.state_dict().items()}
    try:
        opt = torch.optim.SGD(bnn.parameters(), lr=LR_SGD)
        with autobayes.use_mean(bnn):
            elbo(bnn, ids, targets, NUM_DATA).backward()
        opt.step()
        after = {n: v.clone() for n, v in bnn.state_dict().items()}
    finally:
        bnn.zero_grad(set_to_none=True)
        bnn.load_state_dict(before)
    stepped = sharded_run[1][0][route]["stepped"]
    for name, value in after.items():
        torch.testing.assert_close(stepped[name], value, rtol=1e-5, atol=1e-6, msg=name)
    moved = [n for n, v in after.items() if not torch.equal(v, before[n])]
    assert len(moved) > 10  # the step changed the parameters: the comparison is not between two untouched models


@pytest.mark.parametrize("route", ["fx", "export"])
def test_sampled_sharded_training_lowers_the_loss(sharded_run, route):
    losses = sharded_run[1][0][route]["losses"]
    assert sharded_run[1][1][route]["losses"] == losses  # all-reduced: the same on both ranks
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3, losses


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")  # dcp.load in one process: what is meant
@pytest.mark.parametrize("route", ["fx", "export"])
def test_gathered_and_dcp_state_dicts_load_into_an_unsharded_model(sharded_run, route):
    import torch.distributed.checkpoint as dcp

    out, ranks = sharded_run
    state = ranks[0][route]["state"]
    ids, _ = tokens(GLOBAL_BATCH, 1)
    bnn = fresh(route)
    bnn.load_state_dict(state)  # strict: every key, no wrapper prefix
    with torch.no_grad(), autobayes.use_mean(bnn):
        torch.testing.assert_close(logits_of(_call(bnn, ids[:2]).output), ranks[0][route]["probe"])
    from_dcp = fresh(route).state_dict()
    dcp.load(from_dcp, checkpoint_id=str(out / f"dcp_{route}"))  # no process group: a plain load
    for name, value in state.items():
        torch.testing.assert_close(from_dcp[name], value, rtol=0, atol=0, msg=name)
    assert "full_state_dict(bnn)" in ranks[0][route]["save_error"]  # save() of shards names the fix
    if route == "export":
        loaded = autobayes.load(out / "gpt2.safetensors")
        assert loaded.bayes_report.mode == "export"  # the checkpoint names the route that converted it
        for name, value in state.items():
            torch.testing.assert_close(loaded.state_dict()[name], value, rtol=0, atol=0, msg=name)


# ---------------------------------------------------------------------------------------------------------------
# activation checkpointing, one process
# ---------------------------------------------------------------------------------------------------------------
def _step(bnn, ids, targets, seed):
    """Gradients of one sampled ELBO step from ``seed``, and the bytes the forward saved for backward outside
    checkpointed regions (inside them, checkpointing's own hooks take the tensors)."""
    saved = [0]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    torch.manual_seed(seed)
    bnn.zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = elbo(bnn, ids, targets, NUM_DATA)
    loss.backward()
    return {n: p.grad.clone() for n, p in bnn.named_parameters() if p.grad is not None}, saved[0]


@pytest.mark.parametrize("route", ["fx", "export"])
@pytest.mark.parametrize("forward", ["sample", "local"])
def test_a_checkpointed_sampled_step_has_the_unchecked_gradient(monkeypatch, route, forward):
    # every draw (weights, local mode's output noise) through autobayes' parallel CPU sampler, in 8 seeded streams
    monkeypatch.setattr(_random, "PARALLEL_MIN_ELEMENTS", 64)
    ids, targets = tokens(4, 3)
    plain = fresh(route, forward)
    sharding.run_blocks_eagerly(plain)
    checked = copy.deepcopy(plain)
    sharding.checkpoint_blocks(checked)
    reference, plain_bytes = _step(plain, ids, targets, seed=7)
    grads, checked_bytes = _step(checked, ids, targets, seed=7)
    assert grads.keys() == reference.keys() and len(grads) > 10
    for name, g in reference.items():
        torch.testing.assert_close(grads[name], g, rtol=1e-5, atol=1e-7, msg=name)
    assert checked_bytes < 0.6 * plain_bytes, (checked_bytes, plain_bytes)
    # the test can fail: a recomputation that draws anew (generator state not restored) changes the gradient
    from torch.distributed._composable import checkpoint

    redrawn = copy.deepcopy(plain)
    for block in sharding._prepare_blocks(redrawn, sharding.default_blocks(redrawn)):
        checkpoint(block, preserve_rng_state=False)
    wrong, _ = _step(redrawn, ids, targets, seed=7)
    assert any(not torch.allclose(wrong[n], g) for n, g in reference.items())


def test_checkpoint_context_keeps_the_draws_of_a_posterior_read_before_the_region():
    # A posterior read twice per forward -- before a user's checkpointed region and inside it -- is one draw
    # (shared_draws). Recomputed without the context, the region draws it anew; with it, it reuses the draw.
    from torch.utils.checkpoint import checkpoint

    torch.manual_seed(0)
    param = autobayes.BayesParameter(torch.randn(4, 4), autobayes.BayesConfig(init_scale=0.5))
    x = torch.randn(3, 4)
    from autobayes.nn.parameter import shared_draws

    def grads(context_fn):
        param.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        with shared_draws():
            w = param()
            inner = checkpoint(lambda v: torch.tanh(v @ param()), x, use_reentrant=False, **context_fn)
            loss = (inner @ w).sum()
        loss.backward()
        return param.mu.grad.clone()

    def plain():
        param.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        with shared_draws():
            w = param()
            loss = (torch.tanh(x @ param()) @ w).sum()
        loss.backward()
        return param.mu.grad.clone()

    reference = plain()
    torch.testing.assert_close(grads({"context_fn": distributed.checkpoint_context}), reference)
    try:  # without it the recomputation draws a second weight: torch notices the extra tensors, or the gradient is off
        wrong = grads({})
    except torch.utils.checkpoint.CheckpointError:
        return
    assert not torch.allclose(wrong, reference)


def test_shard_names_the_blocks_it_cannot_find():
    bnn = fresh("fx")
    with pytest.raises(autobayes.ConfigError, match=r"shard\(bnn, blocks="):
        sharding.checkpoint_blocks(bnn, blocks=[torch.nn.GRU])
    with pytest.raises(autobayes.ConfigError, match="nn.Module classes"):
        sharding.checkpoint_blocks(bnn, blocks=["Block"])
    with pytest.raises(autobayes.ConfigError, match="bayesify"):
        sharding.run_blocks_eagerly(torch.nn.Linear(2, 2))



def test_train_fsdp_with_activation_checkpointing_end_to_end(sharded_run):
    out, ranks = sharded_run
    history = ranks[0]["train"]["history"]
    assert [row["epoch"] for row in history] == [1, 2]
    assert history[-1]["train_loss"] < history[0]["train_loss"] and history[-1]["val_acc"] > 0.5
    metrics = ("train_loss", "train_kl", "val_nll", "val_acc", "val_ece")
    assert [{k: r[k] for k in metrics} for r in ranks[1]["train"]["history"]] == [
        {k: r[k] for k in metrics} for r in history]  # the all-reduced training sums, rank 0's validation row
    assert {p.name for p in (out / "train").iterdir()} == {"log.csv", "best.safetensors", "last.safetensors"}
    restored = autobayes.load(out / "train" / "last.safetensors")
    for name, value in ranks[0]["train"]["state"].items():
        torch.testing.assert_close(restored.state_dict()[name], value, rtol=0, atol=0, msg=name)
    with pytest.raises(autobayes.ConfigError, match="nproc=2"):
        autobayes.train("fcnet", "digits", epochs=1, fsdp=True, progress=False)


def test_mixed_precision_policy_passes_through(tmp_path):
    # fully_shard's options reach every unit: bf16 parameters in the forward, the KL still float32 (kl_of), the
    # sharded parameters and their gradients float32. One process (a group of one). CPUOffloadPolicy pins host
    # memory, which needs CUDA: not testable here.
    from torch.distributed.fsdp import MixedPrecisionPolicy

    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1,
                            timeout=datetime.timedelta(seconds=PG_TIMEOUT))
    try:
        bnn = fresh("fx")
        sharding.shard(bnn, mp_policy=MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32))
        ids, targets = tokens(4, 0)
        out, kl = bnn(ids)
        assert out.dtype == torch.bfloat16 and kl.dtype == torch.float32
        elbo(bnn, ids, targets, NUM_DATA).backward()
        grads = [p.grad for p in bnn.parameters()]
        assert all(g is not None and g.dtype == torch.float32 for g in grads)
        assert all(p.dtype == torch.float32 for p in bnn.parameters())
    finally:
        dist.destroy_process_group()
