"""CogniEdit around the ShapeEdit editor: decompose, training-free focus processor, learned focus, LoRA merge.

Tiny random editors built with the editor package's own config API (real diffusers Qwen-Image DiT, real Qwen2 text
encoder, real Qwen2.5 tokenizer)."""

import numpy as np
import pytest
import torch

from cogniedit.decompose import DecompositionCache
from cogniedit.focus.learned import LearnedFocus
from cogniedit.focus.weights_file import base_model_hash, save_focus_weights
from cogniedit.focus.diffusers_adapter import FocusAttnProcessor, FocusState
from cogniedit.shapes.cogniedit_editor import CogniEditEditor, load_cogniedit_editor, merge_lora
from cogniedit.shapes.editor import EditorConfig, new_editor
from cogniedit.shapes.editor.text import TextVocab

TEXTS = ["make the purple circle red", "move the left square to the right", "add two yellow triangles",
         "remove the blue square"]


@pytest.fixture(scope="module")
def editor():
    torch.manual_seed(0)
    vocab = TextVocab.from_texts(TEXTS + ["now"])
    config = EditorConfig(num_layers=2, num_attention_heads=2, text_layers=1, text_vocab_rows=vocab.size)
    model = new_editor(config, vocab, seed=0)
    torch.nn.init.normal_(model.transformer.proj_out.weight, std=0.05)  # zero-init would hide the attention path
    return model.eval()


def images(n=4, seed=0):
    rng = np.random.default_rng(seed)
    imgs = np.full((n, 48, 48, 3), 240, np.uint8)
    for i in range(n):
        for _ in range(2):
            r, c = rng.integers(0, 3, 2)
            imgs[i, r * 16 + 2:r * 16 + 14, c * 16 + 2:c * 16 + 14] = rng.integers(0, 255, 3)
    return imgs


def processors(model):
    return dict(model.transformer.attn_processors)


def edit_base(model, imgs, texts, seed=3):
    return model.edit(imgs, list(texts), seed=seed, steps=3)


def wrapped(model, **options):
    e = load_cogniedit_editor(base=model, **options)
    e.steps = 3
    return e


def test_strength_zero_is_bit_identical_and_processors_are_restored(editor):
    imgs, before = images(), processors(editor)
    base = edit_base(editor, imgs, TEXTS)
    focused = wrapped(editor, focus="training_free", focus_strength=0.0)
    focused.probe = True  # even with the probe running, strength 0 must take the exact parent path
    out = focused.edit(imgs, TEXTS, seed=3)
    assert np.array_equal(out, base)
    assert focused.last_records and all(r["mass"] == r["mass_base"] for r in focused.last_records)
    after = processors(editor)
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)


def test_nonzero_strength_raises_attention_on_focused_tokens_and_changes_output(editor):
    imgs = images()
    base = edit_base(editor, imgs, TEXTS)
    focused = wrapped(editor, focus="training_free", focus_strength=3.0)
    focused.probe = True
    out = focused.edit(imgs, TEXTS, seed=3)
    assert not np.array_equal(out, base)
    records = focused.last_records
    assert len(records) == 3 * 2  # steps x blocks
    for r in records:
        for m0, m1 in zip(r["mass_base"], r["mass"]):
            assert m1 > m0 + 1e-4  # every sample has a colour/position/count phrase
            # per query row the focused odds grow by exactly (1 + s), so the mean mass grows by at most (1 + s)
            assert m1 <= 4.0 * m0 + 1e-6


def test_spans_point_at_the_phrase_tokens_the_editor_encodes(editor):
    focused = wrapped(editor, focus="training_free", focus_strength=1.0)
    focused.edit(images(1), ["move the left square to the right"], seed=0)
    ids, _ = editor.tokenize(["move the left square to the right"])
    tok = __import__("cogniedit.shapes.editor.text", fromlist=["tokenizer"]).tokenizer()
    spans = focused.last_spans[0]
    words = {s.phrase: tok.decode(ids[0, editor.prefix_len + s.start: editor.prefix_len + s.end]).strip()
             for s in spans.spans}
    assert words == {"left": "left", "to the right": "to the right"}  # shape words are not focused by default


def test_blocks_option_limits_the_bias_to_the_chosen_blocks(editor):
    focused = wrapped(editor, focus="training_free", focus_strength=2.0, focus_blocks="1")
    focused.probe = True
    focused.edit(images(2), TEXTS[:2], seed=1)
    by_block = {b: [r for r in focused.last_records if r["block_index"] == b] for b in (0, 1)}
    assert all(r["mass"] == r["mass_base"] for r in by_block[0])
    assert all(m1 > m0 for r in by_block[1] for m0, m1 in zip(r["mass_base"], r["mass"]))


