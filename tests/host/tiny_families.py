"""Tiny FLUX.2, LongCat-Image and Mage-Flow models with ComfyUI's own classes, and text encoders whose output shows
which token sits at each conditioning position (for the host tests and bench/bench_focus_node.py).

* ``tiny_flux2``: a FLUX.2 DiT (hidden 128 = one 128-wide head, 1 double + 1 single block) through ComfyUI's real
  detection and loader; ``text_width`` 7680 is klein 4B's (3 stacked Qwen3-4B layers), 15360 dev's (Mistral-3);
* ``tiny_flux2_dev_clip``: FLUX.2 dev's text encoder as a real ``comfy.sd.CLIP`` (Flux2Tokenizer with a tekken blob,
  Mistral3_24BModel tiny and token-revealing);
* ``tiny_longcat``: LongCat-Image (the Flux DiT with LongCat's config class), narrow text width;
* ``tiny_mage_flow``: Mage-Flow (its own transformer with Qwen-Image blocks), narrow;
* ``token_revealing_te``: one of ComfyUI's text-encoder classes (Flux2 klein, LongCat, Mage-Flow: their real
  template cuts and padding) on a tiny random llama whose attention and MLP outputs are zero, so each position's
  hidden state is its token's embedding: ``token_ids_of`` reads the ids back from a conditioning.
"""

from __future__ import annotations

import torch

from comfy_inprocess import pack_module, random_state_dict

TINY_TEXT = 16  # the tiny encoders' hidden size
KLEIN_WIDTH = 7680
DEV_WIDTH = 15360  # FLUX.2 dev: 3 stacked Mistral-3 24B layers of 5120
LONGCAT_WIDTH = 3584  # Qwen2.5-VL-7B's hidden size
T5_WIDTH, T5_TOKENS = 4096, 256  # Flux's T5-XXL: hidden size, and the length ComfyUI pads its tokens to (min_length)
CLIP_L_WIDTH = 768  # Flux's pooled CLIP-L output (vector_in)


def model_patcher(comfy, base):
    return comfy.model_patcher.ModelPatcher(base, load_device=comfy.mm.get_torch_device(),
                                            offload_device=comfy.mm.unet_offload_device())


def flux_dit(comfy, text_width: int = T5_WIDTH, pooled_width: int = CLIP_L_WIDTH):
    """A tiny Flux.1 dev / Kontext DiT module on the meta device (hidden 128, 1 double + 1 single block, guidance
    embedding): at the real widths ComfyUI's detector loads its file as Flux, as it does the Kontext file."""
    from comfy.ldm.flux.model import Flux

    return Flux(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=pooled_width, context_in_dim=text_width,
                hidden_size=128, mlp_ratio=4.0, num_heads=1, depth=1, depth_single_blocks=1, axes_dim=[16, 56, 56],
                theta=10000, patch_size=2, qkv_bias=True, guidance_embed=True, txt_ids_dims=[],
                operations=comfy.ops.disable_weight_init, device="meta")


def flux2_dit(comfy, text_width: int = KLEIN_WIDTH):
    """The tiny FLUX.2 DiT module on the meta device (for random_state_dict; also written as a file for the tiny
    workflows)."""
    from comfy.ldm.flux.model import Flux

    return Flux(image_model="flux2", in_channels=128, out_channels=128, vec_in_dim=None, context_in_dim=text_width,
                hidden_size=128, mlp_ratio=3.0, num_heads=1, depth=1, depth_single_blocks=1, axes_dim=[32, 32, 32, 32],
                theta=2000, patch_size=1, qkv_bias=False, guidance_embed=False, txt_ids_dims=[3],
                global_modulation=True, mlp_silu_act=True, ops_bias=False, default_ref_method="index",
                ref_index_scale=10.0, operations=comfy.ops.disable_weight_init, device="meta")


def tiny_flux2(comfy, text_width: int = KLEIN_WIDTH, seed: int = 0):
    """FLUX.2 through ComfyUI's detection (flux2: global modulation, index references, 128 latent channels)."""
    return comfy.sd.load_diffusion_model_state_dict(random_state_dict(flux2_dit(comfy, text_width), seed))


