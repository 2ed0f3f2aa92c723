"""The sample product, its Ground Truth labels, and the normal augmentations."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from defect_data import augment, groundtruth
from defect_data.pcb import COMPONENTS, render


def test_renderer_is_deterministic_and_seedable():
    first, again, other = render(0), render(0), render(1)
    assert np.array_equal(first.image, again.image) and np.array_equal(first.mask, again.mask)
    assert not np.array_equal(first.image, other.image)
    assert first.image.shape == first.mask.shape == (240, 320, 3) and first.image.dtype == np.uint8


def test_every_component_is_painted_in_its_class_colour_over_the_part_itself():
    board = render(3)
    masks = groundtruth.class_masks(groundtruth.Labelled(board.image, board.mask, board.color_map))
    assert sorted(masks) == sorted(c.name for c in COMPONENTS)
    background = np.all(board.mask == 255, axis=-1)
    board_green = np.median(board.image[background], axis=0)
    for name, mask in masks.items():
        assert 200 < (mask > 0).sum() < 0.2 * mask.size, name
        part = board.image[mask > 0].astype(int)
        assert np.abs(np.median(part, axis=0) - board_green).max() > 30, f"{name} should not look like bare board"


def test_ground_truth_manifest_round_trips(tmp_path):
    board = render(0)
    manifest = groundtruth.write(tmp_path, board.image, board.mask, board.color_map)
    line = json.loads(manifest.read_text())
    metadata = line["pcb-ref-metadata"]
    assert metadata["type"] == "groundtruth/semantic-segmentation"
    assert metadata["internal-color-map"]["0"] == {"class-name": "BACKGROUND", "hex-color": "#ffffff",
                                                   "confidence": 0.0}
    labelled = groundtruth.read(manifest)
    assert np.array_equal(labelled.image, board.image) and labelled.color_map == board.color_map


def test_mask_of_another_size_is_refused(tmp_path):
    board = render(0)
    with pytest.raises(groundtruth.LabelError, match="the mask is 160x120 but the image is 320x240"):
        groundtruth.check(board.image, board.mask[::2, ::2], board.color_map)


def test_mask_colour_missing_from_the_colour_map_is_named(tmp_path):
    board = render(0)
    mask = board.mask.copy()
    mask[0:5, 0:5] = (1, 2, 3)
    with pytest.raises(groundtruth.LabelError, match="not in the colour map: #010203"):
        groundtruth.check(board.image, mask, board.color_map)


def test_class_name_with_underscore_is_refused(tmp_path):
    board = render(0)
    color_map = {**board.color_map, "big_cap": "#17becf"}
    with pytest.raises(groundtruth.LabelError, match="may not contain '_'.*big_cap"):
        groundtruth.check(board.image, board.mask, color_map)


def test_normals_cover_four_kinds_ten_each_reproducibly():
    image = render(0).image
    variants = list(augment.normals(image, per_kind=10, seed=5))
    assert len(variants) == 40 and len({stem for stem, _ in variants}) == 40
    again = dict(augment.normals(image, per_kind=10, seed=5))
    assert all(np.array_equal(again[stem], picture) for stem, picture in variants)
    for stem, picture in variants:
        assert picture.shape == image.shape and picture.dtype == np.uint8
        assert not np.array_equal(picture, image), stem


def test_sigmoid_contrast_keeps_black_and_white_and_steepens_the_middle():
    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16)
    out = augment.sigmoid_contrast(ramp, gain=10, cutoff=0.5).ravel()
    assert out[0] == 0 and out[-1] == 255 and np.all(np.diff(out.astype(int)) >= 0)
    assert out[96] < 96 and out[160] > 160


def test_unknown_transform_kind_is_named():
    with pytest.raises(ValueError, match="unknown transform kind 'blur'"):
        augment.augment(render(0).image, "blur", 0)
