"""``<product>_router``: the decision step of a product's inspection (python backend, both targets).

The pipeline's last step. The product's parent, child and segmenter have already run on
every image, side by side in the ensemble: this step calls no model itself (no BLS), so
it adds no hops. It refuses images under ``min_side`` pixels (a 400 naming the size),
decides (``runners/defect_routing.py``: the thresholds and Lookout's rules) and builds
the answer. Low confidence: the parent's ``NOVELTY`` over ``novelty_threshold`` (not like
the training images), or its score within ``uncertain_margin`` of 0.5 (the version's own
threshold, folded into its scores).

Lookout's decision rules come from the product definition (``python -m products rules``,
kept in the pipeline's ``product.json``, so a rebuild keeps them) as config parameters:
``min_confidence``, an anomaly whose ``Confidence`` is under it is answered as normal;
``min_area``, a JSON object ``{"<class>": share}``, a class covering less of the image
than its share is painted background and left out of ``Anomalies``. A normal image gets
zero class scores, an all-background mask and only the background entry.

Outputs, in this order: ``ANOMALY_SCORE`` FP32 [1], ``LABEL`` BYTES [1] (normal or
anomaly), ``LOW_CONFIDENCE`` BOOL [1], ``LOOKOUT`` BYTES [1] (Lookout's DetectAnomalies
answer as JSON, see docs/lookout-answer.md); for a product with classes also
``MISSING_SCORES`` FP32 [classes], ``MASK`` UINT8 [height, width] (the class index per
pixel at the photo's own size), ``MASK_PNG`` BYTES [1] (the mask in the product's
colours) and ``AREAS`` FP32 [1 + classes] (the share of the photo's pixels per class,
background first).
"""
from __future__ import annotations

import json
from dataclasses import replace

from builders import defect_architecture as arch
from builders import defect_child, defect_parent, defect_segmenter
from builders.declaration import BuildOptions, ModelDeclaration, Serving, Tensor
from products import Product

ROLE = "router"
SHAPE = Tensor("ORIGINAL_SHAPE", "TYPE_INT64", (3,))
LABEL = Tensor("LABEL", "TYPE_STRING", (1,))
LOW_CONFIDENCE = Tensor("LOW_CONFIDENCE", "TYPE_BOOL", (1,))
LOOKOUT = Tensor("LOOKOUT", "TYPE_STRING", (1,))
MASK = Tensor("MASK", "TYPE_UINT8", (-1, -1))
MASK_PNG = Tensor("MASK_PNG", "TYPE_STRING", (1,))
THRESHOLDS = {"anomaly_threshold": "0.5", "uncertain_margin": "0.3", "novelty_threshold": "1.0", "min_side": "32"}
STEP = Serving(backend="python", instance_kind="KIND_CPU", runner="defect_router_step",
               helpers=("batching", "defect_routing"))


def name(product: Product) -> str:
    return product.model(ROLE)


def areas(product: Product) -> Tensor:
    return Tensor("AREAS", "TYPE_FP32", (1 + len(product.classes),))


def outputs(product: Product) -> list[Tensor]:
    where = [defect_child.scores(product), MASK, MASK_PNG, areas(product)] if product.classes else []
    return [defect_parent.ANOMALY_SCORE, LABEL, LOW_CONFIDENCE, LOOKOUT, *where]


def wiring(product: Product) -> list[tuple[str, Tensor, Tensor]]:
    """(model, its output, this step's input for it, e.g. ``PARENT_NOVELTY``) for each model output this
    step reads, in its inputs' order."""
    reads = [(defect_parent, tensor) for tensor in defect_parent.OUTPUTS]
    if product.classes:
        reads += [(defect_child, defect_child.scores(product)),
                  (defect_segmenter, defect_segmenter.pixel_classes(product))]
    return [(module.name(product), tensor, replace(tensor, name=f"{module.ROLE.upper()}_{tensor.name}",
                                                   label_filename="")) for module, tensor in reads]


def inputs(product: Product) -> list[Tensor]:
    return [SHAPE, *(step_input for _, _, step_input in wiring(product))]


def models_before(product: Product) -> list[str]:
    """The models whose outputs this step reads, each run once on every image."""
    return list(dict.fromkeys(model for model, _, _ in wiring(product)))


def rule_parameters(min_confidence: float = 0.0,
                    min_area: dict[str, float] | None = None) -> dict[str, str]:
    """Lookout's decision rules as config parameters (see the module's docstring)."""
    return {"min_confidence": repr(float(min_confidence)),
            "min_area": json.dumps({key: float(value) for key, value in (min_area or {}).items()})}


def parameters(product: Product) -> dict[str, str]:
    return {"color_map": json.dumps(product.color_map), **THRESHOLDS,
            **rule_parameters(product.min_confidence, dict(product.min_area))}


def declare(options: BuildOptions, product: Product) -> ModelDeclaration:
    return ModelDeclaration(name=name(product), inputs=inputs(product), outputs=outputs(product),
                            max_batch_size=arch.MAX_BATCH_SIZE, serving={"gpu": STEP, "cpu": STEP},
                            dynamic_batching_delay_us=500, parameters=parameters(product),
                            model_files=defect_child.label_files(product))
