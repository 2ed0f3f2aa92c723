"""Build a whole Triton model repository for one target from the model declarations."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

from rich.progress import Progress

from builders import (dali, ensemble_dali_inception, ensemble_lama, inception, lama, lama_decode, lama_finish,
                      lama_prepare)
from builders.config import write_config
from builders.declaration import TARGETS, BuildOptions, ModelDeclaration

LOG = logging.getLogger(__name__)
MODEL_MODULES = (dali, inception, ensemble_dali_inception,
                 lama_decode, lama_prepare, lama, lama_finish, ensemble_lama)
RUNNERS_DIR = Path(__file__).resolve().parent / "runners"
VERSION = "1"


def declarations(options: BuildOptions) -> list[ModelDeclaration]:
    if options.target not in TARGETS:
        raise ValueError(f"unknown target {options.target!r}; choose one of {', '.join(TARGETS)}")
    models = [module.declare(options) for module in MODEL_MODULES]
    unknown = set(options.models) - {model.name for model in models}
    if unknown:
        raise ValueError(f"no model named {', '.join(sorted(unknown))}; known: {', '.join(m.name for m in models)}")
    return [model for model in models if not options.models or model.name in options.models]


def _build_model(model: ModelDeclaration, options: BuildOptions, model_dir: Path) -> None:
    write_config(model, options.target, model_dir)
    for relative, content in model.model_files.items():
        (model_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        (model_dir / relative).write_bytes(content)
    if options.configs_only:
        return
    version_dir = model_dir / VERSION
    version_dir.mkdir(parents=True, exist_ok=True)
    if model.export is not None:
        model.export(version_dir, options)
    runner = model.serving[options.target].runner
    if runner:
        shutil.copy2(RUNNERS_DIR / f"{runner}.py", version_dir / "model.py")
        for helper in model.serving[options.target].helpers:
            shutil.copy2(RUNNERS_DIR / f"{helper}.py", version_dir / f"{helper}.py")


def build_repository(out_dir: Path, options: BuildOptions) -> list[Path]:
    """Build every model into ``out_dir``; a model folder is replaced only once fully built."""
    out_dir = Path(out_dir)
    models = declarations(options)
    staging = out_dir.parent / f".{out_dir.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    built = []
    with Progress() as progress:
        task = progress.add_task(f"building {options.target} repository", total=len(models))
        for model in models:
            progress.update(task, description=f"building {model.name} ({options.target})")
            _build_model(model, options, staging / model.name)
            progress.advance(task)
    out_dir.mkdir(parents=True, exist_ok=True)
    for model in models:
        shutil.rmtree(out_dir / model.name, ignore_errors=True)
        (staging / model.name).rename(out_dir / model.name)
        built.append(out_dir / model.name)
    shutil.rmtree(staging, ignore_errors=True)
    return built
