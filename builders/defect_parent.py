"""``<product>_parent``: normal or anomaly, and whether the image looks like the product at all.

Input ``IMAGE`` FP32 [3, H, W] in [-1, 1] (``<product>_dali``'s output); outputs
``ANOMALY_SCORE`` FP32 [1] (>= 0.5: over the version's threshold, an anomaly) and
``NOVELTY`` FP32 [1] (<= 1 for images like the training images; see
``defect_architecture``). Trained by ``python -m defect_classifier train``; version 1 is
untrained.
"""
from __future__ import annotations

from builders import defect_architecture as arch
from builders.declaration import BuildOptions, ModelDeclaration, Tensor
from products import Product

ROLE = "parent"
ANOMALY_SCORE = Tensor("ANOMALY_SCORE", "TYPE_FP32", (1,))
NOVELTY = Tensor("NOVELTY", "TYPE_FP32", (1,))
OUTPUTS = [ANOMALY_SCORE, NOVELTY]


def name(product: Product) -> str:
    return product.model(ROLE)


def module(product: Product, cnn=None, feature_mean=0.0, feature_std=1.0, centres=None, scale=1.0, threshold=0.5):
    """The parent as served; without a CNN an untrained one."""
    import torch

    centres = torch.zeros(2, arch.CHANNELS[-1]) if centres is None else centres
    return arch.parent_module(cnn or arch.network(1, product.height, product.width, product.layout), feature_mean, feature_std,
                              centres, scale, threshold)


def declare(options: BuildOptions, product: Product) -> ModelDeclaration:
    image = arch.image_tensor(product)
    export = arch.untrained(name(product), lambda: module(product), image, [t.name for t in OUTPUTS])
    return arch.declare_classifier(name(product), image, OUTPUTS, export,
                                   f"parent of {product.model('inspection')}: normal (score < 0.5) or anomaly")
