"""Deployment guardrails for a production update: canary or linear traffic shifting with
automatic rollback on CloudWatch alarms, and target-tracking autoscaling of the variant.

The limits are SageMaker's (API reference: TrafficRoutingConfig, BlueGreenUpdatePolicy,
AutoRollbackConfig; developer guide "Use canary traffic shifting"): a canary is at most
50% of the variant's instances, a linear step 10-50%, waits 0-3600 s, the whole update
600-14400 s. They are checked here, before any call, so a bad setting is one line and
not a half-started update.

``release_to_production`` is the whole production step of a release: alarms, new model and
config, UpdateEndpoint under the guardrails, then either the old version retired and
autoscaling registered, or (SageMaker rolled back) the new version removed and one line
naming the alarm. An interrupted run (Ctrl-C, a crash) leaves nothing half-made that a
rerun does not settle: before UpdateEndpoint it removes what it created on the way out;
after UpdateEndpoint the update belongs to SageMaker (it goes on, under its alarms), and
the next run first waits for the endpoint to leave Updating/RollingBack, then deletes
every endpoint config and model tagged as the endpoint's that it does not serve, and
only then starts its own release.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from sagemaker_deploy.aws import Aws, AwsError
from sagemaker_deploy.deploy import (Created, DeployFailed, DeployRequest, Release, deploy, new_release,
                                     owned, remove, retire, wait_in_service)

VARIANT = "AllTraffic"
SHIFT_TYPES = ("CANARY", "LINEAR", "ALL_AT_ONCE")
SIZE_TYPES = ("CAPACITY_PERCENT", "INSTANCE_COUNT")
MAX_ALARMS = 10  # AutoRollbackConfig.Alarms: "Array Members: Minimum number of 1 item. Maximum number of 10 items."


class RolloutError(ValueError):
    """A rollout setting SageMaker would refuse; the message names it and the allowed range."""


@dataclass(frozen=True)
class TrafficShift:
    kind: str = "CANARY"
    size_type: str = "CAPACITY_PERCENT"
    size: int = 50  # the canary, or each linear step
    wait_s: int = 300  # baking time between steps, alarms watched
    termination_wait_s: int = 0  # the old fleet is kept this long after the last step
    max_execution_s: int = 3600

    def instances_per_step(self, instance_count: int) -> int:
        if self.size_type == "INSTANCE_COUNT":
            return self.size
        return max(1, math.floor(instance_count * self.size / 100))

    def share_per_step(self, instance_count: int) -> float:
        """The share of traffic the first step (the canary, or one linear step) sends to the new fleet."""
        if self.kind == "ALL_AT_ONCE":
            return 1.0
        return min(1.0, self.instances_per_step(instance_count) / instance_count)


def check_shift(shift: TrafficShift, instance_count: int) -> None:
    """Refuse what SageMaker's TrafficRoutingConfig would refuse, naming the setting."""
    if shift.kind not in SHIFT_TYPES:
        raise RolloutError(f"traffic shift {shift.kind!r}: choose one of {', '.join(SHIFT_TYPES)}")
    if shift.size_type not in SIZE_TYPES:
        raise RolloutError(f"size type {shift.size_type!r}: choose one of {', '.join(SIZE_TYPES)}")
    _in_range("wait interval", shift.wait_s, 0, 3600, "s")
    _in_range("termination wait", shift.termination_wait_s, 0, 3600, "s")
    _in_range("maximum execution time", shift.max_execution_s, 600, 14400, "s")
    if shift.kind == "ALL_AT_ONCE":
        return
    share = (shift.size if shift.size_type == "CAPACITY_PERCENT" else 100 * shift.size / instance_count)
    lowest = 10 if shift.kind == "LINEAR" else 0
    name = "canary size" if shift.kind == "CANARY" else "linear step size"
    if shift.size < 1 or not lowest <= share <= 50:
        allowed = f"{lowest}-50%" if lowest else "at most 50%"
        raise RolloutError(f"{name} {shift.size} {shift.size_type} is {share:.0f}% of the variant's "
                           f"{instance_count} instance(s); SageMaker allows {allowed}")


