"""The ensembles' work without Triton, in-process: the references that tests compare the
served ensembles with, and that benchmarks time them against. Each applies its
ensemble's guard limits first, as the served ensemble does.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from builders import (dali, defect_architecture, defect_dali, defect_inspection, defect_parent, defect_router,
                      ensemble_dali_inception, ensemble_lama, inception, lama)
from products import Product
from builders.config import parse
from builders.declaration import BuildOptions
from builders.runners import defect_routing, lama_processing
from model_versions.repository import served_version


class DaliPreprocessor:
    """A built ``model.dali`` in-process. One per thread: a DALI pipeline is not thread-safe."""

    def __init__(self, repository: Path, max_batch_size: int = dali.MAX_BATCH_SIZE,
                 num_threads: int = dali.NUM_THREADS, model: str = dali.NAME):
        from nvidia.dali import Pipeline

        self.max_batch_size = max_batch_size
        self.pipeline = Pipeline.deserialize(filename=str(Path(repository) / model / "1" / "model.dali"),
                                             batch_size=max_batch_size, num_threads=num_threads, device_id=None)
        self.pipeline.build()

    def outputs(self, images: list[bytes]) -> list[np.ndarray]:
        """Every output of the pipeline, batched (at most ``max_batch_size`` images)."""
        self.pipeline.feed_input(dali.INPUT.name, [np.frombuffer(image, dtype=np.uint8) for image in images])
        return [output.as_array() for output in self.pipeline.run()]

    def __call__(self, images: list[bytes]) -> np.ndarray:
        return self.outputs(images)[0]


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
        ensemble_dali_inception.GUARD.limits.check_batch(ensemble_dali_inception.INPUT.name, images)
        return self.session.run([inception.OUTPUT.name], {inception.INPUT.name: self.preprocess(images)})[0]


class InProcessLama:
    """``ensemble_lama`` without Triton: the eager PyTorch generator between the same pre/post steps."""

    def __init__(self, options: BuildOptions | None = None):
        self.model = lama.inpainter(options or BuildOptions())

    def inpaint(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """uint8 HxWx3 image, uint8 HxW mask -> uint8 HxWx3."""
        import torch

        height, width = image.shape[:2]
        ensemble_lama.GUARD.limits.check_size(width, height, f"the image (input {ensemble_lama.IMAGE.name})")
        planar, hole, size = lama_processing.prepare(image, mask[..., None])
        with torch.no_grad():
            inpainted = self.model(torch.from_numpy(planar)[None], torch.from_numpy(hole)[None])[0].numpy()
        return lama_processing.finish(inpainted, size)


class InProcessInspection:
    """A product's ``<product>_inspection`` without Triton: its DALI model, the served ONNX versions of the
    models its router reads, and the router's decision code with the rules of the router's config."""

    def __init__(self, repository: Path, product: Product, num_threads: int = dali.NUM_THREADS):
        self.product = product
        router = parse((Path(repository) / defect_router.name(product) / "config.pbtxt").read_text())
        self.thresholds = defect_routing.Rules({key: value.string_value for key, value in router.parameters.items()})
        self.preprocess = DaliPreprocessor(repository, defect_architecture.MAX_BATCH_SIZE, num_threads,
                                           model=defect_dali.name(product))
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        self.sessions = {}
        for name in defect_router.models_before(product):
            model_dir = Path(repository) / name
            onnx = model_dir / str(served_version(model_dir)) / "model.onnx"
            self.sessions[name] = ort.InferenceSession(str(onnx), options, providers=["CPUExecutionProvider"])

    def run(self, model: str, images: np.ndarray) -> dict[str, np.ndarray]:
        """The outputs of ``model`` that the router reads, by name, for preprocessed images."""
        names = [output.name for name, output, _ in defect_router.wiring(self.product) if name == model]
        return dict(zip(names, self.sessions[model].run(names, {defect_architecture.IMAGE_NAME: images})))

    def parent(self, images: np.ndarray) -> list[np.ndarray]:
        """The parent's (anomaly scores, novelty) for preprocessed images."""
        return list(self.run(defect_parent.name(self.product), images).values())

    def models(self, images: np.ndarray) -> list[np.ndarray]:
        """What the router reads, in its inputs' order: each model once on every image, as the ensemble runs them."""
        answers = {model: self.run(model, images) for model in self.sessions}
        return [answers[model][output.name] for model, output, _ in defect_router.wiring(self.product)]

    def inspect(self, images: list[bytes]) -> dict[str, np.ndarray]:
        """The pipeline's outputs by name, for encoded images (of one size, as one served request must be)."""
        defect_inspection.guard(self.product).limits.check_batch(defect_inspection.INPUT.name, images)
        image, shape = self.preprocess.outputs(images)
        outputs = defect_routing.decide(self.thresholds, shape, *self.models(image))
        return {tensor.name: np.stack(values) for tensor, values in zip(defect_inspection.outputs(self.product), outputs)}
