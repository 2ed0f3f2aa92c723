"""The production release under deployment guardrails, against the local SageMaker: moto's server, the
emulator's blue/green updates (tests/emulator_rollout.py) and real tritonserver containers."""
from __future__ import annotations

import shutil
import threading

import pytest

from clients.classify import classify_scores
from clients.protocols import RequestError, Route
from sagemaker_deploy.__main__ import main as deploy_main
from sagemaker_deploy.aws import Aws, AwsError
from sagemaker_deploy.deploy import Created, new_release, owned
from sagemaker_deploy.rollout import (AlarmLimits, RolledBack, RolloutError, TrafficShift, deployment_config,
                                      release_to_production, settle)
from tests.aws_emulator import INSTANCE, apply_environment
from tests.test_sagemaker_deploy import BUCKET, ROLE, request

# SageMaker's own alarm period (its metrics come once a minute), on the emulator's clock running 60 times
# faster than the wall clock (a minute a second), and a p99 budget no CPU container misses, so only the 5xx
# alarm can fire. A bake must last the alarm's period plus a minute of metric delay: 120 s.
LIMITS = AlarmLimits(errors=1, p99_latency_ms=60_000, period_s=60)
TIME_SCALE = 60
OTHER_INSTANCE = "ml.g4dn.2xlarge"  # in moto 5.2.5's list of instance types
FAILING_MODEL = '''"""This release is broken on purpose: every request gets an error (HTTP 500 from the container)."""
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse(error=pb_utils.TritonError("this release is broken on purpose"))
                for _ in requests]
'''


def canary(wait_s: int, max_execution_s: int = 3600) -> TrafficShift:
    return TrafficShift("CANARY", "CAPACITY_PERCENT", 50, wait_s=wait_s, termination_wait_s=0,
                        max_execution_s=max_execution_s)


@pytest.fixture(scope="module", autouse=True)
def quick_rollouts(local_sagemaker):
    local_sagemaker.rollouts.poll_s = 0.1
    local_sagemaker.rollouts.clock.set_scale(TIME_SCALE)


@pytest.fixture(scope="module")
def production(local_sagemaker, cpu_repository, tmp_path_factory):
    """Endpoint "line-1" serving the cpu repository on 2 instances: first deploy, no canary."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        apply_environment(monkeypatch, local_sagemaker)
        aws = Aws("us-east-1", say=lambda line: None)
        workdir = tmp_path_factory.mktemp("line-1")
        release = release_to_production(aws, request(cpu_repository, workdir, "line-1", instance_count=2),
                                        canary(120), LIMITS, max_instances=4)
    return release


def failing_copy(repository, target):
    """The repository with its image guard answering every request with an error: it loads, passes /ping
    (and would pass a staging check that only looks at loading), and fails under traffic."""
    shutil.copytree(repository, target)
    (target / "dali_guard" / "1" / "model.py").write_text(FAILING_MODEL)
    return target


class Client(threading.Thread):
    """Keeps classifying a photo through boto3 until stopped; records every request's outcome."""

    def __init__(self, endpoint: str, photo: bytes):
        super().__init__(daemon=True)
        self.route = Route("sagemaker-endpoint", "", endpoint_name=endpoint, region="us-east-1", timeout_s=60)
        self.photo, self.outcomes, self.halt = photo, [], threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                self.outcomes.append("ok" if classify_scores(self.route, [self.photo]).shape == (1, 1001) else "?")
            except RequestError as error:
                # the container's own 5xx is an answer; anything else (no connection, a timeout) is a lost request
                self.outcomes.append("5xx" if "Received server error (500) from primary" in str(error)
                                     else f"lost: {error}")

    def stop(self) -> list[str]:
        self.halt.set()
        self.join(timeout=120)
        return self.outcomes


def owned_configs(aws: Aws, endpoint: str) -> list[str]:
    configs = aws.pages("sagemaker", "list_endpoint_configs", "EndpointConfigs")
    return [config["EndpointConfigName"] for config in configs
            if owned(aws.pages("sagemaker", "list_tags", "Tags", ResourceArn=config["EndpointConfigArn"]), endpoint)]


def serving(aws: Aws, endpoint: str) -> dict:
    return aws.call("sagemaker", "describe_endpoint", EndpointName=endpoint)


