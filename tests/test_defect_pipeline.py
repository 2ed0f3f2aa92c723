"""The one-command dataset pipeline: counts, resumption, interruption, manifests, version, S3."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clients.protocols import Route
from defect_data import defects
from defect_data.pipeline import Settings, build, labels, main, tasks, version_record
from products import find
from tests.conftest import SAMPLE_PRODUCT, define_sample_board

SMALL = Settings(per_class=2, normals_per_kind=2, seed=0)


@pytest.fixture()
def store(product_store) -> Path:
    return product_store


def run(out: Path, url: str, *extra: str, store: Path) -> int:
    return main(["--product", SAMPLE_PRODUCT, "--products-store", str(store), "--out", str(out), "--per-class", "2",
                 "--normals-per-kind", "2", "--url", url, *extra])


def manifest_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_default_settings_meet_the_posts_minimums(board):
    planned = tasks(labels(board), Settings())
    for split in ("train", "test"):
        normals = [t for t in planned if t[0] == split and not t[2]]
        anomalies = [t for t in planned if t[0] == split and t[2]]
        assert len(normals) >= 10 and len(anomalies) >= 10
        for name in ("IC", "resistor1", "resistor2", "capacitor1", "capacitor2"):
            assert sum(name in t[2] for t in anomalies) >= 20
        assert {len(t[2]) for t in anomalies} == ({1} if split == "train" else {1, 2, 3})


def test_pipeline_builds_resumes_and_never_lists_a_missing_image(server, board, store, tmp_path):
    out = tmp_path / "dataset"
    assert run(out, server.http_url, store=store) == 0
    train = manifest_lines(out / "train.manifest")
    for line in train + manifest_lines(out / "test.manifest"):
        assert Path(line["source-ref"]).is_file()
        if line["auto-label"] == 0:
            assert Path(line["anomaly-mask-ref"]).is_file()
            stem = Path(line["source-ref"]).stem
            classes = [entry["class-name"] for entry in line["anomaly-mask-ref-metadata"]["internal-color-map"].values()]
            assert classes[1:] == stem.split("_im_mask_")[1].split("_")
    assert not list(out.rglob("*.partial*"))
    first_version = json.loads((out / "dataset_version.json").read_text())
    victim = next((out / "train" / "anomaly").glob("*.jpg"))
    victim.unlink()
    labelled = labels(board)
    fill = defects.served(Route("http-binary", server.http_url))
    assert build(out, fill, labelled, SMALL) == {"made": 1, "planned": len(tasks(labelled, SMALL))}
    assert version_record(out, labelled, SMALL)["version"] == first_version["version"]


def test_unreachable_server_stops_with_a_clear_message_and_a_rerun_resumes(server, store, tmp_path, capsys):
    out = tmp_path / "dataset"
    assert run(out, "127.0.0.1:9", store=store) == 1
    error = capsys.readouterr().err
    assert "the inpainting server failed" in error and "rerun the same command to resume" in error
    normals = list(out.rglob("normal/*.jpg"))
    assert len(normals) == 8 and not (out / "train.manifest").exists()
    assert run(out, server.http_url, store=store) == 0
    assert "8 images made now" not in capsys.readouterr().out
    assert len(list(out.rglob("normal/*.jpg"))) == 8


def test_manifests_reference_s3_and_the_dataset_is_uploaded_and_an_s3_error_is_one_line(server, store, tmp_path,
                                                                                       monkeypatch, capsys):
    from moto.server import ThreadedMotoServer

    from local_server.server import free_port

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    moto.start()
    try:
        for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                            "AWS_DEFAULT_REGION": "us-east-1",
                            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{moto._port}"}.items():
            monkeypatch.setenv(name, value)
        import boto3

        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="lookout-data")
        out = tmp_path / "dataset"
        assert run(out, server.http_url, "--s3", "s3://lookout-data/pcb", store=store) == 0
        line = manifest_lines(out / "train.manifest")[0]
        assert line["source-ref"].startswith("s3://lookout-data/pcb/train/")
        keys = {item["Key"] for item in s3.list_objects_v2(Bucket="lookout-data")["Contents"]}
        assert "pcb/train.manifest" in keys and line["source-ref"].removeprefix("s3://lookout-data/") in keys
        capsys.readouterr()
        assert run(tmp_path / "again", server.http_url, "--s3", "s3://no-such-bucket/pcb", store=store) == 1
        error = capsys.readouterr().err.strip()
        assert error.startswith("error: ") and "no-such-bucket" in error and "\n" not in error, error
    finally:
        moto.stop()


def test_labels_with_a_mask_of_another_size_are_refused_before_any_work(tmp_path, capsys):
    from PIL import Image

    store = define_sample_board(tmp_path)
    mask = Path(find(SAMPLE_PRODUCT, store).labels).parent / "mask.png"
    Image.fromarray(np.asarray(Image.open(mask))[::2, ::2]).save(mask)
    assert run(tmp_path / "out", "127.0.0.1:9", store=store) == 1
    assert "the mask is 160x120 but the image is 320x240" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_labels_whose_classes_changed_since_the_product_was_defined_are_refused(tmp_path, capsys):
    store = define_sample_board(tmp_path)
    manifest = Path(find(SAMPLE_PRODUCT, store).labels)
    manifest.write_text(manifest.read_text().replace('"IC"', '"chip"'))
    assert run(tmp_path / "out", "127.0.0.1:9", store=store) == 1
    assert "define the product again" in capsys.readouterr().err


def test_an_interrupted_version_write_keeps_the_previous_version_file_whole(board, tmp_path, monkeypatch):
    labelled = labels(board)
    version_record(tmp_path, labelled, Settings(seed=0))
    previous = (tmp_path / "dataset_version.json").read_text()

    def write_half_then_interrupt(path, text, *args, **kwargs):
        with open(path, "w") as file:
            file.write(text[:len(text) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", write_half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        version_record(tmp_path, labelled, Settings(seed=1))  # another seed: another version
    monkeypatch.undo()
    assert (tmp_path / "dataset_version.json").read_text() == previous
    assert not list(tmp_path.glob("*.partial"))
