"""The ShapeEdit decomposer: stage texts and their way back, the exact training loss, and exact resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cogniedit.shapes.cases import EditOp, generate_cases
from cogniedit.shapes.decomposer import data as D
from cogniedit.shapes.decomposer.config import DecomposerDims, build_processor, load_tokenizer, new_model, write_tokenizer
from cogniedit.shapes.decomposer.model import batch_loss, export_model, to_training_model
from cogniedit.shapes.decomposer.stages import answer_ops, same_ops, stage_text, stages
from cogniedit.shapes.scene import Scene, ShapeObject

TINY = DecomposerDims(layers=1, intermediate=64, vision_depth=1, vision_intermediate=64)


def test_every_template_answer_reads_back_to_its_ops():
    for case in generate_cases(300, 11):
        st = stages(case.source, case.ops)
        assert same_ops(answer_ops(st["answer"], case.source), case.ops), (case.instruction, st["answer"])
        assert same_ops(answer_ops(case.instruction, case.source), case.ops), case.instruction
        for line in st["object"].splitlines():
            assert line in st["answer"]  # <object> lines are spans of the answer


def test_reference_falls_back_to_the_cell_when_another_change_makes_it_ambiguous():
    # after the recolour there are two red circles, so the removed one is named by its cell
    scene = Scene((ShapeObject(0, 0, "circle", "green"), ShapeObject(2, 2, "circle", "red")))
    ops = (EditOp("recolour", (0, 0), colour="red"), EditOp("remove", (2, 2)))
    answer = stages(scene, ops)["answer"]
    assert answer == "make the green circle red and remove the red circle in the bottom right corner"
    assert same_ops(answer_ops(answer, scene), ops)


def test_answers_outside_the_grammar_read_as_none():
    scene = generate_cases(1, 3)[0].source
    for text in ("", "answer here", "make the circle", "move the hexagon up", "paint it all blue"):
        assert answer_ops(text, scene) is None


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok")
    write_tokenizer(folder)
    return D.Encoder(build_processor(load_tokenizer(folder)))


def test_training_loss_is_the_full_models_cross_entropy(encoder):
    cases = generate_cases(4, 5)
    vocab = D.vocabulary(encoder, cases)
    model = to_training_model(new_model(TINY, seed=1), vocab, seed=1)
    samples = D.encode_cases(encoder, cases)
    loss = batch_loss(model, D.collate(samples, encoder, model.model.get_rope_index)).item()
    stock = export_model(model)
    p, losses = len(encoder.prefix_ids), []
    with torch.no_grad():
        for s in samples:
            ids = torch.tensor([encoder.prefix_ids + s.suffix])
            logits = stock(input_ids=ids, pixel_values=s.pixel_values, image_grid_thw=s.image_grid_thw,
                           mm_token_type_ids=(ids == encoder.image_token_id).int(),
                           attention_mask=torch.ones_like(ids)).logits[0]
            losses.append(torch.nn.functional.cross_entropy(logits[p + s.n_prompt - 1:-1], ids[0, p + s.n_prompt:],
                                                            reduction="none"))
    assert loss == pytest.approx(torch.cat(losses).mean().item(), rel=1e-5)


def test_encoder_ids_are_the_processors(encoder):
    from PIL import Image

    from cogniedit.shapes.render import render_scene

    case = generate_cases(1, 9)[0]
    sample = encoder.encode(render_scene(case.source), case.instruction, stage_text(case.source, case.ops))
    full = encoder.processor(text=[encoder.prompt_text(case.instruction)],
                             images=[Image.fromarray(render_scene(case.source))], return_tensors="pt")
    prompt = encoder.prefix_ids + sample.suffix[:sample.n_prompt]
    assert prompt == full["input_ids"][0].tolist()
    a, z = sample.instruction_span
    assert encoder.tokenizer.decode(sample.suffix[a:z]).strip() == case.instruction


def _run(tmp_path, name, **kwargs):
    from cogniedit.shapes.decomposer.train import train

    return train(out=tmp_path / f"{name}_folder", state_path=tmp_path / f"{name}.safetensors", steps=4, batch=2,
                 warmup=1, ckpt_every=2, check_every=0, check_cases=0, vocab_cases=8, phrasing="template",
                 dims=TINY, progress=False, log=lambda m: None, **kwargs)


def test_training_resumes_exactly(tmp_path):
    straight = _run(tmp_path, "straight")
    _run(tmp_path, "resumed", stop_after=2)
    resumed = _run(tmp_path, "resumed")
    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(str(tmp_path / "straight_folder"))
    assert model.dtype == torch.float32 and type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"


def test_resume_refuses_another_configuration(tmp_path):
    _run(tmp_path, "run", stop_after=2)
    with pytest.raises(SystemExit, match="another configuration"):
        _run_other_batch(tmp_path)


def _run_other_batch(tmp_path):
    from cogniedit.shapes.decomposer.train import train

    return train(out=tmp_path / "run_folder", state_path=tmp_path / "run.safetensors", steps=4, batch=3, warmup=1,
                 check_every=0, check_cases=0, vocab_cases=8, phrasing="template", dims=TINY, progress=False,
                 log=lambda m: None)


def test_dropout_only_touches_the_instruction(encoder):
    cases = generate_cases(2, 4)
    samples = D.encode_cases(encoder, cases)
    model = to_training_model(new_model(TINY), D.vocabulary(encoder, cases))
    batch = D.collate(samples, encoder, model.model.get_rope_index, dropout=1.0, rng=np.random.default_rng(0))
    for i, s in enumerate(samples):
        row = batch["input_ids"][i, : len(s.suffix)].tolist()
        a, z = s.instruction_span
        assert row[a:z] == [encoder.unknown_id] * (z - a)
        assert row[:a] == s.suffix[:a] and row[z:] == s.suffix[z:]


def test_the_mix_sets_each_phrasings_share_of_a_batch():
    from cogniedit.shapes.decomposer.phrasings import case_source, parse_mix

    # equal weights: each phrasing's cases drawn with seed * 7 + its index, taken in turn (the previous folder's run)
    parts = [generate_cases(4, 5 * 7 + i, phrasing=p, split="train")
             for i, p in enumerate(("template", "paraphrase", "reasoning"))]
    interleaved = [parts[i % 3][i // 3].instruction for i in range(12)]
    assert [c.instruction for c in case_source("mixed")(12, 5)] == interleaved
    assert [c.instruction for c in case_source("mixed", weights=parse_mix("template=1,paraphrase=1,reasoning=1"))(
        12, 5)] == interleaved
    heavy = case_source("mixed", weights=parse_mix("template=1,paraphrase=1,reasoning=2"))(24, 5)
    assert [c.phrasing for c in heavy].count("reasoning") == 12
    assert [c.phrasing for c in heavy[:4]] == ["template", "paraphrase", "reasoning", "reasoning"]
    no_template = case_source("mixed", weights=parse_mix("paraphrase=1,reasoning=1"))(10, 5)
    assert {c.phrasing for c in no_template} == {"paraphrase", "reasoning"}


@pytest.mark.parametrize("text", ["reasoning=two", "poetry=1", "template=0", "reasoning"])
def test_a_bad_mix_is_one_line_naming_the_form(text):
    from cogniedit.shapes.decomposer.phrasings import parse_mix

    with pytest.raises(ValueError, match=r"mix .*(phrasing=weight|weight 0)") as info:
        parse_mix(text)
    assert "\n" not in str(info.value)


def test_the_training_command_refuses_a_bad_mix_before_building_anything(capsys):
    from cogniedit.shapes.decomposer.train import main

    with pytest.raises(SystemExit) as info:
        main(["--mix", "reasoning=x", "--out", "never-written"])
    assert info.value.code == 2
    assert "mix entry 'reasoning=x': write phrasing=weight" in capsys.readouterr().err


def test_the_report_breaks_accuracy_down_by_edit_kind():
    from cogniedit.decompose.parser import decomposition_from_answer
    from cogniedit.shapes.decomposer.evaluate import format_rows, report

    cases = generate_cases(8, 4242, phrasing="reasoning", split="eval")
    # the true four stages for colour cases only, an answer outside the grammar for every other kind
    answers = [stage_text(c.source, c.ops) if c.kind == "colour" else "<answer>make it nicer</answer>" for c in cases]
    row = report(cases, [decomposition_from_answer(a, c.instruction) for a, c in zip(answers, cases)], 1.0)
    kinds = {c.kind for c in cases}
    assert set(row["correct_by_kind"]) == kinds and len(kinds) > 1
    assert row["correct_by_kind"]["colour"] == 1.0
    assert all(share == 0.0 for kind, share in row["correct_by_kind"].items() if kind != "colour")
    assert "reasoning correct by kind: colour 100.0%" in format_rows({"reasoning": row})


def test_the_beams_are_asked_with_the_settings_the_answer_was_made_with():
    from cogniedit.decompose.parser import decomposition_from_answer
    from cogniedit.decompose.settings import DecomposeSettings
    from cogniedit.shapes.decomposer.beams import check_with_beams

    class Beams:
        def __init__(self):
            self.settings = []

        def beam_answers(self, messages, image, settings, beams):
            self.settings.append(settings)
            return []

    unreadable = decomposition_from_answer("<info>a scene</info><answer>make it nicer</answer>", "make it nicer")
    image, backend, settings = np.zeros((48, 48, 3), np.uint8), Beams(), DecomposeSettings(max_new_tokens=99)
    _, choice = check_with_beams(unreadable, image, "make it nicer", backend, settings=settings)
    assert choice == "fallback" and backend.settings == [settings]
    check_with_beams(unreadable, image, "make it nicer", backend)
    assert backend.settings[1] == DecomposeSettings()
