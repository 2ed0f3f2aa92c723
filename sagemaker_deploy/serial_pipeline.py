"""``deploy --lookout-api``: a SageMaker serial inference pipeline that answers raw images like Lookout for Vision.

A former Lookout user sends ``invoke_endpoint(ContentType="image/jpeg" or "image/png", Body=<bytes>)``
and gets DetectAnomalies' JSON. Triton's SageMaker frontend takes only its JSON and binary+json
bodies, so the model is a serial pipeline (``Containers`` with ``InferenceExecutionConfig`` Mode
``Serial``, docs.aws.amazon.com/sagemaker/latest/dg/inference-pipelines.html) of three
containers on the same instance:

1. ``lookout-request``: ``lookout_adapter/inference.py`` on SageMaker's PyTorch inference image
   (a prebuilt framework image, looked up with the SageMaker SDK; no image is built): the image
   bytes become a binary+json request for the product's pipeline asking for its ``LOOKOUT`` output;
2. ``triton``: the Triton container exactly as a plain deploy makes it;
3. ``lookout-answer``: the same file: Triton's answer becomes the bare Lookout JSON.

The adapters' archive (``code/inference.py`` and ``code/requirements.txt``, the layout the
framework images' toolkit reads) is uploaded next to the Triton archive with the same
ownership tags, so ``teardown --delete-artifacts`` finds it; the model carries the tags too.
"""
from __future__ import annotations

import io
import tarfile
from importlib.metadata import version
from pathlib import Path

from builders import defect_inspection, defect_router
from sagemaker_deploy.aws import Aws, ownership_tags, s3_tagging
from sagemaker_deploy.package import PackageError, read_config

ADAPTER_SOURCE = Path(__file__).resolve().parent / "lookout_adapter" / "inference.py"
# SageMaker's PyTorch inference image: its toolkit serves code/inference.py and pip-installs
# code/requirements.txt when the container starts (so the endpoint must reach PyPI or a mirror).
ADAPTER_FRAMEWORK, ADAPTER_VERSION, ADAPTER_PYTHON = "pytorch", "2.3", "py311"
REQUEST, TRITON, ANSWER = "lookout-request", "triton", "lookout-answer"  # the containers' hostnames
ADAPTER_ROLES = {REQUEST: "request", ANSWER: "answer"}


def adapter_image(region: str, instance_type: str) -> str:
    """SageMaker's PyTorch inference image for the region and instance, from the SageMaker SDK's lookup."""
    from sagemaker.core import image_uris

    return image_uris.retrieve(framework=ADAPTER_FRAMEWORK, region=region, version=ADAPTER_VERSION,
                               py_version=ADAPTER_PYTHON, image_scope="inference", instance_type=instance_type)


def adapter_archive(archive: Path) -> Path:
    """model.tar.gz of the adapters: code/inference.py, and code/requirements.txt pinning this tritonclient and
    Pillow (a batch record's checks decode the image)."""
    requirements = f"tritonclient[http]=={version('tritonclient')}\nPillow=={version('pillow')}\n".encode()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(ADAPTER_SOURCE, arcname="code/inference.py")
        info = tarfile.TarInfo("code/requirements.txt")
        info.size = len(requirements)
        tar.addfile(info, io.BytesIO(requirements))
    return archive


def adapter_environment(hostname: str) -> dict[str, str]:
    """Which adapter the container is, the pipeline's tensor names from their declarations, and its size limits
    (what a batch record is checked against before it reaches Triton)."""
    return {"SAGEMAKER_PROGRAM": "inference.py", "LOOKOUT_ADAPTER_ROLE": ADAPTER_ROLES[hostname],
            "LOOKOUT_INPUT": defect_inspection.INPUT.name, "LOOKOUT_OUTPUT": defect_router.LOOKOUT.name,
            "LOOKOUT_MAX_PIXELS": str(defect_inspection.MAX_PIXELS),
            "LOOKOUT_MIN_SIDE": defect_router.THRESHOLDS["min_side"]}


def check_lookout_pipeline(repository: Path, default_model: str) -> None:
    """The default model must take the image bytes as ``INPUT`` and answer ``LOOKOUT`` (a product's pipeline)."""
    config = read_config(repository, default_model)
    declared = {("input", tensor.name) for tensor in config.input}
    declared |= {("output", tensor.name) for tensor in config.output}
    wanted = [("input", defect_inspection.INPUT.name), ("output", defect_router.LOOKOUT.name)]
    missing = [f"{kind} {name}" for kind, name in wanted if (kind, name) not in declared]
    if missing:
        raise PackageError(f"--lookout-api needs a product's pipeline (<product>_inspection): {default_model} has no "
                           f"{' and no '.join(missing)}")


def create_pipeline_model(aws: Aws, created, request, release) -> None:
    """Upload the adapters' archive and create the serial-pipeline model around the release's Triton container."""
    archive = adapter_archive(request.workdir / f"{release.name}-lookout-adapter.tar.gz")
    key = f"{request.prefix.strip('/')}/{release.name}/lookout-adapter.tar.gz".lstrip("/")
    aws.call("s3", "upload_file", Filename=str(archive), Bucket=request.bucket, Key=key,
             ExtraArgs={"Tagging": s3_tagging(request.endpoint)})
    adapter_url = f"s3://{request.bucket}/{key}"
    created.add("s3", adapter_url)
    image = adapter_image(request.region, request.instance_type)
    aws.say(f"adapter image for {request.region}: {image}")

    def adapter(hostname: str) -> dict:
        return {"ContainerHostname": hostname, "Image": image, "ModelDataUrl": adapter_url,
                "Environment": adapter_environment(hostname)}

    triton = {"ContainerHostname": TRITON, "Image": release.image_uri, "ModelDataUrl": release.model_data_url,
              "Environment": release.environment}
    aws.call("sagemaker", "create_model", ModelName=release.name, ExecutionRoleArn=request.role,
             Tags=ownership_tags(release.endpoint), Containers=[adapter(REQUEST), triton, adapter(ANSWER)],
             InferenceExecutionConfig={"Mode": "Serial"})
    created.add("model", release.name)


# Why a combination cannot be a Lookout-style endpoint, found before any AWS call.
REFUSALS = {
    "async_output": ("--lookout-api answers invoke_endpoint with the image in the body; an endpoint with an "
                     "AsyncInferenceConfig \"can only receive asynchronous invocations\" (InvokeEndpointAsync, "
                     "body in S3; docs.aws.amazon.com/sagemaker/latest/dg/async-inference.html)"),
    "multi_model": ("--lookout-api serves one product's pipeline (--default-model) with requests that name no "
                    "TargetModel, and SageMaker takes at most one MultiModel container in an inference pipeline: "
                    "deploy one --lookout-api endpoint per product"),
}


def lookout_refusal(arguments: dict) -> str:
    """Why an option cannot go with --lookout-api (the first one given), or empty."""
    if not arguments.get("lookout_api"):
        return ""
    return next((reason for option, reason in REFUSALS.items() if arguments.get(option)), "")
