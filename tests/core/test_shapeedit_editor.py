"""The ShapeEdit editor: real architecture, exact latent, real token ids, clear weight errors, deterministic edits."""

import numpy as np
import pytest
import torch

from cogniedit.shapes.editor import (
    DEFAULT_PATH, EditorConfig, EditorWeightsError, ShapeEditor, load_default_editor, load_editor, new_editor,
    save_editor,
)
from cogniedit.shapes.editor import latent as L
from cogniedit.shapes.editor.text import TextVocab
from cogniedit.text.tokenizer import load_qwen25_tokenizer

TEXTS = ["make the purple circle red", "move the square to the left", "add two yellow triangles", "remove one circle"]


def tiny_editor(seed=0):
    vocab = TextVocab.from_texts(TEXTS)
    config = EditorConfig(num_layers=1, num_attention_heads=2, text_layers=1, text_vocab_rows=vocab.size)
    editor = new_editor(config, vocab, seed=seed)
    torch.nn.init.normal_(editor.transformer.proj_out.weight, std=0.02)  # zero-init would hide the image path
    return editor


def flat_images(n=3, seed=0):
    rng = np.random.default_rng(seed)
    imgs = np.full((n, 48, 48, 3), 245, np.uint8)
    for i in range(n):
        r, c = rng.integers(0, 3, 2)
        imgs[i, r * 16 + 3:r * 16 + 13, c * 16 + 3:c * 16 + 13] = rng.integers(0, 255, 3)
    return imgs


def test_model_is_the_diffusers_qwen_image_transformer_with_the_documented_config():
    from diffusers import QwenImageTransformer2DModel
    from transformers import Qwen2Model

    editor = tiny_editor()
    assert isinstance(editor, ShapeEditor)
    assert type(editor.transformer) is QwenImageTransformer2DModel
    assert type(editor.text_encoder) is Qwen2Model
    cfg = editor.transformer.config
    assert (cfg.in_channels, cfg.out_channels, cfg.patch_size) == (192, 48, 2)
    assert cfg.joint_attention_dim == editor.text_encoder.config.hidden_size
    assert sum(cfg.axes_dims_rope) == cfg.attention_head_dim
    keys = editor.state_dict().keys()
    # ComfyUI's QwenImage detection needs txt_norm.weight; img_in gives in_channels.
    assert {"transformer.txt_norm.weight", "transformer.img_in.weight", "transformer.proj_out.weight",
            "transformer.transformer_blocks.0.attn.add_q_proj.weight", "vocab.real_ids"} <= set(keys)
    assert editor.text_encoder.embed_tokens.num_embeddings == editor.vocab.size


def test_forward_backward_reaches_transformer_and_text_encoder():
    editor = tiny_editor()
    imgs = flat_images(2)
    ref = editor.image_to_latent(imgs)
    x = torch.randn_like(ref)
    v = editor.velocity(x, torch.tensor([0.7, 0.3]), TEXTS[:2], ref)
    assert v.shape == ref.shape == (2, 36, 192)
    v.pow(2).mean().backward()
    assert editor.transformer.img_in.weight.grad.abs().sum() > 0
    assert editor.text_encoder.embed_tokens.weight.grad.abs().sum() > 0


def test_latent_round_trips_images_exactly_and_packs_like_diffusers():
    from diffusers import QwenImageEditPipeline

    imgs = np.random.default_rng(0).integers(0, 256, (3, 48, 48, 3), dtype=np.uint8)
    tokens = L.images_to_tokens(imgs)
    assert tokens.shape == (3, 36, 192)
    assert np.array_equal(L.tokens_to_images(tokens), imgs)
    latent = L.image_to_latent(imgs)
    assert torch.equal(L.pack_latent(latent), QwenImageEditPipeline._pack_latents(latent, 3, 48, 12, 12))
    # token 0 is exactly the top-left 8x8 pixel patch
    assert sorted(tokens[0, 0].tolist()) == sorted((imgs[0, :8, :8].astype(np.float32) / 127.5 - 1).ravel().tolist())
    with pytest.raises(ValueError, match="render_scene"):
        L.image_to_latent(np.zeros((1, 32, 32, 3), np.uint8))


