"""The staged release against the local SageMaker (moto's server + real tritonserver containers):
register -> approve -> promote (the staging gate) -> production.

Versions of the defect models trained here: 2 on shuffled labels (made to fail), 3 properly,
4 untrained. Version 2 is approved first (it beats the untrained version 1 on validation F1),
so that the gate, not the local rule, is what stops it.
"""
from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest

from builders import defect_child, defect_inspection, defect_parent
from builders.declaration import BuildOptions
from builders.repository import build_repository
from clients.inspect import inspect
from clients.protocols import Route
from defect_classifier import pipeline
from defect_classifier.__main__ import main as classifier_main
from defect_classifier.training import TrainSettings
from model_versions import local, model_packages, model_registry
from model_versions.model_packages import APPROVED, PENDING, REJECTED
from model_versions.repository import served_version
from sagemaker_deploy import deploy as deploy_module
from sagemaker_deploy.__main__ import main as deploy_main
from sagemaker_deploy.aws import Aws
from sagemaker_deploy.deploy import DEFAULT_TRITON_VERSION, owned
from sagemaker_deploy.promote import Gate, PromoteRequest, promote, serves_package
from tests.aws_emulator import INSTANCE, ROLE, LocalSageMaker, apply_environment
from tests.conftest import SAMPLE_PRODUCT
from tests.test_defect_classifier import QUICK

BUCKET = "release-models"
GATE = Gate(parent_f1=0.8, child_f1=0.5, p95_ms=10000.0, load_requests=6)


@pytest.fixture(scope="module")
def local_sagemaker(tmp_path_factory):
    emulator = LocalSageMaker(tmp_path_factory.mktemp("sagemaker")).start()
    emulator.s3().create_bucket(Bucket=BUCKET)
    with pytest.MonkeyPatch.context() as patch:
        apply_environment(patch, emulator)
        yield emulator
    emulator.stop()


@pytest.fixture(scope="module")
def aws(local_sagemaker):
    return Aws("us-east-1", say=lambda line: None)


def shuffled_labels(prepare):
    """``pipeline.prepare`` whose training split has its labels (verdict, and classes with the mask they
    come from) permuted."""
    def prepare_shuffled(*args, **kwargs):
        parts, rejected = prepare(*args, **kwargs)
        labels = [(example.anomaly, example.classes, example.mask) for example in parts["train"]]
        order = np.random.default_rng(7).permutation(len(labels))
        parts["train"] = [dataclasses.replace(example, anomaly=labels[i][0], classes=labels[i][1], mask=labels[i][2])
                          for example, i in zip(parts["train"], order)]
        return parts, rejected
    return prepare_shuffled


@pytest.fixture(scope="module")
def repository(datasets, board, tmp_path_factory):
    """The sample board's pipeline: version 2 trained on shuffled labels, version 3 trained properly;
    version 1 (untrained) served."""
    repository = tmp_path_factory.mktemp("release-repository") / "cpu"
    build_repository(repository, BuildOptions(target="cpu", products=(board,),
                                              models=tuple(defect_inspection.models(board))))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipeline, "prepare", shuffled_labels(pipeline.prepare))
        assert pipeline.run(board, datasets["train"], datasets["test"], [repository], QUICK).versions == \
            {str(repository): 2}
    assert pipeline.run(board, datasets["train"], datasets["test"], [repository], QUICK).versions == \
        {str(repository): 3}
    return repository


def register(aws, repository, product, version, tmp_path_factory) -> str:
    return model_registry.register(aws, repository, product, version, BUCKET, "model-registry",
                                   DEFAULT_TRITON_VERSION, INSTANCE, tmp_path_factory.mktemp("registry"),
                                   allow_cpu_target=True)


@pytest.fixture(scope="module")
def bad_package(aws, repository, board, tmp_path_factory) -> str:
    """Version 2 (shuffled labels), approved: locally it beats the untrained version 1."""
    arn = register(aws, repository, board, 2, tmp_path_factory)
    model_registry.approve(aws, repository, board, arn, "beats the untrained version")
    return arn


@pytest.fixture(scope="module")
def good_package(aws, repository, board, bad_package, tmp_path_factory) -> str:
    arn = register(aws, repository, board, 3, tmp_path_factory)
    model_registry.approve(aws, repository, board, arn, "beats version 2")
    return arn


