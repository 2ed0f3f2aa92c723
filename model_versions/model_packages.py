"""In the Model Registry, its calls: one model package group per pipeline, one model package per
registered version, approved or rejected by a person.

A package names everything a deploy needs (the Triton image, the uploaded archive, the
container's environment) and carries the version's evaluation report as model metrics.
It also records the local version number (customer metadata ``local_version``), so the
local version folders, which serve locally, and the registry never disagree about which
version a package is.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from sagemaker_deploy.aws import PROJECT_TAG, Aws

PENDING, APPROVED, REJECTED = "PendingManualApproval", "Approved", "Rejected"
LOCAL_VERSION = "local_version"
PIPELINE = "pipeline"


class RegistryError(RuntimeError):
    """The registry cannot do what was asked; the message says why."""


def group_name(pipeline: str, prefix: str = "visual-inspection") -> str:
    """A model package group name SageMaker accepts ([a-zA-Z0-9](-*[a-zA-Z0-9]){0,62})."""
    name = re.sub(r"[^A-Za-z0-9]+", "-", f"{prefix}-{pipeline}").strip("-")
    return name[:63]


@dataclass(frozen=True)
class Package:
    arn: str
    group: str
    number: int  # the registry's version within the group
    status: str
    local_version: str
    metrics_uri: str
    description: str
    image: str = ""
    model_data_url: str = ""
    environment: dict | None = None


def ensure_group(aws: Aws, group: str, pipeline: str) -> None:
    """Create the pipeline's model package group unless it exists (a rerun reuses it)."""
    existing = aws.pages("sagemaker", "list_model_package_groups", "ModelPackageGroupSummaryList",
                         NameContains=group)
    if any(item["ModelPackageGroupName"] == group for item in existing):
        return
    aws.call("sagemaker", "create_model_package_group", ModelPackageGroupName=group, Tags=[PROJECT_TAG],
             ModelPackageGroupDescription=f"versions of the Triton pipeline {pipeline}")


def register(aws: Aws, pipeline: str, local_version: int, image: str, model_data_url: str, environment: dict,
             metrics_uri: str, instance_type: str) -> str:
    """A new model package, pending manual approval; returns its ARN."""
    group = group_name(pipeline)
    ensure_group(aws, group, pipeline)
    answer = aws.call(
        "sagemaker", "create_model_package", ModelPackageGroupName=group, ModelApprovalStatus=PENDING,
        ModelPackageDescription=f"{pipeline} version {local_version}",
        InferenceSpecification={
            "Containers": [{"Image": image, "ModelDataUrl": model_data_url, "Environment": environment}],
            "SupportedContentTypes": ["application/json", "application/vnd.sagemaker-triton.binary+json"],
            "SupportedResponseMIMETypes": ["application/json", "application/vnd.sagemaker-triton.binary+json"],
            "SupportedRealtimeInferenceInstanceTypes": [instance_type]},
        ModelMetrics={"ModelQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": metrics_uri}}},
        CustomerMetadataProperties={LOCAL_VERSION: str(local_version), PIPELINE: pipeline},
        Tags=[PROJECT_TAG])
    return answer.get("ModelPackageArn", "arn:dry-run")


def describe(aws: Aws, arn: str) -> Package:
    found = aws.call("sagemaker", "describe_model_package", ModelPackageName=arn)
    container = (found.get("InferenceSpecification", {}).get("Containers") or [{}])[0]
    metadata = found.get("CustomerMetadataProperties") or {}
    return Package(arn=found.get("ModelPackageArn", arn), group=found.get("ModelPackageGroupName", ""),
                   number=int(found.get("ModelPackageVersion", 0)), status=found.get("ModelApprovalStatus", ""),
                   local_version=metadata.get(LOCAL_VERSION, ""),
                   metrics_uri=found.get("ModelMetrics", {}).get("ModelQuality", {}).get("Statistics", {})
                   .get("S3Uri", ""), description=found.get("ApprovalDescription", ""),
                   image=container.get("Image", ""), model_data_url=container.get("ModelDataUrl", ""),
                   environment=container.get("Environment", {}))


def set_status(aws: Aws, arn: str, status: str, description: str) -> Package:
    """Approve or reject a package with the reason a person gave."""
    if status not in (APPROVED, REJECTED):
        raise RegistryError(f"status {status!r}: a person sets {APPROVED} or {REJECTED}")
    current = describe(aws, arn)
    metadata = {LOCAL_VERSION: current.local_version} if current.local_version else {}
    # Sent again: an update without it would clear it on some implementations (moto does).
    aws.call("sagemaker", "update_model_package", ModelPackageArn=arn, ModelApprovalStatus=status,
             ApprovalDescription=description, **({"CustomerMetadataProperties": metadata} if metadata else {}))
    return describe(aws, arn)


def packages(aws: Aws, pipeline: str) -> list[Package]:
    """Every package of the pipeline's group, oldest first (all pages)."""
    summaries = aws.pages("sagemaker", "list_model_packages", "ModelPackageSummaryList",
                             ModelPackageGroupName=group_name(pipeline))
    return sorted((describe(aws, item["ModelPackageArn"]) for item in summaries), key=lambda p: p.number)


def require_approved(aws: Aws, arn: str) -> Package:
    package = describe(aws, arn)
    if package.status != APPROVED:
        raise RegistryError(f"model package {arn} is {package.status}, not {APPROVED}: approve it first "
                            "(python -m defect_classifier approve ... --package ARN)")
    return package
