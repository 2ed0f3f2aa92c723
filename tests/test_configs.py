"""Configs come from Triton's protobuf schema, and the committed gpu configs are reproducible."""
from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format

from builders import dali, ensemble_dali_inception, inception, lama
from builders.__main__ import main as build_main
from builders.config import model_config, parse, render
from builders.declaration import Accelerator, BuildOptions, Serving
from builders.repository import build_repository, declarations
from products import in_repository
from tests.conftest import ROOT

pytestmark = pytest.mark.quick

COMMITTED = ROOT / "model_repository"


def committed_files() -> list[Path]:
    return sorted(p.relative_to(COMMITTED) for p in COMMITTED.rglob("*") if p.is_file())


def test_rebuilding_gpu_configs_reproduces_the_committed_repository_byte_for_byte(tmp_path):
    products = tuple(in_repository(COMMITTED))
    assert [product.name for product in products] == ["pcb"]
    build_repository(tmp_path / "gpu", BuildOptions(target="gpu", configs_only=True, products=products))
    rebuilt = sorted(p.relative_to(tmp_path / "gpu") for p in (tmp_path / "gpu").rglob("*") if p.is_file())
    assert rebuilt == committed_files()
    for relative in rebuilt:
        assert (tmp_path / "gpu" / relative).read_bytes() == (COMMITTED / relative).read_bytes(), relative


@pytest.mark.parametrize("target", ["gpu", "cpu"])
@pytest.mark.parametrize("inception_format", ["onnx", "graphdef"])
def test_every_generated_config_parses_with_the_model_config_schema(target, inception_format, board):
    for model in declarations(BuildOptions(target=target, inception_format=inception_format, products=(board,))):
        text = render(model_config(model, target))
        assert render(parse(text)) == text


def test_the_committed_sample_product_is_what_its_renderers_labels_define(board):
    (committed,) = in_repository(COMMITTED)
    assert committed.same_classes(board) and (committed.height, committed.width) == (board.height, board.width) \
        == (240, 320)


def test_committed_configs_parse_and_name_their_folder():
    for path in COMMITTED.glob("*/config.pbtxt"):
        assert parse(path.read_text()).name == path.parent.name


def test_ensemble_config_is_identical_across_targets():
    gpu, cpu = (render(model_config(ensemble_dali_inception.declare(BuildOptions(target=t)), t))
                for t in ("gpu", "cpu"))
    assert gpu == cpu


def test_gpu_dali_config_uses_the_dali_backend_with_ragged_batching_and_gpu_instance_settings():
    config = parse((COMMITTED / dali.NAME / "config.pbtxt").read_text())
    assert config.backend == "dali" and config.instance_group[0].kind == config.instance_group[0].KIND_GPU
    assert (config.max_batch_size, config.parameters["num_threads"].string_value) == (256, "12")
    assert config.input[0].allow_ragged_batch and config.dynamic_batching.max_queue_delay_microseconds > 0
    cpu = model_config(dali.declare(BuildOptions(target="cpu")), "cpu")
    assert (cpu.max_batch_size, cpu.parameters["num_threads"].string_value) == (64, "2")


@pytest.mark.parametrize("target", ["gpu", "cpu"])
def test_no_ensemble_takes_a_larger_batch_than_any_of_its_steps(target, board):
    configs = {model.name: model_config(model, target)
               for model in declarations(BuildOptions(target=target, products=(board,)))}
    ensembles = [config for config in configs.values() if config.platform == "ensemble"]
    assert len(ensembles) >= 3
    for ensemble in ensembles:
        for step in ensemble.ensemble_scheduling.step:
            assert ensemble.max_batch_size <= configs[step.model_name].max_batch_size, (ensemble.name, step.model_name)


def test_lama_defaults_to_torchscript_on_gpu_and_onnx_on_cpu_with_the_same_tensors():
    gpu = model_config(lama.declare(BuildOptions(target="gpu")), "gpu")
    cpu = model_config(lama.declare(BuildOptions(target="cpu")), "cpu")
    assert gpu.platform == "pytorch_libtorch" and cpu.parameters["artifact"].string_value == "model.onnx"
    # pytorch_libtorch binds inputs to forward(image, mask) by name, the one output by config order.
    assert [t.name for t in gpu.input] == ["image", "mask"] == [t.name for t in cpu.input]
    assert [t.name for t in gpu.output] == ["inpainted"] == [t.name for t in cpu.output]
    onnx_on_gpu = model_config(lama.declare(BuildOptions(target="gpu", lama_format="onnx")), "gpu")
    assert onnx_on_gpu.platform == "onnxruntime_onnx" and onnx_on_gpu.name == gpu.name == "lama"


def test_inception_tensorrt_is_opt_in_and_writes_the_onnxruntime_backends_keys():
    assert not model_config(inception.declare(BuildOptions(target="gpu")), "gpu").HasField("optimization")
    config = model_config(inception.declare(BuildOptions(target="gpu", inception_tensorrt=True)), "gpu")
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt" and dict(accelerator.parameters) == {
        "precision_mode": "FP16", "max_workspace_size_bytes": "1073741824", "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": "/tmp/triton_tensorrt_cache/inception_onnx"}
    assert render(parse(render(config))) == render(config)


def test_a_tensorrt_parameter_the_backend_does_not_know_is_refused():
    model = inception.declare(BuildOptions(target="gpu"))
    for parameters in ({"precision_mode": "FP8"}, {"segment_size": "3"}):
        model.serving["gpu"] = Serving(platform="onnxruntime_onnx", instance_kind="KIND_GPU",
                                       gpu_accelerators=(Accelerator("tensorrt", parameters),))
        with pytest.raises(ValueError, match="not a parameter Triton's onnxruntime backend accepts"):
            model_config(model, "gpu")


def test_inception_tensorrt_outside_gpu_onnx_is_refused_by_the_builder(tmp_path, caplog):
    assert build_main(["--target", "cpu", "--inception-tensorrt", "--configs-only", "--out", str(tmp_path)]) == 2
    assert "--inception-tensorrt needs --target gpu and --inception-format onnx" in caplog.text
    assert not (tmp_path / "inception_onnx").exists()


def test_gpu_inception_is_onnx_runtime_and_records_its_random_weights():
    config = parse((COMMITTED / "inception_onnx" / "config.pbtxt").read_text())
    assert config.platform == "onnxruntime_onnx"
    assert config.parameters["weights"].string_value.startswith("random (seed 0)")
    assert config.output[0].label_filename == "inception_labels.txt"


def test_graphdef_format_keeps_the_posts_layout():
    options = BuildOptions(target="gpu", inception_format="graphdef")
    config = model_config(inception.declare(options), "gpu")
    assert (config.name, config.platform) == ("inception_graphdef", "tensorflow_graphdef")
    steps = model_config(ensemble_dali_inception.declare(options), "gpu").ensemble_scheduling.step
    assert [step.model_name for step in steps] == ["dali_guard", "dali", "inception_graphdef"]


def test_a_value_outside_the_schema_cannot_be_written():
    model = dali.declare(BuildOptions())
    model.serving["gpu"] = Serving(backend="dali", instance_kind="KIND_TPU")
    with pytest.raises(ValueError, match="KIND_TPU"):
        model_config(model, "gpu")
    with pytest.raises(text_format.ParseError, match="max_batch"):
        parse('name: "x"\nmax_batch: 4\n')