def from_config(comfy, config_class, unet_config, module, seed):
    config = config_class(unet_config)
    config.set_inference_dtype(torch.float32, None)
    state = random_state_dict(module, seed)
    base = config.get_model(state, "")
    base.load_model_weights(state, "")
    return model_patcher(comfy, base)


def longcat_unet_config(text_width: int) -> dict:
    return dict(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=None, context_in_dim=text_width,
                hidden_size=128, mlp_ratio=4.0, num_heads=1, depth=1, depth_single_blocks=1, axes_dim=[16, 56, 56],
                theta=10000, patch_size=2, qkv_bias=True, guidance_embed=False, txt_ids_dims=[1, 2])


def longcat_dit(comfy, text_width: int = LONGCAT_WIDTH):
    """The tiny LongCat-Image DiT module on the meta device; at text width 3584 ComfyUI's detector loads its file
    as LongCat-Image (the tiny workflows' file)."""
    from comfy.ldm.flux.model import Flux

    kwargs = {k: v for k, v in longcat_unet_config(text_width).items() if k != "image_model"}
    return Flux(**kwargs, operations=comfy.ops.disable_weight_init, device="meta")


def tiny_longcat(comfy, text_width: int = 3 * TINY_TEXT, seed: int = 0):
    """LongCat-Image(-Edit): ComfyUI's LongCatImage config and model classes (the detector pins text width 3584)."""
    return from_config(comfy, comfy.supported_models.LongCatImage, longcat_unet_config(text_width),
                       longcat_dit(comfy, text_width), seed)


def tiny_mage_flow(comfy, text_width: int = TINY_TEXT, seed: int = 0):
    """Mage-Flow(-Edit): ComfyUI's MageFlow config, model and transformer classes, narrow."""
    from comfy.ldm.mage_flow.model import MageFlowTransformer2DModel

    unet_config = dict(image_model="mage_flow", in_channels=128, out_channels=128, num_layers=2, attention_head_dim=32,
                       num_attention_heads=2, joint_attention_dim=text_width, axes_dims_rope=(8, 12, 12))
    kwargs = {k: v for k, v in unet_config.items() if k != "image_model"}
    module = MageFlowTransformer2DModel(**kwargs, operations=comfy.ops.disable_weight_init, device="meta")
    return from_config(comfy, comfy.supported_models.MageFlow, unet_config, module, seed)


# ---------------------------------------------------------------- text encoders that show their tokens

TINY_LLAMA = dict(hidden_size=TINY_TEXT, intermediate_size=32, num_attention_heads=1, num_key_value_heads=1)


def tiny_clip(comfy, family: str):
    """A real comfy.sd.CLIP of ``family`` ("longcat", "mage_flow"): ComfyUI's tokenizer and text-encoder classes on
    the tiny text-only llama of ``token_revealing_te`` (images given to it are dropped: it has no vision tower)."""
    import comfy.supported_models_base

    tokenizer, te = token_revealing_te(comfy, family)
    target = comfy.supported_models_base.ClipTarget(type(tokenizer), type(te))
    clip = comfy.sd.CLIP(target=target, model_options=te.tiny_options)
    clip.cond_stage_model.load_state_dict(te.state_dict())
    return clip


