"""Archives for a SageMaker multi-model endpoint: one ``<pipeline>.tar.gz`` per servable pipeline.

On a multi-model endpoint SageMaker downloads the archive a request names (``TargetModel``)
from the model's S3 prefix, extracts it and asks the Triton container to load it
(``POST /models``). Triton's SageMaker frontend loads the ensemble it finds among the
archive's model folders, with its steps; a python step's BLS-called models travel in the
same archive and the step loads them itself (``bls_models``). Every archive passes the
single-model package check, and ``check_extracted`` is what the local multi-model host
(``local_server.multi_model``) runs on an archive before it asks Triton to load it.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

from builders.config import parse
from sagemaker_deploy.aws import Aws, s3_tagging
from sagemaker_deploy.deploy import (Created, DeployRequest, Release, create_endpoint_config, create_model,
                                     image_uri, refuse_existing_endpoint, release_name, removed_on_failure,
                                     request_environment, start_endpoint)
from sagemaker_deploy.package import PackageError, check_repository, make_archive, read_config

ARCHIVE_SUFFIX = ".tar.gz"
# SageMaker's TargetModel is a relative S3 key; a name with path characters could reach
# outside the model prefix (or, locally, outside the archive folder).
TARGET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.tar\.gz")


def target_name(pipeline: str) -> str:
    return f"{pipeline}{ARCHIVE_SUFFIX}"


def check_target_name(target: str) -> str:
    """The pipeline's archive name, or a PackageError naming what is wrong with it."""
    if not TARGET_NAME.fullmatch(target or "") or ".." in target:
        raise PackageError(f"TargetModel {target!r} is not an archive name: expected <pipeline>.tar.gz made of "
                           "letters, digits, '.', '_' and '-', without a path")
    return target


def pipelines_in(repository: Path) -> list[str]:
    """The repository's servable pipelines: every ensemble."""
    return sorted(path.parent.name for path in Path(repository).glob("*/config.pbtxt")
                  if parse(path.read_text()).platform == "ensemble")


def package_pipelines(repository: Path, out_dir: Path, pipelines: list[str] | None = None,
                      triton_version: str | None = None, allow_cpu_target: bool = False) -> dict[str, list[str]]:
    """Write one checked archive per pipeline into ``out_dir``; returns archive name -> models packed.

    Every pipeline is checked before the first archive is written, so a bad one writes nothing.
    """
    chosen = pipelines or pipelines_in(repository)
    if not chosen:
        raise PackageError(f"{repository} holds no ensemble to serve")
    for pipeline in chosen:
        check_repository(repository, pipeline, triton_version, allow_cpu_target)
    packed = {}
    for pipeline in chosen:
        models, _ = make_archive(repository, pipeline, Path(out_dir) / target_name(pipeline), triton_version,
                                 allow_cpu_target)
        packed[target_name(pipeline)] = models
    return packed


def models_prefix(request: DeployRequest, release: str) -> str:
    """The S3 prefix of a multi-model endpoint's archives (its model's ModelDataUrl), one per release:
    a new release never writes where a live one loads from."""
    key = "/".join(part for part in (request.prefix.strip("/"), request.endpoint, release, "models") if part)
    return f"s3://{request.bucket}/{key}/"


def upload_archive(aws: Aws, created: Created, archive: Path, prefix_url: str, endpoint: str) -> str:
    bucket, _, key_prefix = prefix_url.removeprefix("s3://").partition("/")
    key = f"{key_prefix}{archive.name}"
    aws.call("s3", "upload_file", Filename=str(archive), Bucket=bucket, Key=key,
             ExtraArgs={"Tagging": s3_tagging(endpoint)})
    created.add("s3", f"s3://{bucket}/{key}")
    return f"s3://{bucket}/{key}"


