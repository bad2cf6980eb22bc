"""Architecture factory: deterministic networks by name, sized for a data set, rebuildable from a small spec.

``build_model(arch, num_classes=..., in_channels=..., image_size=...)`` accepts

* ``"torchvision:NAME"`` (``torchvision.models.get_model(NAME, weights=None)``), ``"timm:NAME"``
  (``timm.create_model(NAME, pretrained=False)``): weights are never downloaded; the first convolution is
  adapted to ``in_channels`` and the head to ``num_classes``;
* the families of the paper repository, written compactly here: ``"fcnet"``, ``"alexnet"``, ``"vgg11"`` /
  ``"vgg13"`` / ``"vgg16"`` / ``"vgg19"``, ``"preact_resnet18"`` / ``"preact_resnet34"``, ``"densenet"``
  (DenseNet-BC), plus ``"digits_cnn"``, the small CNN of the quick start. Their downsampling adapts to
  ``image_size`` (a pooling step is skipped once the feature map is 1x1), so they accept 8x8 digits as well as
  32x32 CIFAR images;
* ``"module:factory"`` (or ``"module.sub:factory"``): ``factory(**kwargs)`` imported from a module of yours;
  it receives the ``num_classes`` / ``in_channels`` / ``image_size`` / ``num_features`` arguments its signature
  accepts.

Every returned model carries ``model.autobayes_arch = {"arch": arch, "kwargs": {...}}``, enough to rebuild it
with ``build_model(spec["arch"], **spec["kwargs"])``: :func:`autobayes.bayesify` copies it and checkpoints store
it.

The parts: :mod:`.build` (the registry, :func:`build_model`, torchvision / timm / your own factories) and
:mod:`.families` (the built-in architectures, registered on import).
"""

from __future__ import annotations

from .build import ARCHITECTURES, architecture_names, build_model, register_architecture
from .families import (DenseLayer, PreActBlock, PreActResNet, alexnet, densenet, digits_cnn, fcnet,  # noqa: F401
                       preact_resnet18, preact_resnet34)

__all__ = ["build_model", "ARCHITECTURES", "register_architecture", "architecture_names"]

#: The names these blocks had while the models were one module: whole models pickled then (``torch.save(model)``)
#: name them so.
_PreActBlock = PreActBlock
_DenseLayer = DenseLayer
