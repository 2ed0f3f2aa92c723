"""Where the defect is: the served answer in Lookout for Vision's shape, its masks, its rules, its client.

Against the session's real server (the sample board's pipeline, untrained version 1: its
verdicts mean nothing, so the images are picked by the in-process reference's verdict and
every served answer is checked against that reference and against Lookout's documented
DetectAnomalies response).
"""
from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from builders import defect_inspection, defect_parent, defect_router
from builders.in_process import InProcessInspection
from builders.runners import defect_routing
from clients import inspect as inspect_client
from clients.classify import encoded_batch
from clients.protocols import Route, infer
from sagemaker_deploy.package import BLS_PARAMETER, read_config, required_models

pytestmark = pytest.mark.quick

# DetectAnomalyResult as Lookout's API reference documents it (AnomalyMask: base64 in JSON, at most 5242880).
RESULT_FIELDS = {"Source", "IsAnomalous", "Confidence", "Anomalies", "AnomalyMask"}
COLOR = re.compile(r"#[a-zA-Z0-9]{6}")
MAX_MASK_LENGTH = 5242880


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def reference(cpu_repository, board) -> InProcessInspection:
    return InProcessInspection(cpu_repository, board)


@pytest.fixture(scope="module")
def candidates(board) -> dict[str, bytes]:
    """Photos of several sizes: the board, its label mask (a colourful picture), flat colours."""
    folder = Path(board.labels).parent
    photo = np.asarray(Image.open(folder / "image.png").convert("RGB"))
    return {"board": (folder / "image.png").read_bytes(), "label-mask": (folder / "mask.png").read_bytes(),
            "white-400x300": png(np.full((300, 400, 3), 255, np.uint8)),
            "board-upscaled": png(np.repeat(np.repeat(photo, 2, axis=0), 3, axis=1)),
            "gray-100x60": png(np.full((60, 100, 3), 128, np.uint8))}


def pick(reference, candidates, anomalous: bool) -> bytes:
    for image in candidates.values():
        if (reference.inspect([image])[defect_router.LABEL.name][0, 0] == b"anomaly") == anomalous:
            return image
    pytest.fail(f"no candidate is {'an anomaly' if anomalous else 'normal'} for the untrained parent")


def served(server, board, image: bytes) -> dict[str, np.ndarray]:
    return infer(Route("http-binary", server.http_url), defect_inspection.name(board),
                 {defect_inspection.INPUT.name: encoded_batch([image])},
                 [tensor.name for tensor in defect_inspection.outputs(board)])


def answer(outputs) -> dict:
    return json.loads(outputs[defect_router.LOOKOUT.name][0][0])


def image_size(image: bytes) -> tuple[int, int]:
    width, height = Image.open(io.BytesIO(image)).size
    return height, width


def check_documented_shape(response: dict, board, size: tuple[int, int]) -> dict:
    """Every field of Lookout's DetectAnomalyResult, as documented; returns the result."""
    assert set(response) == {"DetectAnomalyResult"}
    result = response["DetectAnomalyResult"]
    assert set(result) == RESULT_FIELDS
    assert result["Source"] == {"Type": "direct"}
    assert isinstance(result["IsAnomalous"], bool) and 0.0 <= result["Confidence"] <= 1.0
    assert result["Anomalies"][0]["Name"] == "background"
    colors = list(board.color_map.values())
    for entry in result["Anomalies"]:
        assert set(entry) == {"Name", "PixelAnomaly"} and set(entry["PixelAnomaly"]) == {"TotalPercentageArea", "Color"}
        assert COLOR.fullmatch(entry["PixelAnomaly"]["Color"])
        assert entry["Name"] == "background" or entry["Name"] in board.class_names
        index = 0 if entry["Name"] == "background" else 1 + board.class_names.index(entry["Name"])
        assert entry["PixelAnomaly"]["Color"] == colors[index]
        assert 0.0 <= entry["PixelAnomaly"]["TotalPercentageArea"] <= 1.0
    assert sum(e["PixelAnomaly"]["TotalPercentageArea"] for e in result["Anomalies"]) == pytest.approx(1.0)
    assert isinstance(result["AnomalyMask"], str) and 1 <= len(result["AnomalyMask"]) <= MAX_MASK_LENGTH
    mask = Image.open(io.BytesIO(base64.b64decode(result["AnomalyMask"], validate=True)))
    assert mask.format == "PNG" and (mask.height, mask.width) == size
    return result


