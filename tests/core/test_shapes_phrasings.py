"""ShapeEdit phrasings: template cases unchanged, paraphrases keep the template's scene and ops, the train and
eval wording pools are disjoint where the docs say so, and the case schema reads old and new files."""

import hashlib
import json
import re

import pytest

from cogniedit.shapes import evaluate
from cogniedit.shapes.cases import EditCase, generate_cases, read_jsonl, write_jsonl

# sha256 of the JSONL of generate_cases(n, seed) before phrasings existed (commit 5bb6e9d): every README figure
# was measured on these cases, so they must stay byte-identical.
TEMPLATE_DIGESTS = {
    (0, 400): "3f919cf3ba140ab17d5cf1d5a06753e49ed24293b61aa46892a6cce86716f196",
    (1, 400): "a421f99f79cbe7d51ae3ce1bcc8a314ff276a9d33a13057679785e66193d3c3e",
    (20261129, 500): "2e532b3db9871ff675fbfe945da992144b07fe33526b004082d752ff4297c40a",
}

# Words and frames docs/shapeedit.md lists as held out of every training pool (written here from the docs).
HELD_OUT_MARKERS = re.compile(
    r"\b(?:dye|nudge|eliminate|take out|include|create|switch|set the colour of|needs to be coloured|I want|"
    r"relocate|needs to go|has to go|must be|somewhere|just one|a pair of|leftwards|rightwards|by one cell|"
    r"one space|furthest|highest|lowest|kindly|I'd like you to|go ahead and|thanks|thank you|After that|"
    r"afterwards|Next)\b|!", re.IGNORECASE)


def _jsonl(cases) -> str:
    return "".join(json.dumps(c.to_dict(), sort_keys=True) + "\n" for c in cases)


@pytest.mark.parametrize("seed,n", sorted(TEMPLATE_DIGESTS))
def test_template_cases_are_byte_identical_to_before(seed, n):
    text = _jsonl(generate_cases(n, seed))
    assert hashlib.sha256(text.encode()).hexdigest() == TEMPLATE_DIGESTS[(seed, n)]
    assert _jsonl(generate_cases(n, seed, phrasing="template", split="train")) == text


def test_paraphrase_keeps_the_template_scene_and_ops_and_rewords():
    template = generate_cases(200, seed=5)
    for split in ("train", "eval"):
        para = generate_cases(200, seed=5, phrasing="paraphrase", split=split)
        for t, p in zip(template, para):
            assert (p.source, p.ops, p.target, p.touched, p.kind) == (t.source, t.ops, t.target, t.touched, t.kind)
            assert p.phrasing == "paraphrase" and p.split == split and p.explicit == t.instruction
            assert p.explicit_instruction == t.instruction and t.explicit_instruction == t.instruction
        assert sum(p.instruction != t.instruction for t, p in zip(template, para)) > 190


def test_train_wording_never_holds_a_held_out_word_and_eval_always_does():
    train = generate_cases(400, seed=11, phrasing="paraphrase", split="train")
    hits = [c.instruction for c in train if HELD_OUT_MARKERS.search(c.instruction)]
    assert not hits, hits[:5]
    evals = generate_cases(400, seed=11, phrasing="paraphrase", split="eval")
    misses = [c.instruction for c in evals if not HELD_OUT_MARKERS.search(c.instruction)]
    assert not misses, misses[:5]


REASONING_HELD_OUT = re.compile(
    r"\b(?:dye|nudge|eliminate|take out|include|create|on the (?:left|right) of|over|beneath|under|the single|"
    r"the lone|no other shape has|furthest|highest|lowest|should take the colour of|but the|each|for every|"
    r"in the colour of|shaped like|things?|just one|a pair of|leftwards|rightwards|by one cell|one space|"
    r"After that|afterwards|Next)\b")


def test_reasoning_train_and_eval_wording_are_split_the_same_way():
    train = generate_cases(400, seed=12, phrasing="reasoning", split="train")
    hits = [c.instruction for c in train if REASONING_HELD_OUT.search(c.instruction)]
    assert not hits, hits[:5]
    evals = generate_cases(400, seed=12, phrasing="reasoning", split="eval")
    misses = [c.instruction for c in evals if not REASONING_HELD_OUT.search(c.instruction)]
    assert not misses, misses[:5]


def test_generation_is_deterministic_and_prefix_stable_for_every_phrasing():
    for phrasing in ("paraphrase", "mixed"):
        long = generate_cases(40, seed=2, phrasing=phrasing)
        assert _jsonl(generate_cases(17, seed=2, phrasing=phrasing)) == _jsonl(long[:17])
        assert _jsonl(generate_cases(40, seed=2, phrasing=phrasing)) == _jsonl(long)
    mixed = generate_cases(24, seed=2, phrasing="mixed")
    assert [c.phrasing for c in mixed[:12]] == ["template"] * 4 + ["paraphrase"] * 4 + ["reasoning"] * 4
    assert len({c.case_id for c in mixed}) == 24


def test_case_files_version_1_and_2_read_back(tmp_path):
    cases = generate_cases(12, seed=4, phrasing="mixed")
    path = tmp_path / "cases.jsonl"
    write_jsonl(path, cases)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert {d["version"] for d in lines if "phrasing" not in d} == {1}
    assert {d["version"] for d in lines if "phrasing" in d} == {2}
    again = read_jsonl(path)
    assert again == cases
    minimal = {"version": 1, "case_id": "x", "kind": "colour", "instruction": "make the circle red",
               "source": {"objects": [{"shape": "circle", "colour": "blue", "row": 0, "col": 0}]},
               "ops": [{"kind": "recolour", "cell": [0, 0], "colour": "red"}]}
    old = EditCase.from_dict(minimal)
    assert old.phrasing == "template" and old.explicit is None and old.explicit_instruction == "make the circle red"
    with pytest.raises(ValueError, match="phrasing 'poetry'"):
        EditCase.from_dict({**minimal, "version": 2, "phrasing": "poetry"})
    with pytest.raises(ValueError, match="version 3"):
        EditCase.from_dict({**minimal, "version": 3})


def test_bad_phrasing_or_split_is_refused():
    with pytest.raises(ValueError, match="unknown phrasing"):
        generate_cases(2, phrasing="slang")
    with pytest.raises(ValueError, match="unknown split"):
        generate_cases(2, phrasing="paraphrase", split="test")


@pytest.mark.parametrize("phrasing", ["paraphrase", "reasoning", "mixed"])
def test_the_command_generates_each_phrasing_and_the_oracle_scores_100(tmp_path, phrasing):
    results = tmp_path / "r.json"
    assert evaluate.main(["--n", "24", "--seed", "9", "--phrasing", phrasing, "--editor", "oracle",
                          "--results", str(results), "--no-progress"]) == 0
    payload = json.loads(results.read_text())
    assert payload["metrics"]["success"] == 1.0 and payload["phrasing"] == phrasing and payload["split"] == "eval"
    if phrasing != "mixed":
        assert {c["phrasing"] for c in payload["cases"]} == {phrasing}


def test_cases_do_not_depend_on_the_hash_seed():
    """Two processes must generate the same cases (base and +decompose runs are separate processes)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("import hashlib, json; from cogniedit.shapes.cases import generate_cases; "
            "print(hashlib.sha256(''.join(json.dumps(c.to_dict(), sort_keys=True) for c in "
            "generate_cases(300, 20261129, phrasing='mixed')).encode()).hexdigest())")
    root = str(Path(__file__).resolve().parents[2])
    digests = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root,
                              env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": root}).stdout
               for seed in ("1", "2", "3")}
    assert len(digests) == 1
