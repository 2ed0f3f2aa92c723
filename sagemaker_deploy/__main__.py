"""``python -m sagemaker_deploy``: package, deploy, add-model, update, rollout, promote, invoke-async, teardown.

    python -m sagemaker_deploy --region R deploy --repository build/gpu --endpoint vision --bucket B --role ARN
    python -m sagemaker_deploy --region R update --repository build/gpu --endpoint vision --bucket B --role ARN
    python -m sagemaker_deploy --region R rollout --repository build/gpu --endpoint vision --bucket B --role ARN \\
        --instances 2 --max-instances 4 --canary-percent 50 --wait-s 600 --max-5xx 1 --p99-ms 500
    python -m sagemaker_deploy --region R deploy --repository build/gpu --endpoint lama --default-model ensemble_lama \\
        --async-output s3://B/lama --autoscale-to-zero ...
    python -m sagemaker_deploy --region R deploy --lookout-api --default-model pcb_inspection \\
        --repository build/gpu --endpoint pcb --bucket B --role ARN   # image/jpeg, image/png -> Lookout JSON
    python -m sagemaker_deploy --region R deploy --multi-model --repository build/gpu --endpoint factory --bucket B --role ARN
    python -m sagemaker_deploy --region R add-model --repository build/gpu --endpoint factory --pipeline ensemble_lama
    python -m sagemaker_deploy --region R invoke-async --endpoint lama --input-prefix s3://B/lama/input IMAGE MASK -o OUT.png
    python -m sagemaker_deploy --region R promote --package ARN --staging-endpoint vision-staging --endpoint vision \\
        --test-dataset build/dataset-unseen --product pcb --role ARN [--min-parent-f1 0.9 --p95-ms 2000 ...]
    python -m sagemaker_deploy --region R teardown [--endpoint vision] [--delete-artifacts s3://B/prefix]
    python -m sagemaker_deploy --region R batch --input s3://B/images/ --output s3://B/results/ \\
        --repository build/gpu --default-model pcb_inspection --bucket B --role ARN   # Batch Transform + summary

Real-time requests go through the clients: python -m clients.classify IMAGE --protocol sagemaker-endpoint
--endpoint-name vision --region R. ``--dry-run`` prints every AWS call with its arguments and calls nothing.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from sagemaker_deploy.async_inference import AsyncFailed, invoke_async, scale_to_zero
from sagemaker_deploy.aws import Aws, AwsError
from sagemaker_deploy.batch import BatchFailed, BatchRequest, run_batch
from sagemaker_deploy.batch import refusal as batch_refusal
from sagemaker_deploy.deploy import DEFAULT_INSTANCE, DEFAULT_TRITON_VERSION, DeployFailed, DeployRequest, deploy, \
    teardown, update
from model_versions.model_packages import RegistryError
from sagemaker_deploy.multi_model import add_model, deploy_multi_model, package_pipelines
from sagemaker_deploy.package import PackageError, make_archive
from products import ProductError, find
from sagemaker_deploy.serial_pipeline import lookout_refusal
from sagemaker_deploy.promote import Gate, GateFailed, PromoteError, PromoteRequest, promote
from sagemaker_deploy.rollout import AlarmLimits, RolloutError, TrafficShift, release_to_production


GUARDRAIL_PERMISSIONS = ("The execution role (--role) must be allowed cloudwatch:DescribeAlarms on the rollback "
                         "alarms (<endpoint>-invocation-5xx, <endpoint>-model-latency-p99): SageMaker reads them "
                         "through it during the update. Every permission per command: docs/deploy-permissions.md")


def _image_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--triton-version", default=DEFAULT_TRITON_VERSION,
                        help="SageMaker Triton image; every artifact is checked against its runtimes")
    parser.add_argument("--allow-cpu-target", action="store_true",
                        help="accept a --target cpu build (python runners), e.g. for the local emulator")


def _release_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repository", type=Path, required=True, help="a built gpu repository")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--role", required=True, help="SageMaker execution role ARN")
    parser.add_argument("--prefix", default="visual-inspection-triton", help="S3 key prefix of the archives")
    parser.add_argument("--default-model", default="ensemble_dali_inception")
    parser.add_argument("--instance-type", default=DEFAULT_INSTANCE)
    _image_arguments(parser)
    parser.add_argument("--thread-count", type=int,
                        help="SAGEMAKER_TRITON_THREAD_COUNT: the SageMaker frontend's request threads "
                             "(--sagemaker-thread-count; tritonserver's default 8)")
    parser.add_argument("--buffer-manager-thread-count", type=int,
                        help="SAGEMAKER_TRITON_BUFFER_MANAGER_THREAD_COUNT (--buffer-manager-thread-count)")
    parser.add_argument("--async-output", default="", help="s3://bucket/prefix: make an asynchronous endpoint")
    parser.add_argument("--max-concurrent-invocations", type=int, default=4)
    parser.add_argument("--autoscale-to-zero", action="store_true", help="async only: scale to 0 instances when idle")
    parser.add_argument("--poll-s", type=float, default=30.0)
    parser.add_argument("--wait-timeout-s", type=float, default=3600.0)


def _multi_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--multi-model", action="store_true",
                        help="one archive per pipeline; the endpoint's model gets Mode MultiModel and each "
                             "request names its archive (TargetModel)")
    parser.add_argument("--pipeline", action="append", default=None,
                        help="with --multi-model: a pipeline (ensemble) to pack; repeat; default: every ensemble")


def _lookout_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lookout-api", action="store_true",
                        help="a serial inference pipeline around the Triton container that answers raw image/jpeg "
                             "and image/png bodies with Lookout for Vision's DetectAnomalies JSON (--default-model: "
                             "a product's <product>_inspection; docs/lookout-api.md)")


def _rollout_arguments(parser: argparse.ArgumentParser) -> None:
    _release_arguments(parser)
    _guardrail_arguments(parser)


def _guardrail_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--instances", type=int, default=2, help="instances of the new version (a canary needs 2+)")
    parser.add_argument("--max-instances", type=int, default=4, help="autoscaling's upper bound")
    steps = parser.add_mutually_exclusive_group()
    steps.add_argument("--canary-percent", type=int, default=50, help="the canary's share of the fleet (<= 50)")
    steps.add_argument("--linear-percent", type=int, help="linear steps of this share of the fleet (10-50)")
    parser.add_argument("--wait-s", type=int, default=600, help="baking time after each step (0-3600)")
    parser.add_argument("--termination-wait-s", type=int, default=0,
                        help="the old fleet stays this long after the last step, alarms watched (0-3600)")
    parser.add_argument("--max-execution-s", type=int, default=3600,
                        help="the whole update's limit (600-28800), longer than all its waits together")
    parser.add_argument("--max-5xx", type=int, default=1, help="Invocation5XXErrors per period that roll back")
    parser.add_argument("--p99-ms", type=float, default=1000.0, help="p99 ModelLatency that rolls back")
    parser.add_argument("--alarm-period-s", type=int, default=60,
                        help="the alarms' period: 60 or a multiple of 60 (SageMaker publishes its metrics once a "
                             "minute); --wait-s must cover one evaluation of them plus a minute of metric delay")


def _promote_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--package", required=True, help="an Approved model package ARN (python -m defect_classifier "
                                                         "register / approve)")
    parser.add_argument("--staging-endpoint", required=True, help="where the acceptance checks run")
    parser.add_argument("--endpoint", required=True, help="production: released to only when every check passes")
    parser.add_argument("--test-dataset", type=Path, required=True,
                        help="a Lookout-format dataset of the product that training never saw")
    parser.add_argument("--product", required=True, help="the product the package inspects (name or product.json)")
    parser.add_argument("--products-store", type=Path, default=Path("build/products"))
    parser.add_argument("--role", required=True, help="SageMaker execution role ARN")
    parser.add_argument("--instance-type", default=DEFAULT_INSTANCE)
    parser.add_argument("--min-parent-f1", type=float, default=Gate.parent_f1)
    parser.add_argument("--min-child-f1", type=float, default=Gate.child_f1)
    parser.add_argument("--p95-ms", type=float, default=Gate.p95_ms, help="latency budget of one image")
    parser.add_argument("--load-requests", type=int, default=Gate.load_requests)
    parser.add_argument("--load-concurrency", type=int, default=Gate.load_concurrency)
    parser.add_argument("--report-dir", type=Path, default=Path("build/release"))
    parser.add_argument("--poll-s", type=float, default=30.0)
    parser.add_argument("--wait-timeout-s", type=float, default=3600.0)
    _guardrail_arguments(parser)


def _batch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="s3://bucket/prefix/ of the images (every object: one record)")
    parser.add_argument("--output", required=True, help="s3://bucket/prefix/: <key>.out per image, summary.json")
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--repository", type=Path, help="a built gpu repository: its --lookout-api pipeline model is "
                                                       "registered for this job and deleted after it")
    model.add_argument("--model", default="", help="an existing serial-pipeline model (deploy --lookout-api's)")
    parser.add_argument("--default-model", default="", help="with --repository: the product's <product>_inspection")
    parser.add_argument("--bucket", default="", help="with --repository: where the model's archives go")
    parser.add_argument("--role", default="", help="with --repository: SageMaker execution role ARN")
    parser.add_argument("--prefix", default="visual-inspection-triton", help="S3 key prefix of the archives")
    parser.add_argument("--name", default="lookout-batch", help="the job's name stem and its resources' ownership tag")
    parser.add_argument("--instance-type", default=DEFAULT_INSTANCE)
    parser.add_argument("--instance-count", type=int, default=1, help="instances the images are spread over")
    parser.add_argument("--max-concurrent-transforms", type=int, default=1, help="parallel records per instance")
    parser.add_argument("--max-payload-mb", type=int, default=6,
                        help="the largest image (MaxPayloadInMB; a larger one fails the job; Lookout took 8 MB)")
    _image_arguments(parser)
    parser.add_argument("--poll-s", type=float, default=30.0)
    parser.add_argument("--wait-timeout-s", type=float, default=6 * 3600.0)


def batch_request(args: argparse.Namespace, region: str, workdir: Path) -> BatchRequest:
    return BatchRequest(args.input, args.output, region, args.repository, args.model, args.default_model, args.bucket,
                        args.role, args.prefix, args.name, args.instance_type, args.instance_count,
                        args.max_concurrent_transforms, args.max_payload_mb, args.triton_version,
                        args.allow_cpu_target, workdir, args.poll_s, args.wait_timeout_s)


def promote_request(args: argparse.Namespace, region: str) -> PromoteRequest:
    gate = Gate(args.min_parent_f1, args.min_child_f1, args.p95_ms, args.load_requests, args.load_concurrency)
    return PromoteRequest(args.package, args.staging_endpoint, args.endpoint, args.test_dataset, args.role, region,
                          instance_type=args.instance_type, instance_count=args.instances, gate=gate,
                          report_dir=args.report_dir, shift=traffic_shift(args),
                          limits=AlarmLimits(args.max_5xx, args.p99_ms, args.alarm_period_s),
                          max_instances=args.max_instances, poll_s=args.poll_s, wait_timeout_s=args.wait_timeout_s,
                          product=find(args.product, args.products_store))


def traffic_shift(args: argparse.Namespace) -> TrafficShift:
    kind, size = ("LINEAR", args.linear_percent) if args.linear_percent else ("CANARY", args.canary_percent)
    return TrafficShift(kind, "CAPACITY_PERCENT", size, args.wait_s, args.termination_wait_s, args.max_execution_s)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sagemaker_deploy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--region", help="AWS region (default: boto3's)")
    parser.add_argument("--dry-run", action="store_true", help="print every AWS call, call nothing")
    commands = parser.add_subparsers(dest="command", required=True)
    package = commands.add_parser("package", help="check the repository and write model.tar.gz")
    package.add_argument("--repository", type=Path, required=True)
    package.add_argument("--default-model", default="ensemble_dali_inception")
    package.add_argument("-o", "--out", type=Path, default=None,
                         help="the archive (default build/sagemaker/model.tar.gz), or with --multi-model the "
                              "folder of archives (default build/sagemaker/multi-model)")
    _image_arguments(package)
    _multi_model_arguments(package)
    deploy_parser = commands.add_parser("deploy", help="create a new endpoint")
    _release_arguments(deploy_parser)
    _multi_model_arguments(deploy_parser)
    _lookout_argument(deploy_parser)
    add_model = commands.add_parser("add-model", help="upload one more pipeline to a multi-model endpoint "
                                    "(no redeploy)")
    add_model.add_argument("--repository", type=Path, required=True)
    add_model.add_argument("--endpoint", required=True)
    add_model.add_argument("--pipeline", required=True, help="the ensemble to add, served as <pipeline>.tar.gz")
    _image_arguments(add_model)
    update_parser = commands.add_parser("update", help="blue/green update of an endpoint to a new version")
    _release_arguments(update_parser)
    _lookout_argument(update_parser)
    _rollout_arguments(commands.add_parser("rollout", help="production release: canary or linear traffic "
                                           "shifting, rolled back by 5xx/p99 alarms; then autoscaling",
                                           description=GUARDRAIL_PERMISSIONS))
    _promote_arguments(commands.add_parser("promote", help="an approved package: staging endpoint, acceptance "
                                           "checks, then production only if they pass",
                                           description=GUARDRAIL_PERMISSIONS))
    async_call = commands.add_parser("invoke-async", help="inpaint through an async ensemble_lama endpoint")
    async_call.add_argument("--endpoint", required=True)
    async_call.add_argument("--input-prefix", required=True, help="s3://bucket/prefix for request bodies")
    async_call.add_argument("image", type=Path)
    async_call.add_argument("mask", type=Path)
    async_call.add_argument("-o", "--output", type=Path, required=True)
    async_call.add_argument("--timeout-s", type=float, default=900.0)
    async_call.add_argument("--poll-s", type=float, default=5.0)
    _batch_arguments(commands.add_parser("batch", help="Batch Transform over an S3 folder of images: a Lookout "
                                         "answer per image and a summary (docs/batch-inspection.md)"))
    down = commands.add_parser("teardown", help="delete the project's endpoints, configs and models")
    down.add_argument("--endpoint", default="",
                      help="only the resources tagged as this endpoint's (exact name, never a prefix)")
    down.add_argument("--delete-artifacts", default="",
                      help="also delete the project's (tagged) S3 objects under this s3:// prefix")
    return parser.parse_args(argv)


def refusal(args: argparse.Namespace) -> str:
    """Why the arguments cannot work together, found before any AWS call; empty when they can."""
    if reason := lookout_refusal(vars(args)):
        return reason
    if args.command == "batch":
        return batch_refusal(vars(args))
    if args.command == "rollout" and args.async_output:
        return "rollout shifts real-time traffic under alarms; update an asynchronous endpoint with `update`"
    if getattr(args, "autoscale_to_zero", False) and not args.async_output:
        return ("--autoscale-to-zero needs --async-output: only an asynchronous endpoint can scale to 0 "
                "instances (a real-time one keeps at least 1)")
    return ""


def run(args: argparse.Namespace, aws: Aws) -> None:
    if args.command == "package" and args.multi_model:
        out = args.out or Path("build/sagemaker/multi-model")
        for archive, models in package_pipelines(args.repository, out, args.pipeline, args.triton_version,
                                                 args.allow_cpu_target).items():
            print(f"wrote {out / archive}: {', '.join(models)}")
    elif args.command == "package":
        out = args.out or Path("build/sagemaker/model.tar.gz")
        packed, bls = make_archive(args.repository, args.default_model, out, args.triton_version,
                                   args.allow_cpu_target)
        print(f"wrote {out}: {', '.join(packed)}" + (f"; BLS-only: {', '.join(bls)}" if bls else ""))
    elif args.command == "add-model":
        with tempfile.TemporaryDirectory() as workdir:
            request = DeployRequest(args.repository, args.endpoint, "", "", aws.region or "",
                                    triton_version=args.triton_version, workdir=Path(workdir),
                                    allow_cpu_target=args.allow_cpu_target)
            add_model(aws, request, args.pipeline)
    elif args.command in ("deploy", "update", "rollout"):
        with tempfile.TemporaryDirectory() as workdir:
            request = DeployRequest(args.repository, args.endpoint, args.bucket, args.role, aws.region or "",
                                    args.prefix, args.default_model, args.instance_type, args.triton_version,
                                    args.thread_count, args.async_output, args.max_concurrent_invocations,
                                    Path(workdir), args.wait_timeout_s, args.poll_s,
                                    allow_cpu_target=args.allow_cpu_target,
                                    instance_count=getattr(args, "instances", 1),
                                    buffer_manager_thread_count=args.buffer_manager_thread_count,
                                    lookout_api=getattr(args, "lookout_api", False))
            if args.command == "deploy" and args.multi_model:
                deploy_multi_model(aws, request, args.pipeline)
            elif args.command == "rollout":
                release_to_production(aws, request, traffic_shift(args), AlarmLimits(
                    args.max_5xx, args.p99_ms, args.alarm_period_s), args.max_instances)
            else:
                (deploy if args.command == "deploy" else update)(aws, request)
        if args.autoscale_to_zero:
            scale_to_zero(aws, args.endpoint)
    elif args.command == "promote":
        print(f"staging gate passed: report {promote(aws, promote_request(args, aws.region or ''))}; "
              f"{args.endpoint} serves the package")
    elif args.command == "invoke-async":
        inpaint_async(aws, args)
    elif args.command == "batch":
        inspect_batch(aws, args)
    else:
        for line in teardown(aws, args.endpoint, args.delete_artifacts):
            print(f"deleted {line}")


def inspect_batch(aws: Aws, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        summary = run_batch(aws, batch_request(args, aws.region or "", Path(workdir)))
    if summary:
        print(json.dumps(summary, indent=2))
    if summary and summary["status"] != "Completed":
        raise BatchFailed(f"transform job {summary['job']} {summary['status']}: {summary['failure_reason']}")


def inpaint_async(aws: Aws, args: argparse.Namespace) -> None:
    from PIL import Image

    from builders import ensemble_lama
    from clients.classify import encoded_batch
    from clients.protocols import parse_sagemaker_response, sagemaker_body

    inputs = {ensemble_lama.IMAGE.name: encoded_batch([args.image.read_bytes()]),
              ensemble_lama.MASK.name: encoded_batch([args.mask.read_bytes()])}
    body, content_type = sagemaker_body(inputs, [ensemble_lama.INPAINTED.name], binary=True)
    answer, answer_type = invoke_async(aws, args.endpoint, body, content_type, args.input_prefix,
                                       args.timeout_s, args.poll_s)
    if aws.dry_run:
        return
    result = parse_sagemaker_response(answer, answer_type).as_numpy(ensemble_lama.INPAINTED.name)[0]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(result).save(args.output)
    print(f"inpainted {args.image} -> {args.output}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if refusal(args):
        print(f"error: {refusal(args)}", file=sys.stderr)
        return 2
    if args.region is None:
        import boto3

        args.region = boto3.session.Session().region_name
    aws = Aws(args.region, dry_run=args.dry_run)
    try:
        run(args, aws)
    except (AwsError, DeployFailed, PackageError, AsyncFailed, RolloutError, RegistryError, PromoteError,
            ProductError, GateFailed, BatchFailed) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