def test_text_positions_are_real_qwen25_ids():
    editor = tiny_editor()
    tok = load_qwen25_tokenizer()
    ids, mask = editor.tokenize(["make the purple circle red", "remove one circle"])
    instr = ids[0, editor.prefix_len:]
    assert instr[:5].tolist() == [6927, 279, 24932, 12671, 2518]  # make, the, purple, circle, red
    assert instr[:5].tolist() == tok("make the purple circle red")["input_ids"]
    assert instr[5:10].tolist() == tok("<|im_end|>\n<|im_start|>assistant\n")["input_ids"]
    emb, text_mask = editor.encode_ids(ids, mask)
    assert emb.shape[1] == ids.shape[1] - editor.prefix_len
    assert text_mask[1].sum() == len(tok("remove one circle")["input_ids"]) + 5
    rows = editor.vocab(torch.tensor([6927, 2518, 99999]))
    assert rows[0] > 0 and rows[1] > 0 and rows[0] != rows[1] and rows[2] == 0  # unknown id -> UNK row


def test_save_load_round_trip_and_clear_errors(tmp_path):
    editor = tiny_editor()
    path = save_editor(editor, tmp_path / "e.safetensors", {"seed": "0"})
    loaded = load_editor(path)
    imgs = flat_images(2)
    a = editor.edit(imgs, TEXTS[:2], seed=3, steps=2)
    assert np.array_equal(a, loaded.edit(imgs, TEXTS[:2], seed=3, steps=2))
    assert loaded.metadata["seed"] == "0" and "config" in loaded.metadata
    with pytest.raises(EditorWeightsError, match="cogniedit.shapes.editor.train"):
        load_editor(tmp_path / "missing.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(EditorWeightsError, match="retrain"):
        load_editor(corrupt)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(EditorWeightsError, match="not a ShapeEdit editor file"):
        load_editor(foreign)


def test_shipped_weights_load_and_edit_deterministically():
    assert DEFAULT_PATH.is_file(), "shipped weights missing: python -m cogniedit.shapes.editor.train --out " + str(DEFAULT_PATH)
    assert DEFAULT_PATH.stat().st_size < 30 * 2**20
    editor = load_default_editor(steps=4, focus=None, decompose=False)
    for key in ("config", "training_command", "seed", "version"):
        assert key in editor.metadata
    imgs = flat_images(3, seed=1)
    instr = ["make the red square blue", "move the square to the left", "add one green circle"]
    a = editor.edit(imgs, instr, seed=7)
    b = editor.edit(imgs, instr, seed=7)
    assert a.dtype == np.uint8 and a.shape == imgs.shape
    assert np.array_equal(a, b)


def test_the_stored_training_command_names_no_machine_folder(tmp_path):
    from cogniedit.shapes.editor.train import portable_arg

    assert portable_arg(str(tmp_path / "editor.safetensors")) == "editor.safetensors"
    assert portable_arg("out/editor.safetensors") == "out/editor.safetensors"
    assert portable_arg("--steps") == "--steps"


def test_comfy_latent_is_the_tokens_in_their_own_order_so_seeded_noise_agrees():
    from cogniedit.sampling.trajectory import initial_noise

    tokens = L.images_to_tokens(np.random.default_rng(0).integers(0, 256, (2, 48, 48, 3), dtype=np.uint8))
    latent = L.tokens_as_comfy_latent(tokens)
    assert latent.shape == (2, 48, 12, 12) and torch.equal(L.comfy_latent_as_tokens(latent), tokens)
    # ComfyUI seeds one randn of the LATENT's shape (comfy.sample.prepare_noise), the editor one of the tokens'
    generator = torch.Generator().manual_seed(11)
    comfy_noise = torch.randn((1, 48, 12, 12), generator=generator)
    assert torch.equal(L.comfy_latent_as_tokens(comfy_noise), initial_noise((1, 36, 192), 11))
    assert not torch.equal(L.pack_latent(comfy_noise), initial_noise((1, 36, 192), 11))  # a spatial latent would not
    with pytest.raises(ValueError, match=r"48x48 scene"):
        L.comfy_latent_as_tokens(torch.zeros(1, 16, 12, 12))
