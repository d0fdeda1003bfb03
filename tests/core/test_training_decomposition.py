"""Instruction Decompose in the training loop (training/decomposition.py): rollouts are conditioned on the text the
CogniEdit editor encodes at inference, each case is decomposed once (memory + disk cache, reused on resume),
fallbacks are counted, and decompose.enabled=false leaves a run bit-identical."""

import dataclasses
import importlib.util
import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from cogniedit.decompose import DecomposeSettings, OpenAIHTTPBackend, decompose
from cogniedit.focus.spans import phrase_spans
from cogniedit.shapes.cases import generate_cases, write_jsonl
from cogniedit.shapes.cogniedit_editor import DEFAULT_FOCUS_KINDS, CogniEditEditor
from tests.fixtures.chat_server import ChatServer
from training.config import ConfigError, load_config
from training.decomposition import RolloutDecomposer, build_decomposer, source_image
from training.grpo import Trainer, main
from training.lora import read_lora_file
from training.tiny import save_tiny_editor

# hand-written paraphrases of template cases (d-phrasings' generator is not in main yet)
PARAPHRASES = ["could you recolour the purple circle so that it ends up red",
               "shift the yellow triangle over to the right side, please"]


@pytest.fixture(scope="module")
def editor_file(tmp_path_factory):
    return save_tiny_editor(tmp_path_factory.mktemp("editor") / "editor.safetensors")


def _cases_file(folder: Path, paraphrase: bool = True) -> Path:
    cases = generate_cases(2, seed=0)
    if paraphrase:
        cases = [dataclasses.replace(c, instruction=p) for c, p in zip(cases, PARAPHRASES)]
    path = folder / "cases.jsonl"
    write_jsonl(path, cases)
    return path


def _args(model, out, cases, steps=2, extra=()):
    return [f"model.path={model}", f"output_dir={out}", f"data.cases={cases}", f"train.steps={steps}",
            "checkpoint.every=2", "checkpoint.keep_last=2", "rollout.steps=4", "rollout.group_size=2",
            "rollout.cases_per_step=2", "objective.window=2", "objective.beta=0.05", "optim.lr=3e-3",
            "train.minibatches=2", "train.num_threads=1", "log.progress=false", *extra]


def _flags(args):
    return [x for a in args for x in ("--set", a)]


