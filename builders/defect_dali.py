"""``defect_dali``: the DALI preprocessing of defect inspection, in the style of ``dali``.

Encoded image bytes in (``DALI_INPUT_0``); out ``DALI_OUTPUT_0`` FP32 [3, 240, 320] in
[-1, 1] (the board size, channels first as the ONNX classifiers take it) and
``DALI_OUTPUT_1`` INT64 [3], the image's own height, width and channels, so that the
router can refuse an image too small to inspect. ``gpu`` decodes with ``device="mixed"``
on Triton's DALI backend, ``cpu`` runs the same pipeline in the python-backend runner.
Training reads its images through this same pipeline (``defect_classifier.pipeline``).
"""
from __future__ import annotations

from functools import partial

from builders import dali
from builders.declaration import BuildOptions, ModelDeclaration, Tensor
from builders.defect_architecture import HEIGHT, IMAGE, WIDTH

NAME = "defect_dali"
INPUT = dali.INPUT
OUTPUT = Tensor("DALI_OUTPUT_0", IMAGE.data_type, IMAGE.dims)
SHAPE = Tensor("DALI_OUTPUT_1", "TYPE_INT64", (3,))

pipeline = partial(dali.preprocessing_pipeline, size=(HEIGHT, WIDTH), layout="CHW", with_shape=True)


def declare(options: BuildOptions) -> ModelDeclaration:
    return dali.declare_pipeline(NAME, [OUTPUT, SHAPE], pipeline)
