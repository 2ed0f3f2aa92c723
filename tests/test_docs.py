"""The README and the user guide stay true: the guide builds with MkDocs in strict mode (no
broken link or anchor, no page left out of the navigation), every link of the README lands,
and every command either shows is accepted by the command it names."""
from __future__ import annotations

import argparse
import re
import runpy
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

pytestmark = pytest.mark.quick

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
PYTHON_COMMAND = re.compile(r"^(?:\.venv/bin/)?python3? -m ([\w.]+)(.*)$")


class Parsed(Exception):
    """Raised in place of running a command once its arguments parsed."""


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors_of(page: Path) -> set[str]:
    return {github_anchor(line.lstrip("#")) for line in page.read_text().splitlines() if line.startswith("#")}


def code_lines(page: Path) -> list[str]:
    """The commands of a page's code blocks (indented after a blank line, or fenced), continuation
    lines joined."""
    lines, fenced, indented, previous_blank = [], False, False, True
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        indented = line.startswith("    ") and (indented or previous_blank) or (indented and not line.strip())
        if (fenced or indented) and line.strip():
            lines.append(line.strip())
        previous_blank = not line.strip()
    return joined_continuations(lines)


def joined_continuations(lines: list[str]) -> list[str]:
    commands, pending = [], ""
    for line in lines:
        pending = f"{pending} {line}".strip()
        if pending.endswith("\\"):
            pending = pending[:-1]
        else:
            commands.append(pending)
            pending = ""
    return commands


def project_packages() -> set[str]:
    return {path.parent.name for path in ROOT.glob("*/__init__.py")}


def shown_commands(kind: re.Pattern | str) -> list[tuple[str, str]]:
    """(page name, command) for every command of that kind the README and the guide show."""
    found = []
    for page in PAGES:
        for line in code_lines(page):
            if (kind.match(line) if isinstance(kind, re.Pattern) else line.startswith(kind)):
                found.append((page.name, line))
    return found


def arguments_of(command: str) -> tuple[str, list[str]]:
    """The module and arguments of a ``python -m`` command, optional parts ``[...]`` taken as given."""
    module, rest = PYTHON_COMMAND.match(command).groups()
    arguments = shlex.split(rest.replace("[", " ").replace("]", " "), comments=True)
    return module, arguments[:-1] if arguments[-1:] == ["&"] else arguments  # "&": started in the background


def parse_only(module: str, arguments: list[str], monkeypatch) -> str | None:
    """Runs the module as ``python -m`` does, up to its argument parsing; None when the arguments
    parsed, else what argparse said."""
    def parse(parser, args=None, namespace=None):
        namespace, unknown = parser.parse_known_args(args, namespace)
        if unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        raise Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse)
    monkeypatch.setattr(sys, "argv", [module, *arguments])
    def refuse(parser, status=0, message=None):
        raise ValueError(message or f"exit {status}")

    monkeypatch.setattr(argparse.ArgumentParser, "exit", refuse)
    try:
        with warnings.catch_warnings():  # runpy warns that the module was imported before (by another command)
            warnings.simplefilter("ignore", RuntimeWarning)
            runpy.run_module(module, run_name="__main__", alter_sys=True)
    except Parsed:
        return None
    except ValueError as refused:
        return str(refused).strip()
    return "the command ran past its argument parsing without parsing any"


def test_the_guide_builds_with_mkdocs_strict_no_broken_link_anchor_or_unlisted_page(tmp_path):
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                           cwd=ROOT, capture_output=True, text=True)
    warnings = [line for line in built.stderr.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert built.returncode == 0 and not warnings, "\n".join(warnings) or built.stderr


def test_every_readme_link_lands_on_a_file_and_its_heading():
    broken = []
    for target in LINK.findall((ROOT / "README.md").read_text()):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        page = ROOT / path if path else ROOT / "README.md"
        if not page.exists() or (anchor and page.suffix == ".md" and anchor not in anchors_of(page)):
            broken.append(target)
    assert broken == []


def test_every_python_command_the_readme_and_guide_show_parses(monkeypatch):
    ours = project_packages()
    commands = [(page, command) for page, command in shown_commands(PYTHON_COMMAND)
                if PYTHON_COMMAND.match(command).group(1).split(".")[0] in ours]  # pytest's own parser is not argparse
    assert len(commands) > 50  # the reader finds commands on every page; a broken reader finds none
    refused = []
    for page, command in commands:
        with monkeypatch.context() as patch:
            problem = parse_only(*arguments_of(command), patch)
        if problem:
            refused.append(f"{page}: {command}\n    {problem}")
    assert refused == [], "\n".join(refused)


def test_every_make_target_the_readme_and_guide_show_exists():
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.MULTILINE))
    shown = {command.split()[1] for _, command in shown_commands("make ")}
    assert {"demo", "test", "test-quick"} <= shown and shown <= targets
