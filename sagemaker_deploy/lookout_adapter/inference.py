"""Lookout for Vision's DetectAnomalies on a SageMaker serial inference pipeline: the adapter containers' code.

The pipeline is ``[request adapter, Triton, answer adapter]`` (``sagemaker_deploy/serial_pipeline.py``);
both adapters run this file on a prebuilt SageMaker framework image, under the SageMaker
inference toolkit's handler contract (``model_fn`` once, then ``input_fn`` -> ``predict_fn`` ->
``output_fn`` per request). The container's ``Environment`` says which adapter it is and
names the tensors (the deploy takes them from the pipeline's declaration):

- ``LOOKOUT_ADAPTER_ROLE=request``: the client's image bytes (``image/jpeg`` or ``image/png``)
  become a binary+json request for Triton's ``/invocations``: ``LOOKOUT_INPUT`` UINT8 [1, bytes],
  asking for ``LOOKOUT_OUTPUT`` as JSON;
- ``LOOKOUT_ADAPTER_ROLE=answer``: Triton's answer becomes Lookout's bare JSON, ``{"DetectAnomalyResult": ...}``.

A refused request raises the toolkit's ``GenericInferenceToolkitError``: the toolkit answers
with its status (any other exception is its 500) and SageMaker returns that as a ModelError.

In a Batch Transform job (``LOOKOUT_BATCH=1`` in the job's ``Environment``) one container error
would fail the whole job, so the request adapter refuses a record without an error status: it
checks the bytes itself (a JPEG or PNG by signature, whatever the job's one ContentType says;
within ``LOOKOUT_MAX_PIXELS``, no side under ``LOOKOUT_MIN_SIDE``; decodable), and a refused record goes on to Triton as a small
placeholder image whose request ``id`` carries the reason (Triton echoes the id); the answer
adapter then answers 200 with ``{"Error": {"Code", "Message"}}`` instead of the Lookout JSON.
"""
from __future__ import annotations

import io
import json
import os

import numpy as np
import tritonclient.http as httpclient

try:
    from sagemaker_inference.errors import GenericInferenceToolkitError
except ImportError:  # outside a framework image: local_server.handler_host keeps the toolkit's rule
    class GenericInferenceToolkitError(Exception):
        """The toolkit's error: ``status_code`` is the HTTP status of the answer."""

        def __init__(self, status_code: int, message: str, phrase: str = ""):
            super().__init__(status_code, message, phrase)
            self.status_code, self.message, self.phrase = status_code, message, phrase or message

# What each image type's bytes start with (JPEG's SOI marker, PNG's signature).
IMAGE_SIGNATURES = {"image/jpeg": b"\xff\xd8\xff", "image/png": b"\x89PNG\r\n\x1a\n"}
TRITON_BINARY_TYPE = "application/vnd.sagemaker-triton.binary+json"
TRITON_TYPES = ("application/json", TRITON_BINARY_TYPE)
JSON_TYPE = "application/json"
REFUSED = "lookout-refused:"  # the request id of a placeholder that stands for a refused batch record
PLACEHOLDER_SIDE = 64  # Lookout's smallest image side: the pipeline takes it like any photo


def refused(status: int, reason: str) -> GenericInferenceToolkitError:
    return GenericInferenceToolkitError(status, reason, reason)


def model_fn(model_dir: str) -> dict:
    """The adapter's settings, read once: its role, the pipeline's tensor names, and whether it serves a batch job."""
    settings = {key: os.environ.get(f"LOOKOUT_{key.upper()}", "") for key in ("adapter_role", "input", "output")}
    if settings["adapter_role"] not in ("request", "answer") or not settings["output"]:
        raise ValueError(f"LOOKOUT_ADAPTER_ROLE must be request or answer and LOOKOUT_OUTPUT set: {settings}")
    settings["batch"] = in_batch_job()
    settings["max_pixels"] = int(os.environ.get("LOOKOUT_MAX_PIXELS", "0"))
    settings["min_side"] = int(os.environ.get("LOOKOUT_MIN_SIDE", "0"))
    return settings


def in_batch_job() -> bool:
    return os.environ.get("LOOKOUT_BATCH") == "1"


def media_type(content_type: str) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def input_fn(body: bytes | str, content_type: str) -> tuple[bytes, str]:
    """The body as bytes with its content type; the request adapter refuses what is not a JPEG or PNG image."""
    data = body.encode() if isinstance(body, str) else bytes(body)
    if os.environ.get("LOOKOUT_ADAPTER_ROLE") == "request" and not in_batch_job():  # a batch record: predict_fn
        check_image(data, media_type(content_type))
    return data, content_type


