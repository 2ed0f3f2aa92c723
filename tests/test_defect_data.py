"""The sample product, its Ground Truth labels, and the normal augmentations."""
from __future__ import annotations

import json

import numpy as np
import pytest

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


def test_train_plan_removes_exactly_one_component_and_every_class_twenty_times():
    from defect_data.defects import plan

    classes = [c.name for c in COMPONENTS]
    combos = plan(classes, "train", per_class=20)
    assert all(len(combo) == 1 for combo in combos)
    assert all(sum(name in combo for combo in combos) >= 20 for name in classes)


def test_test_plan_removes_one_to_three_components_and_every_class_twenty_times():
    from defect_data.defects import plan

    classes = [c.name for c in COMPONENTS]
    combos = plan(classes, "test", per_class=20, seed=4)
    assert {len(combo) for combo in combos} <= {1, 2, 3} and len({len(c) for c in combos}) > 1
    assert all(sum(name in combo for combo in combos) >= 20 for name in classes)
    assert plan(classes, "test", per_class=20, seed=4) == combos


def test_file_names_record_the_removed_classes():
    from defect_data.defects import file_name

    assert file_name(40, ("IC", "resistor1", "resistor2")) == "40_im_mask_IC_resistor1_resistor2.jpg"


def test_components_are_removed_through_the_served_lama_and_the_rest_is_untouched(server):
    from clients.protocols import Route
    from defect_data.defects import anomaly_mask, hole, remove, served

    board = render(2)
    masks = groundtruth.class_masks(groundtruth.Labelled(board.image, board.mask, board.color_map))
    removed = ("IC", "capacitor2")
    result = remove(served(Route("http-binary", server.http_url)), board.image, masks, removed)
    outside = hole(masks, removed) == 0
    assert np.array_equal(result[outside], board.image[outside])
    assert not np.array_equal(result[~outside], board.image[~outside])
    colours = anomaly_mask(masks, removed, board.color_map)
    assert tuple(colours[masks["IC"] > 0][0]) == (0x2c, 0xa0, 0x2c) and tuple(colours[0, 0]) == (255, 255, 255)
    assert not np.any(np.all(colours == (0x1f, 0x77, 0xb4), axis=-1)), "resistor1 was not removed"


def test_manifest_lines_follow_the_lookout_format(tmp_path):
    from defect_data import manifests

    normal = manifests.image_line("s3://b/p/train/normal_gamma_00.jpg", "normal")
    assert normal["auto-label"] == 1 and normal["auto-label-metadata"]["class-name"] == "normal"
    anomaly = manifests.anomaly_line(manifests.reference("s3://b/p", "train", "3_im_mask_IC.jpg"),
                                     "s3://b/p/train/masks/3_im_mask_IC.png", {"BACKGROUND": "#ffffff", "IC": "#2ca02c"})
    assert anomaly["auto-label"] == 0 and anomaly["source-ref"] == "s3://b/p/train/3_im_mask_IC.jpg"
    assert anomaly["anomaly-mask-ref-metadata"]["internal-color-map"]["1"]["class-name"] == "IC"
    path = manifests.write(tmp_path / "train.manifest", [normal, anomaly])
    assert [json.loads(line)["auto-label"] for line in path.read_text().splitlines()] == [1, 0]
    assert not (tmp_path / "train.manifest.partial").exists()


def test_bare_board_keeps_traces_but_has_no_components():
    bare, full = render(5, components=False), render(5)
    masks = groundtruth.class_masks(groundtruth.Labelled(full.image, full.mask, full.color_map))
    ic = masks["IC"] > 0
    assert np.abs(bare.image[ic].astype(int) - full.image[ic]).mean() > 20
    assert np.all(bare.mask == 255), "a bare board has nothing to label"


def test_hole_metrics_are_perfect_for_a_perfect_fill_and_worse_for_a_flat_one():
    from defect_data.train_lama import hole_psnr, hole_ssim, random_hole

    truth = render(1, components=False).image
    hole = random_hole(*truth.shape[:2], np.random.default_rng(0), box_size=(20, 60))
    flat = truth.copy()
    flat[hole > 0] = truth[hole > 0].mean(axis=0).astype(np.uint8)
    assert hole_psnr(truth, truth, hole) > 100 and hole_ssim(truth, truth, hole) == pytest.approx(1.0)
    assert hole_psnr(flat, truth, hole) < 40 and hole_ssim(flat, truth, hole) < 0.9