def _metrics(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def _comparable(m):
    return {k: v for k, v in m.items() if not k.startswith("time_")}


def _lora(out):
    return read_lora_file(Path(out) / "lora.safetensors")[0]


def _text_rows(emb, mask):
    return [e[m.bool()] for e, m in zip(emb, mask)]


def _inference_texts(trainer, cases, decomposer, focus="off", check="off"):
    """What the CogniEdit editor encodes at inference for these cases (decompose on, the same backend)."""
    editor = CogniEditEditor(trainer.policy.editor, decompose=True, decomposer=decomposer, focus=focus,
                             decompose_check=check)
    images = np.stack([source_image(c) for c in cases])
    editor.edit(images, [c.instruction for c in cases], seed=0, steps=2)
    return editor


def _assert_rollout_text_is_inference_text(trainer, cases, editor):
    policy = trainer.policy
    trained = [policy._cache[c.case_id][0][policy._cache[c.case_id][1].bool()] for c in cases]
    with torch.no_grad():
        at_inference = _text_rows(*editor.model.encode_text(editor.last_instructions))
    assert [policy.instruction_of(c) for c in cases] == editor.last_instructions
    assert all(torch.equal(a, b) for a, b in zip(trained, at_inference))


class _EchoAnswers(list):
    """A chat-server script that answers each request with an enriched form of the instruction it carries."""

    def __init__(self, server, answers: dict):
        super().__init__()
        self.server, self.answers = server, answers

    def __bool__(self):
        return True

    def pop(self, index=-1):
        user = json.dumps(self.server.requests[-1]["body"]["messages"])
        instruction = next(i for i in sorted(self.answers, key=len, reverse=True) if i in user)
        return ("ok", f"<info>shapes on a grid</info><answer>{self.answers[instruction]}</answer>")


@pytest.fixture
def echo_server():
    server = ChatServer()
    yield server
    server.close()


def _enriched(instruction: str) -> str:
    return f"{instruction}, and keep everything else exactly as it is"


def _serve(server, instructions):
    server.script = _EchoAnswers(server, {i: _enriched(i) for i in instructions})


def _http(server, *more):
    # The echo answers are not in the ShapeEdit grammar: the grammar check is off on both sides here (tested on
    # its own below), so these tests see the model's answer itself.
    return ["decompose.enabled=true", "decompose.backend=openai_http", f"decompose.url={server.url}",
            "decompose.model=tiny", "decompose.retries=0", "decompose.grammar_check=false", *more]


# ------------------------------------------------------------------------------------------------ off by default
def test_disabled_leaves_the_run_bit_identical(editor_file, tmp_path, monkeypatch):
    import cogniedit.decompose as package

    def never(*args, **kwargs):
        raise AssertionError("decompose.enabled=false must not decompose")

    monkeypatch.setattr(package, "decompose", never)
    cases = _cases_file(tmp_path, paraphrase=False)
    runs = {}
    for name, extra in {"default": [], "off": ["decompose.enabled=false", "decompose.backend=openai_http",
                                               "decompose.url=http://127.0.0.1:9/v1", "decompose.model=m"]}.items():
        trainer = Trainer(load_config(None, _args(editor_file, tmp_path / name, cases, extra=extra)))
        assert trainer.decomposer is None
        trainer.train()
        runs[name] = trainer
        first = trainer.cases[0]
        with torch.no_grad():
            emb, _ = trainer.policy.editor.encode_text([first.instruction])
        assert torch.equal(trainer.policy._cache[first.case_id][0], emb[0])
    a, b = _metrics(tmp_path / "default"), _metrics(tmp_path / "off")
    assert [_comparable(m) for m in a] == [_comparable(m) for m in b]
    assert not any(k.startswith("decompose/") for m in a for k in m)
    lora_a, lora_b = _lora(tmp_path / "default"), _lora(tmp_path / "off")
    assert lora_a.keys() == lora_b.keys() and all(torch.equal(lora_a[k], lora_b[k]) for k in lora_a)
    assert not (tmp_path / "off" / "cache" / "decompose").exists()


def test_shipped_configs_keep_decomposition_off():
    from training.config import read_config_file

    folder = Path(__file__).resolve().parents[2] / "training" / "configs"
    for name in ("shapeedit_dense.yaml", "shapeedit_sparse.yaml"):  # their README figures reproduce
        assert load_config(folder / name)["decompose"]["enabled"] is False
    assert read_config_file(folder / "qwen_image_edit_dense.yaml")["decompose"]["enabled"] is False


# ------------------------------------------------------------------------------------------------ the same text
def test_rules_on_paraphrases_condition_rollouts_as_the_editor_at_inference(editor_file, tmp_path):
    cases_file = _cases_file(tmp_path)
    trainer = Trainer(load_config(None, _args(editor_file, tmp_path / "out", cases_file,
                                              extra=["decompose.enabled=true", "decompose.backend=rules"])))
    cases = trainer.cases
    assert [c.instruction for c in cases] == PARAPHRASES
    trainer.policy.encode_cases(cases)
    editor = _inference_texts(trainer, cases, "rules", focus="training_free")
    _assert_rollout_text_is_inference_text(trainer, cases, editor)
    # the focus phrases are the editor's too: the same token spans on the same text
    from cogniedit.shapes.editor.text import tokenizer

    for case, spans in zip(cases, editor.last_spans):
        d = trainer.decomposer.decomposition(case)
        phrases = [p.text for p in d.focus if p.kind in DEFAULT_FOCUS_KINDS]
        assert phrases and phrase_spans(d.enriched_instruction, phrases, tokenizer(),
                                        layout="qwen_image").positions == spans.positions
    assert trainer.decomposer.counts() == {"used": 2, "fallback": 0}


def test_model_answers_condition_rollouts_once_per_case_and_resume_is_exact(editor_file, tmp_path, echo_server):
    cases_file = _cases_file(tmp_path)
    _serve(echo_server, PARAPHRASES)
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    trainer = Trainer(load_config(None, _args(editor_file, straight, cases_file, steps=4, extra=_http(echo_server))))
    trainer.train()
    assert len(echo_server.requests) == 2  # 4 epochs over 2 cases: each asked once
    assert [m["decompose/used"] for m in _metrics(straight)] == [2, 2, 2, 2]
    assert [trainer.policy.instruction_of(c) for c in trainer.cases] == [_enriched(p) for p in PARAPHRASES]
    asked = len(echo_server.requests)
    editor = _inference_texts(trainer, trainer.cases, OpenAIHTTPBackend(echo_server.url, "tiny"))
    assert len(echo_server.requests) == asked + 2  # the editor asked the same server, got the same answers
    _assert_rollout_text_is_inference_text(trainer, trainer.cases, editor)

    before = len(echo_server.requests)
    args = _args(editor_file, broken, cases_file, steps=4, extra=_http(echo_server))
    assert main(_flags(args + ["train.stop_after=3"])) == 0
    assert len(echo_server.requests) == before + 2
    assert main(_flags(args) + ["--resume", "latest"]) == 0
    assert len(echo_server.requests) == before + 2  # the resumed run read the run's decomposition cache
    assert [_comparable(m) for m in _metrics(straight)] == [_comparable(m) for m in _metrics(broken)]
    lora_a, lora_b = _lora(straight), _lora(broken)
    assert all(torch.equal(lora_a[k], lora_b[k]) for k in lora_a)
    assert len(list((broken / "cache" / "decompose").glob("*.json"))) == 2


def test_prefill_fills_the_cache_a_run_then_reads(editor_file, tmp_path, echo_server, capsys):
    from training.decomposition import main as prefill_main

    cases_file = _cases_file(tmp_path)
    _serve(echo_server, PARAPHRASES)
    args = _args(editor_file, tmp_path / "out", cases_file, steps=1, extra=_http(echo_server))
    assert prefill_main(_flags(args)) == 0
    assert "2 cases, 2 used, 0 fell back" in capsys.readouterr().out and len(echo_server.requests) == 2
    trainer = Trainer(load_config(None, args))
    trainer.train()
    assert len(echo_server.requests) == 2 and trainer.decomposer.cache.hits == 2
    assert _metrics(tmp_path / "out")[0]["decompose/used"] == 2
    off = _args(editor_file, tmp_path / "out", cases_file, steps=1)
    assert prefill_main(_flags(off)) == 2  # decompose.enabled=false: one line
    assert "decompose.enabled is false" in capsys.readouterr().err


def test_lora_and_learned_focus_trained_on_decompositions_edit_as_the_editor_at_inference(editor_file, tmp_path,
                                                                                           echo_server):
    """The run's files, loaded as evaluation loads them with decomposition on, give the trainer policy's edit of
    its own (decomposed) conditioning text, learned focus included."""
    import contextlib

    from cogniedit.shapes.editor import load_editor

    _serve(echo_server, PARAPHRASES)
    out = tmp_path / "out"
    focus = ["focus.enabled=true", "focus.blocks=all", "focus.xi=2", "focus.window=6", "focus.strength=2.0"]
    args = _args(editor_file, out, _cases_file(tmp_path), extra=_http(echo_server, *focus))
    trainer = Trainer(load_config(None, args))
    trainer.train()
    cases = trainer.cases
    images = np.stack([source_image(c) for c in cases])

    def final_latent(edit, instructions, **kwargs):
        seen = []  # the x0 estimate of the last step is the edit's final latent (sigma 0)
        edit(images, instructions, seed=5, steps=4, shift=1.0, callback=lambda i, x, x0: seen.append(x0), **kwargs)
        return seen[-1]

    with contextlib.ExitStack() as stack:  # the trainer policy's learned focus on its own conditioning text
        want = final_latent(trainer.policy.editor.edit, [trainer.policy.instruction_of(c) for c in cases],
                            focus=lambda editor, ids, mask: stack.enter_context(
                                trainer.policy.focus_applied(mask[:, editor.prefix_len:])) or {})
    files = {"focus": "learned", "focus_weights": out / "focus.safetensors", "focus_strength": 2.0,
             "lora": out / "lora.safetensors"}
    backend = OpenAIHTTPBackend(echo_server.url, "tiny")
    editor = CogniEditEditor(load_editor(editor_file), decompose=True, decomposer=backend, decompose_check="off",
                             **files)
    got = final_latent(editor.edit, [c.instruction for c in cases])
    raw = final_latent(CogniEditEditor(load_editor(editor_file), **files).edit, [c.instruction for c in cases])
    assert editor.last_instructions == [_enriched(p) for p in PARAPHRASES]
    assert torch.allclose(got, want, atol=1e-5)
    assert (raw - want).abs().max() > 1e-4  # the decomposed text matters: the raw instruction edits otherwise


# ------------------------------------------------------------------------------------------------ fallbacks
def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def test_a_failing_backend_falls_back_as_at_inference_and_is_counted(editor_file, tmp_path, caplog):
    url = _closed_port_url()
    extra = ["decompose.enabled=true", "decompose.backend=openai_http", f"decompose.url={url}", "decompose.model=m",
             "decompose.retries=0", "decompose.timeout_s=5", "decompose.max_fallback_frac=1", "log.sample_every=1",
             "log.sample_cases=2"]
    trainer = Trainer(load_config(None, _args(editor_file, tmp_path / "out", _cases_file(tmp_path), steps=1,
                                              extra=extra)))
    with caplog.at_level("INFO", logger="training.decomposition"):
        trainer.train()
    assert _metrics(tmp_path / "out")[0]["decompose/used"] == 0
    assert _metrics(tmp_path / "out")[0]["decompose/fallback"] == 2
    assert trainer.decomposer.counts() == {"used": 0, "fallback": 2}
    assert "2 fell back to the rules" in trainer.decomposer.summary()
    editor = _inference_texts(trainer, trainer.cases, OpenAIHTTPBackend(url, "m"), check="on")
    _assert_rollout_text_is_inference_text(trainer, trainer.cases, editor)
    assert not list((tmp_path / "out" / "cache" / "decompose").glob("*.json"))  # failures are not cached
    assert (tmp_path / "out" / "samples" / "step-000001.png").is_file()  # the sample sheet runs with decomposition on


class _StagesBackend:
    """Answers each ShapeEdit case's instruction with its true four stages (stands in for a perfect decomposer)."""

    name, uses_model = "stages", True

    def __init__(self, cases):
        from cogniedit.shapes.decomposer.stages import stage_text

        self.answers = {c.instruction: stage_text(c.source, c.ops, c.world) for c in cases}

    def identity(self):
        return {"backend": self.name}

    def generate(self, messages, image, settings):
        text = json.dumps(messages)
        return next(a for i, a in sorted(self.answers.items(), key=lambda x: -len(x[0])) if json.dumps(i)[1:-1] in text)


def test_rollouts_get_what_the_grammar_checked_editor_gets(editor_file):
    from cogniedit.shapes.editor import load_editor

    cases = generate_cases(3, 4, phrasing="paraphrase", split="train") + generate_cases(3, 4, phrasing="reasoning",
                                                                                        split="train")
    backend = _StagesBackend(cases)
    decomposer = RolloutDecomposer(backend, DecomposeSettings(), None, 0.5, "stages")
    editor = CogniEditEditor(load_editor(editor_file), decompose=True, decomposer=backend)
    editor.edit(np.stack([source_image(c) for c in cases]), [c.instruction for c in cases], seed=0, steps=1)
    assert [decomposer.instruction(c) for c in cases] == editor.last_instructions
    assert editor.last_checks[:3] == ["explicit"] * 3  # paraphrases: the rules' rewrite
    unchecked = RolloutDecomposer(backend, DecomposeSettings(), None, 0.5, "stages", grammar_check=False)
    from cogniedit.shapes.decomposer.stages import stages

    assert [unchecked.instruction(c) for c in cases] == [stages(c.source, c.ops, c.world)["answer"] for c in cases]


def test_a_run_whose_decompositions_mostly_fall_back_stops_with_one_line():
    from cogniedit.decompose import ComfyTextEncoderBackend

    def down(request):
        raise ConnectionError("server down")

    decomposer = RolloutDecomposer(ComfyTextEncoderBackend(down), DecomposeSettings(), None, 0.5, "openai_http")
    cases = generate_cases(8, seed=0)
    for case in cases[:7]:
        assert decomposer.decomposition(case).source == "fallback"
    with pytest.raises(ConfigError, match=r"decompose.backend=openai_http: 8 of 8 decompositions fell back .*server "
                                          r"down.*max_fallback_frac=1"):
        decomposer.decomposition(cases[7])


def test_decomposing_leaves_the_global_random_states_alone():
    import random

    from cogniedit.decompose import ComfyTextEncoderBackend

    def draws(request):  # a model that samples (or initialises weights) from the global generators
        torch.rand(3), np.random.rand(), random.random()
        return "<answer>turn the purple circle red</answer>"

    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    want = torch.rand(1), np.random.rand(), random.random()
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    # the parser's own answer (the ShapeEdit grammar check, tested above, is off: this answer is not a scene)
    decomposer = RolloutDecomposer(ComfyTextEncoderBackend(draws), DecomposeSettings(), None, 1.0, grammar_check=False)
    assert decomposer.decomposition(generate_cases(1, seed=0)[0]).source == "mllm"
    assert (torch.rand(1), np.random.rand(), random.random()) == want


def test_the_fallback_is_what_decompose_gives():
    from cogniedit.decompose import ComfyTextEncoderBackend

    def down(request):
        raise ConnectionError("server down")

    case = generate_cases(1, seed=0)[0]
    ours = RolloutDecomposer(ComfyTextEncoderBackend(down), DecomposeSettings(), None, 1.0,
                             grammar_check=False).decomposition(case)  # decompose()'s fallback, unchecked
    theirs = decompose(source_image(case), case.instruction, backend=ComfyTextEncoderBackend(down))
    assert ours.to_dict() == theirs.to_dict() and ours.source == "fallback"


# ------------------------------------------------------------------------------------------------ unavailable
def test_an_unavailable_backend_is_one_line(editor_file, tmp_path, capsys, monkeypatch):
    base = _args(editor_file, tmp_path / "out", _cases_file(tmp_path), steps=1) + ["decompose.enabled=true"]
    cases = [
        (["decompose.backend=transformers_vlm", f"decompose.model={tmp_path / 'nowhere'}"],
         "decompose.model=.*nowhere is not a transformers model folder"),
        (["decompose.backend=openai_http", "decompose.model=m"], "decompose.url .*must be the server's http"),
        (["decompose.backend=openai_http", "decompose.url=http://127.0.0.1:9/v1", "decompose.model=m",
          "decompose.api_key_env=COGNIEDIT_TEST_UNSET_KEY"], "COGNIEDIT_TEST_UNSET_KEY, which is not set"),
        (["decompose.backend=magic"], "decompose.backend='magic' must be one of rules, mllm"),
    ]
    monkeypatch.delenv("COGNIEDIT_TEST_UNSET_KEY", raising=False)
    import re

    for extra, expected in cases:
        assert main(_flags(base + extra)) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and re.search(expected, err), err


def test_mllm_is_the_shipped_shapeedit_decomposer_or_one_line(tmp_path):
    config = load_config(None, [f"output_dir={tmp_path}", "decompose.enabled=true", "decompose.backend=mllm"])
    if importlib.util.find_spec("cogniedit.shapes.decomposer") is None:
        with pytest.raises(ConfigError, match="decompose.backend=mllm: the ShapeEdit decomposer is not in this"):
            build_decomposer(config, tmp_path)
        return
    from cogniedit.shapes.decomposer import DEFAULT_FOLDER

    if not (Path(DEFAULT_FOLDER) / "config.json").is_file():
        with pytest.raises(ConfigError, match="decompose.backend=mllm: the shipped ShapeEdit decomposer cannot be"):
            build_decomposer(config, tmp_path)
        return
    decomposer = build_decomposer(config, tmp_path)
    assert decomposer.backend.identity()["files"]  # a retrained folder gets new cache keys


# ------------------------------------------------------------------------------------------------ image records
def test_image_records_ask_the_configured_backend_once_per_record(tmp_path, echo_server):
    from tests.fixtures.edit_records import write_edit_records
    from tests.fixtures.tiny_models import tiny_qwen_image_edit_folder

    components = tiny_qwen_image_edit_folder()
    (tmp_path / "records").mkdir()
    records = write_edit_records(tmp_path / "records")
    instructions = [f"make cup {i} red" for i in range(4)]
    _serve(echo_server, instructions)
    out = tmp_path / "out"
    args = ["model.kind=diffusers", f"model.path={components}", f"data.records={records}", "data.resolution=32",
            "rewards.shapeedit.enabled=false", "rewards.preservation.enabled=true",
            "rewards.preservation.weights.ssim=1.0", f"output_dir={out}", "train.steps=2", "checkpoint.every=2",
            "rollout.steps=2", "objective.window=1", "rollout.group_size=2", "rollout.cases_per_step=2",
            "train.num_threads=1", "log.progress=false", "advantages.min_group_std=0", *_http(echo_server)]
    trainer = Trainer(load_config(None, args))
    assert len(echo_server.requests) == 4  # every record decomposed once, before training
    trainer.train()
    assert len(echo_server.requests) == 4
    assert all(m["decompose/used"] == 2 and m["decompose/fallback"] == 0 for m in _metrics(out))
    tokenizer = trainer.policy.pipeline.tokenizer
    for case, instruction in zip(trainer.cases, instructions):
        assert case.instruction == instruction  # the records (and the rewards' captions) keep the user's text
        n = int(trainer.policy._cache[case.case_id][3])  # the encoded instruction's token count
        assert n == len(tokenizer(_enriched(instruction), add_special_tokens=False)["input_ids"])
        assert n != len(tokenizer(instruction, add_special_tokens=False)["input_ids"])

    again = Trainer(load_config(None, args))  # a rerun: decompositions and conditioning from the run's caches
    assert len(echo_server.requests) == 4 and again.decomposer.cache.hits == 4
    for case in trainer.cases:
        assert all(torch.equal(a, b) for a, b in zip(trainer.policy._cache[case.case_id],
                                                     again.policy._cache[case.case_id]))
