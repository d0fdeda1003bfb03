"""The commands in README.md and docs/ run as written: each command line of their code blocks parses as shell
words, the module or script it runs and every repository file it names exist, and the options it gives a
module are options that module's --help lists. The repository also names no machine's paths."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
PYTHONS = {"python", "python3", ".venv/bin/python"}
RUNNERS = PYTHONS | {"bash", "torchrun"}
# Arguments under these folders are files the repository must hold (runs/, out/ and the like are outputs).
TRACKED = ("cogniedit/", "training/", "scripts/", "tests/", "bench/", "docs/", "example_workflows/", "nodes/", "web/")
FENCE = re.compile(r"^```([A-Za-z]*)\n(.*?)^```", re.M | re.S)
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:root|work|home|tmp|Users)/[\w.-]")


def command_lines(text: str) -> list[str]:
    """The command lines of a Markdown text's shell (or unlabelled) code blocks, continuations joined."""
    found = []
    for language, body in FENCE.findall(text):
        if language not in ("", "bash", "sh", "shell", "console"):
            continue
        for line in body.replace("\\\n", " ").splitlines():
            line = line.strip()
            for part in re.split(r"\s&&\s|;\s", line):
                words = part.split()
                while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # VAR=value prefixes
                    words = words[1:]
                if words and words[0] in RUNNERS:
                    found.append(part.strip())
    return found


def all_commands() -> list[tuple[str, str]]:
    return [(str(doc.relative_to(REPO)), line) for doc in DOCS for line in command_lines(doc.read_text(encoding="utf-8"))]


def words_of(line: str) -> list[str]:
    words = shlex.split(line, comments=True)
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
        words = words[1:]
    return words


def module_file(module: str) -> Path | None:
    base = REPO / Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__main__.py"):
        if candidate.is_file():
            return candidate
    return None


def target_of(words: list[str]) -> tuple[str, str]:
    """("module", name) or ("file", path) that a command line runs."""
    if words[0] == "torchrun":
        words = [w for w in words if not w.startswith("--")][1:] or [""]
        return ("module", words[words.index("-m") + 1]) if "-m" in words else ("file", words[0])
    if words[0] in PYTHONS and "-m" in words:
        return "module", words[words.index("-m") + 1]
    return "file", words[1]


def test_the_readme_and_docs_have_commands_to_check():
    commands = all_commands()
    readme = [line for doc, line in commands if doc == "README.md"]
    assert "bash scripts/setup_env.sh && .venv/bin/python -m cogniedit.shapes.demo" in (REPO / "README.md").read_text()
    assert "bash scripts/setup_env.sh && .venv/bin/python -m pytest" in (REPO / "README.md").read_text()
    assert len(readme) >= 4 and len(commands) > 20, commands


@pytest.mark.parametrize("doc,line", all_commands())
def test_command_parses_and_names_files_that_exist(doc, line):
    try:
        words = words_of(line)
    except ValueError as error:
        pytest.fail(f"{doc}: `{line}` does not parse as shell words: {error}")
    kind, target = target_of(words)
    if kind == "module":
        if target.split(".")[0] not in ("pytest", "pip", "torch"):
            assert module_file(target), f"{doc}: `{line}` runs module {target}, which the repository does not have"
    else:
        assert (REPO / target).is_file(), f"{doc}: `{line}` runs {target}, which does not exist"
    for word in words[1:]:
        value = word.split("=", 1)[1] if word.startswith("--") and "=" in word else word
        if value.startswith(TRACKED) and not any(c in value for c in "<>*{}"):
            assert (REPO / value.rstrip("/")).exists(), f"{doc}: `{line}` names {value}, which does not exist"


def modules_and_options() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for _, line in all_commands():
        words = words_of(line)
        kind, target = target_of(words)
        if kind == "module" and module_file(target):
            found.setdefault(target, set()).update(
                w.split("=", 1)[0] for w in words if w.startswith("--") and "." not in w.split("=", 1)[0])
    return found


@pytest.mark.slow
@pytest.mark.parametrize("module", sorted(modules_and_options()))
def test_the_options_the_docs_give_a_module_are_in_its_help(module):
    """Dotted options (--focus.enabled=true) are config overrides the trainer reads itself, so only plain ones."""
    options = modules_and_options()[module]
    result = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True,
                            timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    assert result.returncode == 0, f"`python -m {module} --help` failed:\n{result.stderr[-2000:]}"
    unknown = sorted(o for o in options if o not in result.stdout)
    assert not unknown, f"the docs give `python -m {module}` options its --help does not list: {unknown}"


def test_no_machine_paths_in_the_repository():
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True)
    if files.returncode != 0:
        pytest.skip("not a git checkout: no list of tracked files")
    hits = []
    for name in filter(None, files.stdout.split("\0")):
        try:
            text = (REPO / name).read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue  # binary files (weights, images) and files deleted in the work tree
        hits += [f"{name}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}" for m in MACHINE_PATH.finditer(text)]
    assert not hits, "machine paths in the repository (name a path relative to the repository or a placeholder):\n" + \
        "\n".join(hits[:20])
