"""Ownership by tags: what a deploy creates is tagged, teardown deletes exactly one endpoint's resources,
on every page of every listing; update retires the old release; arguments that cannot work are refused."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from moto.core.responses import ActionResult
from moto.sagemaker.responses import SageMakerResponse

from clients.classify import classify_scores
from clients.protocols import Route
from sagemaker_deploy.__main__ import main as deploy_main
from sagemaker_deploy.aws import PROJECT_TAG, ownership_tags, s3_tagging
from sagemaker_deploy.deploy import DeployRequest, teardown, update
from sagemaker_deploy.rollout import autoscale, rollback_alarms
from tests.aws_emulator import INSTANCE, ROLE

BUCKET = "teardown-models"
ARTIFACTS = "visual-inspection-triton"
PAGE = 100  # SageMaker's largest page of models and endpoint configs
S3_PAGE = 1000  # S3's largest page of keys


@pytest.fixture()
def paged_list_models(monkeypatch):
    """moto 5.2.5's ListModels answers every model on one page; SageMaker pages (at most 100 per page)."""
    def list_models(response):
        models = list(response.sagemaker_backend.list_models())
        start = int(response._get_param("NextToken") or 0)
        end = start + int(response._get_param("MaxResults") or PAGE)
        page = {"Models": [model.response_object for model in models[start:end]]}
        return ActionResult({**page, "NextToken": str(end)} if end < len(models) else page)

    monkeypatch.setattr(SageMakerResponse, "list_models", list_models)


def every(client, operation: str, key: str, **arguments) -> list[dict]:
    return [item for page in client.get_paginator(operation).paginate(**arguments) for item in page.get(key, [])]


def owner(tag_list: list[dict]) -> str:
    """The endpoint tag's value; 'untagged' without the project tag, 'project' with no endpoint tag."""
    tags = {tag["Key"]: tag["Value"] for tag in tag_list}
    if PROJECT_TAG["Key"] not in tags:
        return "untagged"
    return tags.get(ownership_tags("")[1]["Key"], "project")


def name_group(name: str) -> str:
    """The group a bulk-made resource belongs to, from its name: 'vision2-0007' -> 'vision2'."""
    return name.split("/")[1] if "/" in name else name.rsplit("-", 1)[0] if name[-4:].isdigit() else name


def names_by_owner(local_sagemaker, tags_known: bool = False) -> dict[str, set[str]]:
    """'model NAME' / 'endpoint config NAME' / 'endpoint NAME' by their ``owner``; ``tags_known``: by
    ``name_group`` instead, for resources made with known tags (one call per resource fewer)."""
    sagemaker = local_sagemaker._client("sagemaker")
    found: dict[str, set[str]] = {}
    for label, operation, key, stem in (("model", "list_models", "Models", "Model"),
                                        ("endpoint config", "list_endpoint_configs", "EndpointConfigs",
                                         "EndpointConfig"),
                                        ("endpoint", "list_endpoints", "Endpoints", "Endpoint")):
        for item in every(sagemaker, operation, key):
            name = item[f"{stem}Name"]
            tagged_as = (name_group(name) if tags_known else
                         owner(every(sagemaker, "list_tags", "Tags", ResourceArn=item[f"{stem}Arn"])))
            found.setdefault(tagged_as, set()).add(f"{label} {name}")
    return found


def keys_by_owner(local_sagemaker, bucket: str, tags_known: bool = False) -> dict[str, set[str]]:
    """s3:// URLs by their ``owner``; ``tags_known``: by ``name_group`` (the folder under ARTIFACTS)."""
    s3 = local_sagemaker.s3()
    found: dict[str, set[str]] = {}
    for item in every(s3, "list_objects_v2", "Contents", Bucket=bucket):
        tagged_as = (name_group(item["Key"]) if tags_known else
                     owner(s3.get_object_tagging(Bucket=bucket, Key=item["Key"])["TagSet"]))
        found.setdefault(tagged_as, set()).add(f"s3://{bucket}/{item['Key']}")
    return found


def make_resources(local_sagemaker, endpoint: str, count: int, tags: list[dict]) -> None:
    """``count`` models and endpoint configs named after ``endpoint`` (not the emulator's containers: no archive)."""
    sagemaker = local_sagemaker._client("sagemaker")

    def make(number: int) -> None:
        name = f"{endpoint}-{number:04d}"
        sagemaker.create_model(ModelName=name, ExecutionRoleArn=ROLE, Tags=tags, PrimaryContainer={
            "Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/none:1", "ModelDataUrl": "s3://none/none"})
        sagemaker.create_endpoint_config(EndpointConfigName=name, Tags=tags, ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": name, "InstanceType": INSTANCE, "InitialInstanceCount": 1}])

    with ThreadPoolExecutor(8) as pool:  # thousands of calls: several at a time
        list(pool.map(make, range(count)))


def make_objects(local_sagemaker, bucket: str, folder: str, count: int, tagging: str) -> None:
    s3 = local_sagemaker.s3()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda number: s3.put_object(Bucket=bucket, Key=f"{ARTIFACTS}/{folder}/{number:05d}",
                                                   Body=b"x", Tagging=tagging), range(count)))


