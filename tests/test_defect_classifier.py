"""Defect classifiers: data QA, training and registry, routed serving, the inspect client.

One small training run per module on datasets made by ``defect_data.pipeline`` against
the session server; its version is approved and served by a server of its own, with
explicit model control as SageMaker starts it.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import requests

from builders import defect_child, defect_dali, defect_inspection, defect_parent, defect_router
from builders.declaration import BuildOptions
from builders.defect_architecture import CLASSES
from builders.in_process import InProcessInspection
from builders.repository import build_repository, served_version, set_served_version, version_numbers
from clients import inspect as inspect_client
from clients.protocols import RequestError, Route, infer
from defect_classifier import data, evaluation, registry
from defect_classifier.__main__ import main as classifier_main
from defect_classifier.pipeline import run
from defect_classifier.training import TrainSettings
from defect_data.pcb import COMPONENTS
from local_server import TritonServer
from sagemaker_deploy.deploy import container_environment
from sagemaker_deploy.package import required_models

DEFECT_MODELS = (defect_inspection.GUARD.name, defect_dali.NAME, defect_parent.NAME, defect_child.NAME, defect_router.NAME,
                 defect_inspection.NAME)
QUICK = TrainSettings(epochs=30, batch_size=8)


@pytest.fixture(scope="module")
def repository(datasets, tmp_path_factory) -> Path:
    """The defect models, version 2 trained here and approved."""
    repository = tmp_path_factory.mktemp("defect-repository") / "cpu"
    build_repository(repository, BuildOptions(target="cpu", models=DEFECT_MODELS))
    result = run(datasets["train"], datasets["test"], [repository], QUICK)
    assert result.versions == {str(repository): 2}
    assert classifier_main(["approve", "--repository", str(repository), "--version", "2"]) == 0
    return repository


@pytest.fixture(scope="module")
def defect_server(repository, tmp_path_factory):
    log = tmp_path_factory.mktemp("defect-server-log") / "tritonserver.log"
    triton = TritonServer(repository, log_path=log,
                          extra_args=["--model-control-mode=explicit", "--load-model=*"]).start()
    yield triton
    triton.stop()


def encoded(path: Path) -> bytes:
    return Path(path).read_bytes()


def inference_count(server: TritonServer, model: str) -> int:
    stats = requests.get(f"http://{server.http_url}/v2/models/{model}/stats", timeout=10).json()
    return sum(entry["inference_count"] for entry in stats["model_stats"])


def images_of(dataset: Path, kind: str) -> list[Path]:
    return sorted(dataset.glob(f"*/{kind}/*.jpg"))


def test_training_registers_the_next_version_with_its_report_beside_the_onnx_file(repository):
    for name in (defect_parent.NAME, defect_child.NAME):
        version_dir = repository / name / "2"
        assert {"model.onnx", "model.py", "evaluation.json", "evaluation.md", "confusion_matrix.png",
                "dataset.json"} <= {p.name for p in version_dir.iterdir()}
        report = json.loads((version_dir / "evaluation.json").read_text())
        assert set(report["splits"]) == {"validation", "test"}
        assert served_version(repository / name) == 2
    manifest = json.loads((repository / defect_parent.NAME / "2" / "dataset.json").read_text())
    assert set(manifest["counts"]) == {"train", "validation", "test"} and len(manifest["version"]) == 16
    assert not list(repository.rglob("*.partial"))


def test_promotion_refuses_a_model_worse_on_validation_f1(repository, datasets):
    result = run(datasets["train"], datasets["test"], [repository], TrainSettings(epochs=0))
    worse = result.versions[str(repository)]
    for name in (defect_parent.NAME, defect_child.NAME):
        candidate, served = (registry.validation_f1(repository / name, v) for v in (worse, 2))
        if candidate >= served:
            pytest.fail(f"the untrained {name} scored {candidate} on validation, not below {served}")
        with pytest.raises(registry.PromotionRefused, match="does not beat the served version 2"):
            registry.approve(repository, name, worse)
        assert served_version(repository / name) == 2
    assert classifier_main(["approve", "--repository", str(repository), "--version", str(worse)]) == 3


def test_a_class_without_examples_stops_the_run_before_training(repository, datasets, tmp_path, capsys):
    trimmed = tmp_path / "no-capacitor2"
    shutil.copytree(datasets["train"], trimmed)
    for manifest in ("train.manifest", "test.manifest"):
        lines = (trimmed / manifest).read_text().splitlines()
        (trimmed / manifest).write_text("".join(line + "\n" for line in lines if "capacitor2" not in line))
    before = version_numbers(repository / defect_parent.NAME)
    code = classifier_main(["train", "--dataset", str(trimmed), "--test-dataset", str(datasets["test"]),
                            "--repository", str(repository)])
    assert code == 2 and "has no examples of capacitor2" in capsys.readouterr().err
    assert version_numbers(repository / defect_parent.NAME) == before


def test_a_test_dataset_made_with_the_training_seed_is_refused(repository, datasets):
    with pytest.raises(data.DatasetError, match="another --seed"):
        run(datasets["train"], datasets["train"], [repository], QUICK)


def test_quality_check_drops_unreadable_and_mislabeled_entries_and_says_why(datasets, tmp_path):
    lines = data.read_manifest(datasets["train"] / "train.manifest")
    normal = next(line for line in lines if line["auto-label"] == 1)
    anomaly = next(line for line in lines if line["auto-label"] == 0)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(Path(normal["source-ref"]).read_bytes()[:200])
    wrong_class = json.loads(json.dumps(anomaly))
    colour_map = wrong_class["anomaly-mask-ref-metadata"]["internal-color-map"]
    other = next(c for c in COMPONENTS if c.name != colour_map["1"]["class-name"])
    colour_map["2"] = {"class-name": other.name, "hex-color": other.color, "confidence": 0.0}  # lists more than shown
    bad = [{**normal, "source-ref": str(tmp_path / "gone.jpg")}, {**normal, "source-ref": str(corrupt)},
           {**normal, "auto-label": 0}, {**normal, "anomaly-mask-ref": anomaly["anomaly-mask-ref"]},
           wrong_class, "not json", normal]
    examples, rejected = data.quality_check([normal, anomaly, *bad])
    assert [e.path for e in examples] == [normal["source-ref"], anomaly["source-ref"]]
    reasons = [entry.reason for entry in rejected]
    assert len(reasons) == len(bad)
    for expected, reason in zip(["unreadable image", "unreadable image", "mislabeled: auto-label",
                                 "mislabeled: a normal image with an anomaly mask", "mislabeled: the colour map lists",
                                 "not a manifest entry", "already in the data"], reasons):
        assert expected in reason


def staged_copies_of_version_2(repository: Path, tmp_path: Path) -> dict[str, Path]:
    staged = {}
    for name in (defect_parent.NAME, defect_child.NAME):
        staged[name] = tmp_path / name
        shutil.copytree(repository / name / "2", staged[name])
    return staged


def assert_nothing_registered(repository: Path, before: dict[str, list[int]]) -> None:
    for name, versions in before.items():
        assert version_numbers(repository / name) == versions
        assert not [p for p in (repository / name).iterdir() if "partial" in p.name]


def test_interrupted_staging_leaves_no_half_registered_version(repository, tmp_path, monkeypatch):
    staged = staged_copies_of_version_2(repository, tmp_path)
    before = {name: version_numbers(repository / name) for name in staged}
    original = registry.copy_runner

    def interrupt_at_the_child(model, target, version_dir):
        if model.name == defect_child.NAME:
            raise KeyboardInterrupt
        original(model, target, version_dir)

    monkeypatch.setattr(registry, "copy_runner", interrupt_at_the_child)
    with pytest.raises(KeyboardInterrupt):
        registry.register(repository, staged)
    assert_nothing_registered(repository, before)


def test_registration_interrupted_right_after_its_first_rename_registers_nothing(repository, tmp_path, monkeypatch):
    staged = staged_copies_of_version_2(repository, tmp_path)
    before = {name: version_numbers(repository / name) for name in staged}
    rename, renamed = Path.rename, []

    def rename_then_interrupt(path, target):
        renamed.append(rename(path, target))
        raise KeyboardInterrupt  # Ctrl-C the moment the first model's folder has its version number

    monkeypatch.setattr(Path, "rename", rename_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        registry.register(repository, staged)
    monkeypatch.undo()
    assert len(renamed) == 1 and renamed[0].name == str(max(before[defect_parent.NAME]) + 1)
    assert_nothing_registered(repository, before)


def _pick(repository: Path, paths: list[Path], anomalous: bool) -> bytes:
    """An image the served parent routes as asked (decided in-process with the same ONNX file)."""
    reference = InProcessInspection(repository)
    for path in paths:
        if (reference.inspect([encoded(path)])[defect_parent.ANOMALY_SCORE.name][0, 0] >= 0.5) == anomalous:
            return encoded(path)
    pytest.fail(f"the quickly trained parent calls no image of {len(paths)} {'an anomaly' if anomalous else 'normal'}")


def test_a_normal_image_never_reaches_the_child_per_triton_statistics(defect_server, repository, datasets):
    image = _pick(repository, images_of(datasets["test"], "normal"), anomalous=False)
    parent, child = (inference_count(defect_server, name) for name in (defect_parent.NAME, defect_child.NAME))
    result = inspect_client.inspect(Route("http-binary", defect_server.http_url), image)
    assert result.label == "normal" and not any(result.missing.values())
    assert inference_count(defect_server, defect_parent.NAME) == parent + 1
    assert inference_count(defect_server, defect_child.NAME) == child


def test_an_anomaly_reaches_the_child_once(defect_server, repository, datasets):
    image = _pick(repository, images_of(datasets["test"], "anomaly"), anomalous=True)
    child = inference_count(defect_server, defect_child.NAME)
    result = inspect_client.inspect(Route("http-binary", defect_server.http_url), image)
    assert result.label == "anomaly"
    assert inference_count(defect_server, defect_child.NAME) == child + 1


def test_served_results_equal_in_process_onnx_runtime(defect_server, repository, datasets, photos):
    images = [encoded(p) for p in images_of(datasets["test"], "normal")[:2] + images_of(datasets["test"], "anomaly")[:3]]
    images.append(photos["coffee"])
    reference = InProcessInspection(repository)
    route = Route("http-binary", defect_server.http_url)
    names = [tensor.name for tensor in defect_inspection.OUTPUTS]
    for image in images:  # one per request: the served batch is whatever arrives together
        served = infer(route, defect_inspection.NAME, {defect_inspection.INPUT.name: inspect_client.encoded_batch([image])},
                       names)
        expected = reference.inspect([image])
        for name in names:
            if served[name].dtype == object:
                assert served[name].tolist() == expected[name].tolist()
            else:
                np.testing.assert_allclose(served[name], expected[name], rtol=1e-5, atol=1e-6)


def test_a_photo_that_is_not_a_board_gets_a_result_flagged_low_confidence(defect_server, photos):
    route = Route("http-binary", defect_server.http_url)
    for name, image in photos.items():
        assert inspect_client.inspect(route, image).low_confidence, name


def test_the_normal_boards_of_the_unseen_test_dataset_are_not_flagged_low_confidence(defect_server, datasets):
    route = Route("http-binary", defect_server.http_url)
    results = {path.name: inspect_client.inspect(route, encoded(path)) for path in images_of(datasets["test"], "normal")}
    flagged = {name: result.anomaly_score for name, result in results.items() if result.low_confidence}
    assert results and not flagged, f"flagged (anomaly score): {flagged}"


def test_tiny_and_corrupt_images_get_errors_naming_the_problem_and_serving_goes_on(defect_server, datasets):
    import io

    from PIL import Image

    tiny = io.BytesIO()
    Image.new("RGB", (12, 9), "green").save(tiny, format="PNG")
    board = encoded(images_of(datasets["test"], "normal")[0])
    route = Route("http-binary", defect_server.http_url)
    with pytest.raises(RequestError, match="12x9 pixels; defect inspection needs at least 32x32"):
        inspect_client.inspect(route, tiny.getvalue())
    with pytest.raises(RequestError, match="could not decode the image data"):
        inspect_client.inspect(route, board[:400])
    assert inspect_client.inspect(route, board).label in ("normal", "anomaly")


def test_inspect_cli_agrees_over_http_binary_and_a_sagemaker_started_endpoint(defect_server, repository, datasets,
                                                                               tmp_path, capsys):
    """SageMaker's start-up loads only the default model and its steps: bls_models must bring the rest."""
    _, loaded, bls = required_models(repository, defect_inspection.NAME)
    assert bls == [defect_parent.NAME, defect_child.NAME] and defect_parent.NAME not in loaded
    environment = container_environment(defect_inspection.NAME, bls)
    paths = [str(p) for p in images_of(datasets["test"], "normal")[:1] + images_of(datasets["test"], "anomaly")[:2]]
    assert inspect_client.main([*paths, "--url", defect_server.http_url]) == 0
    over_http = capsys.readouterr().out
    sagemaker = TritonServer(repository, sagemaker_mode=True, sagemaker_env=environment,
                             log_path=tmp_path / "sagemaker.log").start()
    try:
        assert inspect_client.main([*paths, "--protocol", "sagemaker-binary", "--url", sagemaker.sagemaker_url]) == 0
    finally:
        sagemaker.stop()
    assert capsys.readouterr().out == over_http and "anomaly" in over_http