def check_steps_fit(shift: TrafficShift, instance_count: int) -> None:
    """A step moves whole instances: on a fleet of one, any canary would be all of it."""
    if shift.kind != "ALL_AT_ONCE" and 2 * shift.instances_per_step(instance_count) > instance_count:
        raise RolloutError(f"a {shift.kind.lower()} step of {shift.size} {shift.size_type} is "
                           f"{shift.instances_per_step(instance_count)} of the variant's {instance_count} "
                           "instance(s), over half of it: give the new version at least 2 instances (--instances)")


def _in_range(name: str, value: int, lowest: int, highest: int, unit: str) -> None:
    if not lowest <= value <= highest:
        raise RolloutError(f"{name} {value} {unit} is outside SageMaker's {lowest}-{highest} {unit}")


def deployment_config(shift: TrafficShift, instance_count: int, alarms: list[str]) -> dict:
    """UpdateEndpoint's DeploymentConfig: blue/green with the shift, rolled back by any of ``alarms``."""
    check_shift(shift, instance_count)
    check_steps_fit(shift, instance_count)
    if not 1 <= len(alarms) <= MAX_ALARMS:
        raise RolloutError(f"{len(alarms)} rollback alarms; SageMaker takes 1-{MAX_ALARMS}")
    routing = {"Type": shift.kind, "WaitIntervalInSeconds": shift.wait_s}
    size_key = {"CANARY": "CanarySize", "LINEAR": "LinearStepSize"}.get(shift.kind)
    if size_key:
        routing[size_key] = {"Type": shift.size_type, "Value": shift.size}
    return {"BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": routing,
                                      "TerminationWaitInSeconds": shift.termination_wait_s,
                                      "MaximumExecutionTimeoutInSeconds": shift.max_execution_s},
            "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": name} for name in alarms]}}


@dataclass(frozen=True)
class AlarmLimits:
    """What makes the new version misbehave: any 5xx, or a p99 model latency over budget."""

    errors: int = 1  # Invocation5XXErrors per period
    p99_latency_ms: float = 1000.0
    period_s: int = 60
    evaluation_periods: int = 1