def test_teardown_of_one_endpoint_deletes_all_pages_of_its_own_and_nothing_of_a_same_prefix_endpoint(
        local_sagemaker, aws, paged_list_models):
    bucket = "prefix-twins"
    local_sagemaker.s3().create_bucket(Bucket=bucket)
    for group, count, tags in (("vision", PAGE + 5, ownership_tags("vision")),
                               ("vision2", PAGE + 5, ownership_tags("vision2")),
                               ("vision-untagged", 2, []), ("vision-project-only", 1, [PROJECT_TAG])):
        make_resources(local_sagemaker, group, count, tags)
    sagemaker = local_sagemaker._client("sagemaker")
    sagemaker.create_endpoint(EndpointName="vision2", EndpointConfigName="vision2-0000", Tags=ownership_tags("vision2"))
    for group, count, tagging in (("vision", S3_PAGE + 5, s3_tagging("vision")), ("vision2", 3, s3_tagging("vision2")),
                                  ("untagged", 2, "")):
        make_objects(local_sagemaker, bucket, group, count, tagging)
    before = names_by_owner(local_sagemaker, tags_known=True)
    keys_before = keys_by_owner(local_sagemaker, bucket, tags_known=True)
    assert len(before["vision"]) == 2 * (PAGE + 5) and len(keys_before["vision"]) == S3_PAGE + 5

    removed = teardown(aws, "vision", delete_artifacts_in=f"s3://{bucket}/{ARTIFACTS}")
    assert set(removed) == before["vision"] | keys_before["vision"]
    assert names_by_owner(local_sagemaker, tags_known=True) == {
        group: before[group] for group in ("vision2", "vision-untagged", "vision-project-only")}
    assert "endpoint vision2" in before["vision2"]
    assert keys_by_owner(local_sagemaker, bucket, tags_known=True) == {
        group: keys_before[group] for group in ("vision2", "untagged")}

    teardown(aws, delete_artifacts_in=f"s3://{bucket}/{ARTIFACTS}")  # no --endpoint: all the project's
    assert names_by_owner(local_sagemaker, tags_known=True) == {"vision-untagged": before["vision-untagged"]}
    assert keys_by_owner(local_sagemaker, bucket, tags_known=True) == {"untagged": keys_before["untagged"]}
    for number in range(2):
        sagemaker.delete_endpoint_config(EndpointConfigName=f"vision-untagged-{number:04d}")
        sagemaker.delete_model(ModelName=f"vision-untagged-{number:04d}")


def test_deploy_tags_everything_and_update_retires_the_old_model_and_config_and_keeps_serving(
        cpu_repository, tmp_path, aws, local_sagemaker, photos):
    assert deploy_main(["--region", "us-east-1", "deploy", "--allow-cpu-target", "--repository", str(cpu_repository),
                        "--endpoint", "tagged", "--bucket", BUCKET, "--role", ROLE, "--instance-type", INSTANCE,
                        "--poll-s", "0.5", "--wait-timeout-s", "180", "--thread-count", "3",
                        "--buffer-manager-thread-count", "5"]) == 0
    sagemaker = local_sagemaker._client("sagemaker")
    first = sagemaker.describe_endpoint(EndpointName="tagged")["EndpointConfigName"]
    first_archive = sagemaker.describe_model(ModelName=first)["PrimaryContainer"]["ModelDataUrl"]
    assert names_by_owner(local_sagemaker)["tagged"] == {"endpoint tagged", f"model {first}",
                                                         f"endpoint config {first}"}
    assert keys_by_owner(local_sagemaker, BUCKET)["tagged"] == {first_archive}
    environment = sagemaker.describe_model(ModelName=first)["PrimaryContainer"]["Environment"]
    assert (environment["SAGEMAKER_TRITON_THREAD_COUNT"], environment["SAGEMAKER_TRITON_BUFFER_MANAGER_THREAD_COUNT"]) \
        == ("3", "5")
    # the default image's Triton (2.69) limits the SageMaker port's bodies too; the local 2.51 has no such flag, so
    # the emulator leaves it out (its route keeps the limit) and its container starts
    assert "--http-max-input-size=6291456" in environment["SAGEMAKER_TRITON_ADDITIONAL_ARGS"].split()

    second = update(aws, DeployRequest(cpu_repository, "tagged", BUCKET, ROLE, "us-east-1", instance_type=INSTANCE,
                                       workdir=tmp_path, poll_s=0.5, wait_timeout_s=180,
                                       allow_cpu_target=True)).name
    assert names_by_owner(local_sagemaker)["tagged"] == {"endpoint tagged", f"model {second}",
                                                         f"endpoint config {second}"}
    # the route's own URL: clients.protocols caches one runtime client per URL, and "" would keep this module's
    # emulator for every later test module
    route = Route("sagemaker-endpoint", local_sagemaker.route.url, endpoint_name="tagged", region="us-east-1")
    assert classify_scores(route, [photos["chelsea"]]).shape == (1, 1001)
    assert len(keys_by_owner(local_sagemaker, BUCKET)["tagged"]) == 2  # old archive kept for rollbacks

    teardown(aws, "tagged", delete_artifacts_in=f"s3://{BUCKET}/{ARTIFACTS}")
    assert "tagged" not in names_by_owner(local_sagemaker) and keys_by_owner(local_sagemaker, BUCKET) == {}


