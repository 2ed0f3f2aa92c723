"""Asynchronous invocation of an endpoint (LaMa: slow requests, big payloads), and scale-to-zero.

The request body goes to S3 first; ``invoke_endpoint_async`` queues it; SageMaker writes
the answer to the endpoint's S3 output path (or its failure path), which is polled.
"""
from __future__ import annotations

import time
import uuid

from sagemaker_deploy.aws import Aws, AwsError, ownership_tags, s3_tagging, split_s3
from sagemaker_deploy.deploy import record_scaling, scaling_resource

POLL_S = 5.0
TIMEOUT_S = 900.0


class AsyncFailed(RuntimeError):
    """The asynchronous request failed or did not finish in time."""


def invoke_async(aws: Aws, endpoint: str, body: bytes, content_type: str, input_prefix: str,
                 timeout_s: float = TIMEOUT_S, poll_s: float = POLL_S) -> tuple[bytes, str]:
    """(response body, its content type) of one asynchronous request."""
    bucket, key = split_s3(f"{input_prefix.rstrip('/')}/{uuid.uuid4().hex}")
    aws.call("s3", "put_object", Bucket=bucket, Key=key, Body=body, ContentType=content_type,
             Tagging=s3_tagging(endpoint))
    answer = aws.call("sagemaker-runtime", "invoke_endpoint_async", EndpointName=endpoint,
                      InputLocation=f"s3://{bucket}/{key}", ContentType=content_type)
    if aws.dry_run:
        return b"", ""
    output, failure = answer.get("OutputLocation", ""), answer.get("FailureLocation", "")
    aws.say(f"queued as {answer.get('InferenceId', '?')}; waiting for {output}")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for location, failed in ((output, False), (failure, True)):
            found = _read_if_present(aws, location)
            if found is not None:
                if failed:
                    raise AsyncFailed(f"the endpoint failed the request: {found[0].decode(errors='replace')[:2000]}")
                return found
        time.sleep(poll_s)
    raise AsyncFailed(f"no result at {output} after {timeout_s:.0f} s")


def _read_if_present(aws: Aws, location: str) -> tuple[bytes, str] | None:
    """The object's (body, content type); None while it does not exist yet. Other failures are one AwsError line."""
    if not location:
        return None
    bucket, key = split_s3(location)
    try:
        with aws.one_line_errors("s3", "get_object"):  # not aws.call: a poll every few seconds is not printed
            found = aws.client("s3").get_object(Bucket=bucket, Key=key)
            return found["Body"].read(), found.get("ContentType", "")  # the body streams: can fail too
    except AwsError as error:
        if error.code == "NoSuchKey":
            return None
        raise


def scale_to_zero(aws: Aws, endpoint: str, max_instances: int = 1, backlog_per_instance: float = 5.0) -> None:
    """Autoscaling on the queue: track the backlog per instance, down to zero instances when idle,
    and a step policy with an alarm on HasBacklogWithoutCapacity to start again from zero."""
    target = scaling_resource(endpoint)
    dimensions = [{"Name": "EndpointName", "Value": endpoint}]
    aws.call("application-autoscaling", "register_scalable_target", MinCapacity=0, MaxCapacity=max_instances,
             **target)
    aws.call("application-autoscaling", "put_scaling_policy", PolicyName=f"{endpoint}-backlog",
             PolicyType="TargetTrackingScaling", **target,
             TargetTrackingScalingPolicyConfiguration={
                 "TargetValue": backlog_per_instance, "ScaleInCooldown": 600, "ScaleOutCooldown": 300,
                 "CustomizedMetricSpecification": {"MetricName": "ApproximateBacklogSizePerInstance",
                                                   "Namespace": "AWS/SageMaker", "Dimensions": dimensions,
                                                   "Statistic": "Average"}})
    from_zero = aws.call("application-autoscaling", "put_scaling_policy", PolicyName=f"{endpoint}-from-zero",
                         PolicyType="StepScaling", **target,
                         StepScalingPolicyConfiguration={
                             "AdjustmentType": "ChangeInCapacity", "Cooldown": 300,
                             "MetricAggregationType": "Average",
                             "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}]})
    record_scaling(aws, endpoint, [f"{endpoint}-backlog", f"{endpoint}-from-zero"])
    aws.call("cloudwatch", "put_metric_alarm", AlarmName=f"{endpoint}-backlog-without-capacity",
             Tags=ownership_tags(endpoint),
             MetricName="HasBacklogWithoutCapacity", Namespace="AWS/SageMaker", Dimensions=dimensions,
             Statistic="Average", Period=60, EvaluationPeriods=2, Threshold=1,
             ComparisonOperator="GreaterThanOrEqualToThreshold", TreatMissingData="missing",
             AlarmActions=[from_zero.get("PolicyARN", "arn:dry-run")])