@pytest.fixture(scope="module")
def untrained_package(aws, repository, board, datasets, good_package, tmp_path_factory) -> str:
    """Version 4, never trained, registered (pending)."""
    version = pipeline.run(board, datasets["train"], datasets["test"], [repository], TrainSettings(epochs=0)).versions
    return register(aws, repository, board, version[str(repository)], tmp_path_factory)


def promote_args(arn, staging, production, dataset, store, report_dir, gate: Gate = GATE) -> list[str]:
    return ["--region", "us-east-1", "promote", "--package", arn, "--staging-endpoint", staging,
            "--endpoint", production, "--test-dataset", str(dataset), "--product", SAMPLE_PRODUCT,
            "--products-store", str(store), "--role", ROLE, "--instance-type", INSTANCE,
            "--min-parent-f1", str(gate.parent_f1), "--min-child-f1", str(gate.child_f1),
            "--p95-ms", str(gate.p95_ms), "--load-requests", str(gate.load_requests), "--report-dir", str(report_dir),
            "--poll-s", "0.5", "--wait-timeout-s", "180", "--instances", "1", "--max-instances", "2"]


def endpoint_config(aws, endpoint: str) -> str | None:
    """The config the endpoint serves; None when there is no such endpoint."""
    found = [e for e in aws.call("sagemaker", "list_endpoints")["Endpoints"] if e["EndpointName"] == endpoint]
    return aws.call("sagemaker", "describe_endpoint", EndpointName=endpoint)["EndpointConfigName"] if found else None


def resources(aws) -> dict[str, list[str]]:
    return {kind: sorted(item[f"{stem}Name"] for item in aws.pages("sagemaker", f"list_{kind}s", f"{stem}s"))
            for kind, stem in (("endpoint", "Endpoint"), ("endpoint_config", "EndpointConfig"), ("model", "Model"))}


def owned_by(aws, endpoint: str, kind: str, stem: str) -> list[str]:
    items = aws.pages("sagemaker", f"list_{kind}s", f"{stem}s")
    return [item[f"{stem}Name"] for item in items
            if owned(aws.pages("sagemaker", "list_tags", "Tags", ResourceArn=item[f"{stem}Arn"]), endpoint)]


def test_a_version_trained_on_shuffled_labels_is_stopped_by_the_staging_gate(aws, bad_package, datasets,
                                                                            product_store, tmp_path, capsys):
    production_before = endpoint_config(aws, "production")
    code = deploy_main(promote_args(bad_package, "staging", "production", datasets["test"], product_store, tmp_path))
    error = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in error
    assert error.startswith("error: staging gate failed for package") and "parent F1" in error
    assert "production production untouched" in error
    report = json.loads(next(tmp_path.glob("package-*/staging-report.json")).read_text())
    verdicts = {check["name"]: check["passed"] for check in report["checks"]}
    assert report["passed"] is False and verdicts["parent F1"] is False
    assert verdicts["latency"] and verdicts["bad input"]  # the model is wrong, not the serving
    assert endpoint_config(aws, "production") == production_before
    assert serves_package(aws, "staging", model_packages.describe(aws, bad_package))


def test_register_approve_promote_passes_the_gate_and_production_serves_the_package(
        aws, repository, board, bad_package, datasets, product_store, tmp_path, capsys):
    assert classifier_main(["register", "--region", "us-east-1", "--repository", str(repository), "--version", "3",
                            "--bucket", BUCKET, "--instance-type", INSTANCE, "--allow-cpu-target",
                            "--workdir", str(tmp_path / "registry")]) == 0
    arn = re.search(r"registered version 3 as (\S+) \(", capsys.readouterr().out).group(1)
    assert model_packages.describe(aws, arn).status == PENDING
    assert classifier_main(["approve", "--region", "us-east-1", "--repository", str(repository), "--package", arn,
                            "--description", "beats version 2 on validation F1"]) == 0
    assert served_version(repository / defect_parent.name(board)) == \
        served_version(repository / defect_child.name(board)) == 3
    assert classifier_main(["status", "--registry", "--region", "us-east-1",
                            "--product", str(product_store / SAMPLE_PRODUCT)]) == 0
    listed = capsys.readouterr().out
    assert re.search(rf"local version 3, Approved \(beats version 2 on validation F1\); {defect_parent.name(board)} "
                     r"F1 validation \d\.\d{4} test \d\.\d{4}", listed)

    assert deploy_main(promote_args(arn, "staging", "production", datasets["test"], product_store,
                                    tmp_path / "reports")) == 0
    assert "staging gate passed" in capsys.readouterr().out
    report = json.loads(next((tmp_path / "reports").glob("package-*/staging-report.json")).read_text())
    assert report["passed"] and [c["name"] for c in report["checks"]] == ["parent F1", "child macro F1", "latency",
                                                                           "bad input"]
    package = model_packages.describe(aws, arn)
    assert serves_package(aws, "staging", package) and serves_package(aws, "production", package)
    production = Route("sagemaker-endpoint", "", endpoint_name="production", region="us-east-1")
    anomaly = next(datasets["test"].glob("*/anomaly/*.jpg"), None) or next(datasets["test"].rglob("*.jpg"))
    assert inspect(production, SAMPLE_PRODUCT, anomaly.read_bytes()).label in ("normal", "anomaly")


