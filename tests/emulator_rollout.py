"""SageMaker's deployment guardrails for the test emulator: blue/green updates that shift traffic as a
canary (or linear steps, or all at once) and roll back by themselves when a CloudWatch alarm fires.

moto 5.2.5 has neither UpdateEndpoint's ``DeploymentConfig`` nor CloudWatch alarm evaluation, so
``BlueGreenRollouts`` plays SageMaker's part (developer guide, "Deployment guardrails",
"Use canary traffic shifting", "Use linear traffic shifting", "Auto-Rollback Configuration and
Monitoring"; API reference BlueGreenUpdatePolicy, TrafficRoutingConfig):

- the new fleet (green) starts beside the old one (blue); the endpoint is ``Updating``;
- a ``Balancer`` in front of the variant sends each step's share of the invocations to green
  (the canary's share is its instance count over the variant's), the rest to blue;
- every invocation's outcome and latency go to moto's CloudWatch as the endpoint's
  ``Invocation5XXErrors`` and ``ModelLatency`` (microseconds), dimensions EndpointName and
  VariantName, as SageMaker publishes them: one data point set per minute, readable
  ``METRIC_DELAY_S`` after its minute ended. From the UpdateEndpoint call on (the new fleet's
  provisioning included: an alarm fired by the old fleet then aborts the update) until the end
  of the last bake (``WaitIntervalInSeconds`` after each step, ``TerminationWaitInSeconds``
  after the last), the alarms named in ``AutoRollbackConfiguration`` are evaluated over their
  complete periods and set with ``SetAlarmState``; an alarm whose period is shorter than the
  metrics' minute stays ``INSUFFICIENT_DATA`` (its periods hold no data point), which never
  rolls back;
- the update is rolled back when it runs longer than ``MaximumExecutionTimeoutInSeconds``;
- an update that changes the instance type of a variant registered for autoscaling is refused
  (``refuse_scaled_instance_type_change``; SageMaker's developer guide, "Update or delete an
  endpoint that uses auto scaling": deregister the variant first);
- an alarm in ``ALARM`` rolls back: ``RollingBack``, all traffic to blue, green stopped once its
  requests are answered, ``InService`` on the old configuration with a ``FailureReason`` naming
  the alarm; otherwise all traffic ends on green and blue is stopped once its requests are answered.

A fleet is stopped only after the balancer has stopped choosing it and its last request has its
answer, so no request is lost while traffic moves.

Time: ``Clock`` runs the emulated SageMaker and CloudWatch time ``scale`` times faster than the wall
clock (tests use 60: a minute a second), so baking periods, metric minutes, their delay and the
execution timeout keep SageMaker's proportions while a test takes seconds.
"""
from __future__ import annotations

import math
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from moto.applicationautoscaling.models import applicationautoscaling_backends
from moto.cloudwatch.models import cloudwatch_backends
from moto.core.responses import ActionResult
from moto.sagemaker.exceptions import ValidationError
from moto.sagemaker.responses import SageMakerResponse

from local_server.endpoint_route import DEFAULT_ACCOUNT
from local_server.server import free_port

NAMESPACE = "AWS/SageMaker"
VARIANT = "AllTraffic"
REGION = "us-east-1"
FORWARD_TIMEOUT_S = 120.0  # longer than the route's: the route, not the balancer, times a request out
# DescribeEndpoint's FailureReason after an auto-rollback. The guide says SageMaker "initiates a complete
# rollback" when "any of your alarms trip"; it does not quote the service's sentence, so this one is ours
# and says what matters: the alarm by name.
ROLLED_BACK = ("Deployment was rolled back: CloudWatch alarm(s) {alarms} went into ALARM state during the "
               "baking period.")
TIMED_OUT = ("Deployment was rolled back: it ran longer than its MaximumExecutionTimeoutInSeconds of {limit:.0f} "
             "seconds.")
# Our wording: the developer guide says to deregister the variant before changing its instance type.
SCALED_TYPE_CHANGE = ("The endpoint {endpoint} cannot be updated: variant {variant} is registered as a scalable "
                      "target with Application Auto Scaling and the update changes its instance type from "
                      "{old} to {new}. Deregister the scalable target first.")
METRIC_INTERVAL_S = 60.0  # SageMaker's endpoint invocation metrics: one a minute
METRIC_DELAY_S = 60.0  # a minute's data points are readable this long after it ended (sagemaker_deploy.rollout)
COMPARISONS = {"GreaterThanOrEqualToThreshold": float.__ge__, "GreaterThanThreshold": float.__gt__,
               "LessThanThreshold": float.__lt__, "LessThanOrEqualToThreshold": float.__le__}


