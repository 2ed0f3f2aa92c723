"""``<product>_segmenter``: where a defect is and what it is, a class per pixel.

Input ``IMAGE`` FP32 [3, H, W] in [-1, 1] (``<product>_dali``'s output, as the parent's);
output ``PIXEL_CLASSES`` UINT8 [H, W] at the product's input size: 0 for background, i for
the product's i-th class (``classes.txt``, the colour map's order). The pipeline scales it
to the photo's own size and paints it in the product's colours. A product without
classes (a Lookout dataset without masks) has no segmenter, as it has no child. Trained
by ``python -m defect_classifier train`` from the masks of the dataset; version 1 is
untrained. The network: ``defect_architecture.segmentation_network``.
"""
from __future__ import annotations

from builders import defect_architecture as arch
from builders import defect_child
from builders.declaration import BuildOptions, ModelDeclaration, Tensor
from products import Product

ROLE = "segmenter"
PIXEL_CLASSES_NAME = "PIXEL_CLASSES"


def name(product: Product) -> str:
    return product.model(ROLE)


def pixel_classes(product: Product) -> Tensor:
    return Tensor(PIXEL_CLASSES_NAME, "TYPE_UINT8", (product.height, product.width))


def module(product: Product, network=None):
    """The segmenter as served (logits -> class index per pixel); without a network an untrained one."""
    return arch.segmenter_module(network or arch.segmentation_network(len(product.classes) + 1, product.layout))


def declare(options: BuildOptions, product: Product) -> ModelDeclaration:
    image = arch.image_tensor(product)
    export = arch.untrained(name(product), lambda: module(product), image, [PIXEL_CLASSES_NAME])
    return arch.declare_classifier(name(product), image, [pixel_classes(product)], export,
                                   f"segmenter of {product.model('inspection')}: a class per pixel, 0 background",
                                   defect_child.label_files(product))
