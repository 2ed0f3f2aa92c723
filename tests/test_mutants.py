"""Tests that kill the five mutants a hand-made spot check left alive (issue 19, 2026-12-01).

Each test names the mutant it kills. They are quick and need no server, so that the
mutation runner (``benchmarks/mutation.py``) can run them once per mutant; the one test
marked ``through_the_server`` shows the same JPEG refusal end to end and is left out of
mutation runs.
"""
from __future__ import annotations

import io
import json
import shutil
import struct

import numpy as np
import pytest
from PIL import Image

from builders import defect_parent, ensemble_dali_inception, ensemble_lama
from builders.declaration import BuildOptions
from builders.repository import build_repository
from builders.runners.image_headers import HeaderError, Limits, image_size
from local_server.request_guard import InvalidInferenceRequest, check_inference_request
from model_versions import local
from model_versions.repository import served_version, set_served_version
from tests.test_image_limits import BOMB_SIDE, png_declaring

DALI_LIMITS = ensemble_dali_inception.GUARD.limits  # 16777216 pixels, no side limit
LAMA_LIMITS = ensemble_lama.GUARD.limits  # 4194304 pixels and 2048 per side


def jpeg_declaring(width: int, height: int) -> bytes:
    """A real 8x8 baseline JPEG whose frame header (SOF0) is rewritten to declare ``width`` x ``height``."""
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)  # after marker (2), length (2) and precision (1)
    return bytes(data)


# -- mutant 1: the JPEG reader masks its sizes to 14 bits (as WebP's VP8 does) -----------------
def test_a_20000x20000_jpeg_reads_at_full_size_and_is_refused_by_the_16_7_mp_guard():
    bomb = jpeg_declaring(BOMB_SIDE, BOMB_SIDE)
    assert image_size(bomb) == ("JPEG", BOMB_SIDE, BOMB_SIDE)  # 14-bit masking would read 3616x3616
    with pytest.raises(ValueError, match="is 20000x20000 = 400000000 pixels, over this model's limit of 16777216"):
        DALI_LIMITS.check_encoded(bomb, "image 0 of the batch (input INPUT)")


def test_a_jpeg_bomb_is_refused_through_the_server_before_decoding(server):
    import requests

    from clients.classify import encoded_batch
    from clients.protocols import sagemaker_body

    body, content_type = sagemaker_body({ensemble_dali_inception.INPUT.name: encoded_batch([jpeg_declaring(
        BOMB_SIDE, BOMB_SIDE)])}, [ensemble_dali_inception.OUTPUT.name], binary=True)
    response = requests.post(f"{server.sagemaker_url}/invocations", data=body,
                             headers={"Content-Type": content_type}, timeout=60)
    assert response.status_code == 400, response.text
    assert "is 20000x20000 = 400000000 pixels, over this model's limit of 16777216" in response.json()["error"]


# -- mutant 2: max_side checked on the width only ---------------------------------------------
def test_a_tall_16x2056_image_is_refused_by_lamas_side_limit():
    tall = png_declaring(16, ensemble_lama.MAX_SIDE + 8)
    with pytest.raises(ValueError, match="is 16x2056 pixels, over this model's limit of 2048 pixels per side "
                                         r"\(parameter max_side of lama_guard\)"):
        LAMA_LIMITS.check_encoded(tall, "image 0 of the batch (input MASK)")


# -- mutant 3: max_pixels compared with >= ------------------------------------------------------
@pytest.mark.parametrize("limits, side", [(DALI_LIMITS, 4096), (LAMA_LIMITS, ensemble_lama.MAX_SIDE)],
                         ids=["dali_guard", "lama_guard"])
def test_an_image_of_exactly_the_limit_is_accepted_and_one_pixel_more_is_not(limits, side):
    assert limits.max_pixels == side * side
    limits.check_encoded(png_declaring(side, side), "the image at the limit")
    with pytest.raises(ValueError, match=f"= {side * side + side} pixels, over this model's limit"):
        limits.check_encoded(png_declaring(side, side + 1), "one row more")


# -- mutant 4: approve promotes a candidate whose validation F1 only equals the served one's ----
def write_report(version_dir, f1: float) -> None:
    (version_dir / local.REPORT).write_text(json.dumps({"splits": {"validation": {"f1": f1},
                                                                    "test": {"f1": f1}}}))


@pytest.fixture()
def parent_repository(board, tmp_path):
    """The sample board's parent alone, built untrained; version 1 reported at validation F1 0.5 and served."""
    repository = tmp_path / "cpu"
    build_repository(repository, BuildOptions(target="cpu", products=(board,), models=(defect_parent.name(board),)))
    model_dir = repository / defect_parent.name(board)
    write_report(model_dir / "1", 0.5)
    set_served_version(model_dir, 1)
    return repository


