"""``<product>_child``: which of the product's classes an anomalous image shows (multi-label).

Input ``IMAGE`` FP32 [3, H, W] in [-1, 1]; output ``MISSING_SCORES`` FP32 [classes]: per
class of the product (``classes.txt``, the colour map's order, background excluded), a
score >= 0.5 when the class is found: a missing component, or a defect such as a crack.
(The name stays from the first product, a board with missing parts, for existing
clients.) ``<product>_router`` calls it only for anomalies. A product without classes
(a Lookout dataset without masks) has no child. Trained by ``python -m defect_classifier
train``; version 1 is untrained.
"""
from __future__ import annotations

from builders import defect_architecture as arch
from builders.declaration import BuildOptions, ModelDeclaration, Tensor
from products import Product

ROLE = "child"
LABEL_FILE = "classes.txt"
SCORES_NAME = "MISSING_SCORES"


def name(product: Product) -> str:
    return product.model(ROLE)


def scores(product: Product) -> Tensor:
    return Tensor(SCORES_NAME, "TYPE_FP32", (len(product.classes),), label_filename=LABEL_FILE)


def label_files(product: Product) -> dict[str, bytes]:
    """``label_filename`` is per model: the child, the router and the pipeline each carry it."""
    return {LABEL_FILE: ("\n".join(product.class_names) + "\n").encode()} if product.classes else {}


def module(product: Product, cnn=None, thresholds=0.5):
    """The child as served; without a CNN an untrained one."""
    return arch.child_module(cnn or arch.network(len(product.classes), product.height, product.width, product.layout), thresholds)


def declare(options: BuildOptions, product: Product) -> ModelDeclaration:
    image = arch.image_tensor(product)
    export = arch.untrained(name(product), lambda: module(product), image, [SCORES_NAME])
    return arch.declare_classifier(name(product), image, [scores(product)], export,
                                   f"child of {product.model('inspection')}: the classes an anomaly shows",
                                   label_files(product))
