"""The pipeline ``defect_inspection``: encoded image bytes -> ``defect_dali`` -> ``defect_router``.

Like ``ensemble_dali_inception``, an ensemble whose first step is DALI; its second step
routes through ``defect_parent`` and, for anomalies only, ``defect_child``. Outputs:
``ANOMALY_SCORE``, ``LABEL``, ``MISSING_SCORES`` (labelled with the component classes),
``LOW_CONFIDENCE``.
"""
from __future__ import annotations

from builders import defect_architecture as arch
from builders import defect_child, defect_dali, defect_router
from builders.declaration import BuildOptions, EnsembleStep, ModelDeclaration, Serving, Tensor

NAME = "defect_inspection"
INPUT = Tensor("INPUT", "TYPE_UINT8", (-1,))
OUTPUTS = defect_router.OUTPUTS


def declare(options: BuildOptions) -> ModelDeclaration:
    ensemble = Serving(platform="ensemble")
    steps = [
        EnsembleStep(defect_dali.NAME, {defect_dali.INPUT.name: INPUT.name},
                     {defect_dali.OUTPUT.name: "preprocessed_image", defect_dali.SHAPE.name: "original_shape"}),
        EnsembleStep(defect_router.NAME, {arch.IMAGE.name: "preprocessed_image",
                                          defect_router.SHAPE.name: "original_shape"},
                     {tensor.name: tensor.name for tensor in OUTPUTS}),
    ]
    return ModelDeclaration(name=NAME, inputs=[INPUT], outputs=OUTPUTS, max_batch_size=arch.MAX_BATCH_SIZE,
                            serving={"gpu": ensemble, "cpu": ensemble}, steps=steps,
                            model_files=defect_child.LABEL_FILES)