def rollback_alarms(aws: Aws, endpoint: str, limits: AlarmLimits = AlarmLimits()) -> list[str]:
    """Create the endpoint's rollback alarms (5xx errors, p99 ModelLatency); returns their names."""
    dimensions = [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": VARIANT}]
    common = {"Namespace": "AWS/SageMaker", "Dimensions": dimensions, "Period": limits.period_s,
              "EvaluationPeriods": limits.evaluation_periods, "ComparisonOperator": "GreaterThanOrEqualToThreshold",
              "TreatMissingData": "notBreaching"}
    alarms = {f"{endpoint}-invocation-5xx": {"MetricName": "Invocation5XXErrors", "Statistic": "Sum",
                                             "Threshold": float(limits.errors)},
              # ModelLatency is reported in microseconds
              f"{endpoint}-model-latency-p99": {"MetricName": "ModelLatency", "ExtendedStatistic": "p99",
                                                "Threshold": limits.p99_latency_ms * 1000}}
    made = []
    try:
        for name, metric in alarms.items():
            aws.call("cloudwatch", "put_metric_alarm", AlarmName=name,
                     AlarmDescription=f"rolls back an update of endpoint {endpoint}", **common, **metric)
            made.append(name)
    except AwsError:
        if made:  # all or none: an update must not go ahead watched by half its alarms
            aws.call("cloudwatch", "delete_alarms", AlarmNames=made)
        raise
    return list(alarms)


def autoscale(aws: Aws, endpoint: str, max_instances: int, invocations_per_instance: float = 100.0,
              min_instances: int = 1) -> None:
    """Target tracking on SageMakerVariantInvocationsPerInstance, between min and max instances."""
    if not 1 <= min_instances <= max_instances:
        raise RolloutError(f"autoscaling needs 1 <= min ({min_instances}) <= max ({max_instances}) instances")
    target = {"ServiceNamespace": "sagemaker", "ResourceId": f"endpoint/{endpoint}/variant/{VARIANT}",
              "ScalableDimension": "sagemaker:variant:DesiredInstanceCount"}
    aws.call("application-autoscaling", "register_scalable_target", MinCapacity=min_instances,
             MaxCapacity=max_instances, **target)
    aws.call("application-autoscaling", "put_scaling_policy", PolicyName=f"{endpoint}-invocations",
             PolicyType="TargetTrackingScaling", **target,
             TargetTrackingScalingPolicyConfiguration={
                 "TargetValue": invocations_per_instance, "ScaleInCooldown": 300, "ScaleOutCooldown": 60,
                 "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}})


class RolledBack(DeployFailed):
    """SageMaker rolled the update back (an alarm fired); the old version serves, the new one is removed."""


TRANSITIONAL = ("Creating", "Updating", "RollingBack", "SystemUpdating")


def release_to_production(aws: Aws, request: DeployRequest, shift: TrafficShift, limits: AlarmLimits,
                          max_instances: int) -> Release:
    """Put ``request``'s repository into production: a canary (or linear) blue/green update rolled back by
    the endpoint's 5xx and p99-latency alarms, or a plain deploy when production does not exist yet."""
    check_shift(shift, request.instance_count)  # every refusal before the first call
    if not request.instance_count <= max_instances:
        raise RolloutError(f"--max-instances {max_instances} is below the {request.instance_count} instance(s) "
                           "the release starts with")
    serving = settle(aws, request.endpoint, request)
    if serving is None:
        aws.say(f"endpoint {request.endpoint} does not exist: a first deploy, no canary")
        release = deploy(aws, request)
    else:
        release = _guarded_update(aws, request, shift, limits, serving)
    autoscale(aws, request.endpoint, max_instances)
    return release


def settle(aws: Aws, endpoint: str, request: DeployRequest) -> dict | None:
    """The endpoint as it serves, after any update in flight (an interrupted run's) has ended and every
    config and model of the endpoint that it does not serve is deleted; None when there is no endpoint."""
    try:
        described = aws.call("sagemaker", "describe_endpoint", EndpointName=endpoint)
    except AwsError as error:
        if error.code == "ValidationException" and "Could not find endpoint" in str(error):
            return None
        raise
    if described.get("EndpointStatus") in TRANSITIONAL:
        aws.say(f"endpoint {endpoint} is {described['EndpointStatus']} (an earlier run's update): waiting for it")
        described = wait_in_service(aws, endpoint, request.wait_timeout_s, request.poll_s)
    for config in _leftover_configs(aws, endpoint, described.get("EndpointConfigName", "")):
        aws.say(f"removing {config}, left by an interrupted rollout")
        retire(aws, config)
    return described


def _leftover_configs(aws: Aws, endpoint: str, serving_config: str) -> list[str]:
    configs = aws.pages("sagemaker", "list_endpoint_configs", "EndpointConfigs")
    return [config["EndpointConfigName"] for config in configs
            if config["EndpointConfigName"] != serving_config
            and owned(aws.pages("sagemaker", "list_tags", "Tags", ResourceArn=config["EndpointConfigArn"]), endpoint)]


def _guarded_update(aws: Aws, request: DeployRequest, shift: TrafficShift, limits: AlarmLimits,
                    serving: dict) -> Release:
    old_config = serving.get("EndpointConfigName", "")
    check_steps_fit(shift, request.instance_count)  # before the alarms: a refusal changes nothing
    alarms = rollback_alarms(aws, request.endpoint, limits)
    config = deployment_config(shift, request.instance_count, alarms)
    created = Created()
    try:
        release = new_release(aws, created, request)
        aws.call("sagemaker", "update_endpoint", EndpointName=request.endpoint, EndpointConfigName=release.name,
                 DeploymentConfig=config)
    except BaseException:  # Ctrl-C included: nothing was handed to SageMaker, so nothing may stay
        remove(aws, created)
        raise
    try:
        final = wait_in_service(aws, request.endpoint, request.wait_timeout_s, request.poll_s)
    except KeyboardInterrupt:
        aws.say(f"interrupted: SageMaker goes on updating {request.endpoint} to {release.name} under its alarms; "
                "rerun the same command to settle it (it waits, keeps what serves, removes the rest)")
        raise
    if aws.dry_run:
        return release
    if final.get("EndpointConfigName") != release.name:
        remove(aws, created)
        raise RolledBack(f"endpoint {request.endpoint} rolled back to {final.get('EndpointConfigName')}: "
                         f"{final.get('FailureReason') or 'no reason given'}; {release.name} removed")
    retire(aws, old_config)
    aws.say(f"endpoint {request.endpoint} serves {release.name} on all traffic; {old_config} retired")
    return release
