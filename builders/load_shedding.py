"""Queue policies derived from a latency budget, ensemble backpressure, and instance counts.

An overloaded Triton without a queue policy queues every request: latency grows with the
queue, and past SageMaker's 60-second real-time limit every answer is already a failure.
Here every model a request can wait on gets a bounded queue (``dynamic_batching.
default_queue_policy``): a request that finds the queue full is refused at once, and one
that waited longer than its share of the budget is refused when the share runs out
(``timeout_action: REJECT``). Ensembles have no queue of their own (``ensemble_scheduling``
and ``dynamic_batching`` are one ``oneof`` in Triton's model_config.proto); a request waits
in the queues of their steps.

How a policy is derived, for a model that is a step of pipelines at most ``depth`` steps long:

- half the budget is for the steps, the other half for transport and the CPU the frontend
  and the clients take, so each step may take ``budget / 2 / depth`` (the queue timeout);
- the timeout only covers the wait in the queue: a request the batcher took into a batch
  that executes no longer counts against it (Triton's PriorityQueue drops a request's
  deadline when it is dequeued), and a batch of n requests takes about n / capacity to
  execute. So the queue holds what the model serves in *half* the timeout,
  ``ceil(capacity_rps * timeout / 2)`` requests (at least 1): a request admitted waits at
  most that long for the batch before it to finish, and its own batch (at most the queue)
  executes in the other half. Its step is done within the timeout, and the excess finds the
  queue full and is refused at once instead of after waiting the timeout out.

Admission at the entrance (``admission_rate``): a queue refuses only its own excess, and on a
Triton without ensemble backpressure (before 2.63) a request refused at the slowest step has
already been decoded by the steps before it. So, with ``--admission-gate``, the guard that opens every pipeline
admits at most the capacity, in requests/s (a token bucket, ``runners/admission.py``), and refuses
the rest before any later step runs, with the full queue's answer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

# Well under SageMaker's 60 s real-time limit ("model containers must respond to requests
# within 60 seconds", API_runtime_InvokeEndpoint): a client refused at the budget can back
# off and retry once and still be answered before SageMaker gives up; and 10 s is about 60x
# the classification ensemble's unloaded p50 (0.17 s, 2-core machine, 2026-12-01), so
# ordinary queueing never reaches it.
DEFAULT_LATENCY_BUDGET_S = 10.0
SAGEMAKER_REALTIME_LIMIT_S = 60.0
# Requests/s the classification ensemble served on the 2-core development machine with every
# request queued (issue 19, measured 2026-12-01). Pass the figure ``python -m
# benchmarks.overload`` measures on the real instance: a GPU serves far more.
DEFAULT_CAPACITY_RPS = 37.0
QUEUE_SHARE = 0.5  # of the budget, for the steps (waiting and executing); the timeouts add up to it
DRAIN_SHARE = 0.5  # of a step's timeout, for draining a full queue; the rest for executing its batch
# ModelEnsembling field 2 (``max_inflight_requests`` in the schema tritonclient 2.73 ships)
# exists from Triton 2.63 on; older servers refuse a config that sets it.
ENSEMBLE_BACKPRESSURE_SINCE = (2, 63)
LOCAL_TRITON = "2.51.0"  # the nvidia-pytriton wheel's tritonserver, which serves the cpu target


class ServingOptionError(ValueError):
    """A latency budget, capacity or instance count that cannot be built."""


@dataclass(frozen=True)
class QueuePolicy:
    max_queue_size: int
    timeout_us: int  # default_timeout_microseconds


def queue_policy(budget_s: float, capacity_rps: float, depth: int) -> QueuePolicy:
    step_s = budget_s * QUEUE_SHARE / depth
    return QueuePolicy(max_queue_size=max(1, math.ceil(capacity_rps * step_s * DRAIN_SHARE)),
                       timeout_us=round(step_s * 1e6))


def admission_rate(gated: bool, capacity_rps: float) -> float:
    """Requests/s the guard at each pipeline's entrance admits; 0: no gate. Opt-in (``--admission-gate``):
    a rate cap is only as right as the capacity measured for the deployment, and the default is one
    pipeline's figure on a 2-core CPU (a GPU serves far more, LaMa far less)."""
    return capacity_rps if gated else 0.0


def check_budget(budget_s: float, capacity_rps: float) -> None:
    if not 0 < budget_s < SAGEMAKER_REALTIME_LIMIT_S:
        raise ServingOptionError(f"--latency-budget-s {budget_s:g}: choose more than 0 and less than SageMaker's "
                                 f"{SAGEMAKER_REALTIME_LIMIT_S:g} s real-time limit")
    if not 0 < capacity_rps < math.inf:
        raise ServingOptionError(f"--capacity-rps {capacity_rps:g}: choose a number of requests per second above 0 "
                                 "(and finite: the queues and the admission gate are sized from it)")


def queues_before(ensemble, by_name: dict) -> dict[str, int]:
    """Model -> the queues a request to ``ensemble`` has waited at when it reaches that model's,
    its own included: steps that run side by side (each reading what an earlier step wrote) share a
    level, and a model a step calls itself (BLS, named by the step's ``bls_models`` parameter) waits
    one level after its caller."""
    written_at: dict[str, int] = {}  # ensemble tensor -> queues waited at when it is written
    levels: dict[str, int] = {}
    for step in ensemble.steps:  # the declarations list a step after those it reads from
        level = 1 + max((written_at.get(tensor, 0) for tensor in step.input_map.values()), default=0)
        called = [name for name in by_name[step.model_name].parameters.get("bls_models", "").split(",") if name]
        for name, its_level in ((step.model_name, level), *((name, level + 1) for name in called)):
            levels[name] = max(levels.get(name, 0), its_level)
        for tensor in step.output_map.values():
            written_at[tensor] = level + (1 if called else 0)
    return levels


def pipeline_depths(models) -> dict[str, int]:
    """Model name -> queues on the longest path through a pipeline it is part of (1 when it is in none)."""
    by_name = {model.name: model for model in models}
    depths = {model.name: 1 for model in models if not model.steps}
    for ensemble in (model for model in models if model.steps):
        levels = queues_before(ensemble, by_name)
        for name in levels:
            depths[name] = max(depths[name], max(levels.values()))
    return depths


def parse_instances(pairs: list[str]) -> dict[str, int]:
    """``["dali=2", "inception_onnx=3"]`` -> {"dali": 2, "inception_onnx": 3}."""
    counts = {}
    for pair in pairs:
        name, separator, count = pair.partition("=")
        if not separator or not name or not count.strip().isdigit() or int(count) < 1:
            raise ServingOptionError(f"--instances {pair!r}: write MODEL=N with N a whole number of at least 1")
        counts[name] = int(count)
    return counts


def check_instances(counts: dict[str, int], models) -> None:
    with_instances = {model.name for model in models if not model.steps}
    unknown = sorted(set(counts) - {model.name for model in models})
    if unknown:
        raise ServingOptionError(f"--instances: no model named {', '.join(unknown)}; known: "
                                 f"{', '.join(sorted(with_instances))}")
    ensembles = sorted(set(counts) - with_instances)
    if ensembles:
        raise ServingOptionError(f"--instances: {', '.join(ensembles)} is an ensemble, which has no instances; "
                                 "size its steps instead")


def has_ensemble_backpressure(triton_version: str) -> bool:
    from sagemaker_deploy.compatibility import major_minor

    return major_minor(triton_version) >= ENSEMBLE_BACKPRESSURE_SINCE
