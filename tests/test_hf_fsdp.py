"""BayesTrainer with Trainer's FSDP settings (autobayes.hf.fsdp), two gloo processes on the CPU, as torchrun runs
them: a tiny GPT-2 converted by the capture route (every block inlined in one graph), sharded per block through
``TrainingArguments(fsdp=..., fsdp_config=...)``. Each rank holds about half of every parameter and the optimiser
holds the shards; one step under use_mean equals the unsharded BayesTrainer step on the whole batch; sampled
training with activation checkpointing lowers the loss; the checkpoints (gathered from the shards) load into
autobayes.load and equal the gathered state, and resuming from one repeats the run. The ranks join by a file (no
port), with a timeout on the collectives and on the whole run (_sharding_models.spawn)."""

from __future__ import annotations

import copy
import datetime
import os
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import autobayes
from autobayes import distributed
from _sharding_models import build, spawn, tokens

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")

WORLD = 2
GLOBAL_BATCH = 8
NUM_DATA = 100_000  # target tokens of the training set the ELBO is per (GPT-2's own loss is a mean per token)
STEP_NUM_DATA = 8 * 15  # the step's: the KL / N term (~3,000 here) dwarfs the NLL, so a KL counted twice would show
PG_TIMEOUT = 60  # seconds a rank waits in a collective before failing
FSDP = {"fsdp": "shard_grad_op auto_wrap", "fsdp_config": {"fsdp_version": 2}}  # reshard_after_forward=False
FSDP_AC = {"fsdp": True, "fsdp_config": {"version": 2, "transformer_layer_cls_to_wrap": ["GPT2Block"],
                                         "activation_checkpointing": True}}


def _rows(n: int, seed: int) -> list:
    ids, _ = tokens(n, seed)
    return [{"input_ids": ids[i], "labels": ids[i]} for i in range(n)]


def _args(out, **overrides):
    options = dict(output_dir=str(out), report_to=[], use_cpu=True, disable_tqdm=True, seed=0, save_strategy="no",
                   per_device_train_batch_size=GLOBAL_BATCH // WORLD, logging_steps=1)
    return transformers.TrainingArguments(**{**options, **overrides})


def _trainer(bnn, args, train, num_data=NUM_DATA, **kwargs):
    from autobayes.hf import BayesTrainer

    transformers.logging.set_verbosity_error()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' deprecation of the string form of fsdp=
        return BayesTrainer(model=bnn, args=args, train_dataset=train, num_data=num_data, mc_samples=2, **kwargs)


STEP = dict(optim="sgd", learning_rate=0.5, max_steps=1, max_grad_norm=0.0)  # one SGD step, no clipping (below)


def _step_worker(base, out: Path, rank: int) -> dict:
    """One step under use_mean from Trainer's legacy FSDP string; rank 1 starts from other parameters (rank 0's
    must be the ones sharded, as DDP's are). An evaluation first leaves the blocks gathered (shard_grad_op keeps
    them so after a forward): the optimiser must still be built on the shards."""
    from torch.distributed.tensor import DTensor

    bnn = copy.deepcopy(base)
    if rank == 1:
        with torch.no_grad():
            for p in bnn.parameters():
                p.add_(1.0)
    full = {n: p.numel() for n, p in bnn.named_parameters()}
    trainer = _trainer(bnn, _args(out / "step", **STEP, **FSDP), _rows(GLOBAL_BATCH, 1), STEP_NUM_DATA)
    with autobayes.use_mean(trainer.model):
        trainer.evaluate(_rows(GLOBAL_BATCH, 4))
        trainer.train()
    model = trainer.model
    params = dict(model.named_parameters())
    held = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    return {"full_numel": full, "local_numel": {n: p.to_local().numel() for n, p in params.items()},
            "all_dtensor": all(isinstance(p, DTensor) for p in params.values()),
            "optimizer_holds_the_shards": held == {id(p) for p in params.values()},
            "unwrapped": trainer.model_wrapped is model,  # no DistributedDataParallel around the shards
            "units": _units(model), "stepped": distributed.full_state_dict(model)}


def _units(model) -> dict:
    """The composable APIs (fully_shard, checkpoint) applied to the root and to each block."""
    from torch.distributed._composable.contract import _get_registry

    return {name or "root": sorted(_get_registry(m) or ()) for name, m in model.named_modules()
            if name in ("", "transformer.h.0", "transformer.h.1") or _get_registry(m)}


def _train_worker(base, out: Path, rank: int) -> dict:
    """Sampled training, 3 epochs with activation checkpointing, eval / save each epoch, the best model at the end;
    then a resume from the first checkpoint, which must repeat epochs 2 and 3."""
    run = out / "train"
    train, test = _rows(32, 2), _rows(8, 3)
    args = dict(num_train_epochs=3, learning_rate=3e-2, eval_strategy="epoch", save_strategy="epoch", **FSDP_AC)
    trainer = _trainer(copy.deepcopy(base), _args(run, load_best_model_at_end=True, **args), train,
                       eval_dataset=test)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "nll" in h]
    result = {"losses": [h["loss"] for h in logs], "nll": [h["nll"] for h in logs],
              "best": trainer.state.best_model_checkpoint, "final": distributed.full_state_dict(trainer.model),
              "units": _units(trainer.model)}
    trainer.save_model(str(out / "saved"))
    if rank == 0:  # read before the resume rewrites them
        result.update({name: autobayes.load(run / f"checkpoint-{step}").state_dict()
                       for name, step in (("first", 4), ("last", 12))})
    again = _trainer(copy.deepcopy(base), _args(run, **args), train, eval_dataset=test)
    again.train(resume_from_checkpoint=str(run / "checkpoint-4"))
    result["resumed"] = distributed.full_state_dict(again.model)
    return result