def test_approve_refused_by_the_local_f1_rule_leaves_the_package_pending(aws, repository, board, untrained_package,
                                                                        capsys):
    before = model_packages.describe(aws, untrained_package).status
    served = {name: served_version(repository / name) for name in local.models(board)}
    assert classifier_main(["approve", "--region", "us-east-1", "--repository", str(repository), "--package",
                            untrained_package, "--description", "looks fine"]) == 3
    error = capsys.readouterr().err.strip()
    assert "does not beat the served version 3" in error and "\n" not in error
    assert model_packages.describe(aws, untrained_package).status == before != APPROVED
    assert {name: served_version(repository / name) for name in local.models(board)} == served


def test_promoting_a_pending_or_rejected_package_is_refused_before_anything_is_created(
        aws, repository, untrained_package, datasets, product_store, tmp_path, capsys):
    before = resources(aws)
    for status in (PENDING, REJECTED):
        if status == REJECTED:
            assert classifier_main(["reject", "--region", "us-east-1", "--repository", str(repository), "--package",
                                    untrained_package, "--description", "untrained"]) == 0
        assert deploy_main(promote_args(untrained_package, "staging-refused", "production-refused", datasets["test"],
                                        product_store, tmp_path)) == 1
        error = capsys.readouterr().err.strip()
        assert error == (f"error: model package {untrained_package} is {status}, not Approved: approve it first "
                         "(python -m defect_classifier approve ... --package ARN)")
    assert resources(aws) == before and not list(tmp_path.iterdir())


def test_an_interrupted_promote_is_cleaned_up_or_resumed_by_the_rerun(aws, good_package, board, datasets, tmp_path,
                                                                     local_sagemaker, monkeypatch):
    request = PromoteRequest(good_package, "staging-resumed", "production-resumed", datasets["test"], ROLE,
                             "us-east-1", product=board, instance_type=INSTANCE, gate=GATE, report_dir=tmp_path,
                             poll_s=0.5, wait_timeout_s=180, max_instances=2)
    create_config, wait = deploy_module.create_endpoint_config, deploy_module.wait_in_service

    def config_then_interrupt(*args, **kwargs):
        create_config(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(deploy_module, "create_endpoint_config", config_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        promote(aws, request)
    left = owned_by(aws, "staging-resumed", "model", "Model")
    assert len(left) == 1 and endpoint_config(aws, "staging-resumed") is None  # an interrupted deploy's leftovers

    monkeypatch.setattr(deploy_module, "create_endpoint_config", create_config)
    monkeypatch.setattr(deploy_module, "wait_in_service", lambda *args, **kwargs: (_ for _ in ()).throw(
        KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):  # the rerun cleans up, creates the endpoint, and is interrupted again
        promote(aws, request)
    assert left[0] not in owned_by(aws, "staging-resumed", "model", "Model")
    creating = endpoint_config(aws, "staging-resumed")

    monkeypatch.setattr(deploy_module, "wait_in_service", wait)
    promote(aws, request)  # resumes: waits for that endpoint, checks it, releases
    assert endpoint_config(aws, "staging-resumed") == creating
    assert local_sagemaker.status_history["staging-resumed"].count("Creating") == 1
    assert owned_by(aws, "staging-resumed", "endpoint_config", "EndpointConfig") == [creating]
    assert len(owned_by(aws, "staging-resumed", "model", "Model")) == 1
    assert serves_package(aws, "production-resumed", model_packages.describe(aws, good_package))
