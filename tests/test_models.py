"""Architecture factory: built-in families on small and CIFAR-sized images, zoo adapters, user factories,
rebuild from ``autobayes_arch``, errors."""

import sys
import textwrap

import pytest
import torch

import autobayes
from autobayes.errors import ConfigError, UnknownNameError
from autobayes.models import ARCHITECTURES, build_model

# Small widths keep every forward cheap; the structure (strides, blocks) is the full one.
SMALL = {
    "fcnet": {"hidden": [16]},
    "digits_cnn": {"width": 4, "hidden": 8},
    "alexnet": {"width": 4, "hidden": 16},
    "vgg11": {"width_mult": 0.0625},
    "vgg13": {"width_mult": 0.0625},
    "vgg16": {"width_mult": 0.0625},
    "vgg19": {"width_mult": 0.0625},
    "preact_resnet18": {"width": 4},
    "preact_resnet34": {"width": 4},
    "densenet": {"depth": 10, "growth_rate": 4},
}


def test_every_builtin_is_covered():
    assert set(SMALL) == set(ARCHITECTURES.names())


@pytest.mark.parametrize("arch", sorted(SMALL))
@pytest.mark.parametrize("channels,size", [(1, 8), (3, 32)])
def test_builtin_forward_and_rebuild(arch, channels, size):
    torch.manual_seed(0)
    model = build_model(arch, num_classes=7, in_channels=channels, image_size=size, **SMALL[arch])
    model.eval()
    x = torch.randn(2, channels, size, size)
    assert model(x).shape == (2, 7)
    spec = model.autobayes_arch
    assert spec["arch"] == arch
    rebuilt = build_model(spec["arch"], **spec["kwargs"])
    ref = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == ref
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.eval()
    torch.testing.assert_close(rebuilt(x), model(x))


def test_fcnet_on_tabular_features():
    model = build_model("fcnet", num_classes=2, in_channels=1, image_size=None, num_features=30, hidden=[8])
    assert model(torch.randn(4, 30)).shape == (4, 2)


@pytest.mark.parametrize("arch", ["digits_cnn", "preact_resnet18", "densenet"])
def test_builtins_bayesify_by_graph(arch):
    model = build_model(arch, num_classes=10, in_channels=1, image_size=8, **SMALL[arch])
    bnn = autobayes.bayesify(model, mode="fx")
    out, kl = bnn(torch.randn(2, 1, 8, 8))
    assert out.shape == (2, 10) and kl.dim() == 0 and kl.item() > 0
    assert bnn.autobayes_arch == model.autobayes_arch


def test_torchvision_adapts_channels_and_classes():
    model = build_model("torchvision:resnet18", num_classes=5, in_channels=1, image_size=32)
    assert model.conv1.in_channels == 1 and model.fc.out_features == 5
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 5)


def test_timm_adapts_channels_and_classes():
    model = build_model("timm:resnet18", num_classes=4, in_channels=1, image_size=16)
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 4)


def test_zoo_model_too_small_input_says_how_to_resize():
    with pytest.raises(ConfigError, match="image_size=64|--image-size"):
        build_model("torchvision:alexnet", num_classes=10, in_channels=1, image_size=8)


def test_weights_are_never_downloaded():
    with pytest.raises(ConfigError, match="never downloads"):
        build_model("torchvision:resnet18", num_classes=10, weights="DEFAULT")


def test_unknown_names_suggest():
    with pytest.raises(UnknownNameError, match="Did you mean 'vgg11'"):
        build_model("vgg111", num_classes=10)
    with pytest.raises(UnknownNameError, match="resnet18"):
        build_model("torchvision:resnet81", num_classes=10)
    with pytest.raises(UnknownNameError, match="timm"):
        build_model("timm:not_a_model_xyz", num_classes=10)


def test_user_factory_gets_the_arguments_it_accepts(tmp_path, monkeypatch):
    (tmp_path / "my_nets_for_test.py").write_text(textwrap.dedent("""
        import torch.nn as nn
        def make(num_classes, width=3):
            return nn.Sequential(nn.Flatten(), nn.LazyLinear(width), nn.ReLU(), nn.Linear(width, num_classes))
        NOT_CALLABLE = 1
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    model = build_model("my_nets_for_test:make", num_classes=3, in_channels=1, image_size=8, width=5)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 3)
    assert model.autobayes_arch == {"arch": "my_nets_for_test:make", "kwargs": {
        "num_classes": 3, "in_channels": 1, "image_size": 8, "num_features": None, "width": 5}}
    with pytest.raises(UnknownNameError, match="Did you mean 'make'"):
        build_model("my_nets_for_test:mak", num_classes=3)
    with pytest.raises(ConfigError, match="cannot import"):
        build_model("no_such_module_for_test:make", num_classes=3)
    sys.modules.pop("my_nets_for_test", None)


@pytest.mark.parametrize("name", ["PreActResNet", "_PreActBlock", "_DenseLayer"])
def test_pickles_from_the_single_module_layout_still_resolve(name):
    """Whole models pickled while the models were one module (``torch.save(model)``) name their classes
    ``autobayes.models.<name>``; the bytes are what ``pickle.dumps(cls, protocol=0)`` wrote then."""
    import pickle

    from autobayes.models import families

    cls = pickle.loads(b"cautobayes.models\n" + name.encode() + b"\np0\n.")
    assert cls is getattr(families, name.lstrip("_"))
