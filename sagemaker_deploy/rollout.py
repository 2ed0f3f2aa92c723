"""Deployment guardrails for a production update: canary or linear traffic shifting with
automatic rollback on CloudWatch alarms, and target-tracking autoscaling of the variant.

The limits are SageMaker's (API reference: TrafficRoutingConfig, BlueGreenUpdatePolicy,
AutoRollbackConfig; developer guide "Use canary traffic shifting"): a canary is at most
50% of the variant's instances, a linear step 10-50%, waits 0-3600 s, the whole update
600-28800 s and longer than the sum of its waits (BlueGreenUpdatePolicy,
docs.aws.amazon.com/sagemaker/latest/APIReference/API_BlueGreenUpdatePolicy.html:
MaximumExecutionTimeoutInSeconds "should be larger than the total waiting time specified in
TerminationWaitInSeconds and WaitIntervalInSeconds", valid range 600-28800). The alarms watch
metrics SageMaker publishes once a minute, so their period is at least 60 s and every bake
lasts long enough for one evaluation of them. They are checked here, before any call, so a
bad setting is one line and not a half-started update.

Autoscaling: SageMaker refuses an UpdateEndpoint that changes the instance type of a variant
registered as a scalable target, so such an update is preceded by deregistering the target
(only when every policy on it is this project's) and followed by registering it again; the
new fleet starts at the size autoscaling had grown the old one to, not back at ``--instances``.
The scaling policy's name is recorded on the endpoint (tag ``SCALING_TAG_KEY``) and the alarms
carry the ownership tags, so ``teardown`` removes exactly those.

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

import dataclasses
import math
from dataclasses import dataclass

from sagemaker_deploy.aws import Aws, AwsError, ownership_tags
from sagemaker_deploy.deploy import (Created, DeployFailed, DeployRequest, Release, deploy, new_release, owned,
                                     record_scaling, remove, retire, scaling_resource, wait_in_service)

VARIANT = "AllTraffic"
SHIFT_TYPES = ("CANARY", "LINEAR", "ALL_AT_ONCE")
SIZE_TYPES = ("CAPACITY_PERCENT", "INSTANCE_COUNT")
MAX_ALARMS = 10  # AutoRollbackConfig.Alarms: "Array Members: Minimum number of 1 item. Maximum number of 10 items."
MAX_EXECUTION_S = 28800  # BlueGreenUpdatePolicy.MaximumExecutionTimeoutInSeconds: 600-28800
# SageMaker's endpoint invocation metrics are published at a 1-minute frequency (developer guide, "Monitor
# Amazon SageMaker AI with Amazon CloudWatch"). An alarm with a shorter period on them finds no data point in
# most periods and stays INSUFFICIENT_DATA, which TreatMissingData notBreaching counts as healthy: it could
# never roll anything back.
METRIC_INTERVAL_S = 60
# How long after its minute a data point can be read. AWS documents no figure for SageMaker; one more minute
# is this project's assumption, and the emulator (tests/emulator_rollout.py) publishes that late.
METRIC_DELAY_S = 60


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
    _in_range("maximum execution time", shift.max_execution_s, 600, MAX_EXECUTION_S, "s")
    if shift.max_execution_s <= total_wait_s(shift, instance_count):
        raise RolloutError(f"maximum execution time {shift.max_execution_s} s is not longer than the update's "
                           f"{total_wait_s(shift, instance_count)} s of waits (wait interval and termination "
                           "wait): SageMaker requires it to be larger; raise --max-execution-s")
    if shift.kind == "ALL_AT_ONCE":
        return
    share = (shift.size if shift.size_type == "CAPACITY_PERCENT" else 100 * shift.size / instance_count)
    lowest = 10 if shift.kind == "LINEAR" else 0
    name = "canary size" if shift.kind == "CANARY" else "linear step size"
    if shift.size < 1 or not lowest <= share <= 50:
        allowed = f"{lowest}-50%" if lowest else "at most 50%"
        raise RolloutError(f"{name} {shift.size} {shift.size_type} is {share:.0f}% of the variant's "
                           f"{instance_count} instance(s); SageMaker allows {allowed}")


def step_count(shift: TrafficShift, instance_count: int) -> int:
    """How many times traffic moves: 1 all at once, 2 for a canary (canary, then the rest), or the linear steps."""
    if shift.kind == "ALL_AT_ONCE":
        return 1
    if shift.kind == "CANARY":
        return 2
    return math.ceil(1 / shift.share_per_step(instance_count))


def total_wait_s(shift: TrafficShift, instance_count: int) -> int:
    """The baking after every step but the last, then the termination wait."""
    return shift.wait_s * (step_count(shift, instance_count) - 1) + shift.termination_wait_s


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

    def detection_s(self) -> int:
        """How long after a bad minute the alarms can have seen it: their periods, then the publication delay."""
        return self.period_s * self.evaluation_periods + METRIC_DELAY_S


def check_alarms(limits: AlarmLimits, shift: TrafficShift) -> None:
    """Alarms that can fire on SageMaker's once-a-minute metrics, and bakes long enough for them to."""
    if limits.period_s < METRIC_INTERVAL_S or limits.period_s % METRIC_INTERVAL_S:
        raise RolloutError(f"alarm period {limits.period_s} s: SageMaker publishes endpoint metrics once a minute, so "
                           "an alarm needs a period of 60 s or a multiple of it (a shorter one stays "
                           "INSUFFICIENT_DATA and never rolls back)")
    bake_name, bake_s = (("termination wait", shift.termination_wait_s) if shift.kind == "ALL_AT_ONCE"
                         else ("wait interval", shift.wait_s))
    if bake_s < limits.detection_s():
        raise RolloutError(f"{bake_name} {bake_s} s is shorter than the {limits.detection_s()} s the alarms need to "
                           f"see a bad minute ({limits.evaluation_periods} period(s) of {limits.period_s} s and "
                           f"{METRIC_DELAY_S} s of metric delay): raise it")


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
            aws.call("cloudwatch", "put_metric_alarm", AlarmName=name, Tags=ownership_tags(endpoint),
                     AlarmDescription=f"rolls back an update of endpoint {endpoint}", **common, **metric)
            made.append(name)
    except AwsError:
        if made:  # all or none: an update must not go ahead watched by half its alarms
            aws.call("cloudwatch", "delete_alarms", AlarmNames=made)
        raise
    return list(alarms)