def test_approve_refuses_a_candidate_that_only_ties_the_served_validation_f1(parent_repository, board):
    name = defect_parent.name(board)
    model_dir = parent_repository / name
    for version, f1 in ((2, 0.5), (3, 0.5001)):
        shutil.copytree(model_dir / "1", model_dir / str(version))
        write_report(model_dir / str(version), f1)
    with pytest.raises(local.PromotionRefused, match="validation F1 0.5000 does not beat the served version 1"):
        local.approve(parent_repository, board, name, 2)
    assert served_version(model_dir) == 1
    assert local.approve(parent_repository, board, name, 3) == (  # a real gain does
        f"{name}: now serving version 3 (validation F1 0.5001; version 1 had validation F1 0.5000)")
    assert served_version(model_dir) == 3


# -- mutant 5: the request guard accepts more data elements than the shape declares ------------
def test_data_with_more_elements_than_the_declared_shape_is_refused():
    body = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "UINT8", "shape": [1, 2],
                                   "data": [1, 2, 3]}]}).encode()
    with pytest.raises(InvalidInferenceRequest) as refused:
        check_inference_request(body, "application/json")
    assert str(refused.value) == "input 'INPUT0' declares shape [1, 2] (2 elements) but its 'data' holds 3"


# -- survivors of benchmarks/mutation.py (docs/mutation-testing.md) ------------------------------
@pytest.mark.parametrize("width", [0, -5])
def test_a_bmp_declaring_no_positive_width_is_refused_as_corrupt(width):
    from tests.test_fuzz import bmp_header

    with pytest.raises(HeaderError, match=f"the BMP header is corrupt: width {width}"):
        image_size(bmp_header(width, 10) + bytes(8))


@pytest.mark.parametrize("header, refusal", [
    (b"\x00\x00\x00\x18ftypheic", "unsupported image format HEIF/AVIF"),
    (b"\x00\x00\x00\x18ftypavif", "unsupported image format HEIF/AVIF"),
    (b"P6\n64 48\n255\n", "unsupported image format PNM"), (b"P1 2 2 0110", "unsupported image format PNM"),
    (b"\x00\x00\x00\x18ftypisom", "not an encoded image"),  # an MP4 video
    (b"P8\n64 48\n", "not an encoded image"), (b"P6x", "not an encoded image"), (b"Q6 ", "not an encoded image"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt ", "not an encoded image"), (b"RIFX\x00\x00\x00\x00WEBPVP8X", "not an encoded image"),
], ids=["heic", "avif", "ppm", "pbm", "mp4", "not-pnm-digit", "not-pnm-space", "not-pnm-letter", "wav", "rifx"])
def test_formats_the_guard_cannot_measure_are_named_or_refused_as_no_image(header, refusal):
    with pytest.raises(ValueError, match=refusal):
        image_size(header + bytes(32))


@pytest.mark.parametrize("guard", [ensemble_dali_inception.GUARD, ensemble_lama.GUARD], ids=lambda g: g.name)
def test_limits_read_back_from_the_config_parameters_are_the_guards(guard):
    assert Limits.from_parameters(guard.limits.parameters(), guard.name) == guard.limits


def test_a_shape_written_in_exactly_200_characters_is_shown_whole_and_a_longer_one_cut():
    for shape, shown in (([-10] + [1] * 65, None), ([-100] + [1] * 65, "...]")):
        written = json.dumps(shape)
        body = json.dumps({"inputs": [{"name": "X", "datatype": "UINT8", "shape": shape, "data": [1]}]}).encode()
        with pytest.raises(InvalidInferenceRequest) as refused:
            check_inference_request(body, "application/json")
        expected = written if shown is None else written[:200] + shown
        assert str(refused.value) == f"input 'X' declares shape {expected}: dimensions must be non-negative integers"


def test_a_shape_of_exactly_int64_max_elements_is_counted_and_one_more_is_not():
    def refusal(shape):
        body = json.dumps({"inputs": [{"name": "X", "datatype": "UINT8", "shape": shape, "data": [1]}]}).encode()
        with pytest.raises(InvalidInferenceRequest) as refused:
            check_inference_request(body, "application/json")
        return str(refused.value)

    assert refusal([2**63 - 1]).endswith("(9223372036854775807 elements) but its 'data' holds 1")
    assert refusal([2**63]).endswith("more than 9223372036854775807 elements")


def test_bytes_of_exactly_four_bytes_per_element_pass():
    """Two empty strings: each a 4-byte length and nothing after it."""
    header = json.dumps({"inputs": [{"name": "NAMES", "datatype": "BYTES", "shape": [2],
                                     "parameters": {"binary_data_size": 8}}]}).encode()
    content_type = f"application/vnd.sagemaker-triton.binary+json;json-header-size={len(header)}"
    assert check_inference_request(header + bytes(8), content_type) is None
