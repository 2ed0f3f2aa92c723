"""Teardown's ownership rules, quick enough to run once per mutant (``benchmarks/mutation.py``).

Against moto's server alone (no container): what teardown removes is exactly what carries
the project's tag and, when an endpoint is named, that endpoint's tag; S3 deletes go in
batches of at most 1,000 keys. tests/test_teardown.py covers paging over thousands.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest

from sagemaker_deploy.aws import PROJECT_TAG, ownership_tags, s3_tagging
from sagemaker_deploy.deploy import delete_objects, log_group, owned, teardown
from tests.aws_emulator import INSTANCE, ROLE, reset_moto
from tests.test_model_registry import aws, moto_url  # noqa: F401 (fixtures: moto's server, Aws pointed at it)

pytestmark = pytest.mark.quick

OWNERS = {"vision": ownership_tags("vision"), "vision2": ownership_tags("vision2"), "untagged": [],
          "project-only": [PROJECT_TAG], "other-project": [{"Key": "project", "Value": "someone-else"}]}


def client(moto_url, service: str):
    return boto3.client(service, endpoint_url=moto_url, region_name="us-east-1")


@pytest.fixture()
def resources(moto_url, aws):
    """A model, endpoint config and alarm per owner in OWNERS (named after it: '<owner>-model' and so on), and
    the endpoint 'vision' with its log group."""
    reset_moto(moto_url)
    sagemaker, cloudwatch = client(moto_url, "sagemaker"), client(moto_url, "cloudwatch")
    for owner, tags in OWNERS.items():
        sagemaker.create_model(ModelName=f"{owner}-model", ExecutionRoleArn=ROLE, Tags=tags, PrimaryContainer={
            "Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/none:1", "ModelDataUrl": "s3://none/none"})
        sagemaker.create_endpoint_config(EndpointConfigName=f"{owner}-config", Tags=tags, ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": f"{owner}-model", "InstanceType": INSTANCE, "InitialInstanceCount": 1}])
        cloudwatch.put_metric_alarm(AlarmName=f"{owner}-alarm", MetricName="Invocation5XXErrors", Namespace="AWS/SageMaker",
                                    Statistic="Sum", Period=60, EvaluationPeriods=1, Threshold=1,
                                    ComparisonOperator="GreaterThanThreshold", **({"Tags": tags} if tags else {}))
    sagemaker.create_endpoint(EndpointName="vision", EndpointConfigName="vision-config", Tags=OWNERS["vision"])
    client(moto_url, "logs").create_log_group(logGroupName=log_group("vision"))
    return sagemaker


def remaining(moto_url) -> set[str]:
    sagemaker = client(moto_url, "sagemaker")
    names = {f"model {m['ModelName']}" for m in sagemaker.list_models()["Models"]}
    names |= {f"endpoint config {c['EndpointConfigName']}" for c in sagemaker.list_endpoint_configs()["EndpointConfigs"]}
    names |= {f"endpoint {e['EndpointName']}" for e in sagemaker.list_endpoints()["Endpoints"]}
    return names | {f"alarm {a['AlarmName']}" for a in client(moto_url, "cloudwatch").describe_alarms()["MetricAlarms"]}


def of(*owners: str) -> set[str]:
    return {f"{kind} {owner}-{suffix}" for owner in owners
            for kind, suffix in (("model", "model"), ("endpoint config", "config"), ("alarm", "alarm"))}


def test_owned_needs_the_project_tag_and_the_exact_endpoint_tag():
    assert owned(OWNERS["vision"], "vision") and owned(OWNERS["vision"]) and owned(OWNERS["project-only"])
    assert not owned(OWNERS["vision2"], "vision") and not owned(OWNERS["project-only"], "vision")
    assert not owned(OWNERS["untagged"]) and not owned(OWNERS["other-project"])
    assert not owned([ownership_tags("vision")[1]], "vision")  # the endpoint tag without the project's


def test_teardown_of_one_endpoint_removes_its_resources_and_nothing_else(resources, aws, moto_url):
    removed = teardown(aws, "vision")
    assert set(removed) == of("vision") | {"endpoint vision", f"log group {log_group('vision')}"}
    assert remaining(moto_url) == of("vision2", "untagged", "project-only", "other-project")
    assert teardown(aws, "vision") == []  # nothing of it is left to remove


def test_teardown_of_every_endpoint_removes_only_what_carries_the_project_tag(resources, aws, moto_url):
    removed = teardown(aws)
    assert set(removed) == of("vision", "vision2", "project-only") | {"endpoint vision",
                                                                      f"log group {log_group('vision')}"}
    assert remaining(moto_url) == of("untagged", "other-project")


def batch_sizes(aws, monkeypatch, operation: str, count) -> list[int]:
    """The size of each ``operation`` call's batch as it goes to moto (moto does not enforce AWS's limits)."""
    sizes, call = [], aws.call

    def recording(service, name, **arguments):
        if name == operation:
            sizes.append(count(arguments))
        return call(service, name, **arguments)

    monkeypatch.setattr(aws, "call", recording)
    return sizes


def test_more_than_100_owned_alarms_are_deleted_in_batches_of_at_most_100(resources, aws, moto_url, monkeypatch):
    cloudwatch = client(moto_url, "cloudwatch")
    for number in range(101):
        cloudwatch.put_metric_alarm(AlarmName=f"vision-{number:03d}", MetricName="ModelLatency", Statistic="Average",
                                    Namespace="AWS/SageMaker", Period=60, EvaluationPeriods=1, Threshold=1,
                                    ComparisonOperator="GreaterThanThreshold", Tags=OWNERS["vision"])
    sizes = batch_sizes(aws, monkeypatch, "delete_alarms", lambda arguments: len(arguments["AlarmNames"]))
    teardown(aws, "vision")
    assert sorted(sizes) == [2, 100]  # DeleteAlarms takes at most 100 names
    assert remaining(moto_url) == of("vision2", "untagged", "project-only", "other-project")


def test_delete_objects_removes_every_owned_key_past_one_batch_of_1000(aws, moto_url, monkeypatch):
    reset_moto(moto_url)
    s3 = client(moto_url, "s3")
    s3.create_bucket(Bucket="artifacts")
    keys = {owner: [f"models/{owner}/{number:04d}" for number in range(1001 if owner == "vision" else 2)]
            for owner in ("vision", "vision2", "untagged")}
    tagging = {"vision": s3_tagging("vision"), "vision2": s3_tagging("vision2"), "untagged": ""}
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda item: s3.put_object(Bucket="artifacts", Key=item[1], Body=b"x", Tagging=tagging[item[0]]),
                      [(owner, key) for owner, owned_keys in keys.items() for key in owned_keys]))
    sizes = batch_sizes(aws, monkeypatch, "delete_objects", lambda arguments: len(arguments["Delete"]["Objects"]))
    removed = delete_objects(aws, "s3://artifacts/models", "vision")
    assert sizes == [1000, 1]  # DeleteObjects takes at most 1,000 keys
    assert sorted(removed) == [f"s3://artifacts/{key}" for key in keys["vision"]]
    left = {item["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="artifacts")
            for item in page.get("Contents", [])}
    assert left == set(keys["vision2"] + keys["untagged"])
