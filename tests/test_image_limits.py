"""Every pipeline measures each image by its header and refuses one over its limit before anything decodes it.

"Not decoded" is shown by Triton's own statistics: the DALI model behind the guard
counts no request for a refused image, and one more for the good request that follows.
"""
from __future__ import annotations

import io
import shutil
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
import requests
import tritonclient.http as httpclient
from PIL import Image
from tritonclient.utils import InferenceServerException

from builders import dali, defect_dali, defect_inspection, ensemble_dali_inception, ensemble_lama, inception, lama_decode
from builders.config import parse, render
from builders.image_guard import ImageGuard
from builders.in_process import InProcessEnsemble
from builders.runners.image_headers import image_size
from clients.classify import encoded_batch
from clients.protocols import sagemaker_body
from local_server import TritonServer

pytestmark = pytest.mark.quick

BOMB_SIDE = 20000  # 400 million pixels: 1.2 GB once decoded to RGB


def png_declaring(width: int, height: int) -> bytes:
    """A valid, all-black 1-bit PNG of any size, compressed row by row: a few KB in memory."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor, row = zlib.compressobj(9), bytes(1 + (width + 7) // 8)  # filter byte, then the bits
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def encoded(array: np.ndarray, format: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=format, **options)
    return buffer.getvalue()


def photo_png(height: int = 64, width: int = 96) -> bytes:
    import skimage.data

    return encoded(np.ascontiguousarray(skimage.data.astronaut()[:height, :width]))


@dataclass(frozen=True)
class Pipeline:
    ensemble: str
    guard: ImageGuard
    decoder: str  # the DALI model the guard protects
    output: str
    inputs: Callable[[bytes], dict[str, bytes]]  # the image under test -> every input of a request


PIPELINE_NAMES = ("classification", "defect", "lama")


def pipelines_of(product) -> dict[str, Pipeline]:
    """Every pipeline; the defect one is the product's."""
    return {
        "classification": Pipeline(ensemble_dali_inception.NAME, ensemble_dali_inception.GUARD, dali.NAME,
                                   ensemble_dali_inception.OUTPUT.name,
                                   lambda image: {ensemble_dali_inception.INPUT.name: image}),
        "defect": Pipeline(defect_inspection.name(product), defect_inspection.guard(product),
                           defect_dali.name(product), defect_inspection.outputs(product)[0].name,
                           lambda image: {defect_inspection.INPUT.name: image}),
        "lama": Pipeline(ensemble_lama.NAME, ensemble_lama.GUARD, lama_decode.NAME, ensemble_lama.INPAINTED.name,
                         lambda image: {ensemble_lama.IMAGE.name: image,
                                        ensemble_lama.MASK.name: encoded(np.zeros((64, 96), np.uint8))}),
    }


@pytest.fixture(scope="module")
def pipelines(board) -> dict[str, Pipeline]:
    return pipelines_of(board)


@pytest.fixture(scope="module")
def bomb() -> bytes:
    image = png_declaring(BOMB_SIDE, BOMB_SIDE)
    assert len(image) < 200_000
    with pytest.raises(Image.DecompressionBombError, match="400000000 pixels"):  # Pillow's own judgement
        Image.open(io.BytesIO(image))
    return image


@pytest.fixture(scope="module")
def client(server):
    with httpclient.InferenceServerClient(server.http_url, network_timeout=120) as triton:
        yield triton


def send(client, pipeline: Pipeline, images: dict[str, bytes | list[bytes]]):
    tensors = []
    for name, value in images.items():
        batch = encoded_batch(value if isinstance(value, list) else [value])
        tensor = httpclient.InferInput(name, list(batch.shape), "UINT8")
        tensor.set_data_from_numpy(batch)
        tensors.append(tensor)
    return client.infer(pipeline.ensemble, tensors, outputs=[httpclient.InferRequestedOutput(pipeline.output)])


def refusal(client, pipeline: Pipeline, images: dict[str, bytes | list[bytes]]) -> str:
    """The error message of a request that must be refused with HTTP 400."""
    with pytest.raises(InferenceServerException) as refused:
        send(client, pipeline, images)
    assert refused.value.status() == "400", refused.value
    return refused.value.message()


def decodings(client, model: str) -> tuple[int, int]:
    """(inferences, executions) the model has counted since the server started."""
    stats = client.get_inference_statistics(model_name=model)["model_stats"][0]
    return stats["inference_count"], stats["execution_count"]


@pytest.mark.parametrize("name", PIPELINE_NAMES)
def test_image_declaring_more_pixels_than_the_limit_is_refused_with_a_400_before_decoding(client, bomb, pipelines,
                                                                                         name):
    pipeline = pipelines[name]
    limit = pipeline.guard.max_pixels
    before = decodings(client, pipeline.decoder)
    message = refusal(client, pipeline, pipeline.inputs(bomb))
    assert (f"image 0 of the batch (input {pipeline.guard.inputs[0].name}) is 20000x20000 = 400000000 pixels, "
            f"over this model's limit of {limit} pixels (parameter max_pixels of {pipeline.guard.name})") in message
    assert decodings(client, pipeline.decoder) == before
    assert send(client, pipeline, pipeline.inputs(photo_png())).as_numpy(pipeline.output).shape[0] == 1
    assert decodings(client, pipeline.decoder)[0] == before[0] + 1  # the count does move when an image is decoded


