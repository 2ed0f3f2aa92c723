"""The line defects on real photos, and the sample products and datasets the tests build with them."""
from __future__ import annotations

import json
import time

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image

from clients.colormap import parse_hex
from defect_data import groundtruth, lookout, real_defects
from tests import product_samples as samples

pytestmark = pytest.mark.quick

PHOTOS = {"brick-crop": np.dstack([skimage.data.brick()[100:260, 40:200]] * 3), "coffee": skimage.data.coffee()}


@pytest.mark.parametrize("photo", PHOTOS)
@pytest.mark.parametrize("kind", real_defects.KINDS)
def test_every_kind_changes_pixels_only_near_its_non_empty_mask(kind, photo):
    image = PHOTOS[photo]
    for seed in range(4):
        defected, mask = real_defects.apply(image, kind, np.random.default_rng(seed))
        assert defected.shape == image.shape and defected.dtype == np.uint8
        assert mask.shape == image.shape[:2] and mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}
        change = np.abs(defected.astype(int) - image).max(axis=-1)
        assert change[mask > 0].mean() > 8, "the masked pixels must really look different"
        near = cv2.dilate(mask, np.ones((7, 7), np.uint8)) > 0
        assert (change[~near] > 4).sum() == 0, "pixels far from the mask must stay as they were"


@pytest.mark.parametrize("kind", real_defects.KINDS)
def test_defects_are_deterministic_per_seed_and_differ_between_seeds(kind):
    image = PHOTOS["brick-crop"]
    first, again, other = (real_defects.apply(image, kind, np.random.default_rng(seed)) for seed in (7, 7, 8))
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert not np.array_equal(first[1], other[1])


def test_apply_names_the_kinds_and_refuses_what_is_not_an_rgb_photo():
    with pytest.raises(ValueError, match="crack, scratch, dent, stain, chip"):
        real_defects.apply(PHOTOS["brick-crop"], "hole", np.random.default_rng(0))
    with pytest.raises(ValueError, match="RGB uint8"):
        real_defects.crack(skimage.data.brick(), np.random.default_rng(0))


def test_coins_labels_read_back_as_three_separate_coins_on_the_real_photo(tmp_path):
    labelled = groundtruth.read(samples.coins_labels(tmp_path))
    assert labelled.image.shape == (303, 384, 3)
    assert np.array_equal(labelled.image[..., 0], skimage.data.coins())
    assert list(labelled.color_map) == ["BACKGROUND", "coinA", "coinB", "coinC"]
    masks = groundtruth.class_masks(labelled)
    for name, mask in masks.items():
        area = (mask > 0).sum()
        assert 1500 < area < 5000, f"{name} covers {area} px, not one coin"
        assert len(np.unique(cv2.connectedComponents(mask)[1])) == 2, f"{name} is not one piece"
    overlap = sum((mask > 0).astype(int) for mask in masks.values())
    assert overlap.max() == 1


def test_panel_labels_read_back_with_their_own_names_size_and_background(tmp_path):
    labelled = groundtruth.read(samples.panel_labels(tmp_path / "a"))
    assert labelled.image.shape == (280, 400, 3)
    assert labelled.color_map == samples.PANEL_COLORS and next(iter(labelled.color_map)) == "background"
    assert not set(labelled.color_map) & {"IC", "resistor1", "BACKGROUND"}
    counts = {name: cv2.connectedComponents(mask)[0] - 1 for name, mask in groundtruth.class_masks(labelled).items()}
    assert counts == {"knob": 2, "switch": 2, "lamp": 3}
    other = groundtruth.read(samples.panel_labels(tmp_path / "b", seed=1))
    assert not np.array_equal(labelled.image, other.image), "the seed changes the panel"


def _lines(manifest):
    return [json.loads(text) for text in manifest.read_text().splitlines()]


def test_lookout_dataset_has_the_counts_one_size_and_masks_in_their_colour_maps(tmp_path):
    folder = samples.lookout_dataset(tmp_path, with_masks=True, split=False, normals=6, anomalies=7, seed=3,
                                     region="train")
    lines = _lines(folder / "dataset.manifest")
    verdicts = [line["anomaly-label-metadata"]["class-name"] for line in lines]
    assert verdicts.count("normal") == 6 and verdicts.count("anomaly") == 7
    sizes = {Image.open(folder / line["source-ref"]).size for line in lines}
    assert sizes == {(samples.CROP, samples.CROP)}
    kinds = []
    for line in lines[6:]:
        entries = line["anomaly-mask-ref-metadata"]["internal-color-map"].values()
        allowed = {parse_hex(entry["hex-color"]) for entry in entries}
        mask = np.asarray(Image.open(folder / line["anomaly-mask-ref"]).convert("RGB"))
        shown = {tuple(int(v) for v in colour) for colour in np.unique(mask.reshape(-1, 3), axis=0)}
        assert shown == allowed, "a mask shows its background and exactly its defect's colour"
        kinds.append([entry["class-name"] for entry in entries][1])
    assert kinds == ["crack", "scratch", "dent", "stain", "chip", "crack", "scratch"]


def test_lookout_dataset_without_masks_writes_no_masks(tmp_path):
    folder = samples.lookout_dataset(tmp_path, with_masks=False, split=False, normals=2, anomalies=3, seed=0,
                                     region="test")
    assert not (folder / "masks").exists()
    assert not any("anomaly-mask-ref" in line for line in _lines(folder / "dataset.manifest"))


def _overlaps(a, b):
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def test_split_train_and_test_crops_never_overlap_and_pass_lookouts_rules_quickly(tmp_path):
    started = time.perf_counter()
    folder = samples.lookout_dataset(tmp_path, with_masks=True, split=True, normals=10, anomalies=10, seed=5,
                                     region="train")
    assert time.perf_counter() - started < 5, "a 40-image dataset must stay quick to build"
    crops = json.loads((folder / "crops.json").read_text())
    boxes = {split: [crops[line["source-ref"]] for line in _lines(folder / f"{split}.manifest")]
             for split in ("train", "test")}
    assert len(boxes["train"]) == len(boxes["test"]) == 20
    assert not any(_overlaps(a, b) for a in boxes["train"] for b in boxes["test"])
    assert lookout.check_rules(lookout.read_dataset(folder), lookout.Reader()) == (samples.CROP, samples.CROP)


def test_test_region_crops_lie_in_the_right_part_of_the_photo(tmp_path):
    folder = samples.lookout_dataset(tmp_path, with_masks=False, split=False, normals=4, anomalies=1, seed=2,
                                     region="test")
    left_edge = samples.TRAIN_PART * samples._photo().shape[1]
    assert all(x >= left_edge for x, _, _, _ in json.loads((folder / "crops.json").read_text()).values())
