"""Checkpoints: save -> load round trips, deterministic-checkpoint reading, and refusal of bad files."""

from __future__ import annotations

import json
import os
import struct

import pytest
import torch
from torch import nn

from autobayes.api import bayesify
from autobayes.errors import CheckpointError
from autobayes.io import (
    METADATA_KEY,
    OutputExistsError,
    _tensors_for_saving,
    atomic_output,
    check_state_dict,
    load,
    load_state_dict_file,
    read_checkpoint_info,
    save,
)
from autobayes.models import build_model
from autobayes.nn import BayesParameter


def _pretrained(arch: str, **kwargs) -> nn.Module:
    """A model whose weights stand in for pretrained ones (fixed seed, not the default initialisation)."""
    torch.manual_seed(0)
    model = build_model(arch, **kwargs)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model.eval()


def _outputs(bnn: nn.Module, x: torch.Tensor, seed: int = 123):
    torch.manual_seed(seed)
    with torch.no_grad():
        out, kl = bnn(x)
    return out, kl


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# ---------------------------------------------------------------------- round trips
ROUND_TRIP_MODELS = [
    ("torchvision:resnet18", dict(num_classes=10, in_channels=3, image_size=32)),
    ("timm:test_resnet", dict(num_classes=5, in_channels=3, image_size=32)),
]


@pytest.mark.parametrize("posterior", ["gaussian", "radial"])
@pytest.mark.parametrize("arch,kwargs", ROUND_TRIP_MODELS, ids=[a for a, _ in ROUND_TRIP_MODELS])
def test_round_trip_identical_outputs_with_prior_on_pretrained_weights(tmp_path, arch, kwargs, posterior):
    model = _pretrained(arch, **kwargs)
    bnn = bayesify(model, posterior=posterior, prior_loc="weights", prior_scale=0.1, init_scale=1e-2, n_mc=4).eval()
    path = save(bnn, tmp_path / "bnn.safetensors", metadata={"note": "round trip"})
    loaded = load(path)

    x = torch.randn(3, kwargs["in_channels"], kwargs["image_size"], kwargs["image_size"], generator=torch.Generator().manual_seed(1))
    out_a, kl_a = _outputs(bnn, x)
    out_b, kl_b = _outputs(loaded, x)
    assert torch.equal(out_a, out_b)  # same seed, same weights and noise draws: bit-identical
    assert torch.equal(kl_a, kl_b)
    assert not torch.equal(out_a, _outputs(loaded, x, seed=124)[0])  # and the outputs really are sampled

    # the prior stays centred on the pretrained weights, the posterior means start there
    first = next(m for m in loaded.modules() if isinstance(m, BayesParameter))
    assert first.prior.loc.shape == first.mu.shape
    sd_a, sd_b = bnn.state_dict(), loaded.state_dict()
    assert sd_a.keys() == sd_b.keys() and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    assert loaded.bayes_config.to_dict() == bnn.bayes_config.to_dict()
    assert loaded.autobayes_arch == model.autobayes_arch
    assert loaded.autobayes_checkpoint["metadata"] == {"note": "round trip"}


def test_checkpoint_header_is_json_with_versions(tmp_path):
    bnn = bayesify(_pretrained("digits_cnn", num_classes=10, in_channels=1, image_size=8), posterior="gaussian")
    path = save(bnn, tmp_path / "digits.safetensors", metadata={"epochs": 3})
    info = read_checkpoint_info(path)
    spec = info.spec
    assert spec["format"] == "autobayes.bnn" and spec["format_version"] == 1
    assert spec["arch"] == {"arch": "digits_cnn", "kwargs": bnn.autobayes_arch["kwargs"]}
    assert spec["bayes_config"]["posterior"] == "gaussian"
    assert {"autobayes", "torch"} <= set(spec["versions"]) and spec["created_at"]
    assert len(spec["bayesian_layers"]) == 4  # two convolutions, two linear layers
    assert info.num_tensors == len(bnn.state_dict())
    assert "digits_cnn" in str(info) and json.dumps(info.to_dict())
    # the header is plain safetensors metadata: readable without autobayes
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        assert json.loads(fh.metadata()[METADATA_KEY])["metadata"] == {"epochs": 3}