def test_autoscale_to_zero_on_a_real_time_endpoint_is_refused_before_any_aws_call(tmp_path, aws, local_sagemaker,
                                                                                   capsys):
    assert deploy_main(["--region", "us-east-1", "deploy", "--allow-cpu-target", "--repository", str(tmp_path),
                        "--endpoint", "realtime", "--bucket", BUCKET, "--role", ROLE, "--autoscale-to-zero"]) == 2
    printed = capsys.readouterr()
    assert printed.out == ""  # every AWS call is printed: none was made
    assert printed.err == ("error: --autoscale-to-zero needs --async-output: only an asynchronous endpoint can "
                           "scale to 0 instances (a real-time one keeps at least 1)\n")
    assert "realtime" not in names_by_owner(local_sagemaker)


def alarm_names(local_sagemaker) -> set[str]:
    return {alarm["AlarmName"] for alarm in every(local_sagemaker._client("cloudwatch"), "describe_alarms",
                                                  "MetricAlarms")}


def scaling_state(local_sagemaker) -> tuple[set[str], set[str]]:
    """(scalable targets' resource ids, scaling policies' names) of SageMaker variants."""
    scaling = local_sagemaker._client("application-autoscaling")
    targets = scaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    policies = scaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    return {target["ResourceId"] for target in targets}, {policy["PolicyName"] for policy in policies}


def log_groups(local_sagemaker) -> set[str]:
    logs = local_sagemaker._client("logs")
    return {group["logGroupName"] for group in logs.describe_log_groups(
        logGroupNamePrefix="/aws/sagemaker/Endpoints/")["logGroups"]}


def test_teardown_removes_the_alarms_scaling_and_log_group_it_owns_and_leaves_everyone_elses(local_sagemaker, aws):
    sagemaker = local_sagemaker._client("sagemaker")
    for endpoint, tags in (("guarded", ownership_tags("guarded")), ("guarded-theirs", []),
                           ("guarded2", ownership_tags("guarded2"))):
        make_resources(local_sagemaker, endpoint, 1, tags)
        sagemaker.create_endpoint(EndpointName=endpoint, EndpointConfigName=f"{endpoint}-0000", Tags=tags)
        rollback_alarms(aws, endpoint)  # what rollout creates: the rollback alarms...
        autoscale(aws, endpoint, max_instances=2)  # ...and the target-tracking autoscaling
    cloudwatch = local_sagemaker._client("cloudwatch")
    cloudwatch.put_metric_alarm(AlarmName="guarded-invocation-5xx-mine", MetricName="Invocation5XXErrors",
                                Namespace="AWS/SageMaker", Statistic="Sum", Period=60, EvaluationPeriods=1,
                                Threshold=1, ComparisonOperator="GreaterThanOrEqualToThreshold")  # someone else's
    scaling = local_sagemaker._client("application-autoscaling")
    scaling.put_scaling_policy(PolicyName="guarded-theirs-extra", ServiceNamespace="sagemaker",
                               ResourceId="endpoint/guarded-theirs/variant/AllTraffic",
                               ScalableDimension="sagemaker:variant:DesiredInstanceCount",
                               PolicyType="TargetTrackingScaling", TargetTrackingScalingPolicyConfiguration={
                                   "TargetValue": 5.0, "PredefinedMetricSpecification": {
                                       "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}})
    for endpoint in ("guarded", "guarded-theirs", "guarded2"):  # SageMaker makes them once a container starts
        local_sagemaker._cloudwatch_log_group(endpoint)
    alarms, (targets, policies), groups = alarm_names(local_sagemaker), scaling_state(local_sagemaker), \
        log_groups(local_sagemaker)

    removed = teardown(aws, "guarded")
    mine = {"guarded-invocation-5xx", "guarded-model-latency-p99"}
    assert {line for line in removed if not line.startswith(("model ", "endpoint"))} == {
        *(f"alarm {name}" for name in mine), "scaling policy guarded-invocations",
        "scalable target endpoint/guarded/variant/AllTraffic", "log group /aws/sagemaker/Endpoints/guarded"}
    assert alarm_names(local_sagemaker) == alarms - mine
    assert scaling_state(local_sagemaker) == (targets - {"endpoint/guarded/variant/AllTraffic"},
                                              policies - {"guarded-invocations"})
    assert log_groups(local_sagemaker) == groups - {"/aws/sagemaker/Endpoints/guarded"}
    assert "guarded-invocation-5xx-mine" in alarm_names(local_sagemaker)
    assert "guarded-theirs-extra" in scaling_state(local_sagemaker)[1]
