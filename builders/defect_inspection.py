"""The pipeline ``defect_inspection``: encoded image bytes -> ``defect_guard`` -> ``defect_dali`` -> ``defect_router``.

Like ``ensemble_dali_inception``, an ensemble whose guard measures the image by its
header (``builders/image_guard.py``) before DALI decodes it; its last step
routes through ``defect_parent`` and, for anomalies only, ``defect_child``. Outputs:
``ANOMALY_SCORE``, ``LABEL``, ``MISSING_SCORES`` (labelled with the component classes),
``LOW_CONFIDENCE``.
"""
from __future__ import annotations

from builders import defect_architecture as arch
from builders import defect_child, defect_dali, defect_router
from builders.declaration import BuildOptions, EnsembleStep, ModelDeclaration, Serving, Tensor
from builders.image_guard import ImageGuard

NAME = "defect_inspection"
INPUT = Tensor("INPUT", "TYPE_UINT8", (-1,))
OUTPUTS = defect_router.OUTPUTS
# Boards are inspected at 320x240, so a bigger photo adds nothing but decoding cost. As for
# classification, 4096x4096 (16.8 MP) takes a 12 MP camera's photo; decoded, 48 MiB of RGB
# each, a full batch of 16 about 0.75 GiB.
GUARD = ImageGuard("defect_guard", (INPUT,), max_pixels=4096 * 4096, max_batch_size=arch.MAX_BATCH_SIZE)


def declare(options: BuildOptions) -> ModelDeclaration:
    ensemble = Serving(platform="ensemble")
    steps = [
        GUARD.step(),
        EnsembleStep(defect_dali.NAME, {defect_dali.INPUT.name: GUARD.checked(INPUT)},
                     {defect_dali.OUTPUT.name: "preprocessed_image", defect_dali.SHAPE.name: "original_shape"}),
        EnsembleStep(defect_router.NAME, {arch.IMAGE.name: "preprocessed_image",
                                          defect_router.SHAPE.name: "original_shape"},
                     {tensor.name: tensor.name for tensor in OUTPUTS}),
    ]
    return ModelDeclaration(name=NAME, inputs=[INPUT], outputs=OUTPUTS, max_batch_size=arch.MAX_BATCH_SIZE,
                            serving={"gpu": ensemble, "cpu": ensemble}, steps=steps,
                            model_files=defect_child.LABEL_FILES)