def test_schedule_gates_focus_by_sampling_progress(editor):
    focused = wrapped(editor, focus="training_free", focus_strength=2.0, focus_start=0.0, focus_end=0.3)
    focused.probe = True
    focused.edit(images(1), TEXTS[:1], seed=1)
    biased = sorted({r["sigma"] for r in focused.last_records if r["mass"] != r["mass_base"]})
    assert biased == [1.0]  # 3 steps: only the first (progress 0) is inside [0, 0.3)


def test_focus_path_computes_the_same_attention_as_diffusers_without_bias(editor):
    """The processor's own q/k/v + attention (used when the bias is on) equals the parent's with no bias."""
    attn = editor.transformer.transformer_blocks[0].attn
    torch.manual_seed(1)
    d = editor.transformer.inner_dim
    img, txt = torch.randn(2, 72, d), torch.randn(2, 9, d)
    txt_mask = torch.ones(2, 9, dtype=torch.bool)
    txt_mask[1, 6:] = False
    proc = FocusAttnProcessor(0, FocusState(None, 0.0))
    expected = proc(attn, img, txt, txt_mask)  # inactive: the diffusers parent path
    q, k, v = proc._joint_qkv(attn, img, txt, None)
    key_mask = torch.cat([txt_mask, torch.ones(2, 72, dtype=torch.bool)], 1)[:, None, None, :]
    from cogniedit.focus.bias import combine_masks

    got = proc._attend(attn, q, k, v, combine_masks(None, key_mask, q.dtype), 9)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_processors_restored_after_an_error(editor):
    before = processors(editor)
    focused = wrapped(editor, focus="training_free", focus_strength=1.0)
    with pytest.raises(ValueError, match="images but"):
        focused.model.edit(images(2), TEXTS[:3], seed=0)  # sanity: the editor itself raises on a mismatch
    with pytest.raises(ValueError, match="images but"):
        focused.edit(images(2), TEXTS[:3], seed=0)
    after = processors(editor)
    assert all(after[k] is before[k] for k in before)


class ScriptedBackend:
    """A decomposition backend answering in the paper's tag format (stands in for an MLLM's text)."""

    name, uses_model = "scripted", True

    def identity(self):
        return {"backend": self.name}

    def generate(self, messages, image, settings):
        return ("<info>shapes</info><think>be explicit</think><answer>now make the purple circle red</answer>"
                "<object>the purple circle</object>")


def test_decompose_on_feeds_the_enriched_instruction_to_the_editor(editor, monkeypatch):
    seen = []
    real_tokenize = editor.tokenize
    monkeypatch.setattr(editor, "tokenize", lambda texts: (seen.extend(texts), real_tokenize(texts))[1])
    imgs = images(1)
    decomposing = wrapped(editor, decompose="on", decomposer=ScriptedBackend(), decompose_check="off")
    out = decomposing.edit(imgs, ["make the purple circle red"], seed=2)
    assert seen == ["now make the purple circle red"] == decomposing.last_instructions
    assert np.array_equal(out, edit_base(editor, imgs, ["now make the purple circle red"], seed=2))
    seen.clear()
    rules = wrapped(editor, decompose=True)  # the rules backend keeps the user's wording
    rules.edit(imgs, ["make the purple circle red"], seed=2)
    assert seen == ["make the purple circle red"]


class CountingBackend(ScriptedBackend):
    def __init__(self):
        self.calls = 0

    def generate(self, messages, image, settings):
        self.calls += 1
        return super().generate(messages, image, settings)


def test_a_decompose_cache_folder_asks_the_model_once_for_every_arm(editor, tmp_path):
    imgs, texts = images(2), [TEXTS[0]] * 2  # two scenes: two answers to keep
    first, second = CountingBackend(), CountingBackend()
    arm = wrapped(editor, decompose="on", decomposer=first, decompose_check="off", decompose_cache=tmp_path)
    out = arm.edit(imgs, texts, seed=1)
    assert first.calls == 2 and len(list(tmp_path.glob("*.json"))) == 2
    other_arm = wrapped(editor, decompose="on", decomposer=second, decompose_check="off", decompose_cache=tmp_path)
    assert np.array_equal(other_arm.edit(imgs, texts, seed=1), out)
    assert second.calls == 0 and other_arm.last_instructions == ["now make the purple circle red"] * 2


def test_the_decomposer_report_reads_the_answers_an_arm_cached(tmp_path):
    from cogniedit.shapes.cases import generate_cases
    from cogniedit.shapes.decomposer.evaluate import decompose_cases

    cases = generate_cases(2, seed=5, phrasing="paraphrase")
    first, second = CountingBackend(), CountingBackend()
    asked, _ = decompose_cases(cases, first, cache=DecompositionCache(directory=tmp_path))
    read, _ = decompose_cases(cases, second, cache=DecompositionCache(directory=tmp_path))
    assert first.calls == 2 and second.calls == 0  # the report of a cached run generates nothing again
    assert [d.to_dict() for d in read] == [d.to_dict() for d in asked]