class Clock:
    """Emulated time, in epoch seconds, running ``scale`` times faster than the wall clock."""

    def __init__(self, scale: float = 1.0):
        self._lock = threading.Lock()
        self._origin, self._real_origin, self.scale = time.time(), time.monotonic(), scale

    def now(self) -> float:
        with self._lock:
            return self._origin + (time.monotonic() - self._real_origin) * self.scale

    def set_scale(self, scale: float) -> None:
        """From now on ``scale`` emulated seconds per real second; emulated time goes on from where it is."""
        origin = self.now()
        with self._lock:
            self._origin, self._real_origin, self.scale = origin, time.monotonic(), scale


@dataclass
class Answered:
    """One invocation the balancer passed on: which fleet (endpoint config) answered, and how."""

    config: str
    status: int
    latency_us: float
    green_share: float  # the share of traffic green had when this request was routed
    at: float = 0.0  # emulated time of the answer


class Balancer:
    """The variant's front during and after a blue/green update: each request goes to one fleet,
    chosen so that exactly ``green_share`` of them reach green (a deterministic weighted split)."""

    def __init__(self, endpoint: str, blue_config: str, blue_url: str, clock: Clock):
        self.endpoint, self.clock = endpoint, clock
        self.fleets = {blue_config: blue_url}
        self.blue, self.green, self.green_share = blue_config, "", 0.0
        self.chosen = 0
        self.in_flight: Counter[str] = Counter()
        self.answered: list[Answered] = []  # every invocation, for the tests
        self.unpublished: list[Answered] = []
        self.changed = threading.Condition()
        self.port = free_port()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add_green(self, config: str, url: str) -> None:
        with self.changed:
            self.fleets[config] = url
            self.green, self.green_share = config, 0.0

    def shift(self, share: float) -> None:
        with self.changed:
            self.green_share = share

    def drop_green(self) -> None:
        with self.changed:
            self.green, self.green_share = "", 0.0

    def promote_green(self) -> str:
        """Green becomes the only fleet; returns the old blue, to stop once drained."""
        with self.changed:
            old = self.blue
            self.blue, self.green, self.green_share = self.green, "", 0.0
            return old

    def drain(self, config: str) -> None:
        """Wait until ``config``'s fleet has answered its last request, then forget it."""
        with self.changed:
            self.changed.wait_for(lambda: self.in_flight[config] == 0)
            self.fleets.pop(config, None)

    def take_unpublished(self, before: float) -> list[Answered]:
        """The answers given before emulated time ``before`` that are not published yet."""
        with self.changed:
            taken = [answer for answer in self.unpublished if answer.at < before]
            self.unpublished = [answer for answer in self.unpublished if answer.at >= before]
            return taken

    def _choose(self) -> tuple[str, float]:
        with self.changed:
            before = math.floor(self.chosen * self.green_share)
            self.chosen += 1
            config = self.green if self.green and math.floor(self.chosen * self.green_share) > before else self.blue
            self.in_flight[config] += 1
            return config, self.green_share

    def _done(self, answer: Answered) -> None:
        with self.changed:
            self.in_flight[answer.config] -= 1
            self.answered.append(answer)
            self.unpublished.append(answer)
            self.changed.notify_all()

    def _forward(self, body: bytes, content_type: str) -> tuple[int, dict, bytes]:
        config, share = self._choose()
        started = time.perf_counter()
        status, headers, answer = 502, {}, b""
        try:
            request = urllib.request.Request(f"{self.fleets[config]}/invocations", data=body, method="POST",
                                             headers={"Content-Type": content_type})
            with urllib.request.urlopen(request, timeout=FORWARD_TIMEOUT_S) as response:
                status, headers, answer = response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            status, headers, answer = error.code, dict(error.headers), error.read()
        except (urllib.error.URLError, OSError) as error:  # never expected: a fleet is drained before it stops
            answer = f"the fleet of {config} did not answer: {error}".encode()
        finally:
            self._done(Answered(config, status, (time.perf_counter() - started) * 1e6, share, self.clock.now()))
        return status, headers, answer

    def _handler(self):
        balancer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, headers, answer = balancer._forward(body, self.headers.get("Content-Type", ""))
                self.send_response(status)
                self.send_header("Content-Type", headers.get("Content-Type", "application/octet-stream"))
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        return Handler


