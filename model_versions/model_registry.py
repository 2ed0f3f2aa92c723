"""In the Model Registry: a product's local version as a model package of its ``<product>_inspection``;
register, approve, reject, list.

A package is one local version: an archive of the product's pipeline whose parent and
child serve exactly that version, and the version's evaluation reports
(the package's model metrics). The local version folders stay what serves locally; an
approval changes both or neither, so the two never disagree about which version is approved:
the local F1 rule decides first, and a version it refuses leaves its package pending.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import urllib.parse
from datetime import datetime, timezone
from pathlib import Path

from builders import defect_inspection
from model_versions import local, model_packages
from model_versions.model_packages import APPROVED, REJECTED, Package
from model_versions.repository import served_version, set_served_version, version_numbers
from products import Product
from sagemaker_deploy.aws import PROJECT_TAG, Aws, AwsError
from sagemaker_deploy.deploy import Created, container_environment, image_uri, remove
from sagemaker_deploy.package import make_archive, required_models

# S3 tags of the registry's artifacts: the project's, and no endpoint's (teardown of an endpoint keeps them)
REGISTRY_TAGGING = urllib.parse.urlencode({PROJECT_TAG["Key"]: PROJECT_TAG["Value"]})


def pipeline_of(product: Product) -> str:
    """The model package group is named after the product's pipeline."""
    return defect_inspection.name(product)


def _evaluated_version(repository: Path, product: Product, version: int) -> dict[str, dict]:
    """Each registry model's evaluation report of ``version``; RegistryError when one is missing."""
    reports = {}
    for name in local.models(product):
        model_dir = local.model_dir_of(repository, product, name)
        if version not in version_numbers(model_dir):
            raise local.RegistryError(f"{name} has no version {version} (versions: {version_numbers(model_dir)})")
        report = model_dir / str(version) / local.REPORT
        if not report.is_file():
            raise local.RegistryError(f"{name} version {version} has no {local.REPORT}: only evaluated "
                                      "versions can be registered")
        reports[name] = json.loads(report.read_text())
    return reports


def pack_version(repository: Path, product: Product, version: int, archive: Path, triton_version: str | None,
                 allow_cpu_target: bool) -> list[str]:
    """model.tar.gz of the pipeline serving ``version`` of both classifiers (a pinned temporary copy,
    holding no other version of them); returns the BLS-only models for the container's environment."""
    pipeline, trained = pipeline_of(product), local.models(product)
    needed, _, _ = required_models(repository, pipeline)
    with tempfile.TemporaryDirectory(prefix=".registry-", dir=archive.parent) as workdir:
        copy = Path(workdir)
        for name in needed:
            source = Path(repository) / name
            other_versions = (lambda folder, names, source=source: [
                entry for entry in names if Path(folder) == source and entry.isdigit() and entry != str(version)])
            shutil.copytree(source, copy / name, ignore=other_versions if name in trained else None)
            if name in trained:
                set_served_version(copy / name, version)
        _, bls = make_archive(copy, pipeline, archive, triton_version, allow_cpu_target)
    return bls


def register(aws: Aws, repository: Path, product: Product, version: int, bucket: str, prefix: str,
             triton_version: str, instance_type: str, workdir: Path, allow_cpu_target: bool = False) -> str:
    """Push local ``version`` to the registry (pending approval); a rerun returns the package it made."""
    pipeline = pipeline_of(product)
    reports = _evaluated_version(repository, product, version)
    existing = [p for p in model_packages.packages(aws, pipeline) if p.local_version == str(version)
                and p.status != REJECTED]
    if existing:
        aws.say(f"version {version} is already registered as {existing[-1].arn} ({existing[-1].status})")
        return existing[-1].arn
    workdir.mkdir(parents=True, exist_ok=True)
    archive = workdir / f"{pipeline}-{version}.tar.gz"
    bls = pack_version(repository, product, version, archive, triton_version, allow_cpu_target)
    evaluation = workdir / f"{pipeline}-{version}-evaluation.json"
    evaluation.write_text(json.dumps({"pipeline": pipeline, "local_version": version, "models": reports}, indent=1))
    folder = f"{prefix.strip('/')}/{pipeline}/version-{version}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    created = Created()
    try:
        model_url, metrics_url = (_upload(aws, created, path, bucket, f"{folder}/{key}")
                                  for path, key in ((archive, "model.tar.gz"), (evaluation, "evaluation.json")))
        image = image_uri(aws.region or "", triton_version, instance_type)
        return model_packages.register(aws, pipeline, version, image, model_url,
                                       container_environment(pipeline, bls), metrics_url, instance_type)
    except (AwsError, ValueError):
        remove(aws, created)  # no artifact without its package
        raise


