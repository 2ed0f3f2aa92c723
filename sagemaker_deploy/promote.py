"""The staging gate: an approved model package reaches production only through a staging endpoint
that passes the acceptance checks.

``promote`` refuses a package that is not Approved before any call that creates something;
deploys (or updates) the staging endpoint from the package's image, archive and environment
(no packing, no upload); runs the checks against that endpoint through boto3 (the unseen test
set through ``defect_inspection`` with F1 thresholds, a latency budget from a short load run, a
bad-input smoke test); writes the report (JSON and Markdown); and only when every check passes
hands the package to ``rollout.release_to_production``. A failed gate leaves production as it was.

An interrupted promote is settled by the next run: an endpoint still Creating or Updating is
waited for, a Failed one and the models and configs an interrupted deploy left (found by the
staging endpoint's ownership tags, never by name) are deleted, and a staging endpoint that
already serves the package is reused as it is.
"""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from model_versions.model_packages import Package, require_approved
from products import Product
from sagemaker_deploy.aws import Aws, AwsError
from sagemaker_deploy.deploy import (DEFAULT_INSTANCE, DeployFailed, DeployRequest, Release, deploy, owned,
                                     teardown, update)
from sagemaker_deploy.rollout import AlarmLimits, TrafficShift, release_to_production, settle



class GateFailed(RuntimeError):
    """A staging check failed; production was not touched. The message names the checks and the report."""


class PromoteError(RuntimeError):
    """The promote cannot start or go on; the message says why."""


@dataclass(frozen=True)
class Gate:
    """The acceptance thresholds of the staging checks."""

    parent_f1: float = 0.9  # macro F1 of normal/anomaly on the unseen set
    child_f1: float = 0.8  # macro F1 over the component classes, on the unseen anomalies
    p95_ms: float = 2000.0  # latency budget of one image, end to end through the endpoint
    load_requests: int = 20
    load_concurrency: int = 1


@dataclass
class PromoteRequest:
    package: str  # model package ARN
    staging_endpoint: str
    endpoint: str  # production
    test_dataset: Path  # a Lookout-format dataset of the product training never saw (all of it tests)
    role: str
    region: str
    product: Product | None = None  # what the package inspects (required; a keyword for readability)
    bucket: str = ""  # not written to: a package's archive is in S3 already
    instance_type: str = DEFAULT_INSTANCE
    instance_count: int = 1
    gate: Gate = field(default_factory=Gate)
    report_dir: Path = Path("build/release")
    shift: TrafficShift = field(default_factory=TrafficShift)
    limits: AlarmLimits = field(default_factory=AlarmLimits)
    max_instances: int = 1
    poll_s: float = 30.0
    wait_timeout_s: float = 3600.0

    def deploy_request(self, package: Package, endpoint: str, instance_count: int = 1) -> DeployRequest:
        packaged = Release(f"package-{package.number}", package.model_data_url, package.image, dict(package.environment or {}))
        return DeployRequest(Path(), endpoint, self.bucket, self.role, self.region,
                             default_model=f"{self.product.name}_inspection",
                             instance_type=self.instance_type, wait_timeout_s=self.wait_timeout_s,
                             poll_s=self.poll_s, instance_count=instance_count, packaged=packaged)


@dataclass
class Check:
    name: str
    passed: bool
    measured: dict
    limit: dict
    detail: str


def promote(aws: Aws, request: PromoteRequest) -> Path:
    """Staging, the checks, then production; returns the Markdown report. GateFailed when a check fails."""
    package = require_approved(aws, request.package)
    if request.product is None:
        raise PromoteError("name the product the package inspects (--product)")
    examples = unseen_examples(request.test_dataset, request.product)  # fails before any deploy
    staging = request.deploy_request(package, request.staging_endpoint)
    ready_staging(aws, staging, package)
    checks = acceptance_checks(request.staging_endpoint, request.region, request.product, examples, request.gate)
    report = write_report(request.report_dir, package, request, checks)
    failed = [check for check in checks if not check.passed]
    if failed:
        raise GateFailed(f"staging gate failed for package {package.number} (local version {package.local_version}): "
                         f"{'; '.join(check.detail for check in failed)}; production {request.endpoint} untouched; "
                         f"report {report}")
    aws.say(f"staging gate passed for package {package.number}; report {report}")
    production = request.deploy_request(package, request.endpoint, request.instance_count)
    if serves_package(aws, request.endpoint, package):
        aws.say(f"{request.endpoint} already serves package {package.number} (a rerun): nothing to release")
    else:
        release_to_production(aws, production, request.shift, request.limits, request.max_instances)
    return report


# -- the staging endpoint ---------------------------------------------------------------
def _described(aws: Aws, endpoint: str) -> dict | None:
    try:
        return aws.call("sagemaker", "describe_endpoint", EndpointName=endpoint)
    except AwsError as error:
        if error.code == "ValidationException":  # "Could not find endpoint"
            return None
        raise