def policy_name(endpoint: str) -> str:
    return f"{endpoint}-invocations"


def autoscale(aws: Aws, endpoint: str, max_instances: int, invocations_per_instance: float = 100.0,
              min_instances: int = 1) -> None:
    """Target tracking on SageMakerVariantInvocationsPerInstance, between min and max instances; the policy's
    name is recorded on the endpoint for ``teardown``."""
    if not 1 <= min_instances <= max_instances:
        raise RolloutError(f"autoscaling needs 1 <= min ({min_instances}) <= max ({max_instances}) instances")
    target = scaling_resource(endpoint)
    aws.call("application-autoscaling", "register_scalable_target", MinCapacity=min_instances,
             MaxCapacity=max_instances, **target)
    aws.call("application-autoscaling", "put_scaling_policy", PolicyName=policy_name(endpoint),
             PolicyType="TargetTrackingScaling", **target,
             TargetTrackingScalingPolicyConfiguration={
                 "TargetValue": invocations_per_instance, "ScaleInCooldown": 300, "ScaleOutCooldown": 60,
                 "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}})
    record_scaling(aws, endpoint, [policy_name(endpoint)])


def registered_target(aws: Aws, endpoint: str) -> dict | None:
    """The variant's scalable target, None when autoscaling is not registered for it."""
    resource = scaling_resource(endpoint)
    targets = aws.call("application-autoscaling", "describe_scalable_targets",
                       ServiceNamespace=resource["ServiceNamespace"], ResourceIds=[resource["ResourceId"]],
                       ScalableDimension=resource["ScalableDimension"]).get("ScalableTargets", [])
    return targets[0] if targets else None


def deregister(aws: Aws, endpoint: str) -> None:
    """Remove the variant's scalable target and this project's policy on it; refused when someone else's policy
    is on it too (deregistering a target deletes every policy on it)."""
    resource = scaling_resource(endpoint)
    policies = aws.pages("application-autoscaling", "describe_scaling_policies", "ScalingPolicies",
                         ServiceNamespace=resource["ServiceNamespace"], ResourceId=resource["ResourceId"],
                         ScalableDimension=resource["ScalableDimension"])
    others = sorted(policy["PolicyName"] for policy in policies if policy["PolicyName"] != policy_name(endpoint))
    if others:
        raise RolloutError(f"the instance type change needs the autoscaling of {endpoint} deregistered, and its "
                           f"scalable target carries policies this project did not create ({', '.join(others)}): "
                           "remove them first or keep --instance-type")
    if policies:
        aws.call("application-autoscaling", "delete_scaling_policy", PolicyName=policy_name(endpoint), **resource)
    aws.call("application-autoscaling", "deregister_scalable_target", **resource)


def kept_fleet_size(serving: dict, instances: int, max_instances: int) -> int:
    """The new version's instance count: what autoscaling grew the serving variant to, else ``instances``."""
    variants = serving.get("ProductionVariants") or [{}]
    desired = variants[0].get("DesiredInstanceCount") or variants[0].get("CurrentInstanceCount") or 0
    return min(max(instances, desired), max_instances)


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
    check_alarms(limits, shift)
    serving = settle(aws, request.endpoint, request)
    if serving is None:
        aws.say(f"endpoint {request.endpoint} does not exist: a first deploy, no canary")
        release = deploy(aws, request)
    else:
        try:
            release = _guarded_update(aws, request, shift, limits, serving, max_instances)
        except RolledBack:  # the old version serves again: with its autoscaling
            autoscale(aws, request.endpoint, max_instances)
            raise
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


def _instance_type(aws: Aws, config_name: str) -> str:
    if not config_name or aws.dry_run:
        return ""
    config = aws.call("sagemaker", "describe_endpoint_config", EndpointConfigName=config_name)
    return config["ProductionVariants"][0].get("InstanceType", "")


def _leftover_configs(aws: Aws, endpoint: str, serving_config: str) -> list[str]:
    configs = aws.pages("sagemaker", "list_endpoint_configs", "EndpointConfigs")
    return [config["EndpointConfigName"] for config in configs
            if config["EndpointConfigName"] != serving_config
            and owned(aws.pages("sagemaker", "list_tags", "Tags", ResourceArn=config["EndpointConfigArn"]), endpoint)]


def _guarded_update(aws: Aws, request: DeployRequest, shift: TrafficShift, limits: AlarmLimits,
                    serving: dict, max_instances: int) -> Release:
    old_config = serving.get("EndpointConfigName", "")
    scaled = registered_target(aws, request.endpoint)
    if scaled:  # the fleet autoscaling grew stays that size (SageMaker would start the new one at the config's)
        request = dataclasses.replace(request, instance_count=kept_fleet_size(serving, request.instance_count,
                                                                               max_instances))
    check_shift(shift, request.instance_count)
    check_steps_fit(shift, request.instance_count)  # before the alarms: a refusal changes nothing
    alarms = rollback_alarms(aws, request.endpoint, limits)
    config = deployment_config(shift, request.instance_count, alarms)
    created = Created()
    deregistered = False
    try:
        release = new_release(aws, created, request)
        if scaled and _instance_type(aws, old_config) != request.instance_type:
            aws.say(f"the instance type changes to {request.instance_type}: autoscaling of {request.endpoint} "
                    "deregistered for the update (SageMaker refuses it otherwise), registered again after")
            deregister(aws, request.endpoint)
            deregistered = True
        aws.call("sagemaker", "update_endpoint", EndpointName=request.endpoint, EndpointConfigName=release.name,
                 DeploymentConfig=config)
    except BaseException:  # Ctrl-C included: nothing was handed to SageMaker, so nothing may stay
        remove(aws, created)
        if deregistered:
            autoscale(aws, request.endpoint, max_instances)
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
