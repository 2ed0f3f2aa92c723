"""Configs come from Triton's protobuf schema, and the committed gpu configs are reproducible."""
from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format

from builders import dali, ensemble_dali_inception, inception
from builders.config import model_config, parse, render
from builders.declaration import BuildOptions, Serving
from builders.repository import build_repository, declarations
from tests.conftest import ROOT

COMMITTED = ROOT / "model_repository"


def committed_files() -> list[Path]:
    return sorted(p.relative_to(COMMITTED) for p in COMMITTED.rglob("*") if p.is_file())


def test_rebuilding_gpu_configs_reproduces_the_committed_repository_byte_for_byte(tmp_path):
    build_repository(tmp_path / "gpu", BuildOptions(target="gpu", configs_only=True))
    rebuilt = sorted(p.relative_to(tmp_path / "gpu") for p in (tmp_path / "gpu").rglob("*") if p.is_file())
    assert rebuilt == committed_files()
    for relative in rebuilt:
        assert (tmp_path / "gpu" / relative).read_bytes() == (COMMITTED / relative).read_bytes(), relative


@pytest.mark.parametrize("target", ["gpu", "cpu"])
@pytest.mark.parametrize("inception_format", ["onnx", "graphdef"])
def test_every_generated_config_parses_with_the_model_config_schema(target, inception_format):
    for model in declarations(BuildOptions(target=target, inception_format=inception_format)):
        text = render(model_config(model, target))
        assert render(parse(text)) == text


def test_committed_configs_parse_and_name_their_folder():
    for path in COMMITTED.glob("*/config.pbtxt"):
        assert parse(path.read_text()).name == path.parent.name


def test_ensemble_config_is_identical_across_targets():
    gpu, cpu = (render(model_config(ensemble_dali_inception.declare(BuildOptions(target=t)), t))
                for t in ("gpu", "cpu"))
    assert gpu == cpu


def test_gpu_dali_config_uses_the_dali_backend_with_ragged_batching_and_threads():
    config = parse((COMMITTED / dali.NAME / "config.pbtxt").read_text())
    assert config.backend == "dali" and config.instance_group[0].kind == config.instance_group[0].KIND_GPU
    assert config.parameters["num_threads"].string_value == str(dali.NUM_THREADS)
    assert config.input[0].allow_ragged_batch and config.dynamic_batching.max_queue_delay_microseconds > 0


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
    assert [step.model_name for step in steps] == ["dali", "inception_graphdef"]


def test_a_value_outside_the_schema_cannot_be_written():
    model = dali.declare(BuildOptions())
    model.serving["gpu"] = Serving(backend="dali", instance_kind="KIND_TPU")
    with pytest.raises(ValueError, match="KIND_TPU"):
        model_config(model, "gpu")
    with pytest.raises(text_format.ParseError, match="max_batch"):
        parse('name: "x"\nmax_batch: 4\n')
