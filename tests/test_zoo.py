"""Zoo test: bayesify real torchvision / timm classification models (weights=None, tiny inputs).

Each model is converted with the default options and checked against the contract (see
``tests/_zoo_check.py``): forward and backward run; output structure and shapes equal the deterministic model's
(train and eval mode); under ``use_mean`` the eval output equals the deterministic output; every Linear / Conv the
deterministic forward calls is Bayesian unless the report lists it as skipped with a reason; ``kl`` is finite,
> 0 and equals the sum of the used layers' own KL; every posterior parameter gets a gradient.

Models are the smallest members of each family; where a family has no small member, the same class is built
with a small configuration (noted). Run with ``pytest -m zoo tests/test_zoo.py``.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _zoo_check import check_conversion  # noqa: E402

import timm  # noqa: E402  (hard dependencies of autobayes: never skipped)
import torchvision  # noqa: E402

tvm = torchvision.models

pytestmark = [pytest.mark.zoo, pytest.mark.usefixtures("one_thread")]


def tv(name, **kwargs):
    return lambda: getattr(tvm, name)(weights=None, num_classes=10, **kwargs)


def tm(name, **kwargs):
    return lambda: timm.create_model(name, pretrained=False, num_classes=10, **kwargs)


# id -> (factory, input size, what it exercises)
ZOO = {
    # torchvision
    "tv_resnet18": (tv("resnet18"), 32, "ResNet"),
    "tv_resnext50_32x4d": (tv("resnext50_32x4d"), 32, "ResNeXt: grouped convs"),
    "tv_densenet121": (tv("densenet121"), 32, "DenseNet: concatenation"),
    "tv_vgg11": (tv("vgg11"), 32, "VGG: large Linear head"),
    "tv_alexnet": (tv("alexnet"), 64, "AlexNet"),
    "tv_mobilenet_v2": (tv("mobilenet_v2"), 32, "MobileNet v2: depthwise"),
    "tv_mobilenet_v3_small": (tv("mobilenet_v3_small"), 32, "MobileNet v3: SE (torchvision.ops)"),
    "tv_efficientnet_b0": (tv("efficientnet_b0"), 32, "EfficientNet: stochastic depth in train mode"),
    "tv_regnet_x_400mf": (tv("regnet_x_400mf"), 32, "RegNet"),
    "tv_shufflenet_v2_x0_5": (tv("shufflenet_v2_x0_5"), 32, "ShuffleNet: channel shuffle"),
    "tv_squeezenet1_1": (tv("squeezenet1_1"), 32, "SqueezeNet: conv classifier"),
    "tv_mnasnet0_5": (tv("mnasnet0_5"), 32, "MNASNet"),
    "tv_googlenet": (tv("googlenet", aux_logits=True, init_weights=False), 64, "GoogLeNet: aux heads only in train mode"),
    "tv_vit_small": (
        lambda: tvm.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10),
        32,
        "torchvision ViT class, small config: nn.MultiheadAttention",
    ),
    "tv_swin_small": (
        lambda: tvm.SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 2], window_size=[2, 2], num_classes=10),
        32,
        "torchvision Swin class, small config: weights passed to a wrapped attention function",
    ),
    "tv_convnext_small_cfg": (
        lambda: tvm.ConvNeXt([tvm.convnext.CNBlockConfig(16, 32, 1), tvm.convnext.CNBlockConfig(32, None, 1)], num_classes=10),
        32,
        "torchvision ConvNeXt class, small config: layer scale",
    ),
    # timm
    "timm_test_resnet": (tm("test_resnet"), 32, "ResNet"),
    "timm_resnext26ts": (tm("resnext26ts"), 32, "ResNeXt (timm byobnet)"),
    "timm_test_efficientnet": (tm("test_efficientnet"), 32, "EfficientNet"),
    "timm_test_efficientnet_gn": (tm("test_efficientnet_gn"), 32, "EfficientNet, GroupNorm"),
    "timm_test_efficientnet_evos": (tm("test_efficientnet_evos"), 32, "EfficientNet, EvoNorm"),
    "timm_tf_efficientnet_b0": (tm("tf_efficientnet_b0"), 32, "Conv2dSame (a timm leaf)"),
    "timm_tf_mobilenetv3_small_minimal_100": (tm("tf_mobilenetv3_small_minimal_100"), 32, "Conv2dSame, MobileNet v3"),
    "timm_mobilenetv3_small_050": (tm("mobilenetv3_small_050"), 32, "MobileNet v3"),
    "timm_mobilenetv2_050": (tm("mobilenetv2_050"), 32, "MobileNet v2"),
    "timm_regnetx_002": (tm("regnetx_002"), 32, "RegNet"),
    "timm_test_convnext": (tm("test_convnext"), 32, "ConvNeXt"),
    "timm_convnext_atto": (tm("convnext_atto"), 32, "ConvNeXt"),
    "timm_test_vit": (tm("test_vit"), 32, "ViT: F.linear on qkv weight? / pos-embed resampling"),
    "timm_test_vit_relpos": (tm("test_vit_relpos", img_size=32), 32, "ViT, relative position"),
    "timm_deit_tiny": (tm("deit_tiny_patch16_224", img_size=32), 32, "DeiT"),
    "timm_deit_tiny_distilled": (tm("deit_tiny_distilled_patch16_224", img_size=32), 32, "DeiT distilled: tuple output in train mode"),
    "timm_swin_small_cfg": (
        tm("swin_tiny_patch4_window7_224", img_size=32, window_size=4, embed_dim=16, depths=(1, 1), num_heads=(1, 2)),
        32,
        "Swin (timm class, small config)",
    ),
    "timm_mixer_small_cfg": (
        lambda: timm.models.mlp_mixer.MlpMixer(num_classes=10, img_size=32, patch_size=8, num_blocks=2, embed_dim=64),
        32,
        "MLP-Mixer (timm class, small config)",
    ),
    "timm_test_nfnet": (tm("test_nfnet"), 32, "ScaledStdConv2d: functional weight standardisation"),
    "timm_resnetv2_bit_small_cfg": (
        lambda: timm.models.resnetv2.ResNetV2(
            layers=[1, 1, 1, 1], channels=(128, 256, 512, 1024), num_classes=10, stem_type="fixed",
            conv_layer=functools.partial(timm.layers.StdConv2d, eps=1e-8),
        ),
        32,
        "StdConv2d (BiT ResNetV2 class, small config)",
    ),
    "timm_test_byobnet": (tm("test_byobnet"), 32, "BYOB net"),
    "timm_test_coatnet": (tm("test_coatnet", img_size=64), 64, "CoAtNet: conv + attention"),
    "timm_test_maxvit": (tm("test_maxvit", img_size=64), 64, "MaxViT"),
    "timm_test_mambaout": (tm("test_mambaout"), 32, "MambaOut"),
    "timm_levit_128s": (tm("levit_128s", img_size=64), 64, "LeViT: attention-bias cache in eval mode"),
    "timm_convit_tiny": (tm("convit_tiny", img_size=32), 32, "ConViT: GPSA leaf module"),
    "timm_mobilevit_xxs": (tm("mobilevit_xxs"), 64, "MobileViT: MobileVitBlock leaf module"),
    "timm_tiny_vit_5m": (tm("tiny_vit_5m_224"), 64, "TinyViT: TinyVitBlock leaf module"),
    "timm_efficientformerv2_s0": (tm("efficientformerv2_s0", img_size=64), 64, "EfficientFormerV2"),
    "timm_ghostnet_050": (tm("ghostnet_050"), 32, "GhostNet"),
    "timm_lcnet_050": (tm("lcnet_050"), 32, "LCNet"),
    "timm_edgenext_xx_small": (tm("edgenext_xx_small"), 64, "EdgeNeXt"),
    "timm_xcit_nano": (tm("xcit_nano_12_p16_224", img_size=32), 32, "XCiT: PositionalEncodingFourier leaf"),
    "timm_pit_ti": (tm("pit_ti_224", img_size=64), 64, "PiT"),
    "timm_densenet121": (tm("densenet121"), 32, "DenseNet (timm)"),
}


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_model(name):
    factory, size, _ = ZOO[name]
    torch.manual_seed(0)
    model = factory()
    check_conversion(model, torch.randn(2, 3, size, size))
