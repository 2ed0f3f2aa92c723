"""Lookout for Vision datasets: layouts, references, Lookout's rules, colour maps (no server)."""
from __future__ import annotations

import json
from pathlib import Path

import boto3
import numpy
import pytest
from moto import mock_aws
from PIL import Image

from defect_data.lookout import (Dataset, LookoutError, Reader, Record, check_rules, classes_present,
                                 read_dataset, read_manifest, union_color_map, write_manifest_line)

pytestmark = pytest.mark.quick

GRAY, RED = (200, 200, 200), (255, 0, 0)
COLORS = {"BACKGROUND": "#ffffff", "crack": "#23A436"}


def image(path: Path, size=(64, 64), color=GRAY, fmt="PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt)
    return path


def mask(path: Path, size=(64, 64), paint: str | None = "#23a436") -> Path:
    pixels = numpy.full((size[1], size[0], 3), 255, numpy.uint8)
    if paint:
        pixels[10:20, 10:20] = [int(paint[i:i + 2], 16) for i in (1, 3, 5)]
    Image.fromarray(pixels).save(path)
    return path


def manifest(path: Path, lines: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def lines_of(folder: Path, normals: int, anomalies: int, masks: bool = False, prefix: str = "") -> list[dict]:
    """Images written into ``folder``; lines refer to them relative to it (normals first)."""
    lines = [write_manifest_line(image(folder / f"{prefix}n{i}.png").name, False) for i in range(normals)]
    for i in range(anomalies):
        name = image(folder / f"{prefix}a{i}.png", color=RED).name
        mask_ref = mask(folder / f"{prefix}m{i}.png").name if masks else None
        lines.append(write_manifest_line(name, True, mask_ref, COLORS if masks else None))
    return lines


def masked_dataset(folder: Path, normals=20) -> Path:
    return manifest(folder / "data.manifest", lines_of(folder, normals, 10, masks=True))


def test_verdict_comes_from_class_name_whichever_number_convention(tmp_path):
    cookie = lines_of(tmp_path, 2, 2)  # 1 = anomaly, as AWS's cookie sample writes it
    flipped = [{**line, "anomaly-label": 1 - line["anomaly-label"]} for line in cookie]  # 1 = normal
    verdicts = [[r.anomalous for r in read_manifest(manifest(tmp_path / f"{n}.manifest", lines))]
                for n, lines in (("cookie", cookie), ("flipped", flipped))]
    assert verdicts == [[False, False, True, True]] * 2


def test_auto_label_lines_of_this_project_are_read(tmp_path):
    line = write_manifest_line(image(tmp_path / "a.png").name, True)
    auto = {"source-ref": line["source-ref"], "auto-label": 0, "auto-label-metadata": line["anomaly-label-metadata"]}
    [record] = read_manifest(manifest(tmp_path / "auto.manifest", [auto]))
    assert record.anomalous and record.where.endswith("auto.manifest:1")


def test_relative_and_absolute_references_resolve_to_absolute_paths(tmp_path):
    image(tmp_path / "images" / "x.png")
    lines = [write_manifest_line("../images/x.png", False), write_manifest_line(str(tmp_path / "images/x.png"), False)]
    records = read_manifest(manifest(tmp_path / "labels" / "m.manifest", lines))
    assert [r.source for r in records] == [str((tmp_path / "images/x.png").resolve())] * 2


def test_one_manifest_dataset_passes_the_rules_and_gives_its_size(tmp_path):
    dataset = read_dataset(masked_dataset(tmp_path))
    assert dataset.layout == "manifest" and not dataset.split and len(dataset.records) == 30
    assert check_rules(dataset, Reader()) == (64, 64)
    assert union_color_map(dataset) == {"BACKGROUND": "#ffffff", "crack": "#23a436"}
    assert read_dataset(tmp_path).records == dataset.records  # the folder holding a single manifest


def test_split_manifests_carry_train_and_test_and_their_minimums(tmp_path):
    manifest(tmp_path / "train.manifest", lines_of(tmp_path, 10, 0, prefix="train"))
    manifest(tmp_path / "test.manifest", lines_of(tmp_path, 10, 10, prefix="test"))
    dataset = read_dataset(tmp_path)
    assert dataset.layout == "split-manifests" and dataset.split
    assert {r.split for r in dataset.records} == {"train", "test"} and check_rules(dataset, Reader()) == (64, 64)
    manifest(tmp_path / "train.manifest", lines_of(tmp_path, 9, 0, prefix="train"))
    with pytest.raises(LookoutError, match=r"9 normal images in train; a split dataset needs at least 10"):
        check_rules(read_dataset(tmp_path), Reader())


def test_flat_folder_layout_is_read_and_checked(tmp_path):
    for i in range(20):
        image(tmp_path / "normal" / f"{i}.png")
    for i in range(10):
        image(tmp_path / "anomaly" / f"{i}.jpg", color=RED, fmt="JPEG")
    dataset = read_dataset(tmp_path)
    assert dataset.layout == "folders" and not dataset.split
    assert sum(r.anomalous for r in dataset.records) == 10 and check_rules(dataset, Reader()) == (64, 64)


def test_split_folder_layout_is_read_with_its_splits(tmp_path):
    for split, verdict, count in (("train", "normal", 10), ("test", "normal", 10), ("test", "anomaly", 9)):
        for i in range(count):
            image(tmp_path / split / verdict / f"{i}.png")
    dataset = read_dataset(tmp_path)
    assert dataset.split and {(r.split, r.anomalous) for r in dataset.records} == {
        ("train", False), ("test", False), ("test", True)}
    with pytest.raises(LookoutError, match=r"9 anomaly images in test"):
        check_rules(dataset, Reader())


@pytest.fixture()
def s3(monkeypatch):
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="parts")
        yield client


def test_s3_references_are_read_through_boto3(tmp_path, s3):
    lines = lines_of(tmp_path, 20, 10, masks=True)
    for line in lines:
        for key in ("source-ref", "anomaly-mask-ref"):
            if key in line:
                s3.upload_file(str(tmp_path / line[key]), "parts", f"set/{line[key]}")
                line[key] = f"s3://parts/set/{line[key]}"
    dataset = read_dataset(manifest(tmp_path / "s3.manifest", lines))
    assert dataset.records[0].source == "s3://parts/set/n0.png"
    assert check_rules(dataset, Reader()) == (64, 64)  # the client is made lazily, with boto3.client("s3")


def test_unreadable_s3_reference_is_named_in_one_line(tmp_path, s3):
    lines = lines_of(tmp_path, 20, 10)
    lines[4]["source-ref"] = "s3://parts/missing.png"
    with pytest.raises(LookoutError, match=r"data.manifest:5: s3://parts/missing.png: cannot be read from S3") as error:
        check_rules(read_dataset(manifest(tmp_path / "data.manifest", lines)), Reader(s3))
    assert "\n" not in str(error.value)


def _line(**changes) -> dict:
    line = write_manifest_line("a.png", True, "m.png", COLORS)
    return {key: value for key, value in {**line, **changes}.items() if value is not None}


def _colors(name: str) -> dict:
    return {"internal-color-map": {"0": {"class-name": "BACKGROUND", "hex-color": "#ffffff"},
                                   "1": {"class-name": name, "hex-color": "#23a436"}}}


BAD_LINES = {
    "not-json": ('{"source-ref": ', "not JSON"),
    "no-source-ref": (_line(**{"source-ref": None}), "no source-ref"),
    "no-label": (_line(**{"anomaly-label": None, "anomaly-label-metadata": None}), "no label attribute"),
    "unknown-attribute": ({**_line(**{"anomaly-label": None}), "cookie-label": 1,
                           "cookie-label-metadata": _line()["anomaly-label-metadata"]},
                          "label attribute cookie-label is not known; the reader knows anomaly-label, auto-label"),
    "other-class-name": (_line(**{"anomaly-label-metadata": {"class-name": "defect"}}), "'defect' is not 'normal'"),
    "normal-with-mask": (_line(**{"anomaly-label-metadata": {"class-name": "normal"}}), "a normal image with a mask"),
    "underscore-class": (_line(**{"anomaly-mask-ref-metadata": _colors("solder_joint")}), "'solder_joint' is not allowed"),
    "path-class": (_line(**{"anomaly-mask-ref-metadata": _colors("../crack")}), "'../crack' is not allowed"),
}


@pytest.mark.parametrize("case", BAD_LINES)
def test_bad_manifest_line_is_refused_naming_file_line_and_rule(tmp_path, case):
    line, rule = BAD_LINES[case]
    text = line if isinstance(line, str) else json.dumps(line)
    (tmp_path / "bad.manifest").write_text(json.dumps(write_manifest_line("n.png", False)) + "\n" + text + "\n")
    with pytest.raises(LookoutError, match="bad.manifest:2: ") as error:
        read_manifest(tmp_path / "bad.manifest")
    assert rule in str(error.value) and "\n" not in str(error.value)


def _rewrite(name: str, data: bytes | None = None, **form):
    def breaks(folder: Path):
        if data is not None:
            (folder / name).write_bytes(data)
        else:
            (mask if name.startswith("m") else image)(folder / name, **form)
    return breaks


BROKEN = {  # how a valid masked dataset is broken -> the line it names and the rule
    "mixed-sizes": (_rewrite("n3.png", size=(80, 64)), ":4: ", "image is 80x64 but"),
    "side-too-small": (_rewrite("n0.png", size=(63, 64)), ":1: ", "64-4096 pixels per side"),
    "side-too-large": (_rewrite("n0.png", size=(4097, 64)), ":1: ", "64-4096 pixels per side"),
    "over-8-mb": (lambda f: (f / "n0.png").write_bytes((f / "n0.png").read_bytes() + bytes(8 << 20)),
                  ":1: ", "at most 8 MB"),
    "not-png-or-jpeg": (_rewrite("n1.png", size=(64, 64), fmt="BMP"), ":2: ", "is BMP, not PNG or JPEG"),
    "undecodable": (_rewrite("n1.png", b"\x89PNG not really"), ":2: ", "cannot be decoded"),
    "mask-size-differs": (_rewrite("m0.png", size=(80, 64)), ":21: ", "mask is 80x64 but its image is 64x64"),
    "mask-colour-not-in-map": (_rewrite("m1.png", paint="#ff0000"), ":22: ", "mask colour(s) #ff0000 not in"),
    "mask-only-background": (_rewrite("m2.png", paint=None), ":23: ", "anomaly mask shows no anomaly class"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_check_rules_refuses_a_broken_image_naming_line_and_rule(tmp_path, case):
    breaks, line, rule = BROKEN[case]
    dataset = read_dataset(masked_dataset(tmp_path))
    breaks(tmp_path)
    with pytest.raises(LookoutError, match=f"data.manifest{line}") as error:
        check_rules(dataset, Reader())
    assert rule in str(error.value) and "\n" not in str(error.value)


def test_check_rules_needs_20_normal_and_10_anomalous_without_a_split(tmp_path):
    with pytest.raises(LookoutError, match=r"data.manifest: 19 normal images; .* at least 20 normal and 10"):
        check_rules(read_dataset(masked_dataset(tmp_path, normals=19)), Reader())


def _masked(where: str, **color_map) -> Record:
    return Record("x.png", True, "m.png", color_map, None, where)


@pytest.mark.parametrize("second, rule", [
    ({"BACKGROUND": "#ffffff", "crack": "#000000"}, "class crack is #000000 here but #23a436"),
    ({"BACKGROUND": "#ffffff", "dent": "#23a436"}, "colour #23a436 is dent here but crack"),
    ({"bg": "#ffffff", "crack": "#23a436"}, "background"),
])
def test_union_color_map_refuses_conflicting_maps(second, rule):
    records = (_masked("a:1", BACKGROUND="#ffffff", crack="#23a436"), _masked("a:2", **second))
    with pytest.raises(LookoutError, match="a:2: ") as error:
        union_color_map(Dataset("a", records, "manifest"))
    assert rule in str(error.value)


def test_union_color_map_merges_in_map_order_background_first():
    records = (_masked("a:1", BACKGROUND="#ffffff", crack="#23a436"), Record("n.png", False, None, None, None, "a:2"),
               _masked("a:3", BACKGROUND="#ffffff", dent="#0000ff", crack="#23a436"))
    assert list(union_color_map(Dataset("a", records, "manifest"))) == ["BACKGROUND", "crack", "dent"]


def test_classes_present_follow_map_order_and_refuse_strange_colours():
    color_map = {"BACKGROUND": "#ffffff", "crack": "#23a436", "dent": "#0000ff"}
    pixels = numpy.full((4, 4, 3), 255, numpy.uint8)
    pixels[0, 0], pixels[1, 1] = (0, 0, 255), (0x23, 0xA4, 0x36)
    assert classes_present(pixels, color_map, "m.png") == ("crack", "dent")
    pixels[2, 2] = (1, 2, 3)
    with pytest.raises(LookoutError, match=r"m.png: mask colour\(s\) #010203 not in its colour map"):
        classes_present(pixels, color_map, "m.png")