def test_a_canary_over_half_the_fleet_is_refused_before_any_call(cpu_repository, tmp_path, local_sagemaker,
                                                                  monkeypatch):
    apply_environment(monkeypatch, local_sagemaker)
    calls = []
    shift = TrafficShift("CANARY", "INSTANCE_COUNT", 2, wait_s=120, max_execution_s=600)
    with pytest.raises(RolloutError, match=r"^canary size 2 INSTANCE_COUNT is 67% of the variant's 3 instance\(s\); "
                                           r"SageMaker allows at most 50%$"):
        release_to_production(Aws("us-east-1", say=calls.append),
                              request(cpu_repository, tmp_path, "line-1", instance_count=3), shift, LIMITS, 4)
    assert calls == []


def test_an_alarm_cloudwatch_refuses_stops_the_release_before_update_endpoint(cpu_repository, tmp_path, aws,
                                                                              production, local_sagemaker):
    before = (serving(aws, "line-1")["EndpointConfigName"], list(local_sagemaker.status_history["line-1"]))
    with pytest.raises(AwsError, match=r"^cloudwatch.put_metric_alarm failed: .*EvaluationPeriods") as refused:
        release_to_production(aws, request(cpu_repository, tmp_path, "line-1", instance_count=2), canary(300),
                              AlarmLimits(evaluation_periods=0), max_instances=4)
    assert "\n" not in str(refused.value)
    assert (serving(aws, "line-1")["EndpointConfigName"], local_sagemaker.status_history["line-1"]) == before
    assert owned_configs(aws, "line-1") == [production.name]
    assert aws.call("cloudwatch", "describe_alarms", AlarmNamePrefix="line-1-")["MetricAlarms"] == []


def test_a_rerun_after_an_interrupted_release_removes_what_the_endpoint_does_not_serve(cpu_repository, tmp_path,
                                                                                      aws, production):
    new_release(aws, Created(), request(cpu_repository, tmp_path, "line-1", instance_count=2))  # then Ctrl-C
    assert len(owned_configs(aws, "line-1")) == 2
    assert settle(aws, "line-1", request(cpu_repository, tmp_path, "line-1"))["EndpointConfigName"] == production.name
    assert owned_configs(aws, "line-1") == [production.name]
    assert [m["ModelName"] for m in aws.call("sagemaker", "list_models")["Models"]
            if m["ModelName"].startswith("line-1-")] == [production.name]


def test_a_version_answering_5xx_under_canary_traffic_is_rolled_back_while_every_request_gets_an_answer(
        cpu_repository, tmp_path, aws, production, local_sagemaker, photos):
    client = Client("line-1", photos["chelsea"])
    client.start()
    try:
        with pytest.raises(RolledBack, match=rf"^endpoint line-1 rolled back to {production.name}: .*"
                                             r"line-1-invocation-5xx.*; line-1-\S+ removed$"):
            release_to_production(aws, request(failing_copy(cpu_repository, tmp_path / "failing"), tmp_path,
                                                "line-1", instance_count=2), canary(600), LIMITS, max_instances=4)
    finally:
        outcomes = client.stop()
    assert "5xx" in outcomes and "ok" in outcomes  # the canary answered (badly), the old version too
    assert [outcome for outcome in outcomes if outcome not in ("ok", "5xx")] == []
    described = serving(aws, "line-1")
    assert (described["EndpointStatus"], described["EndpointConfigName"]) == ("InService", production.name)
    assert "line-1-invocation-5xx" in described["FailureReason"]
    assert local_sagemaker.status_history["line-1"][-3:] == ["Updating", "RollingBack", "InService"]
    alarm = aws.call("cloudwatch", "describe_alarms", AlarmNames=["line-1-invocation-5xx"])["MetricAlarms"][0]
    assert alarm["StateValue"] == "ALARM"
    assert owned_configs(aws, "line-1") == [production.name]
    assert [m["ModelName"] for m in aws.call("sagemaker", "list_models")["Models"]
            if m["ModelName"].startswith("line-1-")] == [production.name]
    answered_before = len(local_sagemaker.rollouts.answered("line-1"))
    route = Route("sagemaker-endpoint", "", endpoint_name="line-1", region="us-east-1")
    for _ in range(4):
        assert classify_scores(route, [photos["coffee"]]).shape == (1, 1001)
    assert {answer.config for answer in local_sagemaker.rollouts.answered("line-1")[answered_before:]} == {
        production.name}


