"""The compatibility table and the check of every artifact against the chosen SageMaker Triton image.

Everything here is refused before any AWS call: the CLI runs with --dry-run, which prints every
call it would make, so an empty stdout proves nothing was uploaded.
"""
from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from builders import defect_inspection
from builders.declaration import BuildOptions
from builders.repository import build_repository
from sagemaker_deploy import compatibility
from sagemaker_deploy.__main__ import main as deploy_main
from sagemaker_deploy.deploy import DEFAULT_TRITON_VERSION
from sagemaker_deploy.package import PackageError, check_repository

pytestmark = pytest.mark.quick

PIPELINES = ("ensemble_dali_inception", "ensemble_lama")  # and the sample board's defect_inspection.name(board)
SDK_CONFIG = "sagemaker/core/image_uri_config/sagemaker-tritonserver.json"


@pytest.fixture(scope="module")
def gpu_repository(board, tmp_path_factory) -> Path:
    repository = tmp_path_factory.mktemp("compat") / "gpu"
    build_repository(repository, BuildOptions(target="gpu", products=(board,)))
    return repository


def dry_run(*arguments: str) -> list[str]:
    return ["--dry-run", "--region", "us-east-1", *arguments]


def deploy_arguments(repository: Path, *extra: str) -> list[str]:
    return dry_run("deploy", "--repository", str(repository), "--endpoint", "compat", "--bucket", "b",
                   "--role", "arn:aws:iam::123456789012:role/r", *extra)


def refused(capsys, argv: list[str]) -> list[str]:
    """Run the CLI, expect exit 1 with no AWS call printed; return the error's problem lines."""
    assert deploy_main(argv) == 1
    printed = capsys.readouterr()
    assert printed.out == ""  # a dry run prints every AWS call: none was reached
    return printed.err.strip().splitlines()


def test_table_covers_exactly_the_versions_the_sagemaker_sdk_lookup_knows():
    import sagemaker

    config = Path(sagemaker.__file__).parent.parent / SDK_CONFIG
    assert set(compatibility.IMAGES) == set(json.loads(config.read_text())["versions"])


def test_default_image_reads_every_artifact_of_the_gpu_repository(gpu_repository, board):
    for pipeline in (*PIPELINES, defect_inspection.name(board)):  # a refused artifact raises PackageError naming it
        needed, _ = check_repository(gpu_repository, pipeline, DEFAULT_TRITON_VERSION)
        assert pipeline in needed and len(needed) > 1


def test_default_image_is_one_whose_dali_was_measured_reading_this_dali():
    writer = compatibility.installed_dali()
    assert compatibility.image(DEFAULT_TRITON_VERSION).dali in compatibility.DALI_MEASURED_READERS[writer]


def test_pipeline_serialized_by_a_newer_dali_than_the_image_measured_is_refused_before_upload(gpu_repository,
                                                                                             capsys):
    lines = refused(capsys, deploy_arguments(gpu_repository, "--triton-version", "24.09"))
    assert lines[0] == "error: the repository cannot serve ensemble_dali_inception in Triton image 24.09:"
    assert lines[1:] == [f"  dali/1/model.dali: serialized by DALI {compatibility.installed_dali()} (this "
                         "environment's; the file records none), image 24.09 ships DALI 1.39.0, not measured to "
                         "read it: choose --triton-version 23.12 or 24.01 or 24.03 or 26.05"]


def test_cpu_target_given_to_deploy_is_refused_in_one_line_before_upload(cpu_repository, capsys):
    lines = refused(capsys, deploy_arguments(cpu_repository))
    assert len(lines) == 2 and f"{cpu_repository} is a --target cpu build (dali, inception_onnx" in lines[1]
    assert "python -m builders --target gpu" in lines[1] and "--allow-cpu-target" in lines[1]


def test_cpu_target_passes_with_the_explicit_opt_in(cpu_repository, capsys):
    assert deploy_main(deploy_arguments(cpu_repository, "--allow-cpu-target")) == 0
    assert "[dry run] s3.upload_file(" in capsys.readouterr().out


def test_unknown_image_version_is_refused_by_package_and_deploy(gpu_repository, tmp_path, capsys):
    archive = tmp_path / "model.tar.gz"
    message = ("error: Triton image version '99.99' is not in the compatibility table (sagemaker_deploy/"
               f"compatibility.py): use one of {', '.join(compatibility.IMAGES)}")
    assert refused(capsys, dry_run("package", "--repository", str(gpu_repository), "--triton-version", "99.99",
                                   "-o", str(archive))) == [message]
    assert not archive.exists()
    assert refused(capsys, deploy_arguments(gpu_repository, "--triton-version", "99.99")) == [message]


def newer_onnx(path: Path, opset: int, ir_version: int) -> None:
    """A one-node model stamped with an opset and IR version newer than the image's ONNX Runtime reads."""
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "newer",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    onnx.save(model, str(path))


def test_onnx_with_a_newer_opset_and_ir_than_the_image_reads_is_refused_in_one_line_each(gpu_repository,
                                                                                        tmp_path, capsys):
    repository = tmp_path / "gpu"
    shutil.copytree(gpu_repository, repository)
    newer_onnx(repository / "inception_onnx" / "1" / "model.onnx", opset=22, ir_version=11)
    lines = refused(capsys, dry_run("package", "--repository", str(repository), "--triton-version", "24.09",
                                    "-o", str(tmp_path / "model.tar.gz")))
    assert "  inception_onnx/1/model.onnx: ONNX IR version 11, image 24.09 (ONNX Runtime 1.19.2) reads IR <= 10: " \
           "export with an older onnx or choose a newer image" in lines
    assert "  inception_onnx/1/model.onnx: ONNX opset 22, image 24.09 (ONNX Runtime 1.19.2) reads opset <= 21: " \
           "export with opset <= 21 or choose a newer image" in lines
    assert not (tmp_path / "model.tar.gz").exists()


def test_onnx_runtime_newer_than_its_documented_table_is_credited_with_the_last_row_only():
    assert compatibility.onnx_runtime_reads("1.24.4") == compatibility.ONNX_RUNTIME_READS["1.20"]
    assert compatibility.onnx_runtime_reads("1.16.3") == (9, 19, 3)


def with_version_record(source: Path, target: Path, version: int) -> None:
    """Copy a TorchScript archive, its file format version record set to ``version``."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for item in old.infolist():
            data = old.read(item)
            new.writestr(item, f"{version}\n".encode() if item.filename.endswith("/version") else data)


def test_torchscript_file_format_newer_than_libtorch_reads_is_refused(tmp_path):
    saved = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(saved))
    assert compatibility.torchscript_problems(saved, "lama/1/model.pt", DEFAULT_TRITON_VERSION) == []
    newer = tmp_path / "newer.pt"
    with_version_record(saved, newer, compatibility.TORCHSCRIPT_MAX_FILE_FORMAT + 1)
    assert compatibility.torchscript_problems(newer, "lama/1/model.pt", DEFAULT_TRITON_VERSION) == [
        f"lama/1/model.pt: TorchScript file format 11, image {DEFAULT_TRITON_VERSION}'s libtorch reads <= 10: "
        "export with an older torch"]


def test_structure_only_check_stays_available_without_an_image_version(cpu_repository):
    check_repository(cpu_repository, "ensemble_dali_inception")
    with pytest.raises(PackageError, match="is a --target cpu build"):
        check_repository(cpu_repository, "ensemble_dali_inception", DEFAULT_TRITON_VERSION)
