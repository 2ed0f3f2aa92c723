"""The ensemble's work without Triton: the built ``model.dali`` and ``model.onnx`` run in-process.

The reference that tests compare the served ensemble with, and that benchmarks time it against.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from builders import dali, inception


class InProcessEnsemble:
    def __init__(self, repository: Path, max_batch_size: int = dali.MAX_BATCH_SIZE,
                 num_threads: int = dali.NUM_THREADS):
        from nvidia.dali import Pipeline

        self.pipeline = Pipeline.deserialize(filename=str(Path(repository) / dali.NAME / "1" / "model.dali"),
                                             batch_size=max_batch_size, num_threads=num_threads, device_id=None)
        self.pipeline.build()
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        self.session = ort.InferenceSession(str(Path(repository) / "inception_onnx" / "1" / "model.onnx"),
                                            options, providers=["CPUExecutionProvider"])

    def preprocess(self, images: list[bytes]) -> np.ndarray:
        self.pipeline.feed_input(dali.INPUT.name, [np.frombuffer(image, dtype=np.uint8) for image in images])
        (output,) = self.pipeline.run()
        return output.as_array()

    def classify(self, images: list[bytes]) -> np.ndarray:
        return self.session.run([inception.OUTPUT.name], {inception.INPUT.name: self.preprocess(images)})[0]
