"""The Model Registry and the rollout settings against moto's server (no container needed)."""
from __future__ import annotations

import pytest
from moto.server import ThreadedMotoServer

from local_server.server import free_port
from model_versions.model_packages import (APPROVED, PENDING, REJECTED, RegistryError, group_name, packages,
                                           register, require_approved, set_status)
from sagemaker_deploy.aws import PROJECT_TAG, Aws
from sagemaker_deploy.deploy import SCALING_TAG_KEY
from sagemaker_deploy.rollout import (AlarmLimits, RolloutError, TrafficShift, autoscale, deployment_config,
                                      rollback_alarms)
from tests.aws_emulator import reset_moto

IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/sagemaker-tritonserver:24.09-py3"


@pytest.fixture(scope="module")
def moto_url():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    reset_moto(f"http://127.0.0.1:{server._port}")
    yield f"http://127.0.0.1:{server._port}"
    server.stop()


@pytest.fixture()
def aws(moto_url, monkeypatch):
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_ENDPOINT_URL": moto_url}.items():
        monkeypatch.setenv(name, value)
    return Aws("us-east-1", say=lambda line: None)


def new_package(aws, pipeline: str, version: int) -> str:
    return register(aws, pipeline, version, IMAGE, f"s3://models/{pipeline}/{version}/model.tar.gz",
                    {"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": pipeline},
                    f"s3://models/{pipeline}/{version}/evaluation.json", "ml.g5.xlarge")


def test_registered_versions_wait_for_a_person_and_keep_their_local_version(aws):
    first, second = new_package(aws, "pcb_inspection", 2), new_package(aws, "pcb_inspection", 3)
    listed = packages(aws, "pcb_inspection")
    assert [(p.arn, p.status, p.local_version) for p in listed] == [(first, PENDING, "2"), (second, PENDING, "3")]
    assert listed[0].metrics_uri == "s3://models/pcb_inspection/2/evaluation.json"
    assert listed[0].image == IMAGE and listed[0].environment["SAGEMAKER_TRITON_DEFAULT_MODEL_NAME"]
    group = aws.call("sagemaker", "describe_model_package_group", ModelPackageGroupName=group_name("pcb_inspection"))
    tags = aws.call("sagemaker", "list_tags", ResourceArn=group["ModelPackageGroupArn"])["Tags"]
    assert PROJECT_TAG in tags


def test_approve_and_reject_record_the_reason_and_only_approved_packages_may_be_promoted(aws):
    arn = new_package(aws, "ensemble_lama", 1)
    with pytest.raises(RegistryError, match="is PendingManualApproval, not Approved"):
        require_approved(aws, arn)
    approved = set_status(aws, arn, APPROVED, "F1 0.99 on the unseen set")
    assert (approved.status, approved.description, approved.local_version) == (APPROVED, "F1 0.99 on the unseen set",
                                                                               "1")
    assert require_approved(aws, arn).arn == arn
    assert set_status(aws, arn, REJECTED, "regressed on capacitors").status == REJECTED
    with pytest.raises(RegistryError, match="a person sets Approved or Rejected"):
        set_status(aws, arn, PENDING, "back to pending")


def test_a_group_is_created_once_and_reused(aws):
    new_package(aws, "ensemble_dali_inception", 1)
    new_package(aws, "ensemble_dali_inception", 2)
    groups = aws.pages("sagemaker", "list_model_package_groups", "ModelPackageGroupSummaryList",
                       NameContains=group_name("ensemble_dali_inception"))
    assert len(groups) == 1