def test_a_good_version_takes_the_canary_share_then_all_traffic_and_the_old_one_is_retired(
        cpu_repository, tmp_path, aws, local_sagemaker, photos):
    first = release_to_production(aws, request(cpu_repository, tmp_path, "line-2", instance_count=2), canary(120),
                                  LIMITS, max_instances=3)
    client = Client("line-2", photos["chelsea"])
    client.start()
    try:
        second = release_to_production(aws, request(cpu_repository, tmp_path, "line-2", instance_count=2),
                                       canary(180), LIMITS, max_instances=3)
    finally:
        outcomes = client.stop()
    assert outcomes and set(outcomes) == {"ok"}
    answered = local_sagemaker.rollouts.answered("line-2")
    during_canary = [answer.config for answer in answered if answer.green_share == 0.5]
    assert set(during_canary) == {first.name, second.name}  # both versions answered while baking
    assert abs(during_canary.count(second.name) - len(during_canary) / 2) <= 1  # the canary's share: half
    after = answered[max(i for i, answer in enumerate(answered) if answer.green_share == 0.5) + 1:]
    assert {answer.config for answer in after} <= {second.name}
    route = Route("sagemaker-endpoint", "", endpoint_name="line-2", region="us-east-1")
    before = len(local_sagemaker.rollouts.answered("line-2"))
    for _ in range(3):
        assert classify_scores(route, [photos["coffee"]]).shape == (1, 1001)
    assert {answer.config for answer in local_sagemaker.rollouts.answered("line-2")[before:]} == {second.name}
    described = serving(aws, "line-2")
    assert (described["EndpointStatus"], described["EndpointConfigName"]) == ("InService", second.name)
    assert local_sagemaker.status_history["line-2"][-2:] == ["Updating", "InService"]
    assert owned_configs(aws, "line-2") == [second.name]
    target = aws.call("application-autoscaling", "describe_scalable_targets", ServiceNamespace="sagemaker",
                      ResourceIds=["endpoint/line-2/variant/AllTraffic"])["ScalableTargets"][0]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 3)


def test_rollout_command_dry_run_prints_the_guarded_update_and_the_autoscaling(cpu_repository, aws, capsys):
    assert deploy_main(["--dry-run", "--region", "us-east-1", "rollout", "--allow-cpu-target", "--repository",
                        str(cpu_repository), "--endpoint", "line-9", "--bucket", BUCKET, "--role", ROLE,
                        "--instances", "2", "--max-instances", "4", "--canary-percent", "50", "--wait-s", "300",
                        "--p99-ms", "500"]) == 0
    printed = capsys.readouterr().out
    assert '[dry run] cloudwatch.put_metric_alarm(AlarmName="line-9-invocation-5xx"' in printed
    update_call = next(line for line in printed.splitlines() if "sagemaker.update_endpoint(" in line)
    assert '"CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 50}' in update_call
    assert '"AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "line-9-invocation-5xx"}' in update_call
    assert "MaxCapacity=4" in printed.split("register_scalable_target(")[1].splitlines()[0]


def test_rollout_command_refuses_a_canary_over_half_the_fleet_in_one_line(cpu_repository, aws, capsys):
    assert deploy_main(["--region", "us-east-1", "rollout", "--allow-cpu-target", "--repository",
                        str(cpu_repository), "--endpoint", "line-9", "--bucket", BUCKET, "--role", ROLE,
                        "--instances", "2", "--canary-percent", "60"]) == 1
    assert capsys.readouterr().err == ("error: canary size 60 CAPACITY_PERCENT is 60% of the variant's 2 "
                                       "instance(s); SageMaker allows at most 50%\n")


@pytest.mark.parametrize(("limits", "shift", "refusal"), [
    (AlarmLimits(period_s=10), canary(300), r"^alarm period 10 s: SageMaker publishes endpoint metrics once a minute"),
    (AlarmLimits(period_s=90), canary(300), r"^alarm period 90 s: .*a period of 60 s or a multiple of it"),
    (AlarmLimits(period_s=60, evaluation_periods=2), canary(120),
     r"^wait interval 120 s is shorter than the 180 s the alarms need to see a bad minute \(2 period\(s\) of 60 s "
     r"and 60 s of metric delay\): raise it$"),
    (LIMITS, canary(600, max_execution_s=600),
     r"^maximum execution time 600 s is not longer than the update's 600 s of waits"),
    (LIMITS, TrafficShift("LINEAR", "CAPACITY_PERCENT", 25, wait_s=1200, max_execution_s=3600),
     r"^maximum execution time 3600 s is not longer than the update's 3600 s of waits"),
    (LIMITS, canary(300, max_execution_s=28801), r"^maximum execution time 28801 s is outside SageMaker's 600-28800 s$"),
])
def test_guardrails_that_could_never_fire_or_time_out_are_refused_before_any_call(cpu_repository, tmp_path, limits,
                                                                                  shift, refusal):
    calls = []
    with pytest.raises(RolloutError, match=refusal):
        release_to_production(Aws("us-east-1", say=calls.append),
                              request(cpu_repository, tmp_path, "line-1", instance_count=4), shift, limits, 4)
    assert calls == []


