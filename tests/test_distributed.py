"""DistributedDataParallel with gloo, 2 processes on the CPU: the gradient relation documented in
:mod:`autobayes.training`, parameters kept identical across ranks, independent noise per rank, and
``train(nproc=2)`` end to end (only rank 0 writes). Tiny models and few steps: the spawns dominate (~10 s each)."""

import csv
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

import autobayes
from autobayes import distributed
from autobayes.losses import CategoricalELBO


WORLD = 2
GLOBAL_BATCH = 16
NUM_DATA = 64  # N of the ELBO


def _tiny_bnn(forward="local", kl="closed"):
    torch.manual_seed(0)  # the same initial parameters on every rank, and in the single-process reference
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    return autobayes.bayesify(model, posterior="gaussian", kl=kl, forward=forward, init_scale=0.05, prior_scale=1.0)


def _data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(NUM_DATA, 6, generator=g)
    y = (x[:, :3] * torch.tensor([2.0, -1.0, 1.5])).argmax(1)  # a learnable rule
    return x, y


def _ddp_worker(out_dir: str, steps: int) -> None:
    """One rank: (1) one gradient under use_mean with the closed-form KL on its half of a global batch; (2) ``steps``
    steps of noisy training (gaussian repar KL, n_mc 10), checking the parameters across ranks after each."""
    from torch.nn.parallel import DistributedDataParallel

    ctx = distributed.setup(torch.device("cpu"))
    try:
        rank = ctx.rank
        x, y = _data()
        local = slice(rank * GLOBAL_BATCH // WORLD, (rank + 1) * GLOBAL_BATCH // WORLD)
        criterion = CategoricalELBO(NUM_DATA)

        bnn = _tiny_bnn()
        ddp = DistributedDataParallel(bnn)
        with autobayes.use_mean(bnn):
            out, kl = ddp(x[:GLOBAL_BATCH][local])
            criterion(out, y[:GLOBAL_BATCH][local], kl).loss.backward()
            with torch.no_grad():
                assert isinstance(ddp(x[:2]), autobayes.BayesOutput)  # the namedtuple survives DDP
        grads = {n: p.grad.clone() for n, p in bnn.named_parameters()}

        # noisy training: each rank its own noise stream, the same parameters after every step
        bnn = _tiny_bnn(kl="repar")
        ddp = DistributedDataParallel(bnn)
        torch.manual_seed(distributed.noise_seed(0, 0, rank))
        opt = torch.optim.Adam(bnn.parameters(), lr=1e-2)
        probe = bnn(x[:4]).output.detach()  # the same input, each rank's own noise
        losses, diffs = [], []
        for step in range(steps):
            start = (step * GLOBAL_BATCH) % NUM_DATA
            xb, yb = x[start:start + GLOBAL_BATCH][local], y[start:start + GLOBAL_BATCH][local]
            out, kl = ddp(xb)
            loss = criterion(out, yb, kl).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            flat = nn.utils.parameters_to_vector(bnn.parameters()).detach()
            gathered = [torch.empty_like(flat) for _ in range(WORLD)]
            dist.all_gather(gathered, flat)
            diffs.append(float((gathered[0] - gathered[1]).abs().max()))
            losses.append(float(ctx.all_reduce_sum(loss.detach().reshape(1))) / WORLD)
        probes = [torch.empty_like(probe) for _ in range(WORLD)]
        dist.all_gather(probes, probe)
        summed = ctx.all_reduce_sum(torch.tensor([rank + 1.0], dtype=torch.float64))
        torch.save({"grads": grads, "losses": losses, "diffs": diffs, "probes": probes, "summed": float(summed)},
                   Path(out_dir) / f"rank{rank}.pt")
    finally:
        ctx.close()


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    distributed.launch(_ddp_worker, {"out_dir": str(out), "steps": 30}, WORLD, torch.device("cpu"), threads=1)
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


def test_ddp_gradient_equals_single_process_gradient_on_the_global_batch(ddp_run):
    # The relation of autobayes.training: mean over ranks of grad(mean NLL_r + KL / N) = grad(mean NLL of the global
    # batch) + mean_r grad KL_r / N; with the closed-form KL (and use_mean: no forward noise) that is exactly the
    # single-process gradient on the same global batch.
    x, y = _data()
    bnn = _tiny_bnn()
    with autobayes.use_mean(bnn):
        out, kl = bnn(x[:GLOBAL_BATCH])
        CategoricalELBO(NUM_DATA)(out, y[:GLOBAL_BATCH], kl).loss.backward()
    for rank_result in ddp_run:
        for name, p in bnn.named_parameters():
            torch.testing.assert_close(rank_result["grads"][name], p.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_ddp_parameters_identical_across_ranks_and_loss_falls(ddp_run):
    diffs, losses = ddp_run[0]["diffs"], ddp_run[0]["losses"]
    assert max(diffs) == 0.0  # DDP's all-reduced gradients and the same optimiser: bitwise-identical parameters
    assert ddp_run[1]["losses"] == losses  # the global (all-reduced) loss, the same number on both ranks
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.1, losses


def test_ddp_ranks_draw_independent_noise_and_metrics_are_summed(ddp_run):
    probes = ddp_run[0]["probes"]
    assert not torch.allclose(probes[0], probes[1])  # the same input and parameters, different posterior noise
    assert ddp_run[0]["summed"] == ddp_run[1]["summed"] == 1.0 + 2.0


def test_train_nproc_2_end_to_end(tmp_path):
    result = autobayes.train("digits_cnn", "digits", epochs=2, nproc=2, n_test=2, progress=False, out_dir=tmp_path,
                             seed=3, n_mc=10)
    assert [row["epoch"] for row in result.history] == [1, 2]
    assert result.history[-1]["train_acc"] > 0.5 and result.history[-1]["val_acc"] > 0.5
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    with open(tmp_path / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]  # one writer: no duplicated rows
    assert {p.name for p in tmp_path.iterdir()} == {"log.csv", "best.safetensors", "last.safetensors",
                                                   "last.resume.pt"}
    restored = autobayes.load(tmp_path / "last.safetensors")
    for (name, a), (_, b) in zip(restored.state_dict().items(), result.model.state_dict().items()):
        torch.testing.assert_close(a, b, msg=name)


class _SlowTeardown:
    """Freed (slowly) while the interpreter finalizes, as a large model or data set held by a module can be."""

    def __del__(self):
        time.sleep(5.0)


def _leave_while_the_peer_is_in_a_collective(n_ops: int) -> str:
    """The end of a DDP run, made deterministic: rank 0 queues its last all-reduces (of Python-owned tensors) and
    leaves the group, while rank 1 reaches these collectives two seconds later, during rank 0's slow teardown."""
    from torch.nn.parallel import DistributedDataParallel

    ctx = distributed.setup(torch.device("cpu"))
    try:
        ddp = DistributedDataParallel(_tiny_bnn())  # DDP keeps the gloo backend (and its threads) alive past close()
        if ctx.rank == 1:
            time.sleep(2.0)
        works = [dist.all_reduce(torch.full((1024,), float(i)), async_op=True) for i in range(n_ops)]
        if ctx.rank == 1:
            for work in works:
                work.wait()
        del ddp, works
    finally:
        ctx.close()
    if ctx.rank == 0:
        globals()["_teardown"] = _SlowTeardown()
    return "done"


def test_a_rank_leaving_while_its_peer_is_in_a_collective_does_not_fail_the_run():
    # Before the fix, rank 0 destroyed the group at once and entered interpreter teardown while gloo's threads (kept
    # alive by DDP) still held its tensors; when rank 1 completed the collectives, a gloo thread dropping a tensor
    # took the GIL of the finalizing interpreter: "terminate called without an active exception" (SIGABRT), and
    # launch raised although the work had been done.
    assert distributed.launch(_leave_while_the_peer_is_in_a_collective, {"n_ops": 32}, WORLD, torch.device("cpu"),
                              threads=1) == "done"


def test_close_waits_at_a_barrier_unless_an_exception_propagates(monkeypatch):
    calls = []
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "barrier", lambda **kw: calls.append("barrier"))
    monkeypatch.setattr(dist, "destroy_process_group", lambda: calls.append("destroy"))

    def ctx():
        return distributed.DistContext(rank=0, world_size=WORLD, owns_group=True)

    ctx().close()  # a normal end: no rank tears its connections down while a peer is still in a collective
    assert calls == ["barrier", "destroy"]
    calls.clear()
    with pytest.raises(ValueError):
        context = ctx()
        try:
            raise ValueError("a rank failed")
        finally:
            context.close()  # the peers may never reach a barrier: destroy at once
    assert calls == ["destroy"]
    calls.clear()
    with pytest.raises(ValueError), ctx():
        raise ValueError("a rank failed")
    assert calls == ["destroy"]
    calls.clear()
    with ctx():
        pass
    assert calls == ["barrier", "destroy"]
    calls.clear()
    closed = ctx()
    closed.close()
    closed.close()  # closing twice destroys once
    assert calls == ["barrier", "destroy"]
    distributed.DistContext(rank=0, world_size=WORLD, owns_group=False).close()  # a group setup did not create
    assert calls == ["barrier", "destroy"]


def test_nproc_is_rejected_under_torchrun(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(autobayes.ConfigError, match="torchrun"):
        autobayes.train("digits_cnn", "digits", epochs=1, nproc=2, progress=False)