def test_a_model_folder_backend_keys_answers_by_its_folders_files(tmp_path):
    from cogniedit.decompose import TransformersVLMBackend
    from cogniedit.shapes.decomposer import TimedBackend

    (tmp_path / "model.safetensors").write_bytes(b"1")
    backend = TimedBackend(TransformersVLMBackend(model_path=str(tmp_path)))  # as the shipped decomposer's
    before = backend.identity()
    assert before["backend"] == "transformers_vlm" and before["files"][0][:2] == ["model.safetensors", 1]
    (tmp_path / "model.safetensors").write_bytes(b"22")  # retrained: a disk cache must not answer for it
    assert backend.identity() != before


def write_lora(editor, path, b_std):
    import copy

    from training.lora import inject_lora, save_lora_file

    transformer = copy.deepcopy(editor.transformer)
    layers = inject_lora(transformer, rank=2, alpha=4.0, seed=0)
    with torch.no_grad():
        for layer in layers.values():
            if b_std:
                layer.lora_B.weight.normal_(std=b_std)
    save_lora_file(path, transformer)
    return layers


def test_zero_lora_changes_nothing_random_lora_changes_output(editor, tmp_path):
    imgs = images(2)
    base = edit_base(editor, imgs, TEXTS[:2])
    write_lora(editor, tmp_path / "zero.safetensors", 0.0)
    zero = wrapped(editor, lora=str(tmp_path / "zero.safetensors"))
    assert zero.model is not editor
    assert np.array_equal(zero.edit(imgs, TEXTS[:2], seed=3), base)

    layers = write_lora(editor, tmp_path / "rand.safetensors", 0.5)
    rand = wrapped(editor, lora=str(tmp_path / "rand.safetensors"))
    assert not np.array_equal(rand.edit(imgs, TEXTS[:2], seed=3), base)
    from training.lora import merged_weight_delta

    name, layer = next(iter(layers.items()))
    merged = rand.model.transformer.get_submodule(name).weight
    torch.testing.assert_close(merged, editor.transformer.get_submodule(name).weight + merged_weight_delta(layer))
    assert np.array_equal(edit_base(editor, imgs, TEXTS[:2]), base)  # the base editor was not touched


def test_lora_for_another_model_is_refused_with_a_clear_message(editor, tmp_path):
    from safetensors.torch import save_file

    save_file({"diffusion_model.transformer_blocks.9.attn.to_k.lora_A.weight": torch.zeros(2, 128),
               "diffusion_model.transformer_blocks.9.attn.to_k.lora_B.weight": torch.zeros(128, 2)},
              str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="another model"):
        merge_lora(editor.transformer, tmp_path / "other.safetensors")
    with pytest.raises(FileNotFoundError, match="LoRA file"):
        merge_lora(editor.transformer, tmp_path / "missing.safetensors")


def test_learned_focus_file_rewrites_text_and_biases_attention(editor, tmp_path):
    torch.manual_seed(0)
    module = LearnedFocus.for_model(editor.transformer, blocks="last:1", xi=2, window=8)
    with torch.no_grad():
        module.soft_tokens.normal_(std=1.0)
    path = save_focus_weights(tmp_path / "focus.safetensors", module,
                              {"family": "shapeedit", "base_hash": base_model_hash(editor.transformer)})
    imgs, before = images(2), processors(editor)
    base = edit_base(editor, imgs, TEXTS[:2])
    learned = wrapped(editor, focus="learned", focus_weights=str(path), focus_strength=2.0)
    learned.probe = True
    out = learned.edit(imgs, TEXTS[:2], seed=3)
    assert not np.array_equal(out, base)
    biased = [r for r in learned.last_records if r["mass"] != r["mass_base"]]
    assert biased and {r["block_index"] for r in biased} == {1}
    assert all(processors(editor)[k] is before[k] for k in before)
    assert not editor.transformer.transformer_blocks[1]._forward_pre_hooks  # hooks removed
    with pytest.raises(ValueError, match="focus_weights"):
        wrapped(editor, focus="learned")


def test_bad_options_are_refused(editor):
    with pytest.raises(ValueError, match="focus must be"):
        CogniEditEditor(editor, focus="sometimes")
    with pytest.raises(ValueError, match="> -1"):
        CogniEditEditor(editor, focus="training_free", focus_strength=-2)
    with pytest.raises(ValueError, match="decompose must be"):
        CogniEditEditor(editor, decompose="maybe")


def test_evaluate_routes_the_default_editor_through_cogniedit_when_asked(editor, tmp_path):
    from cogniedit.shapes import evaluate
    from cogniedit.shapes.editor import DefaultEditor, save_editor

    path = save_editor(editor, tmp_path / "tiny.safetensors")
    routed = evaluate.load_editor("default", [], path=str(path), focus="training_free", focus_strength=2.0)
    assert isinstance(routed, CogniEditEditor) and routed.focus == "training_free" and routed.focus_strength == 2.0
    plain = evaluate.load_editor("default", [], path=str(path), steps=3)
    assert isinstance(plain, DefaultEditor)
