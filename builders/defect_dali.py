"""``<product>_dali``: the DALI preprocessing of a product's inspection, in the style of ``dali``.

Encoded image bytes in (``DALI_INPUT_0``); out ``DALI_OUTPUT_0`` FP32 [3, H, W] in
[-1, 1] at the product's input size (its ``product.json``), channels first as the ONNX
classifiers take it, and ``DALI_OUTPUT_1`` INT64 [3], the image's own height, width and
channels, so that the router can refuse an image too small to inspect. ``gpu`` decodes
with ``device="mixed"`` on Triton's DALI backend, ``cpu`` runs the same pipeline in the
python-backend runner. Training reads its images through this same pipeline.
"""
from __future__ import annotations

from functools import partial

from builders import dali
from builders.declaration import BuildOptions, ModelDeclaration, Tensor
from builders.defect_architecture import image_tensor
from products import Product

ROLE = "dali"
INPUT = dali.INPUT
SHAPE = Tensor("DALI_OUTPUT_1", "TYPE_INT64", (3,))


def name(product: Product) -> str:
    return product.model(ROLE)


def output(product: Product) -> Tensor:
    image = image_tensor(product)
    return Tensor("DALI_OUTPUT_0", image.data_type, image.dims)


def declare(options: BuildOptions, product: Product) -> ModelDeclaration:
    pipeline = partial(dali.preprocessing_pipeline, size=(product.height, product.width), layout="CHW",
                       with_shape=True)
    return dali.declare_pipeline(name(product), [output(product), SHAPE], pipeline)