def serves_package(aws: Aws, endpoint: str, package: Package) -> bool:
    """The endpoint is InService with a model made from the package's archive and image."""
    described = _described(aws, endpoint)
    if not described or described.get("EndpointStatus") != "InService":
        return False
    config = aws.call("sagemaker", "describe_endpoint_config", EndpointConfigName=described["EndpointConfigName"])
    model = aws.call("sagemaker", "describe_model", ModelName=config["ProductionVariants"][0]["ModelName"])
    container = model.get("PrimaryContainer", {})
    return (container.get("ModelDataUrl"), container.get("Image")) == (package.model_data_url, package.image)


def ready_staging(aws: Aws, staging: DeployRequest, package: Package) -> None:
    """The staging endpoint InService with the package: reused, updated, or deployed afresh."""
    endpoint = staging.endpoint
    described = _described(aws, endpoint)
    if described is None:
        for line in teardown(aws, endpoint):  # what an interrupted deploy left, by the endpoint's tags
            aws.say(f"removed {line}, left by an interrupted promote")
        deploy(aws, staging)
        return
    tags = aws.pages("sagemaker", "list_tags", "Tags", ResourceArn=described["EndpointArn"])
    if not owned(tags, endpoint):
        raise PromoteError(f"endpoint {endpoint} exists but is not this project's (no ownership tags): "
                           "choose another --staging-endpoint")
    try:  # waits out an interrupted run's create or update, removes the configs and models it does not serve
        described = settle(aws, endpoint, staging)
    except DeployFailed:
        described = {"EndpointStatus": "Failed"}
    if described.get("EndpointStatus") == "Failed":
        aws.say(f"staging endpoint {endpoint} is Failed (an earlier run's): removing it and deploying again")
        teardown(aws, endpoint)
        deploy(aws, staging)
        return
    if serves_package(aws, endpoint, package):
        aws.say(f"staging endpoint {endpoint} already serves package {package.number}: resuming at the checks")
        return
    update(aws, staging)


# -- the acceptance checks --------------------------------------------------------------
def unseen_examples(dataset: Path, product: Product):
    """The unseen test set, checked by Lookout's rules; PromoteError unless it has normals and anomalies."""
    from defect_classifier import data
    from defect_data import lookout

    try:
        examples, _ = data.drop_duplicates(data.read(dataset, product, lookout.Reader()))
    except data.DatasetError as error:
        raise PromoteError(f"the test dataset cannot test: {error}") from None
    verdicts = {example.anomaly for example in examples}
    if verdicts != {False, True}:
        raise PromoteError(f"the test dataset {dataset} has {len(examples)} usable images, not both normal and "
                           f"anomalous ones: pass a dataset of the product training never saw (--test-dataset)")
    return examples


def _route(endpoint: str, region: str):
    from clients.protocols import Route

    return Route("sagemaker-endpoint", "", endpoint_name=endpoint, region=region)


def acceptance_checks(endpoint: str, region: str, product: Product, examples, gate: Gate) -> list[Check]:
    route = _route(endpoint, region)
    good_image = Path(examples[0].path).read_bytes()
    return [*accuracy_checks(route, product, examples, gate), latency_check(route, product, good_image, gate),
            bad_input_check(endpoint, region, product, good_image)]


def accuracy_checks(route, product: Product, examples, gate: Gate) -> list[Check]:
    """Parent F1 and child macro F1 of the endpoint's answers on the unseen set (defect_classifier.evaluation)."""
    from clients.inspect import inspect
    from clients.protocols import RequestError
    from defect_classifier import data, evaluation

    answers, errors = [], []
    for example in examples:
        try:
            answers.append(inspect(route, product.name, Path(example.path).read_bytes(), bool(product.classes)))
        except RequestError as error:
            errors.append(f"{example.path}: {error}")
    if errors:
        first = " ".join(errors[0].split())  # one line, whatever the service's message holds
        detail = f"{len(errors)} of {len(examples)} test images got no answer (first: {first})"
        return [Check("test set", False, {"errors": len(errors)}, {"errors": 0}, detail)]
    truth = np.array([example.anomaly for example in examples])
    parent = evaluation.parent_report(truth, np.array([answer.anomaly_score for answer in answers]))
    checks = [_threshold("parent F1", parent["f1"], gate.parent_f1, len(examples))]
    anomalous = [index for index, example in enumerate(examples) if example.anomaly and example.mask is not None]
    if product.classes and anomalous:
        found = np.array([[answers[index].missing.get(name, 0.0) for name in product.class_names]
                          for index in anomalous])
        child = evaluation.child_report(data.class_matrix([examples[index] for index in anomalous], product), found,
                                        product.class_names)
        checks.append(_threshold("child macro F1", child["f1"], gate.child_f1, len(anomalous)))
    return checks