def test_wrapped_networks_are_saved_without_wrapper_prefixes(tmp_path):
    bnn = bayesify(_pretrained("digits_cnn", num_classes=10, in_channels=1, image_size=8))
    loaded = load(save(nn.DataParallel(bnn), tmp_path / "dp.safetensors"))
    assert loaded.state_dict().keys() == bnn.state_dict().keys()


def test_filter_fn_is_replaced_by_the_converted_layer_names(tmp_path):
    model = _pretrained("digits_cnn", num_classes=10, in_channels=1, image_size=8)
    bnn = bayesify(model, filter_fn=lambda module, name: isinstance(module, nn.Linear))
    loaded = load(save(bnn, tmp_path / "f.safetensors"))
    assert bnn.state_dict().keys() == loaded.state_dict().keys()


def test_shared_and_view_tensors_are_saved_as_separate_copies():
    base = torch.arange(12.0)
    tensors = _tensors_for_saving({"a": base, "b": base, "c": base[4:], "d": base.view(3, 4).t()})
    ptrs = {t.untyped_storage().data_ptr() for t in tensors.values()}
    assert len(ptrs) == 4 and all(t.is_contiguous() for t in tensors.values())
    assert torch.equal(tensors["c"], base[4:]) and torch.equal(tensors["d"], base.view(3, 4).t())


# ---------------------------------------------------------------------- saving safely
def test_save_refuses_to_overwrite_without_permission_and_leaves_file_unchanged(tmp_path):
    bnn = bayesify(_pretrained("digits_cnn", num_classes=10, in_channels=1, image_size=8))
    path = save(bnn, tmp_path / "a.safetensors")
    before = _snapshot(tmp_path)
    with pytest.raises(OutputExistsError, match="already exists; pass --force"):
        save(bnn, path, overwrite=False)
    assert _snapshot(tmp_path) == before


def test_a_failed_write_leaves_neither_partial_file_nor_temporary(tmp_path, monkeypatch):
    import safetensors.torch

    bnn = bayesify(_pretrained("digits_cnn", num_classes=10, in_channels=1, image_size=8))
    path = save(bnn, tmp_path / "a.safetensors")
    before = _snapshot(tmp_path)

    def half_write(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"\x00" * 100)
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", half_write)
    with pytest.raises(OSError, match="disk full"):
        save(bnn, path)
    assert _snapshot(tmp_path) == before  # old file intact, no temporary left


def test_atomic_output_refuses_to_write_onto_its_input(tmp_path):
    src = tmp_path / "in.pt"
    src.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="it is the input"):
        with atomic_output(src, overwrite=True, inputs=(src,)):
            pass
    assert src.read_bytes() == b"x"


def test_save_needs_an_architecture_spec(tmp_path):
    bnn = bayesify(nn.Sequential(nn.Linear(3, 2)))
    if hasattr(bnn, "autobayes_arch"):
        del bnn.autobayes_arch
    with pytest.raises(CheckpointError, match="no architecture spec"):
        save(bnn, tmp_path / "x.safetensors")
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------- deterministic checkpoints
@pytest.mark.parametrize("layout", ["plain", "state_dict", "model", "model_state_dict", "dataparallel", "safetensors"])
def test_load_state_dict_file_layouts(tmp_path, layout):
    model = build_model("digits_cnn", num_classes=10, in_channels=1, image_size=8)
    sd = model.state_dict()
    path = tmp_path / "ckpt.pt"
    if layout == "plain":
        torch.save(sd, path)
    elif layout == "dataparallel":
        torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 7}, path)
    elif layout == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "ckpt.safetensors"
        save_file(sd, str(path))
    else:
        torch.save({layout: sd, "epoch": 7, "optimizer": {"lr": 0.1}}, path)
    loaded = load_state_dict_file(path)
    assert loaded.keys() == sd.keys() and all(torch.equal(loaded[k], sd[k]) for k in sd)


