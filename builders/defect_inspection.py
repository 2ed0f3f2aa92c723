"""A product's pipeline ``<product>_inspection``: image bytes -> guard -> ``<product>_dali`` -> the product's
models side by side -> ``<product>_router``.

Like ``ensemble_dali_inception``, an ensemble whose guard measures the image by its
header (``builders/image_guard.py``) before DALI decodes it. DALI's image goes to the
parent, and for a product with classes to the child and the segmenter too, as parallel
steps on every image; the router decides on their answers (``builders/defect_router.py``).
No step calls another model itself (BLS): on a served pipeline the hops cost more than
the models (docs/benchmarks/2026-12-02-defect-speed). Outputs: the router's.
The pipeline's folder carries the product's ``product.json``: a rebuild finds the
products a repository serves there, and a SageMaker archive carries what it inspects.
"""
from __future__ import annotations

from builders import defect_architecture as arch
from builders import defect_child, defect_dali, defect_router
from builders.declaration import BuildOptions, EnsembleStep, ModelDeclaration, Serving, Tensor
from builders.image_guard import ImageGuard
from products import Product
from products.definition import FILE as PRODUCT_FILE
from products.store import PIPELINE_ROLE

ROLE = PIPELINE_ROLE
INPUT = Tensor("INPUT", "TYPE_UINT8", (-1,))
# Products are inspected at a few hundred pixels, so a bigger photo adds nothing but decoding
# cost. As for classification, 4096x4096 (16.8 MP) takes a 12 MP camera's photo (and Lookout's
# 4096-pixel limit); decoded, 48 MiB of RGB each, a full batch of 16 about 0.75 GiB.
MAX_PIXELS = 4096 * 4096


def name(product: Product) -> str:
    return product.model(ROLE)


def guard(product: Product) -> ImageGuard:
    return ImageGuard(product.model("guard"), (INPUT,), max_pixels=MAX_PIXELS, max_batch_size=arch.MAX_BATCH_SIZE)


def outputs(product: Product) -> list[Tensor]:
    return defect_router.outputs(product)


def models(product: Product) -> list[str]:
    """Every model of the product's pipeline, the pipeline last."""
    return [guard(product).name, defect_dali.name(product), *defect_router.models_before(product),
            defect_router.name(product), name(product)]


def model_steps(product: Product) -> list[EnsembleStep]:
    """The parent (and child and segmenter) on DALI's image, each output under the router's input name."""
    wires = {}
    for model, output, router_input in defect_router.wiring(product):
        wires.setdefault(model, {})[output.name] = router_input.name
    return [EnsembleStep(model, {arch.IMAGE_NAME: "preprocessed_image"}, output_map) for model, output_map in
            wires.items()]


def declare(options: BuildOptions, product: Product) -> ModelDeclaration:
    ensemble = Serving(platform="ensemble")
    checker = guard(product)
    router_inputs = [tensor.name for tensor in defect_router.inputs(product)[1:]]
    steps = [
        checker.step(),
        EnsembleStep(defect_dali.name(product), {defect_dali.INPUT.name: checker.checked(INPUT)},
                     {defect_dali.output(product).name: "preprocessed_image", defect_dali.SHAPE.name: "original_shape"}),
        *model_steps(product),
        EnsembleStep(defect_router.name(product), {defect_router.SHAPE.name: "original_shape",
                                                   **{tensor: tensor for tensor in router_inputs}},
                     {tensor.name: tensor.name for tensor in outputs(product)}),
    ]
    return ModelDeclaration(name=name(product), inputs=[INPUT], outputs=outputs(product),
                            max_batch_size=arch.MAX_BATCH_SIZE, serving={"gpu": ensemble, "cpu": ensemble},
                            steps=steps, model_files={**defect_child.label_files(product),
                                                      PRODUCT_FILE: product.to_json().encode()})
