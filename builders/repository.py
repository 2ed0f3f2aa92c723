"""Build a whole Triton model repository for one target from the model declarations."""
from __future__ import annotations

import logging
import shutil
from dataclasses import replace
from pathlib import Path

from rich.progress import Progress

from builders import (dali, defect_child, defect_dali, defect_inspection, defect_parent, defect_router,
                      defect_segmenter,
                      ensemble_dali_inception, ensemble_lama, inception, lama, lama_decode, lama_finish, lama_prepare)
from builders.config import write_config
from builders.declaration import TARGETS, BuildOptions, ModelDeclaration
from builders.load_shedding import (LOCAL_TRITON, ServingOptionError, check_budget, check_instances,
                                    has_ensemble_backpressure, pipeline_depths, queue_policy)
from model_versions.repository import BUILT_VERSION, keep_registered_versions
from products import Product, ProductError, in_repository

LOG = logging.getLogger(__name__)
# Builder modules, and the ensembles' guards: each has ``declare(options)``.
MODEL_MODULES = (ensemble_dali_inception.GUARD, dali, inception, ensemble_dali_inception,
                 ensemble_lama.GUARD, lama_decode, lama_prepare, lama, lama_finish, ensemble_lama)
RUNNERS_DIR = Path(__file__).resolve().parent / "runners"


def product_declarations(options: BuildOptions, product: Product) -> list[ModelDeclaration]:
    """A product's inspection pipeline: guard, DALI, parent, child and segmenter (if it has classes), router,
    ensemble."""
    guard = defect_inspection.guard(product)
    children = [defect_child.declare(options, product), defect_segmenter.declare(options, product)] \
        if product.classes else []
    return [guard.declare(options), defect_dali.declare(options, product), defect_parent.declare(options, product),
            *children, defect_router.declare(options, product), defect_inspection.declare(options, product)]


def products_to_build(out_dir: Path, options: BuildOptions) -> list[Product]:
    """The products asked for, and those the repository already serves (their trained versions stay)."""
    wanted = {product.name: product for product in options.products}
    for served in in_repository(out_dir):
        asked = wanted.setdefault(served.name, served)
        if not asked.same_classes(served):
            raise ProductError(f"{out_dir} already serves a product {served.name} with other classes "
                               f"({', '.join(served.color_map)}); its trained versions would not fit "
                               f"{', '.join(asked.color_map)}. Give the new product another name")
    return [wanted[name] for name in sorted(wanted)]


def declarations(options: BuildOptions, out_dir: Path | None = None) -> list[ModelDeclaration]:
    if options.target not in TARGETS:
        raise ValueError(f"unknown target {options.target!r}; choose one of {', '.join(TARGETS)}")
    models = [module.declare(options) for module in MODEL_MODULES]
    for product in products_to_build(out_dir, options) if out_dir else options.products:
        models += product_declarations(options, product)
    unknown = set(options.models) - {model.name for model in models}
    if unknown:
        raise ValueError(f"no model named {', '.join(sorted(unknown))}; known: {', '.join(m.name for m in models)}")
    apply_serving_options(models, options)
    return [model for model in models if not options.models or model.name in options.models]


def target_triton(options: BuildOptions) -> str:
    """The Triton version that will serve the repository: the gpu image's, or the local server's."""
    if options.target == "cpu":
        if options.triton_image:
            raise ServingOptionError(f"--triton-image {options.triton_image} needs --target gpu: the cpu target "
                                     f"runs the local tritonserver {LOCAL_TRITON}")
        return LOCAL_TRITON
    from sagemaker_deploy.compatibility import CompatibilityError, image
    from sagemaker_deploy.deploy import DEFAULT_TRITON_VERSION

    try:
        return image(options.triton_image or DEFAULT_TRITON_VERSION).triton
    except CompatibilityError as error:
        raise ServingOptionError(str(error)) from None


def apply_serving_options(models: list[ModelDeclaration], options: BuildOptions) -> None:
    """Queue policies from the latency budget, instance counts, and ensemble backpressure where the
    target's Triton has it (builders/load_shedding.py)."""
    check_budget(options.latency_budget_s, options.capacity_rps)
    check_instances(options.instances, models)
    depths = pipeline_depths(models)
    for model in models:
        if model.name in depths:
            model.queue_policy = queue_policy(options.latency_budget_s, options.capacity_rps, depths[model.name])
        if model.name in options.instances:
            model.serving[options.target] = replace(model.serving[options.target],
                                                    instance_count=options.instances[model.name])
    if has_ensemble_backpressure(target_triton(options)):
        policies = {model.name: model.queue_policy for model in models if model.queue_policy}
        for ensemble in (model for model in models if model.steps):
            # no more requests between steps than the steps can queue
            ensemble.ensemble_max_inflight = max(policies[step.model_name].max_queue_size for step in ensemble.steps)


def _build_model(model: ModelDeclaration, options: BuildOptions, model_dir: Path) -> None:
    write_config(model, options.target, model_dir)
    for relative, content in model.model_files.items():
        (model_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        (model_dir / relative).write_bytes(content)
    if options.configs_only:
        return
    version_dir = model_dir / str(BUILT_VERSION)
    version_dir.mkdir(parents=True, exist_ok=True)
    if model.export is not None:
        model.export(version_dir, options)
    copy_runner(model, options.target, version_dir)


def copy_runner(model: ModelDeclaration, target: str, version_dir: Path) -> None:
    """A python-backend runner and its helpers into a version folder (nothing for native backends)."""
    serving = model.serving[target]
    if serving.runner:
        shutil.copy2(RUNNERS_DIR / f"{serving.runner}.py", version_dir / "model.py")
        for helper in serving.helpers:
            shutil.copy2(RUNNERS_DIR / f"{helper}.py", version_dir / f"{helper}.py")


def build_repository(out_dir: Path, options: BuildOptions) -> list[Path]:
    """Build every model into ``out_dir``; a model folder is replaced only once fully built."""
    out_dir = Path(out_dir)
    models = declarations(options, out_dir)
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
        if not options.configs_only and model.served_version is not None:  # training runs register its versions
            keep_registered_versions(out_dir / model.name, staging / model.name)
        shutil.rmtree(out_dir / model.name, ignore_errors=True)
        (staging / model.name).rename(out_dir / model.name)
        built.append(out_dir / model.name)
    shutil.rmtree(staging, ignore_errors=True)
    return built