class _NotATensor:
    pass


def test_pickled_objects_are_refused(tmp_path):
    model = build_model("digits_cnn", num_classes=10, in_channels=1, image_size=8)
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": model.state_dict(), "extra": _NotATensor()}, path)
    with pytest.raises(CheckpointError, match="refusing to load .* pickled Python objects"):
        load_state_dict_file(path)
    whole = tmp_path / "whole_module.pt"
    torch.save(model, whole)
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        load_state_dict_file(whole)


def test_state_dict_mismatch_lists_missing_unexpected_and_shapes():
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    sd = {"0.weight": torch.zeros(2, 4), "0.bias": torch.zeros(2), "2.weight": torch.zeros(1, 2)}
    mismatch = check_state_dict(model, sd)
    text = mismatch.describe()
    assert "missing keys (2): 1.weight, 1.bias" in text
    assert "unexpected keys (1): 2.weight" in text
    assert "0.weight (checkpoint [2, 4], model [2, 3])" in text


# ---------------------------------------------------------------------- bad files
@pytest.fixture
def good_checkpoint(tmp_path):
    bnn = bayesify(_pretrained("digits_cnn", num_classes=10, in_channels=1, image_size=8))
    return save(bnn, tmp_path / "good.safetensors")


def test_missing_file(tmp_path):
    for reader in (load, load_state_dict_file, read_checkpoint_info):
        with pytest.raises(CheckpointError, match="does not exist"):
            reader(tmp_path / "nope.safetensors")