def token_revealing_te(comfy, family: str):
    """(tokenizer, text encoder) of ComfyUI's classes for ``family`` ("flux2_klein", "longcat", "mage_flow"), the
    encoder on a tiny random Qwen3 llama (ComfyUI's class) with zero attention and MLP outputs."""
    import comfy.sd1_clip as sd1_clip
    import comfy.text_encoders.flux as flux_te
    import comfy.text_encoders.llama as llama
    import comfy.text_encoders.longcat_image as longcat_te
    import comfy.text_encoders.mage_flow as mage_te

    if family == "flux2_klein":  # the real Qwen3_4BModel (layers 9, 18, 27 stacked) on a 28-layer tiny config
        tokenizer = flux_te.KleinTokenizer()
        options = {"qwen3_4b_model_config": dict(TINY_LLAMA, num_hidden_layers=28)}
        te = flux_te.klein_te(model_type="qwen3_4b")(model_options=options)
    else:
        def tiny_clip(**kwargs):  # text only: the real encoders' vision towers are full size
            return sd1_clip.SDClipModel(layer="last", textmodel_json_config=dict(TINY_LLAMA, num_hidden_layers=2),
                                        special_tokens={"pad": 151643}, layer_norm_hidden_state=False,
                                        model_class=llama.Qwen3_4B, enable_attention_masks=True,
                                        return_attention_masks=True, **kwargs)
        if family == "longcat":
            options = {"qwen25_7b_class": tiny_clip}
            tokenizer, te = longcat_te.LongCatImageTokenizer(), longcat_te.LongCatImageTEModel(model_options=options)
        else:
            options = {"qwen3vl_4b_class": tiny_clip}
            tokenizer, te = mage_te.MageFlowTokenizer(), mage_te.MageFlowTEModel(model_options=options)
    reveal_tokens(te)
    te.tiny_options = options  # what builds the same encoder again (tiny_clip)
    return tokenizer, te.eval()


def reveal_tokens(te) -> None:
    """Random weights with zero attention and MLP outputs: each layer adds nothing, so every hidden state (and each
    stacked layer's output) is its token's embedding."""
    state = random_state_dict(te, seed=3, std=1.0)
    for key in state:
        if key.endswith(("o_proj.weight", "down_proj.weight")):
            state[key].zero_()
    te.load_state_dict(state)


def tiny_flux2_dev_clip(comfy, tekken_blob: bytes):
    """FLUX.2 dev's text encoder as ComfyUI's loader builds it: ``comfy.sd.CLIP`` around ``Flux2Tokenizer`` (the
    blob in ``tokenizer_data["tekken_model"]``, a uint8 tensor as read from the text-encoder file) and ``flux2_te``'s
    Mistral3_24BModel on a tiny config (layers 10, 20, 30 stacked: 31 layers), token-revealing. Its conditioning is
    ``3 * TINY_TEXT`` wide: ``dev_width`` pads it to the DiT's 15360."""
    import comfy.supported_models_base
    import comfy.text_encoders.flux as flux_te

    options = {"mistral3_24b_model_config": dict(TINY_LLAMA, num_hidden_layers=31), "dtype": torch.float32}
    target = comfy.supported_models_base.ClipTarget(flux_te.Flux2Tokenizer, flux_te.flux2_te())
    tekken = torch.frombuffer(bytearray(tekken_blob), dtype=torch.uint8)
    clip = comfy.sd.CLIP(target=target, tokenizer_data={"tekken_model": tekken}, model_options=options)
    reveal_tokens(clip.cond_stage_model)
    clip.cond_stage_model.eval()
    return clip


def dev_width(conditioning, width: int = DEV_WIDTH):
    """A tiny dev conditioning zero-padded in its features to the DiT's text width (positions untouched)."""
    return [[torch.nn.functional.pad(c, (0, width - c.shape[-1])), dict(o)] for c, o in conditioning]


def encode(tokenizer, te, text: str, **tokenize_options):
    """[1, L, D] conditioning as CLIPTextEncode would produce it (tokenize_with_weights + encode_token_weights);
    ``images=[...]`` as the edit nodes pass them (the tiny encoder drops the image tokens, the template stays)."""
    with torch.no_grad():
        out = te.encode_token_weights(tokenizer.tokenize_with_weights(text, **tokenize_options))
    return out[0].float()


def token_ids_of(te, context: torch.Tensor) -> list[int | None]:
    """The token id at each position of a conditioning made by ``token_revealing_te`` (None for padding rows the
    model added: all zero)."""
    embed = next(module for name, module in te.named_modules() if name.endswith("embed_tokens")).weight.float()
    rows = context[0, :, :embed.shape[1]]
    unit = torch.nn.functional.normalize
    ids = (unit(rows, dim=-1) @ unit(embed, dim=-1).T).argmax(-1).tolist()
    return [None if bool((row == 0).all()) else i for row, i in zip(rows, ids)]