def test_an_anomaly_is_answered_in_lookouts_documented_shape(server, board, reference, candidates):
    image = pick(reference, candidates, anomalous=True)
    outputs = served(server, board, image)
    result = check_documented_shape(answer(outputs), board, image_size(image))
    assert result["IsAnomalous"] and outputs[defect_router.LABEL.name][0, 0] == b"anomaly"
    assert result["Confidence"] == pytest.approx(float(outputs["ANOMALY_SCORE"][0, 0]))
    areas = outputs[defect_router.areas(board).name][0]
    assert [e["PixelAnomaly"]["TotalPercentageArea"] for e in result["Anomalies"]] == \
        pytest.approx([float(a) for i, a in enumerate(areas) if i == 0 or a > 0])


def test_a_normal_image_has_only_the_background_entry_and_an_all_background_mask(server, board, reference,
                                                                                 candidates):
    image = pick(reference, candidates, anomalous=False)
    outputs = served(server, board, image)
    result = check_documented_shape(answer(outputs), board, image_size(image))
    assert not result["IsAnomalous"] and result["Confidence"] == pytest.approx(1 - float(outputs["ANOMALY_SCORE"][0, 0]))
    assert result["Anomalies"] == [{"Name": "background", "PixelAnomaly": {"TotalPercentageArea": 1.0,
                                                                          "Color": board.background.color}}]
    assert not outputs[defect_router.MASK.name].any() and not outputs["MISSING_SCORES"].any()
    assert outputs[defect_router.areas(board).name].tolist() == [[1.0] + [0.0] * len(board.classes)]


def test_masks_are_at_each_photos_own_size_in_the_products_colours(server, board, candidates):
    palette = np.array([[int(color[i:i + 2], 16) for i in (1, 3, 5)] for color in board.color_map.values()], np.uint8)
    for name, image in candidates.items():
        outputs = served(server, board, image)
        mask = outputs[defect_router.MASK.name][0]
        assert mask.shape == image_size(image), name
        colored = np.asarray(Image.open(io.BytesIO(outputs[defect_router.MASK_PNG.name][0, 0])).convert("RGB"))
        np.testing.assert_array_equal(colored, palette[mask], err_msg=name)
        shares = np.bincount(mask.ravel(), minlength=len(palette)) / mask.size
        np.testing.assert_allclose(outputs[defect_router.areas(board).name][0], shares, rtol=1e-6, err_msg=name)
        assert base64.b64decode(answer(outputs)["DetectAnomalyResult"]["AnomalyMask"]) == \
            outputs[defect_router.MASK_PNG.name][0, 0], name


def test_served_masks_and_answers_equal_the_in_process_ones(server, board, reference, candidates):
    for name, image in candidates.items():
        outputs, expected = served(server, board, image), reference.inspect([image])
        for tensor in defect_inspection.outputs(board):
            if tensor.name == defect_router.LOOKOUT.name:
                got, want = answer(outputs)["DetectAnomalyResult"], answer(expected)["DetectAnomalyResult"]
                assert got.pop("Confidence") == pytest.approx(want.pop("Confidence"), rel=1e-5), name
                assert got == want, name
            elif outputs[tensor.name].dtype == object or tensor.data_type in ("TYPE_UINT8", "TYPE_BOOL"):
                assert outputs[tensor.name].tolist() == expected[tensor.name].tolist(), (name, tensor.name)
            else:
                np.testing.assert_allclose(outputs[tensor.name], expected[tensor.name], rtol=1e-5, atol=1e-6,
                                           err_msg=f"{name} {tensor.name}")