def deploy_multi_model(aws: Aws, request: DeployRequest, pipelines: list[str] | None = None) -> Release:
    """One endpoint, ``Mode: MultiModel``, every pipeline's archive under one S3 prefix; on failure remove it all."""
    created = Created()
    with removed_on_failure(aws, created):
        archives = request.workdir / "archives"
        packed = package_pipelines(request.repository, archives, pipelines, request.triton_version,
                                   request.allow_cpu_target)  # local: written here, uploaded below
        refuse_existing_endpoint(aws, request.endpoint)
        image = image_uri(request.region, request.triton_version, request.instance_type)
        aws.say(f"Triton image for {request.region}: {image}")
        name = release_name(request.endpoint)
        prefix_url = models_prefix(request, name)
        for archive in packed:
            upload_archive(aws, created, archives / archive, prefix_url, request.endpoint)
        release = Release(name, prefix_url, image, request_environment(request, "", []), request.endpoint,
                          mode="MultiModel")
        create_model(aws, created, release, request.role)
        create_endpoint_config(aws, created, release, request.instance_type, instance_count=request.instance_count)
        start_endpoint(aws, created, request, release)
    aws.say(f"multi-model endpoint {request.endpoint} is InService; targets: {', '.join(packed)}")
    return release


def serving_prefix(aws: Aws, endpoint: str) -> str:
    """The archive prefix of a multi-model endpoint, read from what it serves; refuses a single-model one."""
    config_name = aws.call("sagemaker", "describe_endpoint", EndpointName=endpoint).get("EndpointConfigName", "")
    config = aws.call("sagemaker", "describe_endpoint_config", EndpointConfigName=config_name)
    model = aws.call("sagemaker", "describe_model", ModelName=config["ProductionVariants"][0]["ModelName"])
    container = model.get("PrimaryContainer", {})
    if container.get("Mode") != "MultiModel":
        raise PackageError(f"endpoint {endpoint} is not a multi-model endpoint (its model's Mode is "
                           f"{container.get('Mode', 'SingleModel')}); deploy it with --multi-model")
    return container["ModelDataUrl"]


def add_model(aws: Aws, request: DeployRequest, pipeline: str) -> str:
    """Upload one more pipeline's archive to a running multi-model endpoint: no redeploy.

    SageMaker caches a loaded archive by name, so an existing name is refused: give a new
    version a new name (the pipeline's ensemble under another name, or another repository).
    """
    prefix_url = serving_prefix(aws, request.endpoint)
    bucket, _, key_prefix = prefix_url.removeprefix("s3://").partition("/")
    name = target_name(pipeline)
    existing = aws.pages("s3", "list_objects_v2", "Contents", Bucket=bucket, Prefix=f"{key_prefix}{name}")
    if any(item["Key"] == f"{key_prefix}{name}" for item in existing):
        raise PackageError(f"{prefix_url}{name} exists: a multi-model endpoint keeps serving the archive it "
                           "loaded under that name; register the new version under a new name")
    archives = request.workdir / "archives"
    package_pipelines(request.repository, archives, [pipeline], request.triton_version, request.allow_cpu_target)
    url = upload_archive(aws, Created(), archives / name, prefix_url, request.endpoint)
    aws.say(f"added {url}: invoke it with TargetModel={name}")
    return url


def entry_model(model_dir: Path, target: str) -> str:
    """The model Triton's frontend loads from an extracted archive: its ensemble, or its only model."""
    if (model_dir / "config.pbtxt").exists():
        raise PackageError(f"{target}: the archive has a config.pbtxt at its top level; a multi-model archive "
                           "holds the pipeline's model folders (ensemble, steps, BLS-called models) at its root")
    folders = sorted(p.parent.name for p in model_dir.glob("*/config.pbtxt"))
    ensembles = [name for name in folders if read_config(model_dir, name).platform == "ensemble"]
    if len(ensembles) == 1 or (not ensembles and len(folders) == 1):
        return (ensembles or folders)[0]
    raise PackageError(f"{target}: the archive must hold one ensemble (or one model); found "
                       f"{len(ensembles)} ensembles among {', '.join(folders) or 'no model folders'}")


def check_extracted(model_dir: Path, target: str) -> tuple[str, dict[str, str]]:
    """(the entry model, model name -> digest of its folder) of an extracted archive, or a PackageError."""
    entry = entry_model(model_dir, target)
    try:
        needed, _ = check_repository(model_dir, entry)
    except PackageError as error:
        raise PackageError(f"{target}: {error}") from None
    return entry, {name: folder_digest(model_dir / name) for name in needed}


def folder_digest(folder: Path) -> str:
    """Digest of a model folder's config and the names and sizes of its files: what defines it, cheaply."""
    digest = hashlib.sha256((folder / "config.pbtxt").read_bytes())
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder)}:{path.stat().st_size};".encode())
    return digest.hexdigest()
