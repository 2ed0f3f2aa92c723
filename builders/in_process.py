"""The ensembles' work without Triton, in-process: the references that tests compare the
served ensembles with, and that benchmarks time them against.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from builders import dali, inception, lama, lama_prepare
from builders.declaration import BuildOptions
from builders.runners import lama_processing


class DaliPreprocessor:
    """The built ``model.dali`` in-process. One per thread: a DALI pipeline is not thread-safe."""

    def __init__(self, repository: Path, max_batch_size: int = dali.MAX_BATCH_SIZE,
                 num_threads: int = dali.NUM_THREADS):
        from nvidia.dali import Pipeline

        self.pipeline = Pipeline.deserialize(filename=str(Path(repository) / dali.NAME / "1" / "model.dali"),
                                             batch_size=max_batch_size, num_threads=num_threads, device_id=None)
        self.pipeline.build()

    def __call__(self, images: list[bytes]) -> np.ndarray:
        self.pipeline.feed_input(dali.INPUT.name, [np.frombuffer(image, dtype=np.uint8) for image in images])
        (output,) = self.pipeline.run()
        return output.as_array()


def inception_session(repository: Path, num_threads: int = dali.NUM_THREADS) -> ort.InferenceSession:
    """The built Inception ``model.onnx`` in ONNX Runtime (thread-safe: one serves many threads)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    return ort.InferenceSession(str(Path(repository) / "inception_onnx" / "1" / "model.onnx"), options,
                                providers=["CPUExecutionProvider"])


class InProcessEnsemble:
    """``ensemble_dali_inception`` without Triton: the same DALI pipeline, then the same ONNX model."""

    def __init__(self, repository: Path, max_batch_size: int = dali.MAX_BATCH_SIZE,
                 num_threads: int = dali.NUM_THREADS):
        self.preprocess = DaliPreprocessor(repository, max_batch_size, num_threads)
        self.session = inception_session(repository, num_threads)

    def classify(self, images: list[bytes]) -> np.ndarray:
        return self.session.run([inception.OUTPUT.name], {inception.INPUT.name: self.preprocess(images)})[0]


class InProcessLama:
    """``ensemble_lama`` without Triton: the eager PyTorch generator between the same pre/post steps."""

    def __init__(self, options: BuildOptions | None = None):
        self.model = lama.inpainter(options or BuildOptions())

    def inpaint(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """uint8 HxWx3 image, uint8 HxW mask -> uint8 HxWx3."""
        import torch

        planar, hole, size = lama_processing.prepare(image, mask[..., None], lama_prepare.MAX_SIDE)
        with torch.no_grad():
            inpainted = self.model(torch.from_numpy(planar)[None], torch.from_numpy(hole)[None])[0].numpy()
        return lama_processing.finish(inpainted, size)
