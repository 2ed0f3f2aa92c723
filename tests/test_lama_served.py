"""ensemble_lama on the real server: parity with eager PyTorch, the client, and bad input."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import skimage.data
from PIL import Image

from builders import ensemble_lama
from builders.in_process import InProcessLama
from clients.inpaint import inpaint, main as inpaint_main, png_bytes
from clients.protocols import RequestError, Route
from local_server import TritonServer


@pytest.fixture(scope="module")
def reference():
    return InProcessLama()


@pytest.fixture(scope="module")
def http(server):
    return Route("http-binary", server.http_url)


@pytest.fixture(scope="module")
def sagemaker_lama(cpu_repository, tmp_path_factory):
    """SageMaker's start-up with ensemble_lama as the default model: explicit control must load every step."""
    model_dir = tmp_path_factory.mktemp("opt_ml_lama") / "model"
    shutil.copytree(cpu_repository, model_dir)
    with TritonServer(model_dir, sagemaker_mode=True, sagemaker_default_model=ensemble_lama.NAME) as server:
        yield Route("sagemaker-binary", server.sagemaker_url)


def photo(height: int, width: int) -> np.ndarray:
    return np.ascontiguousarray(skimage.data.astronaut()[100:100 + height, 150:150 + width])


def box_mask(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = np.zeros((height, width), np.uint8)
    top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
    mask[top:top + height // 3, left:left + width // 3] = 255
    return mask


@pytest.mark.parametrize("height,width", [(64, 64), (100, 130), (97, 203)])
def test_served_inpainting_equals_eager_pytorch_and_keeps_unmasked_pixels(http, reference, height, width):
    image, mask = photo(height, width), box_mask(height, width)
    served = inpaint(http, png_bytes(image), png_bytes(mask))
    expected = reference.inpaint(image, mask)
    assert served.shape == (height, width, 3) and served.dtype == np.uint8
    # Same generator and arithmetic; float rounding may move a value across a truncation step.
    assert np.abs(served.astype(int) - expected).max() <= 1
    assert np.mean(served == expected) > 0.999
    assert np.array_equal(served[mask == 0], image[mask == 0])
    assert not np.array_equal(served[mask > 0], image[mask > 0])


def test_sagemaker_binary_json_route_gives_the_http_result(http, sagemaker_lama):
    image, mask = photo(80, 120), box_mask(80, 120, seed=1)
    assert np.array_equal(inpaint(sagemaker_lama, png_bytes(image), png_bytes(mask)),
                          inpaint(http, png_bytes(image), png_bytes(mask)))


def test_all_zero_mask_returns_the_image_unchanged(http):
    image = photo(72, 96)
    assert np.array_equal(inpaint(http, png_bytes(image), png_bytes(np.zeros((72, 96), np.uint8))), image)


def test_all_ones_mask_regenerates_the_whole_image(http, reference):
    image, mask = photo(64, 80), np.full((64, 80), 255, np.uint8)
    served = inpaint(http, png_bytes(image), png_bytes(mask))
    assert served.shape == image.shape
    assert np.abs(served.astype(int) - reference.inpaint(image, mask)).max() <= 1


def test_colour_mask_is_read_as_grayscale_any_non_black_pixel_is_a_hole(http):
    image, mask = photo(64, 96), box_mask(64, 96, seed=2)
    colour = np.zeros((64, 96, 3), np.uint8)
    colour[mask > 0] = (44, 160, 44)
    assert np.array_equal(inpaint(http, png_bytes(image), png_bytes(colour)),
                          inpaint(http, png_bytes(image), png_bytes(mask)))


@pytest.mark.parametrize("image_shape,mask_shape,complaint", [
    ((64, 96), (64, 80), "the mask is 80x64 pixels but the image is 96x64: they must be the same size"),
    ((16, 2056), (16, 2056), r"2056x16 pixels, over this model's limit of 2048 pixels per side \(parameter max_side"),
    ((8, 40), (8, 40), "LaMa needs at least 16 per side"),
])
def test_bad_sizes_are_rejected_naming_the_sizes(http, image_shape, mask_shape, complaint):
    image = np.full((*image_shape, 3), 128, np.uint8)
    with pytest.raises(RequestError, match=complaint):
        inpaint(http, png_bytes(image), png_bytes(np.zeros(mask_shape, np.uint8)))
    assert inpaint(http, png_bytes(photo(32, 32)), png_bytes(box_mask(32, 32))).shape == (32, 32, 3)


def test_corrupt_mask_file_is_rejected_as_undecodable(http):
    with pytest.raises(RequestError, match="could not decode the image data"):
        inpaint(http, png_bytes(photo(32, 32)), b"\x89PNG\r\n\x1a\n but the rest is garbage" * 4)


def test_inpaint_client_turns_a_ground_truth_colour_mask_and_class_into_the_hole(server, sagemaker_lama, tmp_path):
    image = photo(80, 112)
    colour_mask = np.full((80, 112, 3), 255, np.uint8)
    colour_mask[10:30, 10:40] = (44, 160, 44)  # IC
    colour_mask[50:70, 60:100] = (31, 119, 180)  # resistor
    Image.fromarray(image).save(tmp_path / "board.png")
    Image.fromarray(colour_mask).save(tmp_path / "board_mask.png")
    color_map = {"0": {"class-name": "BACKGROUND", "hex-color": "#ffffff"},
                 "1": {"class-name": "IC", "hex-color": "#2ca02c"},
                 "2": {"class-name": "resistor", "hex-color": "#1f77b4"}}
    line = {"source-ref": "board.png", "pcb-ref": "board_mask.png",
            "pcb-ref-metadata": {"internal-color-map": color_map, "type": "groundtruth/semantic-segmentation"}}
    (tmp_path / "output.manifest").write_text(json.dumps(line) + "\n")
    for protocol, url in (("http-binary", server.http_url), ("sagemaker-binary", sagemaker_lama.url)):
        out = tmp_path / f"{protocol}.png"
        assert inpaint_main([str(tmp_path / "board.png"), str(tmp_path / "board_mask.png"), "-o", str(out),
                             "--manifest", str(tmp_path / "output.manifest"), "--class", "IC",
                             "--protocol", protocol, "--url", url]) == 0
        result = np.asarray(Image.open(out))
        hole = np.zeros((80, 112), bool)
        hole[10:30, 10:40] = True
        assert np.array_equal(result[~hole], image[~hole]), "only the IC is removed"
    assert inpaint_main([str(tmp_path / "board.png"), str(tmp_path / "board_mask.png"), "-o", str(out),
                         "--manifest", str(tmp_path / "output.manifest"), "--class", "capacitor",
                         "--url", server.http_url]) == 1
