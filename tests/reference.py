"""In-process reference: the same DALI pipeline and the same ONNX model, without Triton."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from builders import dali, inception


def preprocess(images: list[bytes]) -> np.ndarray:
    pipeline = dali.preprocessing_pipeline("cpu", batch_size=len(images))
    pipeline.build()
    pipeline.feed_input(dali.INPUT.name, [np.frombuffer(image, dtype=np.uint8) for image in images])
    (output,) = pipeline.run()
    return output.as_array()


def classify(repository: Path, images: list[bytes]) -> np.ndarray:
    session = ort.InferenceSession(str(repository / "inception_onnx" / "1" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    return session.run([inception.OUTPUT.name], {inception.INPUT.name: preprocess(images)})[0]