def _worker(rank: int, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_WORLD_SIZE=str(WORLD),
                      MASTER_ADDR="127.0.0.1")  # what torchrun sets; the group itself is joined by a file
    dist.init_process_group("gloo", init_method=f"file://{out}/store", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=PG_TIMEOUT))
    base = torch.load(Path(out) / "model.pt", weights_only=False)  # our own pickle, written by the fixture
    results = {"step": _step_worker(base, Path(out), rank), "train": _train_worker(base, Path(out), rank)}
    torch.save(results, Path(out) / f"rank{rank}.pt")
    distributed._exit_launched_rank()


@pytest.fixture(scope="module")
def converted():
    bnn = build("export")  # GPT-2 through the capture route: the blocks inlined in one graph
    bnn.train()
    return bnn


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory, converted):
    out = tmp_path_factory.mktemp("hf_fsdp")
    torch.save(converted, out / "model.pt")
    spawn(_worker, out, WORLD, timeout=300)
    return out, [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def test_trainer_fsdp_settings_shard_every_parameter_per_rank(fsdp_run):
    ranks = fsdp_run[1]
    full = ranks[0]["step"]["full_numel"]
    for name, n in full.items():
        held = [r["step"]["local_numel"][name] for r in ranks]
        assert sum(held) == n, name  # the shards partition the tensor
    total = sum(full.values())
    for r in ranks:
        assert r["step"]["all_dtensor"] and r["step"]["optimizer_holds_the_shards"] and r["step"]["unwrapped"]
        assert abs(sum(r["step"]["local_numel"].values()) / total - 1 / WORLD) < 0.02
    # one FSDP unit per GPT-2 block (the model's _no_split_modules by default), then the root; checkpointing with
    # fsdp_config's activation_checkpointing
    shard = {"root": ["fully_shard"], "transformer.h.0": ["fully_shard"], "transformer.h.1": ["fully_shard"]}
    assert ranks[0]["step"]["units"] == shard
    assert ranks[0]["train"]["units"] == {**shard, "transformer.h.0": ["checkpoint", "fully_shard"],
                                          "transformer.h.1": ["checkpoint", "fully_shard"]}


def test_a_sharded_trainer_step_equals_the_unsharded_trainer_step(fsdp_run, converted, tmp_path):
    # Under use_mean the forward has no noise and the closed-form KL is exact: the mean over the ranks of
    # grad(mean NLL of the rank's 4 sequences + KL / N) is grad(mean NLL of the 8 + KL / N), the training set being
    # one global batch (its order does not matter). The KL term dominates the loss (N = 120 tokens): a KL counted
    # twice, or once per rank and summed, would double the step of every log-scale, far outside rtol 1e-5 (without
    # gradient clipping, which would rescale a doubled gradient to the same norm; the training run below clips).
    # Rank 1 started from other parameters: equality also says every rank took rank 0's.
    bnn = converted  # itself, not a copy: restored below
    before = {n: v.clone() for n, v in bnn.state_dict().items()}
    try:
        trainer = _trainer(bnn, _args(tmp_path, **STEP, per_device_train_batch_size=GLOBAL_BATCH),
                           _rows(GLOBAL_BATCH, 1), STEP_NUM_DATA)
        with autobayes.use_mean(bnn):
            trainer.train()
        after = {n: v.clone() for n, v in bnn.state_dict().items()}
    finally:
        bnn.zero_grad(set_to_none=True)
        bnn.load_state_dict(before)
    stepped = fsdp_run[1][0]["step"]["stepped"]
    assert stepped.keys() == after.keys()
    for name, value in after.items():
        torch.testing.assert_close(stepped[name], value, rtol=1e-5, atol=1e-6, msg=name)
    assert sum(not torch.equal(v, before[n]) for n, v in after.items()) > 10  # the step moved the parameters


def test_sharded_trainer_training_lowers_the_loss(fsdp_run):
    # 12 sampled Adam steps on counting sequences: the ELBO per token (~5 at the start, ~4.2 of it the NLL of a
    # uniform guess over 64 tokens) falls by more than 1 in a typical run; 0.3 leaves room for the draws' noise.
    losses = fsdp_run[1][0]["train"]["losses"]  # Trainer's logged loss: the mean over the ranks
    assert len(losses) == 12 and fsdp_run[1][1]["train"]["losses"] == losses
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3, losses


def test_sharded_trainer_checkpoints_are_gathered_autobayes_checkpoints(fsdp_run):
    out, ranks = fsdp_run
    result = ranks[0]["train"]
    best = Path(result["best"])
    assert best.parent == out / "train" and sorted(p.name for p in best.parent.iterdir()) == [
        "checkpoint-12", "checkpoint-4", "checkpoint-8"]
    for folder in (best, out / "saved"):  # the best model, loaded at the end; save_model's folder
        loaded = autobayes.load(folder)
        assert loaded.bayes_report.mode == "export"
        state = loaded.state_dict()
        assert state.keys() == result["final"].keys()
        for name, value in result["final"].items():
            torch.testing.assert_close(state[name], value, rtol=0, atol=0, msg=name)
        assert (folder / "model.safetensors").is_file()  # the posterior means, for transformers' from_pretrained
    optimizer = torch.load(best / "optimizer.pt", weights_only=True)  # the full optimiser state, by parameter name
    params = ranks[0]["step"]["full_numel"]
    assert set(optimizer["state"]) == set(params)
    assert all(optimizer["state"][n]["exp_avg"].numel() == params[n] for n in params)


def test_resuming_a_sharded_trainer_repeats_the_run(fsdp_run):
    # Resumed from epoch 1's checkpoint: the shards of the model and of the optimiser's state, the scheduler, the
    # data order and every rank's generator (its weight draws) come from the checkpoint, so epochs 2 and 3 repeat.
    result = fsdp_run[1][0]["train"]
    assert result["resumed"].keys() == result["last"].keys()
    for name, value in result["last"].items():  # bitwise: the same draws, the same reductions in the same order
        assert torch.equal(result["resumed"][name], value), name
    assert sum(not torch.equal(v, result["first"][k]) for k, v in result["last"].items()) > 10  # 8 steps moved it


# ---------------------------------------------------------------------------------------------------------------
# the settings, one process (no Trainer: accelerate's plugin from TrainingArguments)
# ---------------------------------------------------------------------------------------------------------------
def _options(tmp_path, monkeypatch, bnn, device="cpu", mixed_precision="no", **fsdp):
    from autobayes.hf.fsdp import plugin_from_args, shard_options

    monkeypatch.setenv("FSDP_CPU_RAM_EFFICIENT_LOADING", "false")  # TrainingArguments sets it; restored after
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        args = transformers.TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True, **fsdp)
    return shard_options(plugin_from_args(args, mixed_precision), bnn, torch.device(device))


