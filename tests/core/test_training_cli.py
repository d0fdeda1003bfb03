"""Trainer command-line mistakes: each is ONE line on stderr naming the file or key, the problem and the fix, a
non-zero exit code and no traceback; the traceback appears only with --debug or COGNIEDIT_DEBUG=1."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run(args, env_extra=None, module="training"):
    env = {k: v for k, v in os.environ.items() if k != "COGNIEDIT_DEBUG"}
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **(env_extra or {})})
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


def one_line(result, *needles):
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0, result.stderr
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def files(tmp_path):
    (tmp_path / "bad.yaml").write_text("model:\n  kind: [shapeedit\n")
    (tmp_path / "typo.yaml").write_text("rollout:\n  stepz: 3\n")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    (tmp_path / "a_file").write_text("not a folder")
    return tmp_path


CASES = {
    "malformed yaml": (lambda d: ["--config", str(d / "bad.yaml")], ["bad.yaml", "line 2", "YAML"]),
    "missing file": (lambda d: ["--config", str(d / "nope.yaml")], ["nope.yaml", "not found"]),
    "config is a folder": (lambda d: ["--config", str(d)], ["--config", "folder"]),
    "not a mapping": (lambda d: ["--config", str(d / "list.yaml")], ["list.yaml", "mapping"]),
    "unknown key in the file": (lambda d: ["--config", str(d / "typo.yaml")],
                                ["typo.yaml", "rollout.stepz", "did you mean rollout.steps"]),
    "unknown key in a flag": (lambda d: ["--set", "rollout.stepz=3"], ["--set rollout.stepz=3", "rollout.steps"]),
    "steps not a number": (lambda d: ["--set", "train.steps=abc"], ["train.steps", "'abc'", "integer"]),
    "negative steps": (lambda d: ["--train.steps", "-5"], ["train.steps", "-5", ">= 1"]),
    "float for an integer": (lambda d: ["--set", "rollout.group_size=2.5"], ["rollout.group_size", "integer"]),
    "text for a number": (lambda d: ["--set", "rollout.eta=abc"], ["rollout.eta", "number"]),
    "text for a flag": (lambda d: ["--set", "train.bf16=maybe"], ["train.bf16", "true or false"]),
    "bad dtype": (lambda d: ["--set", "model.dtype=fp9"], ["model.dtype", "bfloat16"]),
    "zero lr": (lambda d: ["--set", "optim.lr=0"], ["optim.lr", "> 0"]),
    "override without =": (lambda d: ["--set", "train.steps"], ["train.steps", "section.key=value"]),
    "override bad yaml": (lambda d: ["--set", "lora.targets=[to_q"], ["lora.targets", "YAML"]),
    "output_dir is a file": (lambda d: ["--set", f"output_dir={d / 'a_file'}"], ["output_dir", "a_file", "file"]),
    "output_dir under a file": (lambda d: ["--set", f"output_dir={d / 'a_file' / 'run'}"], ["output_dir", "a_file"]),
    "unknown flag": (lambda d: ["--bogus"], ["--bogus"]),
    "missing cases file": (lambda d: ["--set", f"data.cases={d / 'cases.jsonl'}"], ["data.cases", "not found"]),
    "bad cases line": (lambda d: ["--set", f"data.cases={d / 'bad.yaml'}"], ["data.cases", "bad.yaml line 1"]),
    "no such editor": (lambda d: ["--set", f"model.path={d / 'editor.safetensors'}"], ["editor.safetensors",
                                                                                        "not found"]),
    "resume without checkpoint": (lambda d: ["--set", f"output_dir={d / 'run'}", "--resume", "latest",
                                             "--set", "data.n_cases=4"], ["no checkpoint", "run"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_each_input_mistake_is_one_line_and_a_failure(files, name):
    args, needles = CASES[name]
    runs = name in ("resume without checkpoint", "missing cases file", "bad cases line", "no such editor")
    one_line(run(args(files) if runs else ["--print-config", *args(files)]), *needles)


def test_the_traceback_comes_with_the_debug_flag(files):
    quiet = run(["--set", "train.steps=abc", "--print-config"])
    assert quiet.returncode != 0 and "Traceback" not in quiet.stderr
    for extra, env in ((["--debug"], None), ([], {"COGNIEDIT_DEBUG": "1"})):
        loud = run(["--set", "train.steps=abc", "--print-config", *extra], env)
        assert loud.returncode != 0 and "Traceback" in loud.stderr and "train.steps" in loud.stderr


def test_a_good_config_still_prints(files):
    result = run(["--set", "train.steps=3", "--print-config"])
    assert result.returncode == 0, result.stderr
    assert '"steps": 3' in result.stdout


@pytest.mark.parametrize("module, args, needles", [
    ("training.evaluate_records", ["--run", "{d}/norun", "--records", "{d}/r.jsonl"], ["norun", "checkpoint"]),
    ("training.evaluate_lora", ["--lora", "{d}/missing.safetensors", "--n", "1"], ["missing.safetensors"]),
    ("training.plot_rewards", ["{d}/norun"], ["metrics.jsonl", "norun"]),
    ("training.evaluate_records", ["--records", "x"], ["--run"]),
])
def test_the_evaluation_commands_answer_in_one_line_too(files, module, args, needles):
    one_line(run([a.format(d=files) for a in args], module=module), *needles)
