"""The ensemble ``ensemble_dali_inception``: JPEG bytes -> ``dali`` -> Inception V3 -> 1001 scores.

Same config on every target: the ensemble scheduler only names its steps.
"""
from __future__ import annotations

from builders import dali, inception
from builders.declaration import BuildOptions, EnsembleStep, ModelDeclaration, Serving, Tensor

NAME = "ensemble_dali_inception"
INPUT = Tensor("INPUT", "TYPE_UINT8", (-1,))
OUTPUT = Tensor("OUTPUT", "TYPE_FP32", (1001,), label_filename=inception.OUTPUT.label_filename)
PREPROCESSED = "preprocessed_image"


def declare(options: BuildOptions) -> ModelDeclaration:
    ensemble = Serving(platform="ensemble")
    steps = [
        EnsembleStep(dali.NAME, {dali.INPUT.name: INPUT.name}, {dali.OUTPUT.name: PREPROCESSED}),
        EnsembleStep(inception.model_name(options), {inception.INPUT.name: PREPROCESSED},
                     {inception.OUTPUT.name: OUTPUT.name}),
    ]
    return ModelDeclaration(name=NAME, inputs=[INPUT], outputs=[OUTPUT],
                            max_batch_size=min(dali.MAX_BATCH_SIZE, inception.MAX_BATCH_SIZE),
                            serving={"gpu": ensemble, "cpu": ensemble}, steps=steps,
                            model_files={OUTPUT.label_filename: ("\n".join(inception.labels()) + "\n").encode()})