@dataclass
class Deployment:
    """One UpdateEndpoint call's blue/green update, read from its DeploymentConfig."""

    endpoint: object  # moto's FakeEndpoint
    config: str
    steps: list[float]  # green's share of the traffic after each step, the last one 1.0
    wait_s: float
    termination_wait_s: float
    alarms: list[str] = field(default_factory=list)
    max_execution_s: float = math.inf  # MaximumExecutionTimeoutInSeconds (none given: no limit here)
    deadline: float = math.inf  # emulated time: the call's time plus max_execution_s


def traffic_steps(routing: dict, instance_count: int) -> list[float]:
    """Green's share after each step of a TrafficRoutingConfig."""
    kind = routing.get("Type", "ALL_AT_ONCE")
    size = routing.get("CanarySize" if kind == "CANARY" else "LinearStepSize")
    if kind == "ALL_AT_ONCE" or not size:
        return [1.0]
    instances = (size["Value"] if size["Type"] == "INSTANCE_COUNT"
                 else max(1, math.floor(instance_count * size["Value"] / 100)))
    share = min(1.0, instances / instance_count)
    if kind == "CANARY":
        return [share, 1.0]
    return [min(1.0, share * step) for step in range(1, math.ceil(1 / share) + 1)]


def minute_of(at: float) -> float:
    return math.floor(at / METRIC_INTERVAL_S) * METRIC_INTERVAL_S


def published_before(now: float) -> float:
    """Answers before this emulated time are in minutes SageMaker has published by ``now``."""
    return minute_of(now - METRIC_DELAY_S)


def period_ends(alarm: dict, now: float) -> list[float]:
    """The ends of the alarm's last ``EvaluationPeriods`` complete periods, newest first; none when its period
    is shorter than the metrics' minute: such periods never hold a data point (INSUFFICIENT_DATA)."""
    period = alarm["Period"]
    if period < METRIC_INTERVAL_S:
        return []
    newest = math.floor(published_before(now) / period) * period
    return [newest - back * period for back in range(alarm["EvaluationPeriods"])]


def alarm_state(alarm: dict, periods: list[list[float]]) -> str:
    """ALARM when every evaluated period breaches; a period without data breaches only with TreatMissingData
    breaching; INSUFFICIENT_DATA when no period has data and missing data is not breaching."""
    if not any(periods) and alarm.get("TreatMissingData") != "breaching":
        return "INSUFFICIENT_DATA"
    compare = COMPARISONS[alarm["ComparisonOperator"]]
    breaching = [compare(float(statistic(values, alarm)), alarm["Threshold"]) if values
                 else alarm.get("TreatMissingData") == "breaching" for values in periods]
    return "ALARM" if all(breaching) else "OK"


def refuse_scaled_instance_type_change(backend, endpoint, new_config: dict) -> None:
    """SageMaker refuses an update that changes the instance type of a variant registered for autoscaling."""
    resource = f"endpoint/{endpoint.endpoint_name}/variant/{VARIANT}"
    scaling = applicationautoscaling_backends[backend.account_id][backend.region_name]
    if not scaling.describe_scalable_targets("sagemaker", [resource], None):
        return
    old = backend.describe_endpoint_config(endpoint.endpoint_config_name)["ProductionVariants"][0]["InstanceType"]
    new = new_config["ProductionVariants"][0]["InstanceType"]
    if old != new:
        raise ValidationError(SCALED_TYPE_CHANGE.format(endpoint=endpoint.endpoint_name, variant=VARIANT, old=old,
                                                        new=new))


def statistic(values: list[float], alarm: dict) -> float:
    """The alarm's statistic (or extended statistic pNN, nearest rank) over its period's data points."""
    if alarm.get("ExtendedStatistic"):
        rank = float(alarm["ExtendedStatistic"].lstrip("p")) / 100
        ordered = sorted(values)
        return ordered[max(0, math.ceil(rank * len(ordered)) - 1)]
    return {"Sum": sum, "Maximum": max, "Minimum": min, "SampleCount": len,
            "Average": lambda v: sum(v) / len(v)}[alarm["Statistic"]](values)


