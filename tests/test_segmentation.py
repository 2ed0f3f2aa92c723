"""The segmenter: colour masks to class indices, pixel scores, the exported model, and a training run.

The training run is one ``defect_classifier`` run on a small Lookout dataset made here:
stains (dark disks) and chips (bright squares) on a noisy surface, photos twice the
product's size so that masks are scaled down, and one anomaly without a mask.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn import metrics

from builders import defect_architecture as arch
from builders import defect_inspection, defect_segmenter
from builders.declaration import BuildOptions
from builders.repository import build_repository
from defect_classifier import data, segmentation
from defect_classifier.pipeline import run
from defect_classifier.training import TrainSettings
from defect_data import lookout
from model_versions import local
from model_versions.repository import version_numbers
from products.definition import from_color_map

COLOURS = {"surface": "#000000", "stain": "#ff0000", "chip": "#00ff00"}
PHOTO = (96, 128)  # height, width: twice the product's size
SHAPES = TrainSettings(epochs=20, batch_size=8)


@pytest.fixture(scope="module")
def product():
    return from_color_map("shapes", COLOURS, *PHOTO, long_side=64, layout=arch.ANYWHERE)


def _photo(rng: np.random.Generator, classes: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(an RGB photo of the surface with the classes painted on, its colour mask)."""
    height, width = PHOTO
    photo = rng.normal(128, 20, (height, width, 3)).clip(0, 255)
    mask = np.zeros((height, width, 3), np.uint8)
    ys, xs = np.mgrid[:height, :width]
    for name in classes:
        y, x, size = rng.integers(20, height - 20), rng.integers(20, width - 20), rng.integers(8, 14)
        shape = (ys - y) ** 2 + (xs - x) ** 2 < size ** 2 if name == "stain" else \
            (abs(ys - y) < size) & (abs(xs - x) < size)
        photo[shape] = 40 if name == "stain" else 230
        mask[shape] = [int(COLOURS[name][i:i + 2], 16) for i in (1, 3, 5)]
    return photo.astype(np.uint8), mask