def test_lama_mask_is_measured_too_and_its_side_limit_names_the_mask(client, pipelines):
    pipeline = pipelines["lama"]
    before = decodings(client, pipeline.decoder)
    long_mask = png_declaring(ensemble_lama.MAX_SIDE + 8, 16)
    long_image = encoded(np.full((16, ensemble_lama.MAX_SIDE + 8, 3), 128, np.uint8))
    message = refusal(client, pipeline, {ensemble_lama.IMAGE.name: long_image,
                                         ensemble_lama.MASK.name: long_mask})
    assert (f"image 0 of the batch (input IMAGE) is 2056x16 pixels, over this model's limit of "
            f"{ensemble_lama.MAX_SIDE} pixels per side (parameter max_side of lama_guard)") in message
    message = refusal(client, pipeline, {ensemble_lama.IMAGE.name: photo_png(), ensemble_lama.MASK.name: long_mask})
    assert "image 0 of the batch (input MASK) is 2056x16 pixels" in message
    assert decodings(client, pipeline.decoder) == before


def test_the_oversized_image_of_a_padded_batch_is_named_by_its_position(client, bomb, pipelines):
    pipeline = pipelines["classification"]
    message = refusal(client, pipeline, {ensemble_dali_inception.INPUT.name: [photo_png(), bomb, photo_png(80, 40)]})
    assert "image 1 of the batch (input INPUT) is 20000x20000" in message


def test_concurrent_good_requests_of_other_lengths_are_served_beside_refused_ones(server, bomb, photos, pipelines):
    pipeline = pipelines["classification"]

    def one(image):  # one client per thread: tritonclient's are not thread-safe
        with httpclient.InferenceServerClient(server.http_url, network_timeout=120) as own:
            try:
                return send(own, pipeline, {ensemble_dali_inception.INPUT.name: image}).as_numpy(pipeline.output)
            except InferenceServerException as error:
                return error

    images = [image for photo in photos.values() for image in (photo, bomb)]
    with ThreadPoolExecutor(max_workers=len(images)) as pool:
        results = list(pool.map(one, images))
    assert all(isinstance(result, np.ndarray) and result.shape == (1, 1001) for result in results[0::2])
    assert all(isinstance(result, InferenceServerException) and result.status() == "400" for result in results[1::2])


def test_sagemaker_invocations_refuse_the_oversized_image_with_a_400(server, bomb):
    body, content_type = sagemaker_body({ensemble_dali_inception.INPUT.name: encoded_batch([bomb])},
                                        [ensemble_dali_inception.OUTPUT.name], binary=True)
    response = requests.post(f"{server.sagemaker_url}/invocations", data=body,
                             headers={"Content-Type": content_type}, timeout=60)
    assert response.status_code == 400
    assert "over this model's limit of 16777216 pixels" in response.json()["error"]


@pytest.mark.parametrize("name", PIPELINE_NAMES)
def test_gif_is_refused_as_an_unsupported_format_naming_the_formats_taken(client, pipelines, name):
    pipeline = pipelines[name]
    gif = encoded(np.zeros((64, 96, 3), np.uint8), "GIF")
    message = refusal(client, pipeline, pipeline.inputs(gif))
    assert "unsupported image format GIF; send JPEG, PNG, BMP, TIFF or WebP" in message


@pytest.mark.parametrize("kind,options", [("JPEG", {}), ("JPEG", {"progressive": True}), ("PNG", {}),
                                            ("BMP", {}), ("TIFF", {}), ("TIFF", {"big_tiff": True}),
                                            ("WEBP", {}), ("WEBP", {"lossless": True}),
                                            ("WEBP", {"exif": b"Exif\0\0II*\0\x08\0\0\0\0\0"})])
def test_header_sizes_equal_pillows_for_the_formats_taken(kind, options):
    image = encoded(np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8), kind, **options)
    padded = image + bytes(100)  # a row of a zero-padded batch
    assert image_size(padded)[1:] == Image.open(io.BytesIO(image)).size == (53, 37)


def test_in_process_reference_refuses_what_the_guard_refuses(cpu_repository, bomb):
    with pytest.raises(ValueError, match=r"20000x20000 = 400000000 pixels, over this model's limit of 16777216"):
        InProcessEnsemble(cpu_repository).classify([bomb])


@pytest.fixture(scope="module")
def strict_server(cpu_repository, tmp_path_factory):
    """The classification pipeline alone, with the guard's max_pixels lowered in its config."""
    repository = tmp_path_factory.mktemp("strict")
    guard = ensemble_dali_inception.GUARD
    for model in (ensemble_dali_inception.NAME, guard.name, dali.NAME, inception.model_name(inception.BuildOptions())):
        shutil.copytree(cpu_repository / model, repository / model)
    config_path = repository / guard.name / "config.pbtxt"
    config = parse(config_path.read_text())
    config.parameters["max_pixels"].string_value = "100000"
    config_path.write_text(render(config))
    with TritonServer(repository, log_path=tmp_path_factory.mktemp("strict-log") / "tritonserver.log") as triton:
        yield triton


def test_a_lower_max_pixels_in_the_config_refuses_a_normal_photo(strict_server, photos, pipelines):
    pipeline = pipelines["classification"]
    with httpclient.InferenceServerClient(strict_server.http_url, network_timeout=120) as strict:
        message = refusal(strict, pipeline, {ensemble_dali_inception.INPUT.name: photos["chelsea"]})
        assert ("is 451x300 = 135300 pixels, over this model's limit of 100000 pixels "
                "(parameter max_pixels of dali_guard)") in message
        small = send(strict, pipeline, {ensemble_dali_inception.INPUT.name: photo_png(200, 300)})
        assert small.as_numpy(pipeline.output).shape == (1, 1001)
