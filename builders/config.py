"""The one place that turns a ``ModelDeclaration`` into ``config.pbtxt``.

Configs are built as Triton ``ModelConfig`` protobuf messages (the schema tritonclient
ships), so a field or enum that Triton does not know cannot be written.
"""
from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from builders.declaration import Accelerator, ModelDeclaration, Serving, Tensor, Warmup
from builders.load_shedding import QueuePolicy

# The TensorRT parameters Triton's onnxruntime backend reads (its README); it refuses to load
# a model with any other key, so an unknown one is refused here, at build time.
TENSORRT_PARAMETERS = {
    "precision_mode": {"FP32", "FP16", "INT8"},
    "max_workspace_size_bytes": None,  # None: any value (the backend parses it)
    "int8_calibration_table_name": None,
    "int8_use_native_calibration_table": None,
    "trt_engine_cache_enable": {"0", "1", "true", "false"},
    "trt_engine_cache_path": None,
}


def _tensor_fields(tensor: Tensor) -> dict:
    fields = {"name": tensor.name, "data_type": mc.DataType.Value(tensor.data_type), "dims": list(tensor.dims)}
    if tensor.format:
        fields["format"] = mc.ModelInput.Format.Value(tensor.format)
    return fields


def _input(tensor: Tensor) -> mc.ModelInput:
    return mc.ModelInput(allow_ragged_batch=tensor.allow_ragged_batch, **_tensor_fields(tensor))


def _output(tensor: Tensor) -> mc.ModelOutput:
    fields = _tensor_fields(tensor)
    fields.pop("format", None)
    return mc.ModelOutput(label_filename=tensor.label_filename, **fields)


def _warmup(warmup: Warmup) -> mc.ModelWarmup:
    message = mc.ModelWarmup(name=warmup.name, batch_size=warmup.batch_size)
    for name, spec in warmup.inputs.items():
        entry = message.inputs[name]
        entry.data_type = mc.DataType.Value(spec.data_type)
        entry.dims.extend(spec.dims)
        if spec.input_data_file:
            entry.input_data_file = spec.input_data_file
        else:
            entry.zero_data = spec.zero_data
    return message


def _gpu_accelerator(accelerator: Accelerator) -> mc.ModelOptimizationPolicy.ExecutionAccelerators.Accelerator:
    if accelerator.name == "tensorrt":
        for key, value in accelerator.parameters.items():
            allowed = TENSORRT_PARAMETERS.get(key, set())
            if key not in TENSORRT_PARAMETERS or (allowed is not None and value not in allowed):
                raise ValueError(f"TensorRT accelerator: {key}={value!r} is not a parameter Triton's "
                                 f"onnxruntime backend accepts ({', '.join(TENSORRT_PARAMETERS)})")
    return mc.ModelOptimizationPolicy.ExecutionAccelerators.Accelerator(name=accelerator.name,
                                                                        parameters=accelerator.parameters)


def _write_queue_policy(message: mc.ModelQueuePolicy, policy: QueuePolicy) -> None:
    message.max_queue_size = policy.max_queue_size  # a request that finds it full is refused at once
    message.default_timeout_microseconds = policy.timeout_us
    message.timeout_action = mc.ModelQueuePolicy.TimeoutAction.REJECT
    # no per-request override: no client can wait past the budget the repository was built for
    message.allow_timeout_override = False


def model_config(model: ModelDeclaration, target: str) -> mc.ModelConfig:
    serving: Serving = model.serving[target]
    max_batch_size = model.max_batch_size if serving.max_batch_size is None else serving.max_batch_size
    config = mc.ModelConfig(name=model.name, backend=serving.backend, platform=serving.platform,
                            max_batch_size=max_batch_size,
                            input=[_input(t) for t in model.inputs],
                            output=[_output(t) for t in model.outputs])
    if serving.instance_kind:
        config.instance_group.add(kind=mc.ModelInstanceGroup.Kind.Value(serving.instance_kind),
                                  count=serving.instance_count)
    if model.dynamic_batching_delay_us is not None:
        config.dynamic_batching.max_queue_delay_microseconds = model.dynamic_batching_delay_us
    if model.queue_policy is not None:
        _write_queue_policy(config.dynamic_batching.default_queue_policy, model.queue_policy)
    for step in model.steps:
        config.ensemble_scheduling.step.add(model_name=step.model_name, model_version=-1,
                                            input_map=step.input_map, output_map=step.output_map)
    if model.ensemble_max_inflight:
        config.ensemble_scheduling.max_inflight_requests = model.ensemble_max_inflight
    if model.served_version is not None:
        config.version_policy.specific.versions.append(model.served_version)
    config.model_warmup.extend(_warmup(w) for w in model.warmups)
    if serving.gpu_accelerators:  # touching the field would write an empty optimization block
        config.optimization.execution_accelerators.gpu_execution_accelerator.extend(
            _gpu_accelerator(accelerator) for accelerator in serving.gpu_accelerators)
    parameters = {**model.parameters, **serving.parameters}
    if serving.runner and model.artifact:  # the file the python-backend runner executes
        parameters["artifact"] = model.artifact
    for key, value in sorted(parameters.items()):
        config.parameters[key].string_value = value
    return config


def render(config: mc.ModelConfig) -> str:
    return text_format.MessageToString(config)


def parse(text: str) -> mc.ModelConfig:
    """Parse a config.pbtxt; raises ``text_format.ParseError`` naming the bad field."""
    return text_format.Parse(text, mc.ModelConfig())


def write_config(model: ModelDeclaration, target: str, model_dir: Path) -> Path:
    path = model_dir / "config.pbtxt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(model_config(model, target)))
    return path