def test_the_longest_execution_time_sagemaker_allows_is_accepted():
    config = deployment_config(canary(3600, max_execution_s=28800), 2, ["an-alarm"])
    assert config["BlueGreenUpdatePolicy"]["MaximumExecutionTimeoutInSeconds"] == 28800


def test_an_update_running_past_its_maximum_execution_time_is_rolled_back(cpu_repository, tmp_path, aws,
                                                                          production, local_sagemaker):
    serving_before = serving(aws, "line-1")["EndpointConfigName"]
    with pytest.raises(RolledBack, match=r"ran longer than its MaximumExecutionTimeoutInSeconds of 600 seconds"):
        release_to_production(aws, request(cpu_repository, tmp_path, "line-1", instance_count=2),
                              canary(590, max_execution_s=600), LIMITS, max_instances=4)
    described = serving(aws, "line-1")
    assert (described["EndpointStatus"], described["EndpointConfigName"]) == ("InService", serving_before)
    assert local_sagemaker.status_history["line-1"][-3:] == ["Updating", "RollingBack", "InService"]
    assert owned_configs(aws, "line-1") == [serving_before]


def test_an_alarm_fired_by_the_old_fleet_while_the_new_one_provisions_aborts_the_update(
        cpu_repository, tmp_path, aws, local_sagemaker, photos):
    broken = release_to_production(aws, request(failing_copy(cpu_repository, tmp_path / "failing"), tmp_path,
                                                "line-3", instance_count=2), canary(120), LIMITS, max_instances=2)
    client = Client("line-3", photos["chelsea"])
    client.start()
    try:
        with pytest.raises(RolledBack, match=rf"^endpoint line-3 rolled back to {broken.name}: .*"
                                             r"line-3-invocation-5xx"):
            release_to_production(aws, request(cpu_repository, tmp_path, "line-3", instance_count=2), canary(600),
                                  LIMITS, max_instances=2)
    finally:
        outcomes = client.stop()
    assert "5xx" in outcomes
    assert {answer.config for answer in local_sagemaker.rollouts.answered("line-3")} == {broken.name}
    assert local_sagemaker.status_history["line-3"][-3:] == ["Updating", "RollingBack", "InService"]
    target = aws.call("application-autoscaling", "describe_scalable_targets", ServiceNamespace="sagemaker",
                      ResourceIds=["endpoint/line-3/variant/AllTraffic"])["ScalableTargets"]
    assert [(t["MinCapacity"], t["MaxCapacity"]) for t in target] == [(1, 2)]


def test_an_instance_type_change_deregisters_autoscaling_around_the_update_and_keeps_the_grown_fleet(
        cpu_repository, tmp_path, aws, local_sagemaker):
    """On line-2 as the good version's test left it: 2 instances, autoscaling registered for 1-3."""
    local_sagemaker.autoscale_variant("line-2", 3)  # traffic grew the fleet
    bigger = new_release(aws, Created(), request(cpu_repository, tmp_path, "line-2", instance_type=OTHER_INSTANCE,
                                                 instance_count=3))
    with pytest.raises(AwsError, match=r"variant AllTraffic is registered as a scalable target .* changes its "
                                       rf"instance type from {INSTANCE} to {OTHER_INSTANCE}"):
        aws.call("sagemaker", "update_endpoint", EndpointName="line-2", EndpointConfigName=bigger.name)
    settle(aws, "line-2", request(cpu_repository, tmp_path, "line-2"))  # removes that unused release again

    moved = release_to_production(aws, request(cpu_repository, tmp_path, "line-2", instance_type=OTHER_INSTANCE,
                                               instance_count=2), canary(120), LIMITS, max_instances=3)
    variant = aws.call("sagemaker", "describe_endpoint_config",
                       EndpointConfigName=moved.name)["ProductionVariants"][0]
    assert (variant["InstanceType"], variant["InitialInstanceCount"]) == (OTHER_INSTANCE, 3)
    described = serving(aws, "line-2")
    assert (described["EndpointConfigName"], described["ProductionVariants"][0]["DesiredInstanceCount"]) == (
        moved.name, 3)
    target = aws.call("application-autoscaling", "describe_scalable_targets", ServiceNamespace="sagemaker",
                      ResourceIds=["endpoint/line-2/variant/AllTraffic"])["ScalableTargets"]
    assert [(t["MinCapacity"], t["MaxCapacity"]) for t in target] == [(1, 3)]