def _threshold(name: str, value: float, minimum: float, count: int) -> Check:
    passed = value >= minimum
    detail = f"{name} {value:.4f} {'>=' if passed else '<'} {minimum:.4f} on {count} unseen images"
    return Check(name, passed, {"f1": round(value, 4), "images": count}, {"min_f1": minimum}, detail)


def latency_check(route, product: Product, image: bytes, gate: Gate) -> Check:
    """p95 of ``load_requests`` requests, ``load_concurrency`` at a time, against the budget."""
    from clients.inspect import inspect
    from clients.protocols import RequestError

    def timed(_):
        started = time.perf_counter()
        try:
            inspect(route, product.name, image, bool(product.classes))
        except RequestError:
            return None
        return (time.perf_counter() - started) * 1000

    with ThreadPoolExecutor(gate.load_concurrency) as pool:
        timings = list(pool.map(timed, range(gate.load_requests)))
    failed = sum(timing is None for timing in timings)
    answered = [timing for timing in timings if timing is not None]
    p95 = float(np.percentile(answered, 95)) if answered else float("inf")
    passed = not failed and p95 <= gate.p95_ms
    detail = (f"latency p95 {p95:.0f} ms {'<=' if p95 <= gate.p95_ms else '>'} {gate.p95_ms:.0f} ms over "
              f"{gate.load_requests} requests, {gate.load_concurrency} at a time"
              + (f"; {failed} failed" if failed else ""))
    measured = {"p50_ms": round(float(np.percentile(answered, 50)), 1) if answered else None,
                "p95_ms": round(p95, 1), "failed": failed, "requests": gate.load_requests}
    return Check("latency", passed, measured, {"p95_ms": gate.p95_ms, "failed": 0}, detail)


def _invoke(runtime, endpoint: str, product: Product, image: bytes) -> int:
    """The status a client sees: 200, the container's own status inside a ModelError, or the API's."""
    import botocore.exceptions

    from builders import defect_inspection
    from clients.classify import encoded_batch
    from clients.protocols import sagemaker_body

    body, content_type = sagemaker_body({defect_inspection.INPUT.name: encoded_batch([image])},
                                        [output.name for output in defect_inspection.outputs(product)], binary=True)
    try:
        runtime.invoke_endpoint(EndpointName=endpoint, ContentType=content_type, Body=body)["Body"].read()
    except botocore.exceptions.ClientError as error:
        return int(error.response.get("OriginalStatusCode") or error.response["ResponseMetadata"]["HTTPStatusCode"])
    return 200


def bad_input_check(endpoint: str, region: str, product: Product, good_image: bytes) -> Check:
    """A truncated image gets a 4xx (the client's fault, not a 5xx), and a good request right after works."""
    import boto3
    import botocore.config

    runtime = boto3.session.Session().client("sagemaker-runtime", region_name=region,
                                             config=botocore.config.Config(retries={"max_attempts": 1}))
    corrupt_status = _invoke(runtime, endpoint, product, good_image[:200])
    after_status = _invoke(runtime, endpoint, product, good_image)
    passed = 400 <= corrupt_status < 500 and after_status == 200
    detail = (f"bad input: a corrupt image got HTTP {corrupt_status} (want 4xx), a good image right after got "
              f"HTTP {after_status} (want 200)")
    return Check("bad input", passed, {"corrupt_status": corrupt_status, "good_status_after": after_status},
                 {"corrupt_status": "4xx", "good_status_after": 200}, detail)


# -- the report ---------------------------------------------------------------------------
def write_report(folder: Path, package: Package, request: PromoteRequest, checks: list[Check]) -> Path:
    """staging-report.json and .md under ``folder``/package-N; returns the Markdown file."""
    target = Path(folder) / f"package-{package.number}"
    target.mkdir(parents=True, exist_ok=True)
    passed = all(check.passed for check in checks)
    record = {"package": package.arn, "package_version": package.number, "local_version": package.local_version,
              "staging_endpoint": request.staging_endpoint, "production_endpoint": request.endpoint,
              "test_dataset": str(request.test_dataset), "passed": passed,
              "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "gate": asdict(request.gate), "checks": [asdict(check) for check in checks]}
    (target / "staging-report.json").write_text(json.dumps(record, indent=1) + "\n")
    lines = [f"# Staging gate: package {package.number} (local version {package.local_version}): "
             f"{'PASSED' if passed else 'FAILED'}", "",
             f"Staging endpoint `{request.staging_endpoint}`, test set `{request.test_dataset}`, "
             f"{record['finished']}.", "", "| check | result | measured |", "| --- | --- | --- |"]
    lines += [f"| {check.name} | {'pass' if check.passed else 'FAIL'} | {check.detail} |" for check in checks]
    markdown = target / "staging-report.md"
    markdown.write_text("\n".join(lines) + "\n")
    return markdown