def test_a_trained_small_lama_checkpoint_is_served_by_the_builders(tmp_path):
    import torch

    from builders.declaration import BuildOptions
    from builders.repository import build_repository
    from clients.protocols import Route, infer
    from defect_data.train_lama import SMALL_LAMA, evaluate, save, train
    from local_server import TritonServer

    board = render(0)
    labelled = groundtruth.read(groundtruth.write(tmp_path / "labels", board.image, board.mask, board.color_map))
    generator, losses = train(labelled, steps=3, batch_size=2)
    assert len(losses) == 3 and all(np.isfinite(losses))
    report = evaluate(generator, labelled, holes=2)
    assert set(report) == {"lama", "telea", "holes"} and report["holes"] == 2 and report["telea"]["psnr"] > 10
    checkpoint = save(generator, SMALL_LAMA, tmp_path / "lama-small.pt", report)
    repository = tmp_path / "repository"
    build_repository(repository, BuildOptions(lama_weights=checkpoint, models=("lama",)))
    assert "LaMa ngf 16, 3 blocks weights lama-small.pt" in (repository / "lama" / "config.pbtxt").read_text()
    image = np.random.default_rng(0).random((1, 3, 64, 96), dtype=np.float32)
    mask = np.zeros((1, 1, 64, 96), np.float32)
    mask[:, :, 16:40, 24:60] = 1
    with TritonServer(repository) as server:
        served = infer(Route("http-binary", server.http_url), "lama", {"image": image, "mask": mask},
                       ["inpainted"])["inpainted"]
    with torch.no_grad():
        hole = torch.from_numpy(mask)
        expected = generator(torch.cat([torch.from_numpy(image) * (1 - hole), hole], 1))
        expected = (hole * expected + (1 - hole) * torch.from_numpy(image)).numpy()
    assert np.abs(served - expected).max() < 1e-4


def _bright_parts_on_dark_texture() -> groundtruth.Labelled:
    """A photo whose components are white on a dark texture, so that they are known by brightness alone."""
    rng = np.random.default_rng(4)
    image = rng.integers(20, 50, (200, 260, 3)).astype(np.uint8)
    mask = np.full((200, 260, 3), 255, np.uint8)
    for (top, left, bottom, right), colour in (((30, 40, 90, 120), (255, 0, 0)), ((120, 150, 150, 230), (0, 0, 255))):
        image[top:bottom, left:right] = 255
        mask[top:bottom, left:right] = colour
    return groundtruth.Labelled(image, mask, {"BACKGROUND": "#ffffff", "chip": "#ff0000", "resistor": "#0000ff"})


def test_training_batches_put_no_loss_weight_on_component_pixels():
    from defect_data.train_lama import HOLE_WEIGHT, TrainingSource, training_batch

    source = TrainingSource.of(_bright_parts_on_dark_texture())
    assert source.crop == 128 and source.box_size == (30, 76)  # the parts' sides, 30..80, clamped to 0.6 x 128
    rng = np.random.default_rng(0)
    for _ in range(6):
        image, hole, weight = training_batch(source, 8, rng)
        assert image.shape == (8, 3, 128, 128) and hole.shape == weight.shape == (8, 1, 128, 128)
        part = (image.mean(dim=1, keepdim=True) > 0.5).numpy()  # augmented, rotated, scaled: still bright
        assert part.any(), "the crops should show components"
        assert np.all(weight.numpy()[part] == 0)
        inside, outside = weight[(hole > 0) & (weight > 0)], weight[(hole == 0) & (weight > 0)]
        assert len(inside) and np.all(inside.numpy() == 1 + HOLE_WEIGHT) and np.all(outside.numpy() == 1)
        covered = (hole * (weight == 0)).sum(dim=(1, 2, 3)) / hole.sum(dim=(1, 2, 3))
        assert float(covered.mean()) < 0.5, "holes should mostly lie over background"


def test_holes_are_free_form_strokes_and_boxes_sized_by_the_caller():
    from defect_data.train_lama import random_hole

    rng = np.random.default_rng(0)
    boxes = strokes = 0
    for _ in range(200):
        hole = random_hole(128, 160, rng, box_size=(16, 40))
        assert hole.dtype == np.float32 and hole.shape == (128, 160) and set(np.unique(hole)) == {0.0, 1.0}
        assert hole.mean() <= 0.5
        ys, xs = np.nonzero(hole)
        filled = hole[ys.min():ys.max() + 1, xs.min():xs.max() + 1].mean()
        if filled == 1:
            assert 16 <= ys.max() - ys.min() + 1 <= 40 and 16 <= xs.max() - xs.min() + 1 <= 40
            boxes += 1
        elif filled < 0.8:
            strokes += 1
    assert boxes > 20 and strokes > 40, (boxes, strokes)


def test_held_out_holes_lie_wholly_over_background():
    from defect_data.train_lama import held_out_views

    labelled = _bright_parts_on_dark_texture()
    views = list(held_out_views(labelled, holes=6))
    assert len(views) == 6
    for truth, hole, parts in views:
        assert truth.shape == labelled.image.shape and hole.shape == parts.shape == truth.shape[:2]
        assert hole.sum() > 0 and not np.any((hole > 0) & (parts > 0))
        assert truth[hole > 0].mean() < 128, "the truth under the hole is background texture"
    assert not np.array_equal(views[0][0], views[1][0]), "every view is a different augmentation"