def sample(comfy, model, case, cfg=2.0, steps=3):
    """KSampler latent of ``case`` (namespace: positive, negative, latent), seed 7, euler/simple."""
    return comfy.nodes.KSampler().sample(model, 7, steps, cfg, "euler", "simple", case.positive, case.negative,
                                         case.latent)[0]["samples"]


def received_contexts(comfy, model, case):
    """The text conditioning each DiT forward received while sampling (a test wrapper on a clone)."""
    seen = []
    probe = model.clone()

    def record(executor, *args, **kwargs):
        seen.append(args[2] if len(args) > 2 else kwargs["context"])
        return executor(*args, **kwargs)

    probe.add_wrapper_with_key(comfy.comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_record", record)
    sample(comfy, probe, case, cfg=1.0, steps=1)  # cfg 1: the cond pass alone
    return seen


def first_step_phrase_mass(comfy, focus, model, case, plan) -> float:
    """Mean attention mass of the image tokens on the plan's phrase tokens at the first sampling step, as the
    pack's FocusProbe records it on the plan's patched clone of ``model``."""
    probe = pack_module("cogniedit.focus.override").FocusProbe()
    sample(comfy, focus.apply_plan(model, plan, probe), case)
    first = probe.records[0]["sigma"]
    values = [m for r in probe.records if r["sigma"] == first for m in r["mass"]]
    return sum(values) / len(values)


def assert_focus_off_sampling_is_the_core_graph(comfy, sampler, model, case, off, focused, on):
    """CogniEdit Sampler (source as a LATENT: the references the edit nodes attached are kept, none added) and
    Guider with ``off`` (directives of Token Focus at strength 0) = KSampler / CFGGuider on the same conditioning;
    the Guider with ``on`` = CFGGuider on ``focused``, the focused MODEL. ``case``: positive, negative, latent."""
    source = {"samples": case.positive[0][1]["reference_latents"][0]}
    ours, report = sampler.CogniEditSampler.execute(model, case.positive, case.negative, 5, 3, 2.0, 1.0, 0.0,
                                                    source_latent=source, directives=off).args
    assert "positive already there; negative already there" in report, report
    (expected,) = comfy.nodes.KSampler().sample(model, 5, 3, 2.0, "euler", "simple", case.positive, case.negative,
                                                source)
    assert torch.equal(ours["samples"], expected["samples"])
    ncs = comfy.ncs

    def run(guider):
        return ncs.SamplerCustomAdvanced.execute(
            ncs.RandomNoise.execute(3).args[0], guider, ncs.KSamplerSelect.execute("euler").args[0],
            ncs.BasicScheduler.execute(model, "simple", 2, 1.0).args[0], case.latent).args[0]["samples"]

    for directives, core_model in ((off, model), (on, focused)):
        guider = sampler.CogniEditGuider.execute(model, case.positive, case.negative, 2.0, directives).args[0]
        core = ncs.CFGGuider.execute(core_model, case.positive, case.negative, 2.0).args[0]
        assert torch.equal(run(guider), run(core))


def tiny_joyimage(comfy, seed: int = 0):
    """JoyImage (text after the image in its joint sequence): for the refusal."""
    from comfy.ldm.joyimage.model import JoyImageTransformer3DModel

    unet_config = dict(image_model="joyimage", in_channels=16, hidden_size=128, num_attention_heads=1,
                       text_dim=TINY_TEXT, num_layers=1)
    kwargs = {k: v for k, v in unet_config.items() if k != "image_model"}
    module = JoyImageTransformer3DModel(**kwargs, rope_dim_list=[16, 56, 56], theta=10000,
                                        operations=comfy.ops.disable_weight_init, device="meta")
    return from_config(comfy, comfy.supported_models.JoyImage, unet_config, module, seed)
