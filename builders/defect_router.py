"""``<product>_router``: the business-logic step of a product's inspection (python backend, both targets).

Triton ensembles cannot branch, so this step calls the models itself (BLS): the parent
for every image, the child only for the images the parent calls anomalies (and never for
a product without classes). It refuses images under ``min_side`` pixels (a 400 naming the
size) and flags low confidence when the parent's ``NOVELTY`` is over
``novelty_threshold`` (not like the training images) or its score is within
``uncertain_margin`` of 0.5 (the version's own threshold, folded into its scores). The
models it calls are named in ``bls_models``, which SageMaker packaging reads to load
them under explicit model control.

Outputs, in this order: ``ANOMALY_SCORE`` FP32 [1], ``LABEL`` BYTES [1] (normal or
anomaly), ``MISSING_SCORES`` FP32 [classes] (zeros when the child was not called; absent
for a product without classes), ``LOW_CONFIDENCE`` BOOL [1].
"""
from __future__ import annotations

from builders import defect_architecture as arch
from builders import defect_child, defect_parent
from builders.declaration import BuildOptions, ModelDeclaration, Serving, Tensor
from products import Product

ROLE = "router"
SHAPE = Tensor("ORIGINAL_SHAPE", "TYPE_INT64", (3,))
LABEL = Tensor("LABEL", "TYPE_STRING", (1,))
LOW_CONFIDENCE = Tensor("LOW_CONFIDENCE", "TYPE_BOOL", (1,))
THRESHOLDS = {"anomaly_threshold": "0.5", "uncertain_margin": "0.3", "novelty_threshold": "1.0", "min_side": "32"}
STEP = Serving(backend="python", instance_kind="KIND_CPU", runner="defect_router_step",
               helpers=("batching", "defect_routing"))


def name(product: Product) -> str:
    return product.model(ROLE)


def outputs(product: Product) -> list[Tensor]:
    scores = [defect_child.scores(product)] if product.classes else []
    return [defect_parent.ANOMALY_SCORE, LABEL, *scores, LOW_CONFIDENCE]


def called_models(product: Product) -> list[str]:
    """The models this step calls through BLS."""
    return [defect_parent.name(product), *([defect_child.name(product)] if product.classes else [])]


def parameters(product: Product) -> dict[str, str]:
    child = {"child": defect_child.name(product), "missing_scores": defect_child.SCORES_NAME} if product.classes else {}
    return {"bls_models": ",".join(called_models(product)), "parent": defect_parent.name(product),
            "image": arch.IMAGE_NAME, "anomaly_score": defect_parent.ANOMALY_SCORE.name,
            "novelty": defect_parent.NOVELTY.name, **child, **THRESHOLDS}


def declare(options: BuildOptions, product: Product) -> ModelDeclaration:
    return ModelDeclaration(name=name(product), inputs=[arch.image_tensor(product), SHAPE], outputs=outputs(product),
                            max_batch_size=arch.MAX_BATCH_SIZE, serving={"gpu": STEP, "cpu": STEP},
                            dynamic_batching_delay_us=500, parameters=parameters(product),
                            model_files=defect_child.label_files(product))