class BlueGreenRollouts:
    """Installs the guardrails on a ``LocalSageMaker``; ``stop()`` ends them and their fleets."""

    def __init__(self, emulator, poll_s: float = 0.2, time_scale: float = 1.0):
        self.emulator = emulator
        self.poll_s = poll_s
        self.clock = Clock(time_scale)
        self.published: dict[str, list[float]] = defaultdict(list)  # endpoint -> the minutes published
        self.balancers: dict[str, Balancer] = {}  # endpoint name -> its front, once it had a blue/green update
        self.green_containers: dict[str, object] = {}  # config name -> container, until promoted

    def install(self) -> BlueGreenRollouts:
        rollouts = self
        plain_update = SageMakerResponse.update_endpoint

        def update_endpoint(response):
            policy = response._get_param("DeploymentConfig") or {}
            if "BlueGreenUpdatePolicy" not in policy:
                return plain_update(response)
            return ActionResult({"EndpointArn": rollouts.start(response.sagemaker_backend,
                                                               response._get_param("EndpointName"),
                                                               response._get_param("EndpointConfigName"), policy)})

        self.emulator._patch(SageMakerResponse, "update_endpoint", update_endpoint)
        return self

    def stop(self) -> None:
        for container in list(self.green_containers.values()):
            container.stop()
        for balancer in self.balancers.values():
            balancer.stop()

    def answered(self, endpoint: str) -> list[Answered]:
        balancer = self.balancers.get(endpoint)
        return list(balancer.answered) if balancer else []

    # -- the update, as SageMaker runs it ---------------------------------------------------
    def start(self, backend, endpoint_name: str, config_name: str, policy: dict) -> str:
        backend.describe_endpoint(endpoint_name)  # raises SageMaker's error for an unknown endpoint
        endpoint = backend.endpoints[endpoint_name]
        config = backend.describe_endpoint_config(config_name)  # raises for an unknown config
        refuse_scaled_instance_type_change(backend, endpoint, config)
        blue_green = policy["BlueGreenUpdatePolicy"]
        routing = blue_green.get("TrafficRoutingConfiguration", {})
        deployment = Deployment(endpoint, config_name,
                                traffic_steps(routing, config["ProductionVariants"][0]["InitialInstanceCount"]),
                                routing.get("WaitIntervalInSeconds", 0), blue_green.get("TerminationWaitInSeconds", 0),
                                [alarm["AlarmName"] for alarm in
                                 policy.get("AutoRollbackConfiguration", {}).get("Alarms", [])],
                                blue_green.get("MaximumExecutionTimeoutInSeconds", math.inf))
        deployment.deadline = self.clock.now() + deployment.max_execution_s
        # UpdateEndpoint: "When SageMaker receives the request, it sets the endpoint status to Updating."
        self.emulator._set_status(endpoint, "Updating")
        threading.Thread(target=self._run, args=(deployment,), daemon=True).start()
        return endpoint.arn

    def _run(self, deployment: Deployment) -> None:
        name = deployment.endpoint.endpoint_name
        # In front first: requests the route sent straight to blue have green's start-up time to finish.
        balancer = self._balancer(name)
        with ThreadPoolExecutor(1) as pool:
            starting = pool.submit(self.emulator._start_container, name, deployment.config)
            stop_reason = self._watch_provisioning(deployment, balancer, starting)
        try:
            green = starting.result()
        except Exception:  # the new fleet never passed /ping: SageMaker keeps the old one, as for a plain update
            from tests.aws_emulator import PING_FAILED

            self._roll_back(deployment, None, stop_reason or PING_FAILED.format(variant=VARIANT))
            return
        self.green_containers[deployment.config] = green
        if stop_reason:  # aborted while provisioning: green never had traffic
            self._roll_back(deployment, balancer, stop_reason)
            return
        balancer.add_green(deployment.config, green.sagemaker_url)
        bakes = [deployment.wait_s] * (len(deployment.steps) - 1) + [deployment.termination_wait_s]
        for share, bake_s in zip(deployment.steps, bakes):
            balancer.shift(share)
            stop_reason = self._bake(deployment, balancer, self.clock.now() + bake_s)
            if stop_reason:
                self._roll_back(deployment, balancer, stop_reason)
                return
        self._promote(deployment, balancer, green)

    def _watch_provisioning(self, deployment: Deployment, balancer: Balancer, starting: Future) -> str:
        """The alarms and the timeout, watched while the new fleet starts; why the update stops, or ''."""
        while not starting.done():
            reason = self._bake(deployment, balancer, -math.inf)
            if reason:
                return reason
            wait([starting], timeout=self.poll_s)
        return ""

    def _balancer(self, name: str) -> Balancer:
        """The endpoint's balancer, put in front of its serving container the first time."""
        emulator = self.emulator
        with emulator.lock:
            balancer = self.balancers.get(name)
            if balancer is None or emulator.route.endpoints.get(name) != balancer.url:
                if balancer is not None:  # a plain update has put its container in front since
                    balancer.stop()
                balancer = Balancer(name, emulator.endpoint_configs[name], emulator.route.endpoints[name],
                                    self.clock)
                self.balancers[name] = balancer
                emulator.route.endpoints[name] = balancer.url
            return balancer

    def _bake(self, deployment: Deployment, balancer: Balancer, until: float) -> str:
        """Watch the alarms and the execution timeout until emulated time ``until``; why the update stops, or
        '' (one look when ``until`` has passed)."""
        while True:
            now = self.clock.now()
            self._publish(deployment.endpoint.endpoint_name, balancer.take_unpublished(published_before(now)))
            fired = [alarm for alarm in deployment.alarms if self._evaluate(alarm, now) == "ALARM"]
            if fired:
                return ROLLED_BACK.format(alarms=", ".join(fired))
            if now > deployment.deadline:
                return TIMED_OUT.format(limit=deployment.max_execution_s)
            if now >= until:
                return ""
            time.sleep(self.poll_s)

    def _publish(self, endpoint: str, answers: list[Answered]) -> None:
        """PutMetricData of the invocations of complete minutes, one timestamp per minute, as SageMaker
        reports them."""
        by_minute: dict[float, list[Answered]] = defaultdict(list)
        for answer in answers:
            by_minute[minute_of(answer.at)].append(answer)
        dimensions = [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": VARIANT}]
        cloudwatch = self.emulator._client("cloudwatch")
        for minute, in_minute in sorted(by_minute.items()):
            stamp = datetime.fromtimestamp(minute, timezone.utc)
            errors = [1.0 if answer.status >= 500 else 0.0 for answer in in_minute]
            latencies = [answer.latency_us for answer in in_minute]
            for start in range(0, len(in_minute), 150):  # PutMetricData: at most 150 values per datum
                cloudwatch.put_metric_data(Namespace=NAMESPACE, MetricData=[
                    {"MetricName": "Invocation5XXErrors", "Dimensions": dimensions, "Unit": "None",
                     "Timestamp": stamp, "Values": errors[start:start + 150]},
                    {"MetricName": "ModelLatency", "Dimensions": dimensions, "Unit": "Microseconds",
                     "Timestamp": stamp, "Values": latencies[start:start + 150]}])
            self.published[endpoint].append(minute)

    def _evaluate(self, alarm_name: str, now: float) -> str:
        """What CloudWatch would decide at emulated time ``now`` from the alarm's last complete evaluation
        periods (those whose minutes are all published); set it."""
        cloudwatch = self.emulator._client("cloudwatch")
        alarms = cloudwatch.describe_alarms(AlarmNames=[alarm_name])["MetricAlarms"]
        if not alarms:
            return "INSUFFICIENT_DATA"  # a missing alarm cannot roll anything back
        alarm = alarms[0]
        state = alarm_state(alarm, [self._values(alarm, end) for end in period_ends(alarm, now)])
        if state != alarm["StateValue"]:
            cloudwatch.set_alarm_state(AlarmName=alarm_name, StateValue=state,
                                       StateReason=f"evaluated by the emulator over {alarm['Period']} s periods")
        return state

    def _values(self, alarm: dict, end: float) -> list[float]:
        """The data points of the alarm's metric in the period that ends at ``end``."""
        return [datum.value for datum in cloudwatch_backends[DEFAULT_ACCOUNT][REGION].metric_data
                if datum.filter(alarm["Namespace"], alarm["MetricName"], alarm.get("Dimensions", []))
                and end - alarm["Period"] <= datum.timestamp.timestamp() < end]

    def _roll_back(self, deployment: Deployment, balancer: Balancer | None, reason: str) -> None:
        # DescribeEndpoint: "RollingBack: ... rolling back to its previous configuration. Once the rollback
        # completes, endpoint returns to an InService status."
        self.emulator._set_status(deployment.endpoint, "RollingBack", reason)
        if balancer is not None:
            balancer.drop_green()  # all traffic back to blue
            balancer.drain(deployment.config)
            self.green_containers.pop(deployment.config).stop()
        self.emulator._set_status(deployment.endpoint, "InService", reason)

    def _promote(self, deployment: Deployment, balancer: Balancer, green) -> None:
        emulator = self.emulator
        old = balancer.promote_green()
        balancer.drain(old)
        with emulator.lock:
            emulator.containers[deployment.config] = self.green_containers.pop(deployment.config)
            emulator.endpoint_configs[deployment.endpoint.endpoint_name] = deployment.config
        emulator._stop_container(old)
        emulator.serve_config(deployment.endpoint, deployment.config)
        emulator._set_status(deployment.endpoint, "InService")