def test_evaluation_scores_equal_scikit_learn_metrics_on_made_up_labels():
    from sklearn import metrics

    rng = np.random.default_rng(11)
    missing = rng.random((60, len(CLASSES))) < 0.35
    missing[:, -1] = False  # a class never missing: its precision, recall and F1 are 0, as scikit-learn's are
    scores = np.clip(0.45 * missing + 0.7 * rng.random(missing.shape), 0, 1)  # mostly right, often wrong
    predicted = scores >= evaluation.THRESHOLD
    child = evaluation.child_report(missing, scores)
    precision, recall, f1, support = metrics.precision_recall_fscore_support(missing, predicted, zero_division=0)
    for index, name in enumerate(CLASSES):
        entry = child["per_label"][name]
        assert [entry["precision"], entry["recall"], entry["f1"]] == pytest.approx(
            [precision[index], recall[index], f1[index]])
        assert entry["support"] == support[index]
        assert entry["confusion"] == metrics.confusion_matrix(missing[:, index], predicted[:, index],
                                                              labels=[False, True]).tolist()
    assert child["f1"] == pytest.approx(metrics.f1_score(missing, predicted, average="macro", zero_division=0))
    assert child["micro"]["f1"] == pytest.approx(metrics.f1_score(missing, predicted, average="micro"))
    assert child["exact_match"] == pytest.approx(metrics.accuracy_score(missing, predicted))

    anomaly = rng.random(50) < 0.6
    verdicts = np.clip(0.3 * anomaly + 0.8 * rng.random(50), 0, 1)[:, None]
    called = verdicts[:, 0] >= evaluation.THRESHOLD
    parent = evaluation.parent_report(anomaly, verdicts)
    precision, recall, f1, support = metrics.precision_recall_fscore_support(anomaly, called, labels=[False, True])
    for index, label in enumerate(["normal", "anomaly"]):
        entry = parent["per_label"][label]
        assert [entry["precision"], entry["recall"], entry["f1"], entry["support"]] == pytest.approx(
            [precision[index], recall[index], f1[index], support[index]])
    assert parent["f1"] == pytest.approx(metrics.f1_score(anomaly, called, average="macro"))
    assert parent["accuracy"] == pytest.approx(metrics.accuracy_score(anomaly, called))
    assert parent["confusion"] == metrics.confusion_matrix(anomaly, called, labels=[False, True]).tolist()


def test_a_rebuild_of_the_repository_keeps_registered_versions_and_the_served_one(tmp_path):
    repository = tmp_path / "cpu"
    options = BuildOptions(target="cpu", models=(defect_parent.NAME, defect_child.NAME))
    build_repository(repository, options)
    for name in (defect_parent.NAME, defect_child.NAME):
        shutil.copytree(repository / name / "1", repository / name / "2")  # stands in for a registered run
        set_served_version(repository / name, 2)
    build_repository(repository, options)
    for name in (defect_parent.NAME, defect_child.NAME):
        assert version_numbers(repository / name) == [1, 2] and served_version(repository / name) == 2