def test_canary_config_names_the_alarms_and_the_shift():
    config = deployment_config(TrafficShift("CANARY", "CAPACITY_PERCENT", 25, wait_s=120), 4, ["a", "b"])
    policy = config["BlueGreenUpdatePolicy"]
    assert policy["TrafficRoutingConfiguration"] == {"Type": "CANARY", "WaitIntervalInSeconds": 120,
                                                     "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 25}}
    assert config["AutoRollbackConfiguration"] == {"Alarms": [{"AlarmName": "a"}, {"AlarmName": "b"}]}
    assert TrafficShift("CANARY", "INSTANCE_COUNT", 1).share_per_step(4) == 0.25


@pytest.mark.parametrize("shift,count,message", [
    (TrafficShift("CANARY", "CAPACITY_PERCENT", 60), 2, r"canary size 60 CAPACITY_PERCENT is 60% of the variant's 2 instance\(s\); SageMaker allows at most 50%"),
    (TrafficShift("CANARY", "INSTANCE_COUNT", 2), 3, r"canary size 2 INSTANCE_COUNT is 67% of the variant's 3"),
    (TrafficShift("LINEAR", "CAPACITY_PERCENT", 5), 4, r"linear step size 5 CAPACITY_PERCENT is 5% .* 10-50%"),
    (TrafficShift("CANARY", wait_s=4000), 2, r"wait interval 4000 s is outside SageMaker's 0-3600 s"),
    (TrafficShift("CANARY", max_execution_s=300), 2, r"maximum execution time 300 s is outside .*600-28800"),
    (TrafficShift("SOMETIMES"), 2, r"traffic shift 'SOMETIMES': choose one of"),
    (TrafficShift("CANARY", "CAPACITY_PERCENT", 50), 1,
     r"a canary step of 50 CAPACITY_PERCENT is 1 of the variant's 1 instance\(s\), over half of it"),
])
def test_rollout_settings_sagemaker_refuses_are_refused_before_any_call(shift, count, message):
    with pytest.raises(RolloutError, match=message):
        deployment_config(shift, count, ["alarm"])


def test_rollback_needs_one_to_ten_alarms():
    with pytest.raises(RolloutError, match="0 rollback alarms; SageMaker takes 1-10"):
        deployment_config(TrafficShift(), 2, [])


def test_rollback_alarms_watch_5xx_and_p99_latency_of_the_endpoint(aws):
    names = rollback_alarms(aws, "factory", AlarmLimits(errors=2, p99_latency_ms=250))
    alarms = {a["AlarmName"]: a for a in aws.call("cloudwatch", "describe_alarms", AlarmNames=names)["MetricAlarms"]}
    assert alarms["factory-invocation-5xx"]["MetricName"] == "Invocation5XXErrors"
    assert alarms["factory-invocation-5xx"]["Threshold"] == 2.0
    latency = alarms["factory-model-latency-p99"]
    assert (latency["MetricName"], latency["ExtendedStatistic"], latency["Threshold"]) == ("ModelLatency", "p99",
                                                                                          250000.0)
    assert {"Name": "EndpointName", "Value": "factory"} in latency["Dimensions"]


def moto_endpoint(aws, name: str) -> None:
    """An endpoint in moto's records (nothing serves it): what AWS needs before a variant can autoscale."""
    from tests.aws_emulator import INSTANCE, ROLE, VARIANT

    aws.call("sagemaker", "create_model", ModelName=f"{name}-model", ExecutionRoleArn=ROLE,
             PrimaryContainer={"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/triton:latest"})
    aws.call("sagemaker", "create_endpoint_config", EndpointConfigName=f"{name}-config", ProductionVariants=[
        {"VariantName": VARIANT, "ModelName": f"{name}-model", "InitialInstanceCount": 1,
         "InstanceType": INSTANCE}])
    aws.call("sagemaker", "create_endpoint", EndpointName=name, EndpointConfigName=f"{name}-config")


def test_autoscaling_tracks_invocations_per_instance_between_one_and_n(aws):
    moto_endpoint(aws, "factory")
    autoscale(aws, "factory", max_instances=4, invocations_per_instance=50)
    target = aws.call("application-autoscaling", "describe_scalable_targets", ServiceNamespace="sagemaker",
                      ResourceIds=["endpoint/factory/variant/AllTraffic"])["ScalableTargets"][0]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 4)
    policy = aws.call("application-autoscaling", "describe_scaling_policies", ServiceNamespace="sagemaker",
                      PolicyNames=["factory-invocations"])["ScalingPolicies"][0]
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == "SageMakerVariantInvocationsPerInstance"
    arn = aws.call("sagemaker", "describe_endpoint", EndpointName="factory")["EndpointArn"]
    tags = {tag["Key"]: tag["Value"] for tag in aws.call("sagemaker", "list_tags", ResourceArn=arn)["Tags"]}
    assert tags[SCALING_TAG_KEY] == "factory-invocations"  # what teardown may remove
    with pytest.raises(RolloutError, match=r"1 <= min \(3\) <= max \(2\)"):
        autoscale(aws, "factory", max_instances=2, min_instances=3)
