"""Served: a model's numbered version folders in a Triton repository and the one ``version_policy`` serves.

A build writes ``BUILT_VERSION`` (untrained, for the trained models); training runs register
the next numbers beside it (``model_versions.local``). A rebuild replaces the built version
and the config but keeps the registered versions and the one served.
"""
from __future__ import annotations

from pathlib import Path

from builders.config import parse, render

BUILT_VERSION = 1


def version_numbers(model_dir: Path) -> list[int]:
    """The numbered version folders of a model, ascending."""
    return sorted(int(p.name) for p in Path(model_dir).iterdir() if p.is_dir() and p.name.isdigit())


def served_version(model_dir: Path) -> int | None:
    """The version ``version_policy`` serves (None when the config serves by another policy)."""
    versions = list(parse((Path(model_dir) / "config.pbtxt").read_text()).version_policy.specific.versions)
    return versions[0] if len(versions) == 1 else None


def set_served_version(model_dir: Path, version: int) -> None:
    """Point ``version_policy`` at one version; the config is replaced whole (rename)."""
    path = Path(model_dir) / "config.pbtxt"
    config = parse(path.read_text())
    del config.version_policy.specific.versions[:]
    config.version_policy.specific.versions.append(version)
    partial = path.with_name("config.pbtxt.partial")
    partial.write_text(render(config))
    partial.replace(path)


def keep_registered_versions(old_dir: Path, new_dir: Path) -> None:
    """Move the versions training runs registered from a model's old folder into its rebuilt one, and serve
    there the version served before."""
    if not (old_dir / "config.pbtxt").is_file():
        return
    for number in version_numbers(old_dir):
        if number != BUILT_VERSION:
            (old_dir / str(number)).rename(new_dir / str(number))
    served = served_version(old_dir)
    if served is not None and (new_dir / str(served)).is_dir():
        set_served_version(new_dir, served)