def check_image(data: bytes, kind: str) -> None:
    if kind in TRITON_TYPES:
        raise refused(415, f"{kind} is a Triton payload type: this endpoint takes the image's bytes as image/jpeg "
                           "or image/png (send Triton payloads to a Triton endpoint)")
    if kind not in IMAGE_SIGNATURES:
        raise refused(415, f"content type {kind or '(none)'} is not taken: send image/jpeg or image/png")
    if not data:
        raise refused(400, f"the body is empty: send the {kind} image's bytes")
    if not data.startswith(IMAGE_SIGNATURES[kind]):
        raise refused(400, f"the body is not a {kind.split('/')[1].upper()} image (its first bytes are "
                           f"{data[:8]!r})")


def predict_fn(data: tuple[bytes, str], model: dict) -> tuple[bytes, str]:
    body, content_type = data
    if model["adapter_role"] == "request" and model["batch"]:
        if reason := batch_refusal(body, model["max_pixels"], model["min_side"]):
            return triton_request(placeholder_image(), model, request_id=REFUSED + reason)
    if model["adapter_role"] == "request":
        return triton_request(body, model)
    return lookout_answer(body, content_type, model["output"]), JSON_TYPE


def batch_refusal(data: bytes, max_pixels: int, min_side: int) -> str:
    """Why a batch record is not an image the pipeline takes, in one line; empty when it is one."""
    from PIL import Image

    kind = next((kind for kind, signature in IMAGE_SIGNATURES.items() if data.startswith(signature)), "")
    if not kind:
        return f"the object is not a JPEG or PNG image (its first bytes are {data[:8]!r})"
    name = kind.split("/")[1].upper()
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if max_pixels and width * height > max_pixels:  # from the header: refused before decoding
                return f"the {name} image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}"
            if min(width, height) < min_side:  # the pipeline's router would refuse it, failing the whole job
                return f"the {name} image is {width}x{height} pixels, under the pipeline's {min_side} per side"
            image.load()
    except Exception as error:  # PIL's many decoder errors: the record's reason, not the job's failure
        return f"the {name} image cannot be decoded: {' '.join(str(error).split())}"
    return ""


def placeholder_image() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (PLACEHOLDER_SIDE, PLACEHOLDER_SIDE)).save(buffer, format="PNG")
    return buffer.getvalue()


def triton_request(image: bytes, model: dict, request_id: str = "") -> tuple[bytes, str]:
    """(body, Content-Type) of a binary+json request for the pipeline's Lookout answer to one image."""
    tensor = httpclient.InferInput(model["input"], [1, len(image)], "UINT8")
    tensor.set_data_from_numpy(np.frombuffer(image, dtype=np.uint8)[np.newaxis], binary_data=True)
    wanted = httpclient.InferRequestedOutput(model["output"], binary_data=False)
    body, json_size = httpclient.InferenceServerClient.generate_request_body([tensor], outputs=[wanted],
                                                                             request_id=request_id)
    return body, f"{TRITON_BINARY_TYPE};json-header-size={json_size}"


def lookout_answer(body: bytes, content_type: str, output: str) -> bytes:
    """Lookout's JSON from Triton's answer (JSON, or binary+json with the header size in its content type), or a
    refused batch record's error."""
    size = content_type.split("json-header-size=")[1].split(";")[0] if "json-header-size=" in content_type else None
    result = httpclient.InferenceServerClient.parse_response_body(body, header_length=int(size) if size else None)
    request_id = result.get_response().get("id", "")
    if request_id.startswith(REFUSED):
        return json.dumps({"Error": {"Code": "ValidationException", "Message": request_id[len(REFUSED):]}}).encode()
    answer = result.as_numpy(output)
    if answer is None:
        raise refused(500, f"Triton's answer has no {output} output: is the pipeline built with the Lookout answer?")
    text = answer.reshape(-1)[0]
    json.loads(text)  # only a whole JSON document leaves the pipeline
    return text if isinstance(text, bytes) else str(text).encode()


def output_fn(prediction: tuple[bytes, str], accept: str) -> tuple[bytes, str]:
    """The toolkit sends ``(body, content type)`` as the container's answer."""
    return prediction