def _upload(aws: Aws, created: Created, path: Path, bucket: str, key: str) -> str:
    aws.call("s3", "upload_file", Filename=str(path), Bucket=bucket, Key=key, ExtraArgs={"Tagging": REGISTRY_TAGGING})
    url = f"s3://{bucket}/{key}"
    created.add("s3", url)
    return url


def _package_version(aws: Aws, pipeline: str, arn: str) -> tuple[Package, int]:
    package = model_packages.describe(aws, arn)
    if package.group != model_packages.group_name(pipeline) or not package.local_version.isdigit():
        raise local.RegistryError(f"model package {arn} is not a registered {pipeline} version "
                                  f"(group {package.group!r}, local version {package.local_version!r})")
    return package, int(package.local_version)


def approve(aws: Aws, repository: Path, product: Product, arn: str, description: str) -> list[str]:
    """Serve the package's version locally (the F1 rule, both models or neither), then mark it Approved.

    Raises local.PromotionRefused (package left as it was) when the rule refuses either model.
    """
    _, version = _package_version(aws, pipeline_of(product), arn)
    trained = local.models(product)
    served_before = {name: served_version(local.model_dir_of(repository, product, name)) for name in trained}
    try:
        lines = [local.approve(repository, product, name, version) for name in trained]
        model_packages.set_status(aws, arn, APPROVED, description)
    except BaseException:  # a refusal, an AWS error, Ctrl-C: the local folders go back to what they served
        for name, served in served_before.items():
            model_dir = local.model_dir_of(repository, product, name)
            if served is not None and served_version(model_dir) != served:
                set_served_version(model_dir, served)
        raise
    return lines


def reject(aws: Aws, repository: Path, product: Product, arn: str, description: str) -> Package:
    """Mark the package Rejected; refused while its version is the one served locally."""
    _, version = _package_version(aws, pipeline_of(product), arn)
    served = [name for name in local.models(product)
              if served_version(local.model_dir_of(repository, product, name)) == version]
    if served:
        raise local.RegistryError(f"version {version} is served locally ({', '.join(served)}): approve another "
                                  "version first, so that the local folders and the registry agree")
    return model_packages.set_status(aws, arn, REJECTED, description)


def _metrics(aws: Aws, package: Package) -> dict:
    bucket, _, key = package.metrics_uri.removeprefix("s3://").partition("/")
    body = aws.call("s3", "get_object", Bucket=bucket, Key=key)["Body"]
    with aws.one_line_errors("s3", "get_object"):
        return json.loads(body.read())


def status_lines(aws: Aws, pipeline: str) -> list[str]:
    """One line per package, oldest first: registry version, local version, approval, F1 from the report."""
    lines = []
    for package in model_packages.packages(aws, pipeline):
        reports = _metrics(aws, package)["models"]
        scores = ", ".join(f"{name} F1 validation {record['splits']['validation']['f1']:.4f} test "
                           f"{record['splits']['test']['f1']:.4f}" for name, record in reports.items())
        reason = f" ({package.description})" if package.description else ""
        lines.append(f"package {package.number}: local version {package.local_version}, {package.status}{reason}; "
                     f"{scores}\n    {package.arn}")
    return lines or [f"no {pipeline} package in group {model_packages.group_name(pipeline)}"]