def test_truncated_checkpoint(tmp_path, good_checkpoint):
    data = good_checkpoint.read_bytes()
    cut_body = tmp_path / "cut_body.safetensors"
    cut_body.write_bytes(data[: len(data) // 2])
    cut_header = tmp_path / "cut_header.safetensors"
    cut_header.write_bytes(data[:50])
    for path in (cut_body, cut_header):
        with pytest.raises(CheckpointError, match="truncated or corrupt"):
            load(path)


def test_corrupt_header(tmp_path, good_checkpoint):
    data = bytearray(good_checkpoint.read_bytes())
    (n,) = struct.unpack("<Q", data[:8])
    data[8 + n // 2] = ord("}")  # break the JSON header
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        load(bad)


def test_wrong_formats(tmp_path):
    text = tmp_path / "notes.safetensors"
    text.write_text("hello, I am not a checkpoint\n")
    with pytest.raises(CheckpointError, match="not an autobayes checkpoint"):
        load(text)
    with pytest.raises(CheckpointError, match="neither a safetensors file nor a torch.save file"):
        load_state_dict_file(text)
    pt = tmp_path / "det.pt"
    torch.save(nn.Linear(2, 2).state_dict(), pt)
    with pytest.raises(CheckpointError, match="torch.save file, not an autobayes checkpoint.*autobayes convert"):
        load(pt)
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file(nn.Linear(2, 2).state_dict(), str(plain))
    with pytest.raises(CheckpointError, match="without autobayes metadata"):
        load(plain)


def _read_checkpoint(path):
    """``(header metadata, tensors)`` of a safetensors checkpoint, to tamper with in a test."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return fh.metadata(), {k: fh.get_tensor(k) for k in fh.keys()}


def test_newer_format_version_is_refused(tmp_path, good_checkpoint):
    from safetensors.torch import save_file

    meta, tensors = _read_checkpoint(good_checkpoint)
    spec = json.loads(meta[METADATA_KEY])
    spec["format_version"] = 99
    future = tmp_path / "future.safetensors"
    save_file(tensors, str(future), metadata={METADATA_KEY: json.dumps(spec)})
    with pytest.raises(CheckpointError, match="format version 99.*upgrade autobayes"):
        load(future)


def test_tensors_that_do_not_match_the_architecture(tmp_path, good_checkpoint):
    from safetensors.torch import save_file

    meta, tensors = _read_checkpoint(good_checkpoint)
    mu_key = next(k for k in tensors if k.endswith("weight_posterior.mu"))
    tensors[mu_key] = torch.zeros(1, 2)
    tensors["extra.weight"] = torch.zeros(1)
    dropped = next(k for k in tensors if k.endswith("log_var"))
    del tensors[dropped]
    edited = tmp_path / "edited.safetensors"
    save_file(tensors, str(edited), metadata=meta)
    with pytest.raises(CheckpointError) as info:
        load(edited)
    message = str(info.value)
    assert "does not match the architecture" in message
    assert f"missing keys (1): {dropped}" in message
    assert "unexpected keys (1): extra.weight" in message
    assert f"{mu_key} (checkpoint [1, 2]" in message
    assert os.path.getsize(edited) > 0


# ---------------------------------------------------------------------- timm / torchvision networks without arch=
def _library_models():
    import torchvision

    timm = pytest.importorskip("timm")
    return [
        ("timm:test_resnet", lambda: timm.create_model("test_resnet", num_classes=3)),
        ("torchvision:resnet18", lambda: torchvision.models.resnet18(num_classes=4)),
    ]


@pytest.mark.parametrize("index", [0, 1], ids=["timm", "torchvision"])
def test_save_records_the_architecture_of_timm_and_torchvision_networks(tmp_path, index):
    arch, make = _library_models()[index]
    torch.manual_seed(0)
    bnn = bayesify(make().eval(), posterior="gaussian", init_scale=1e-2)
    path = save(bnn, tmp_path / "net.safetensors")  # no arch=: it was an error before
    spec = read_checkpoint_info(path).arch
    assert spec["arch"] == arch
    assert spec["kwargs"]["num_classes"] == (3 if index == 0 else 4) and spec["kwargs"]["in_channels"] == 3
    again = load(path)  # rebuilt from the name, nothing downloaded (weights=None / pretrained=False)
    x = torch.randn(2, 3, 32, 32)
    bnn.eval()
    out, kl = _outputs(bnn, x)
    out2, kl2 = _outputs(again, x)
    torch.testing.assert_close(out2, out)
    torch.testing.assert_close(kl2, kl)


def test_save_suggests_the_library_architecture_when_it_cannot_tell(tmp_path):
    import torchvision

    model = torchvision.models.resnet18(num_classes=4)
    model.fc = nn.Sequential(nn.Dropout(0.1), nn.Linear(512, 4))  # no longer what torchvision builds
    with pytest.raises(CheckpointError, match=r"arch=\{'arch': 'torchvision:resnet18'"):
        save(bayesify(model), tmp_path / "x.safetensors")

    class MyNet(torchvision.models.ResNet):  # a subclass may change forward: never taken for the library's
        pass

    mine = MyNet(torchvision.models.resnet.BasicBlock, [2, 2, 2, 2], num_classes=4)
    with pytest.raises(CheckpointError, match="mypackage.models:make_net"):
        save(bayesify(mine), tmp_path / "y.safetensors")
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------- what a checkpoint records about its data
def test_inspect_shows_the_stored_preprocessing(tmp_path):
    from autobayes.data import load_dataset

    info = load_dataset("digits")[2]
    bnn = bayesify(_pretrained("digits_cnn", num_classes=10, in_channels=1, image_size=8))
    path = save(bnn, tmp_path / "d.safetensors", metadata={"dataset": info.to_dict(), "epoch": 1})
    text = str(read_checkpoint_info(path))
    assert "1x8x8 images, pixels in [0, 1] normalised as (x - [0.3054]) / [0.3761]" in text
    assert "classification, 10 classes: 0, 1, 2" in text and "data set:        digits" in text
    assert '"epoch": 1' in text and '"dataset"' not in text  # described above, not dumped as JSON
    bare = save(bnn, tmp_path / "bare.safetensors")
    assert "input normalisation not recorded" in str(read_checkpoint_info(bare))