def test_trainer_fsdp_settings_map_to_shard_or_name_the_setting(tmp_path, monkeypatch, converted):
    from torch.distributed.fsdp import CPUOffloadPolicy
    from transformers.models.gpt2.modeling_gpt2 import GPT2Block

    options = _options(tmp_path, monkeypatch, converted, mixed_precision="bf16", fsdp="shard_grad_op auto_wrap",
                       fsdp_config={"transformer_layer_cls_to_wrap": "GPT2Block", "activation_checkpointing": True})
    assert options["blocks"] == (GPT2Block,) and options["activation_checkpointing"] is True
    assert options["reshard_after_forward"] is False  # shard_grad_op
    assert options["mp_policy"].param_dtype == torch.bfloat16
    plain = _options(tmp_path, monkeypatch, converted, fsdp=True)
    assert plain["blocks"] is None and plain["activation_checkpointing"] is False and "mp_policy" not in plain
    cuda = _options(tmp_path, monkeypatch, converted, device="cuda", fsdp="full_shard offload")
    assert isinstance(cuda["offload_policy"], CPUOffloadPolicy)  # passed on (its effect needs CUDA: not run here)
    refused = {
        "offload": {"fsdp": "full_shard offload"},
        "version=1": {"fsdp": True, "fsdp_config": {"version": 1}},
        "SIZE_BASED_WRAP": {"fsdp": True, "fsdp_config": {"auto_wrap_policy": "SIZE_BASED_WRAP"}},
        "NO_WRAP": {"fsdp": True, "fsdp_config": {"auto_wrap_policy": "NO_WRAP"}},
        "SHARDED_STATE_DICT": {"fsdp": True, "fsdp_config": {"state_dict_type": "SHARDED_STATE_DICT"}},
        "NoSuchBlock": {"fsdp": True, "fsdp_config": {"transformer_layer_cls_to_wrap": ["NoSuchBlock"]}},
    }
    for setting, fsdp in refused.items():
        with pytest.raises(autobayes.ConfigError, match=setting):
            _options(tmp_path, monkeypatch, converted, **fsdp)


def test_shard_passes_the_offload_policy_to_every_fully_shard(monkeypatch, converted):
    # The pass-through only: CPUOffloadPolicy pins host memory, which needs CUDA, so fully_shard is recorded here,
    # not run.
    import torch.distributed.fsdp as fsdp
    from torch.distributed.fsdp import CPUOffloadPolicy

    calls = []
    monkeypatch.setattr(fsdp, "fully_shard", lambda module, **kw: calls.append((module, kw)))
    policy = CPUOffloadPolicy()
    bnn = copy.deepcopy(converted)
    distributed.shard(bnn, offload_policy=policy)
    assert [m for m, _ in calls] == [*bnn.transformer.h, bnn]  # each block, then the root
    assert all(kw["offload_policy"] is policy for _, kw in calls)
