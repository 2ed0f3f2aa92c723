"""``defect_router``: the business-logic step of ``defect_inspection`` (python backend, both targets).

Triton ensembles cannot branch, so this step calls the models itself (BLS): the parent
for every image, the child only for the images the parent calls anomalies. It refuses
images under ``min_side`` pixels (a 400 naming the size) and flags low confidence when
the parent's ``NOVELTY`` is over ``novelty_threshold`` (not a board like the training
boards) or its score is within ``uncertain_margin`` of the threshold. The models it
calls are named in ``bls_models``, which SageMaker packaging reads to load them under
explicit model control.

Outputs, in this order: ``ANOMALY_SCORE`` FP32 [1], ``LABEL`` BYTES [1] (normal or
anomaly), ``MISSING_SCORES`` FP32 [classes] (zeros when the child was not called),
``LOW_CONFIDENCE`` BOOL [1].
"""
from __future__ import annotations

from builders import defect_architecture as arch
from builders import defect_child, defect_parent
from builders.declaration import BuildOptions, ModelDeclaration, Serving, Tensor

NAME = "defect_router"
SHAPE = Tensor("ORIGINAL_SHAPE", "TYPE_INT64", (3,))
LABEL = Tensor("LABEL", "TYPE_STRING", (1,))
LOW_CONFIDENCE = Tensor("LOW_CONFIDENCE", "TYPE_BOOL", (1,))
OUTPUTS = [defect_parent.ANOMALY_SCORE, LABEL, defect_child.MISSING_SCORES, LOW_CONFIDENCE]
PARAMETERS = {
    "bls_models": f"{defect_parent.NAME},{defect_child.NAME}",
    "parent": defect_parent.NAME, "child": defect_child.NAME, "image": arch.IMAGE.name,
    "anomaly_score": defect_parent.ANOMALY_SCORE.name, "novelty": defect_parent.NOVELTY.name,
    "missing_scores": defect_child.MISSING_SCORES.name,
    "anomaly_threshold": "0.5", "uncertain_margin": "0.3", "novelty_threshold": "1.0", "min_side": "32",
}
STEP = Serving(backend="python", instance_kind="KIND_CPU", runner="defect_router_step",
               helpers=("batching", "defect_routing"))


def declare(options: BuildOptions) -> ModelDeclaration:
    return ModelDeclaration(name=NAME, inputs=[arch.IMAGE, SHAPE], outputs=OUTPUTS, max_batch_size=arch.MAX_BATCH_SIZE,
                            serving={"gpu": STEP, "cpu": STEP}, dynamic_batching_delay_us=500, parameters=PARAMETERS,
                            model_files=defect_child.LABEL_FILES)