def test_the_pipeline_calls_no_model_itself(cpu_repository, board):
    """Parent, child and segmenter are ensemble steps: loading the pipeline loads them, nothing is called by BLS."""
    _, loaded, bls = required_models(cpu_repository, defect_inspection.name(board))
    assert bls == [] and set(defect_router.models_before(board)) <= set(loaded)
    assert not [name for name in loaded if BLS_PARAMETER in read_config(cpu_repository, name).parameters]


def test_too_small_corrupt_and_oversized_photos_get_a_400_naming_the_problem(server, board, candidates):
    from tritonclient import http
    from tritonclient.utils import InferenceServerException

    client = http.InferenceServerClient(server.http_url)
    huge = io.BytesIO()
    Image.new("1", (5000, 4000)).save(huge, format="PNG")
    for image, problem in ((png(np.zeros((9, 12, 3), np.uint8)), "12x9 pixels; defect inspection needs at least 32x32"),
                           (candidates["board"][:400], "could not decode"), (huge.getvalue(), "5000x4000")):
        tensor = http.InferInput(defect_inspection.INPUT.name, [1, len(image)],
                                 defect_inspection.INPUT.data_type.removeprefix("TYPE_"))
        tensor.set_data_from_numpy(encoded_batch([image]))
        with pytest.raises(InferenceServerException) as error:
            client.infer(defect_inspection.name(board), [tensor])
        assert error.value.status() == "400" and problem in error.value.message(), error.value.message()


# The rules, on the shared decision code (no server): what a deployment sets in the router's config.

def rules(board, **changes) -> defect_routing.Rules:
    return defect_routing.Rules({**defect_router.parameters(board), **changes})


def decide(board, rules_, score: float, pixel_classes: np.ndarray, shape=(240, 320, 3)):
    outputs = defect_routing.decide(rules_, np.array([shape]), np.array([[score]]), np.array([[0.1]]),
                                    np.ones((1, len(board.classes)), np.float32), pixel_classes[None])
    return dict(zip([tensor.name for tensor in defect_router.outputs(board)], outputs))


