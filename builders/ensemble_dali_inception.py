"""The ensemble ``ensemble_dali_inception``: JPEG bytes -> ``dali_guard`` -> ``dali`` -> Inception V3 -> 1001 scores.

``dali_guard`` refuses an image whose header declares too many pixels before ``dali``
decodes it (``builders/image_guard.py``). Same config on every target: the ensemble
scheduler only names its steps.
"""
from __future__ import annotations

from builders import dali, inception
from builders.declaration import BuildOptions, EnsembleStep, ModelDeclaration, Serving, Tensor
from builders.image_guard import ImageGuard

NAME = "ensemble_dali_inception"
INPUT = Tensor("INPUT", "TYPE_UINT8", (-1,))
OUTPUT = Tensor("OUTPUT", "TYPE_FP32", (1001,), label_filename=inception.OUTPUT.label_filename)
PREPROCESSED = "preprocessed_image"
# 4096x4096 (16.8 MP) takes a 12 MP phone photo (4032x3024) and a 4K frame. Inception sees
# 299x299 whatever comes in, so bigger images only cost decoding: 48 MiB of RGB each, a
# full batch of 64 about 3 GiB of (GPU) memory, which a 16 GB card still holds beside the model.
GUARD = ImageGuard("dali_guard", (INPUT,), max_pixels=4096 * 4096,
                   max_batch_size=min(dali.MAX_BATCH_SIZE, inception.MAX_BATCH_SIZE))


def declare(options: BuildOptions) -> ModelDeclaration:
    ensemble = Serving(platform="ensemble")
    steps = [
        GUARD.step(),
        EnsembleStep(dali.NAME, {dali.INPUT.name: GUARD.checked(INPUT)}, {dali.OUTPUT.name: PREPROCESSED}),
        EnsembleStep(inception.model_name(options), {inception.INPUT.name: PREPROCESSED},
                     {inception.OUTPUT.name: OUTPUT.name}),
    ]
    return ModelDeclaration(name=NAME, inputs=[INPUT], outputs=[OUTPUT],
                            max_batch_size=GUARD.max_batch_size,
                            serving={"gpu": ensemble, "cpu": ensemble}, steps=steps,
                            model_files={OUTPUT.label_filename: ("\n".join(inception.labels()) + "\n").encode()})
