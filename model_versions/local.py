"""Registered, evaluated, approved: a product's trained models as numbered versions of their folders.

The registry holds each product's ``<product>_parent``, ``<product>_child`` and
``<product>_segmenter`` (the last two for products with classes). A training run registers
each model as the next numbered version folder (the same number for all of them), with its
evaluation report beside ``model.onnx``. Registration is all or nothing: folders are staged
under hidden names and renamed at the end, and removed again if anything stops it. Serving
changes only by ``approve``: it points ``version_policy`` at a version whose validation F1
beats the served one's, and refuses otherwise. The repository's target (python runner or
native backend) is read from the config, so the same run can be registered in a cpu and a
gpu repository.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from builders import defect_child, defect_parent, defect_segmenter
from builders.config import parse
from builders.declaration import BuildOptions
from builders.repository import copy_runner
from defect_classifier.evaluation import score_text
from model_versions.repository import served_version, set_served_version, version_numbers
from products import Product, ProductError
from products.store import repository_product

REPORT = "evaluation.json"


class RegistryError(ValueError):
    """The repository cannot do what was asked; the message says why."""


class PromotionRefused(RegistryError):
    """The candidate does not beat the served version on validation F1."""


def models(product: Product) -> dict:
    """The product's trained models: name -> builder module (the child and segmenter where it has classes)."""
    modules = (defect_parent, defect_child, defect_segmenter) if product.classes else (defect_parent,)
    return {module.name(product): module for module in modules}


def product_of(repository: Path, name: str) -> Product:
    """The product a repository serves by that name; RegistryError lists the ones it serves."""
    try:
        return repository_product(repository, name)
    except ProductError as error:
        raise RegistryError(str(error)) from None


def check_repository(repository: Path, product: Product) -> None:
    """The repository serves this product, with these classes, and has its models built."""
    served = product_of(repository, product.name)
    if not served.same_classes(product):
        raise RegistryError(f"{repository} serves {product.name} with classes {', '.join(served.color_map)}, "
                            f"not {', '.join(product.color_map)}: a dataset's classes must be its product's")
    for name in models(product):
        model_dir_of(repository, product, name)


def model_dir_of(repository: Path, product: Product, name: str) -> Path:
    """The folder of a registry model in a built repository; RegistryError names what is missing."""
    if name not in models(product):
        raise RegistryError(f"unknown model {name!r}; the registry holds {', '.join(models(product))}")
    model_dir = Path(repository) / name
    if not (model_dir / "config.pbtxt").is_file():
        raise RegistryError(f"{model_dir / 'config.pbtxt'} does not exist: build the repository first "
                            f"(python -m builders --target cpu|gpu --out REPOSITORY --product {product.name})")
    return model_dir


def _target(model_dir: Path) -> str:
    return "cpu" if parse((model_dir / "config.pbtxt").read_text()).backend == "python" else "gpu"


def register(repository: Path, product: Product, staged: dict[str, Path]) -> int:
    """Copy each staged folder (model name -> folder with model.onnx and reports) in as version N."""
    model_dirs = {name: model_dir_of(repository, product, name) for name in staged}
    number = 1 + max(max(version_numbers(model_dir), default=0) for model_dir in model_dirs.values())
    partials = {name: model_dir / f".{number}.partial" for name, model_dir in model_dirs.items()}
    renaming = []
    try:
        for name, source in staged.items():
            shutil.rmtree(partials[name], ignore_errors=True)
            shutil.copytree(source, partials[name])
            copy_runner(models(product)[name].declare(BuildOptions(), product), _target(model_dirs[name]),
                        partials[name])
        for name, partial in partials.items():
            renaming.append(name)  # before the rename: a Ctrl-C right after it must still undo it
            partial.rename(model_dirs[name] / str(number))
    except BaseException:  # Ctrl-C included: leave no half-registered version behind
        for name in renaming:
            if not partials[name].exists():  # it was renamed in
                shutil.rmtree(model_dirs[name] / str(number), ignore_errors=True)
        raise
    finally:
        for partial in partials.values():
            shutil.rmtree(partial, ignore_errors=True)
    return number


def validation_f1(model_dir: Path, version: int | None) -> float | None:
    """The version's validation F1 from its report; None for versions never evaluated (untrained)."""
    report = Path(model_dir) / str(version) / REPORT
    return json.loads(report.read_text())["splits"]["validation"]["f1"] if report.is_file() else None


def approve(repository: Path, product: Product, name: str, version: int) -> str:
    """Serve ``version`` if its validation F1 beats the served version's; raises PromotionRefused otherwise."""
    model_dir = model_dir_of(repository, product, name)
    if version not in version_numbers(model_dir):
        raise RegistryError(f"{name} has no version {version} (versions: {version_numbers(model_dir)})")
    candidate = validation_f1(model_dir, version)
    if candidate is None:
        raise RegistryError(f"{name} version {version} has no {REPORT}: only evaluated versions can be promoted")
    served = served_version(model_dir)
    if served == version:
        return f"{name}: version {version} is already served"
    current = validation_f1(model_dir, served)
    if current is not None and candidate <= current:
        raise PromotionRefused(f"{name} version {version}: validation F1 {candidate:.4f} does not beat the served "
                               f"version {served} ({current:.4f}); still serving version {served}")
    set_served_version(model_dir, version)
    was = "untrained" if current is None else f"validation F1 {current:.4f}"
    return f"{name}: now serving version {version} (validation F1 {candidate:.4f}; version {served} had {was})"


def mean_iou_text(splits: dict) -> str:
    """A segmenter's test mean IoU (defect classes) for its status line; nothing for the other models."""
    return f", test mean IoU {score_text(splits['test']['mean_iou'])}" if "mean_iou" in splits["test"] else ""


def status(repository: Path, product: Product) -> list[str]:
    """One line per registered version: served marker, validation and test F1."""
    lines = []
    for name in models(product):
        model_dir = model_dir_of(repository, product, name)
        served = served_version(model_dir)
        for number in version_numbers(model_dir):
            report = model_dir / str(number) / REPORT
            if report.is_file():
                splits = json.loads(report.read_text())["splits"]
                scores = f"validation F1 {splits['validation']['f1']:.4f}, test F1 {splits['test']['f1']:.4f}" + \
                    mean_iou_text(splits)
            else:
                scores = "untrained"
            lines.append(f"{'*' if number == served else ' '} {name} version {number}: {scores}")
    return lines