def small_defect(board) -> np.ndarray:
    """A model-size mask with class 1 on 2 % of the pixels and class 2 on 25 %."""
    mask = np.zeros((board.height, board.width), np.uint8)
    mask[: board.height // 2, : board.width // 2] = 2
    mask[: board.height // 10, -board.width // 5:] = 1
    return mask


def test_min_confidence_answers_an_unsure_anomaly_as_normal(board):
    mask = small_defect(board)
    sure = decide(board, rules(board), 0.7, mask)
    assert json.loads(sure["LOOKOUT"][0][0])["DetectAnomalyResult"]["IsAnomalous"]
    unsure = decide(board, rules(board, **defect_router.rule_parameters(min_confidence=0.8)), 0.7, mask)
    result = json.loads(unsure["LOOKOUT"][0][0])["DetectAnomalyResult"]
    assert not result["IsAnomalous"] and len(result["Anomalies"]) == 1 and not unsure["MASK"][0].any()
    assert unsure["LABEL"][0][0] == b"normal" and not unsure["MISSING_SCORES"].any()


def test_min_area_paints_a_class_under_it_background(board):
    first, second = board.class_names[:2]
    kept = decide(board, rules(board, **defect_router.rule_parameters(min_area={first: 0.01})), 0.9,
                  small_defect(board))
    dropped = decide(board, rules(board, **defect_router.rule_parameters(min_area={first: 0.05})), 0.9,
                     small_defect(board))
    assert [e["Name"] for e in json.loads(kept["LOOKOUT"][0][0])["DetectAnomalyResult"]["Anomalies"]] == \
        ["background", first, second]
    assert [e["Name"] for e in json.loads(dropped["LOOKOUT"][0][0])["DetectAnomalyResult"]["Anomalies"]] == \
        ["background", second]
    assert set(np.unique(dropped["MASK"][0])) == {0, 2}
    assert dropped["AREAS"][0][0] == pytest.approx(0.75) and dropped["AREAS"][0][1] == 0


def test_min_area_of_a_class_the_product_lacks_is_refused(board):
    with pytest.raises(ValueError, match="min_area names crack, not classes of the product"):
        rules(board, **defect_router.rule_parameters(min_area={"crack": 0.1}))


def test_the_mask_is_scaled_to_the_photo_nearest_neighbour(board):
    """Pixel centres aligned: a photo half the model's size takes the second of every two pixels."""
    mask = np.random.default_rng(0).integers(0, 1 + len(board.classes), (board.height, board.width), np.uint8)
    scaled = decide(board, rules(board), 0.9, mask, shape=(board.height * 3, board.width * 2, 3))["MASK"][0]
    np.testing.assert_array_equal(scaled, np.repeat(np.repeat(mask, 3, axis=0), 2, axis=1))
    halved = decide(board, rules(board), 0.9, mask, shape=(board.height // 2, board.width // 2, 3))["MASK"][0]
    np.testing.assert_array_equal(halved, mask[1::2, 1::2])


# The client, through the real server.

def test_inspect_cli_writes_lookouts_json_and_the_colour_masks(server, board, candidates, tmp_path, capsys):
    paths = []
    for name, image in list(candidates.items())[:3]:
        paths.append(tmp_path / f"{name}.png")
        paths[-1].write_bytes(image)
    masks = tmp_path / "masks"
    assert inspect_client.main([*map(str, paths), "--product", board.name, "--url", server.http_url,
                                "--format", "lookout", "--mask-out", str(masks)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(paths)
    for path, line in zip(paths, lines):
        outputs = served(server, board, path.read_bytes())
        assert json.loads(line) == answer(outputs)
        assert (masks / path.name).read_bytes() == outputs[defect_router.MASK_PNG.name][0, 0]


def test_inspect_cli_prints_where_the_defect_is_and_goes_on_after_a_bad_file(server, board, reference, candidates,
                                                                             tmp_path, capsys):
    anomaly, corrupt = tmp_path / "anomaly.png", tmp_path / "corrupt.png"
    anomaly.write_bytes(pick(reference, candidates, anomalous=True))
    corrupt.write_bytes(anomaly.read_bytes()[:200])
    assert inspect_client.main([str(corrupt), str(anomaly), "--product", board.name, "--url", server.http_url]) == 1
    captured = capsys.readouterr()
    assert "corrupt.png" in captured.err and "could not decode" in captured.err
    found = answer(served(server, board, anomaly.read_bytes()))["DetectAnomalyResult"]["Anomalies"][1:]
    assert captured.out.startswith(f"{anomaly}: anomaly") and found
    for entry in found:
        assert f"{entry['Name']} {entry['PixelAnomaly']['TotalPercentageArea']:.1%} of the image" in captured.out


def test_a_product_without_classes_answers_as_a_lookout_classification_model():
    """No segmenter: Lookout's classification answer, without Anomalies or AnomalyMask, and no mask outputs."""
    from products.definition import DefectClass, Product

    plain = Product("plain", DefectClass("background", "#ffffff"), (), 64, 64)
    assert defect_router.outputs(plain) == [defect_parent.ANOMALY_SCORE, defect_router.LABEL,
                                            defect_router.LOW_CONFIDENCE, defect_router.LOOKOUT]
    assert defect_router.models_before(plain) == [defect_parent.name(plain)]
    outputs = defect_routing.decide(rules(plain), np.array([[64, 64, 3]]), np.array([[0.8]]), np.array([[0.1]]))
    result = json.loads(outputs[3][0][0])["DetectAnomalyResult"]
    assert result == {"Source": {"Type": "direct"}, "IsAnomalous": True, "Confidence": pytest.approx(0.8)}