def _split_lines(folder: Path, split: str, rng, normals: int, anomalies: int, unmasked: int) -> list[str]:
    lines = []
    kinds = [()] * normals + [("stain",), ("chip",), ("stain", "chip")] * (anomalies // 3) + [None] * unmasked
    for index, classes in enumerate(kinds):
        photo, mask = _photo(rng, ("stain",) if classes is None else classes)
        stem = f"{split}-{index}"
        Image.fromarray(photo).save(folder / f"{stem}.png")
        if classes:
            Image.fromarray(mask).save(folder / f"{stem}-mask.png")
        line = lookout.write_manifest_line(f"{stem}.png", classes != (), f"{stem}-mask.png" if classes else None,
                                           COLOURS if classes else None)
        lines.append(json.dumps(line))
    return lines


@pytest.fixture(scope="module")
def shapes_dataset(tmp_path_factory) -> Path:
    """Train: 21 normal, 21 masked anomalies, 2 anomalies without a mask; test: 10 + 12."""
    folder = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(0)
    for split, counts in {"train": (21, 21, 2), "test": (10, 12, 0)}.items():
        (folder / f"{split}.manifest").write_text("\n".join(_split_lines(folder, split, rng, *counts)) + "\n")
    return folder


@pytest.fixture(scope="module")
def trained(product, shapes_dataset, tmp_path_factory):
    """(repository, run result): the shapes product's models trained once and registered as version 2."""
    repository = tmp_path_factory.mktemp("shapes-repository") / "cpu"
    build_repository(repository, BuildOptions(target="cpu", products=(product,),
                                              models=(*defect_inspection.models(product),
                                                      defect_segmenter.name(product))))
    return repository, run(product, shapes_dataset, None, [repository], SHAPES)


def test_colour_masks_become_class_indices_in_colour_map_order(product):
    mask = np.zeros((2, 3, 3), np.uint8)
    mask[0, 1] = [255, 0, 0]
    mask[1, 2] = [0, 255, 0]
    assert segmentation.class_indices(mask, product, "m.png").tolist() == [[0, 1, 0], [0, 0, 2]]


def test_a_mask_colour_outside_the_colour_map_is_refused_naming_the_file(product):
    mask = np.zeros((2, 2, 3), np.uint8)
    mask[1, 1] = [0, 0, 255]
    with pytest.raises(data.DatasetError, match=r"masks/17\.png: mask colour\(s\) #0000ff"):
        segmentation.class_indices(mask, product, "masks/17.png")


def test_masks_are_scaled_to_the_product_size_and_an_unmasked_anomaly_is_not_known(product, shapes_dataset):
    examples = data.read(shapes_dataset, product, lookout.Reader())
    masks, known = segmentation.read_masks(examples, product, lookout.Reader())
    assert masks.shape == (len(examples), product.height, product.width) and masks.dtype == np.uint8
    assert known.tolist() == [not e.anomaly or e.mask is not None for e in examples] and (~known).sum() == 2
    assert not masks[[not e.anomaly for e in examples]].any()
    chip = next(row for row, e in enumerate(examples) if e.classes == ("chip",))
    assert set(np.unique(masks[chip])) == {0, 2}  # nearest-neighbour: no index in between
    full = segmentation.class_indices(lookout.Reader().image(examples[chip].mask), product, "")
    assert (masks[chip] == 2).sum() == pytest.approx((full == 2).sum() / 4, rel=0.15)


def test_pixel_scores_equal_scikit_learn_jaccard_and_f1(product):
    rng = np.random.default_rng(1)
    truth, found = rng.integers(0, 3, (4, 8, 8)), rng.integers(0, 3, (4, 8, 8))
    report = segmentation.report(truth, found, product)
    iou = metrics.jaccard_score(truth.reshape(-1), found.reshape(-1), average=None)
    f1 = metrics.f1_score(truth.reshape(-1), found.reshape(-1), average=None)
    assert [report["per_label"][n]["iou"] for n in ("background", "stain", "chip")] == pytest.approx(iou)
    assert [report["per_label"][n]["f1"] for n in ("background", "stain", "chip")] == pytest.approx(f1)
    assert report["mean_iou"] == pytest.approx(iou[1:].mean())
    assert report["mean_iou_with_background"] == pytest.approx(iou.mean())
    assert report["f1"] == pytest.approx(f1[1:].mean())


def test_the_exported_segmenter_answers_a_class_index_per_pixel(product, tmp_path):
    import onnxruntime as ort

    path = arch.export_onnx(defect_segmenter.module(product), tmp_path / "model.onnx", arch.image_tensor(product),
                            [defect_segmenter.PIXEL_CLASSES_NAME])
    images = np.random.default_rng(2).uniform(-1, 1, (3, 3, product.height, product.width)).astype(np.float32)
    (answer,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {arch.IMAGE_NAME: images})
    assert answer.shape == (3, product.height, product.width) and answer.dtype == np.uint8
    assert answer.max() <= len(product.classes)


def test_a_training_run_learns_where_the_defects_are_on_unseen_images(trained, product):
    _, result = trained
    test = result.reports[defect_segmenter.name(product)]["splits"]["test"]
    assert test["count"] == 22  # every test image has known pixels
    assert test["mean_iou"] >= 0.8, test["per_label"]  # painting all background scores 0 (measured: 0.94)


def test_the_run_registers_the_segmenter_with_its_pixel_scores_as_the_pair_s_version(trained, product):
    repository, result = trained
    name = defect_segmenter.name(product)
    assert name in local.models(product) and result.versions == {str(repository): 2}
    assert version_numbers(repository / name) == [1, 2]
    report = json.loads((repository / name / "2" / local.REPORT).read_text())
    for split in ("validation", "test"):
        scores = report["splits"][split]
        assert {"mean_iou", "mean_iou_with_background", "f1", "f1_with_background"} <= set(scores)
        assert set(scores["per_label"]) == {"background", "stain", "chip"}
        assert all({"iou", "f1", "precision", "recall"} <= set(entry) for entry in scores["per_label"].values())
    validation = report["splits"]["validation"]
    assert validation["count"] == result.dataset["counts"]["validation"]["normal"] + \
        sum(e["anomaly"] and e["mask"] is not None for e in result.dataset["examples"] if e["split"] == "validation")
    assert "Mean IoU of the defect classes" in (repository / name / "2" / "evaluation.md").read_text()
    assert any(f"{name} version 2: validation F1" in line and "test mean IoU" in line
               for line in local.status(repository, product))
