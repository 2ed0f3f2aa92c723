"""What a benchmark step sends: one request to a route, or the same work done in-process.

Each factory returns a ``send()`` callable that does one inference of one image and is
safe to call from many threads at once.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

from builders import ensemble_dali_inception as ensemble
from builders import inception
from builders.in_process import DaliPreprocessor, inception_session
from clients.classify import encoded_batch
from clients.protocols import Route, infer

Send = Callable[[], object]


def ensemble_request(route: Route, image: bytes) -> Send:
    """The ensemble over a route: JPEG bytes in, scores out (server-side DALI)."""
    inputs = {ensemble.INPUT.name: encoded_batch([image])}
    return lambda: infer(route, ensemble.NAME, inputs, [ensemble.OUTPUT.name])


def _per_thread(factory: Callable[[], object]) -> Callable[[], object]:
    local = threading.local()

    def get():
        if not hasattr(local, "value"):
            local.value = factory()
        return local.value

    return get


def client_preprocessing_request(route: Route, image: bytes, repository: Path,
                                 model: str = "inception_onnx") -> Send:
    """DALI in the client, then the FP32 tensor (1 MiB per image) to the classifier alone."""
    preprocessor = _per_thread(lambda: DaliPreprocessor(repository, max_batch_size=1))
    return lambda: infer(route, model, {inception.INPUT.name: preprocessor()([image])}, [inception.OUTPUT.name])


def classifier_request(route: Route, repository: Path, image: bytes, model: str = "inception_onnx") -> Send:
    """The classifier alone over a route, on an image preprocessed once."""
    tensor = DaliPreprocessor(repository, max_batch_size=1)([image])
    return lambda: infer(route, model, {inception.INPUT.name: tensor}, [inception.OUTPUT.name])


def in_process_classifier(repository: Path, image: bytes) -> Send:
    """The same model.onnx in ONNX Runtime in this process, same input, same thread budget as the server."""
    session = inception_session(repository)
    tensor = DaliPreprocessor(repository, max_batch_size=1)([image])
    return lambda: session.run([inception.OUTPUT.name], {inception.INPUT.name: tensor})


def in_process_ensemble(repository: Path, image: bytes) -> Send:
    """DALI + ONNX Runtime in this process: what the ensemble does, without a server."""
    session = inception_session(repository)
    preprocessor = _per_thread(lambda: DaliPreprocessor(repository, max_batch_size=1))
    return lambda: session.run([inception.OUTPUT.name], {inception.INPUT.name: preprocessor()([image])})


def request_bytes(image: bytes) -> dict[str, int]:
    """Request body sizes of one JPEG as JSON and as binary+json (tritonclient builds both)."""
    from clients.protocols import sagemaker_body

    inputs = {ensemble.INPUT.name: encoded_batch([image])}
    return {"jpeg": len(image),
            "json": len(sagemaker_body(inputs, [ensemble.OUTPUT.name], binary=False)[0]),
            "binary+json": len(sagemaker_body(inputs, [ensemble.OUTPUT.name], binary=True)[0])}


def inspection_request(route: Route, product, image: bytes) -> Send:
    """A product's pipeline over a route: the photo in, every output out (the masks and Lookout's answer too)."""
    from builders import defect_inspection

    inputs = {defect_inspection.INPUT.name: encoded_batch([image])}
    names = [tensor.name for tensor in defect_inspection.outputs(product)]
    return lambda: infer(route, defect_inspection.name(product), inputs, names)


def in_process_inspection(repository: Path, product, image: bytes) -> Send:
    """The same pipeline in this process (``InProcessInspection``, one per thread: DALI is not thread-safe)."""
    from builders.in_process import InProcessInspection

    inspection = _per_thread(lambda: InProcessInspection(repository, product))
    return lambda: inspection().inspect([image])
