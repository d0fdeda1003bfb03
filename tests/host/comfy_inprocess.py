"""In-process ComfyUI for host tests: bootstrap the real ComfyUI on the CPU, import this pack as a package,
and build tiny random models with ComfyUI's own classes.

Order matters: ComfyUI's root goes first on sys.path (its top-level ``nodes`` module, not this pack's
``nodes/`` folder) and ``args.cpu`` is set before anything imports ``comfy.model_management``.

    comfy = bootstrap(comfyui_root)          # namespace with the ComfyUI modules the tests use
    pack = import_pack()                     # this repository as the package "cogniedit_pack"
    from cogniedit_pack.nodes import sampler
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
PACK_MODULE = "cogniedit_pack"  # the repository folder's name ("main", "comfyui-cogniedit") is no module name


def bootstrap(comfyui_root) -> types.SimpleNamespace:
    """Import ComfyUI in this process (CPU). Returns the modules the tests need."""
    root = str(Path(comfyui_root).resolve())
    if root in sys.path:
        sys.path.remove(root)
    sys.path.insert(0, root)
    from comfy.cli_args import args

    args.cpu = True  # before comfy.model_management is imported: no CUDA on the test machine
    loaded = sys.modules.get("nodes")
    if loaded is not None and not str(getattr(loaded, "__file__", "")).startswith(root):
        del sys.modules["nodes"]  # the pack's nodes/ folder was imported as top-level "nodes"; ComfyUI's wins
    try:
        import comfy.lora
        import comfy.model_management
        import comfy.model_patcher
        import comfy.ops
        import comfy.sample
        import comfy.samplers
        import comfy.sd
        import comfy.supported_models
        import comfy.utils
        import folder_paths
        import latent_preview
        import node_helpers
        import nodes
        from comfy_extras import nodes_custom_sampler, nodes_edit_model
    except ModuleNotFoundError as error:  # a ComfyUI requirement missing from this Python, not a ComfyUI bug
        top = (error.name or "").split(".")[0]
        if (Path(root) / top).exists() or (Path(root) / f"{top}.py").exists():
            raise  # part of ComfyUI itself is missing: a real failure
        import pytest

        pytest.skip(f"ComfyUI's requirement {error.name!r} is not installed in {sys.executable}; run the host "
                    "tier with the Python that runs ComfyUI (.venv/bin/python after scripts/setup_env.sh)")
    if not str(nodes.__file__).startswith(root):
        raise RuntimeError(f"'nodes' resolved to {nodes.__file__}, not ComfyUI's nodes.py under {root}")
    return types.SimpleNamespace(
        root=Path(root), args=args, comfy=sys.modules["comfy"], lora=comfy.lora, mm=comfy.model_management,
        model_patcher=comfy.model_patcher, ops=comfy.ops, sample=comfy.sample, samplers=comfy.samplers,
        sd=comfy.sd, supported_models=comfy.supported_models, utils=comfy.utils, folder_paths=folder_paths,
        latent_preview=latent_preview, node_helpers=node_helpers, nodes=nodes, ncs=nodes_custom_sampler,
        edit=nodes_edit_model,
    )


def import_pack():
    """This repository as the package ``cogniedit_pack`` (as ComfyUI imports it from custom_nodes/)."""
    if PACK_MODULE in sys.modules:
        return sys.modules[PACK_MODULE]
    spec = importlib.util.spec_from_file_location(
        PACK_MODULE, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_MODULE] = module
    spec.loader.exec_module(module)
    return module


def pack_module(name: str):
    """``pack_module("nodes.sampler")`` -> cogniedit_pack.nodes.sampler."""
    import_pack()
    return importlib.import_module(f"{PACK_MODULE}.{name}")


# ---------------------------------------------------------------- tiny random models (real ComfyUI classes)

def random_state_dict(module: torch.nn.Module, seed: int = 0, std: float | None = 0.05) -> dict[str, torch.Tensor]:
    """Every key of ``module`` (built on the meta device) with random values: norms 1, biases 0, weights N(0, std)
    (``std=None``: 1/sqrt(fan_in), for nets without normalisation whose activations would otherwise explode).
    Every key must be present: ComfyUI's disable_weight_init leaves missing weights uninitialised."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in module.state_dict().items():
        if value.numel() == 0:
            state[key] = torch.empty(value.shape)
        elif key.endswith(("norm.weight", "norm.scale", ".scale", "gamma")):
            state[key] = torch.ones(value.shape)
        elif key.endswith(".bias"):
            state[key] = torch.zeros(value.shape)
        else:
            scale = std if std is not None else (value[0].numel() if value.ndim > 1 else value.numel()) ** -0.5
            state[key] = torch.randn(value.shape, generator=generator) * scale
    return state


FLUX_CONTEXT_DIM = 64
FLUX_POOLED_DIM = 64  # = the tiny CLIP-L hidden size: its pooled output feeds vector_in


def tiny_flux_kontext(comfy, seed: int = 0):
    """A Flux dev/Kontext DiT (hidden 128, 1 double + 1 single block) through ComfyUI's real detection/loader."""
    from comfy.ldm.flux.model import Flux

    module = Flux(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=FLUX_POOLED_DIM,
                  context_in_dim=FLUX_CONTEXT_DIM, hidden_size=128, mlp_ratio=4.0, num_heads=1, depth=1,
                  depth_single_blocks=1, axes_dim=[16, 56, 56], theta=10000, patch_size=2, qkv_bias=True,
                  guidance_embed=True, txt_ids_dims=[], operations=comfy.ops.disable_weight_init, device="meta")
    return comfy.sd.load_diffusion_model_state_dict(random_state_dict(module, seed))


QWEN_CONTEXT_DIM = 64
SD_CONTEXT_DIM = 64  # tiny_instructpix2pix's CLIP width
QWEN_CONFIG = {"image_model": "qwen_image", "in_channels": 64, "out_channels": 16, "num_layers": 2,
               "num_attention_heads": 2, "attention_head_dim": 32, "joint_attention_dim": QWEN_CONTEXT_DIM,
               "axes_dims_rope": (8, 12, 12)}


def tiny_qwen_image(comfy, seed: int = 0, state: dict | None = None, unet_config: dict | None = None):
    """A narrow Qwen-Image(-Edit) DiT with the real config/model classes (the detector pins full widths).
    ``state``: its weights (e.g. a diffusers QwenImageTransformer2DModel's state dict: the key names are equal);
    default random. ``unet_config``: another narrow shape (default QWEN_CONFIG)."""
    from comfy.ldm.qwen_image.model import QwenImageTransformer2DModel

    unet_config = dict(unet_config or QWEN_CONFIG)
    if state is None:
        kwargs = {k: v for k, v in unet_config.items() if k != "image_model"}
        module = QwenImageTransformer2DModel(**kwargs, operations=comfy.ops.disable_weight_init, device="meta")
        state = random_state_dict(module, seed)
    config = comfy.supported_models.QwenImage(unet_config)
    config.set_inference_dtype(torch.float32, None)
    base = config.get_model(state, "")
    base.load_model_weights(state, "")
    return comfy.model_patcher.ModelPatcher(base, load_device=comfy.mm.get_torch_device(),
                                            offload_device=comfy.mm.unet_offload_device())


def comfy_model_of_shapeedit_editor(comfy, editor):
    """The ShapeEdit editor's DiT (a narrow diffusers Qwen-Image-Edit transformer) as a ComfyUI Qwen-Image model:
    ComfyUI's own classes, the editor's weights under their (equal) key names."""
    config = editor.config
    transformer = editor.transformer
    unet_config = {"image_model": "qwen_image", "in_channels": transformer.config.in_channels,
                   "out_channels": transformer.config.out_channels, "num_layers": config.num_layers,
                   "num_attention_heads": config.num_attention_heads, "attention_head_dim": config.attention_head_dim,
                   "joint_attention_dim": config.text_hidden, "axes_dims_rope": tuple(config.axes_dims_rope)}
    state = {k: v.detach().clone() for k, v in transformer.state_dict().items()}
    return tiny_qwen_image(comfy, state=state, unet_config=unet_config)


def tiny_diffusers_qwen_image(seed: int = 0):
    """The trainer's view of the same tiny Qwen-Image: diffusers' QwenImageTransformer2DModel, random weights."""
    from diffusers import QwenImageTransformer2DModel

    kwargs = {k: v for k, v in QWEN_CONFIG.items() if k != "image_model"}
    module = QwenImageTransformer2DModel(patch_size=2, **kwargs)
    module.load_state_dict(random_state_dict(module, seed))
    return module


def tiny_taef1_vae(comfy, seed: int = 0):
    """A 16-channel TAESD (ComfyUI's ``taef1`` architecture) as a real comfy.sd.VAE, for Flux latents."""
    from comfy.taesd.taesd import TAESD

    module = TAESD(latent_channels=16)
    state = {k: v for k, v in random_state_dict(module, seed, std=None).items() if k.startswith("taesd_")}
    state["vae_scale"], state["vae_shift"] = torch.tensor(1.0), torch.tensor(0.0)
    return comfy.sd.VAE(sd=state)


def tiny_wan_vae(comfy, seed: int = 0):
    """A Wan 2.1 VAE with dim 16 (Qwen-Image's latent format, 5-D latents) as a real comfy.sd.VAE."""
    from comfy.ldm.wan.vae import WanVAE

    module = WanVAE(dim=16, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                    temperal_downsample=[False, True, True], dropout=0.0)
    return comfy.sd.VAE(sd=random_state_dict(module, seed, std=0.05))


def flux_conditioning(seed: int = 0, tokens: int = 7, guidance: float = 2.5):
    """Random positive and zeroed negative conditioning shaped for tiny_flux_kontext (what CLIP-L/T5 +
    FluxGuidance / ConditioningZeroOut would give)."""
    generator = torch.Generator().manual_seed(seed)
    positive = [[torch.randn(1, tokens, FLUX_CONTEXT_DIM, generator=generator),
                 {"pooled_output": torch.randn(1, FLUX_POOLED_DIM, generator=generator), "guidance": guidance}]]
    negative = [[torch.zeros(1, tokens, FLUX_CONTEXT_DIM),
                 {"pooled_output": torch.zeros(1, FLUX_POOLED_DIM), "guidance": guidance}]]
    return positive, negative


def qwen_conditioning(seed: int = 0, tokens: int = 9):
    """Random positive and negative conditioning shaped for tiny_qwen_image."""
    generator = torch.Generator().manual_seed(seed)
    positive = [[torch.randn(1, tokens, QWEN_CONTEXT_DIM, generator=generator), {}]]
    negative = [[torch.randn(1, 5, QWEN_CONTEXT_DIM, generator=generator) * 0.5, {}]]
    return positive, negative


def tiny_instructpix2pix(comfy, seed: int = 0):
    """A narrow SD1.5 InstructPix2Pix UNet (8 input channels, context 64) with ComfyUI's real config and classes."""
    config = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
              "legacy": False, "adm_in_channels": None, "in_channels": 8, "model_channels": 32, "num_res_blocks": [1],
              "transformer_depth": [1], "transformer_depth_output": [1, 1], "channel_mult": [1],
              "transformer_depth_middle": 1, "use_linear_in_transformer": False, "context_dim": SD_CONTEXT_DIM,
              "num_heads": 2, "num_head_channels": -1, "use_temporal_attention": False,
              "use_temporal_resblock": False}
    model_config = comfy.supported_models.SD15_instructpix2pix(config)
    model_config.set_inference_dtype(torch.float32, None)
    base = model_config.get_model({}, "")
    base.diffusion_model.load_state_dict(random_state_dict(base.diffusion_model, seed=seed, std=0.2))
    return comfy.model_patcher.ModelPatcher(base, load_device=comfy.mm.get_torch_device(),
                                            offload_device=comfy.mm.unet_offload_device())


def sd_conditioning(seed: int = 0, chunks: int = 1):
    """Random CLIP-shaped positive/negative conditioning (77 tokens per chunk) with an IP2P source latent."""
    generator = torch.Generator().manual_seed(seed)
    source = {"concat_latent_image": torch.randn(1, 4, 8, 8, generator=generator)}
    positive = [[torch.randn(1, 77 * chunks, SD_CONTEXT_DIM, generator=generator), dict(source)]]
    negative = [[torch.randn(1, 77, SD_CONTEXT_DIM, generator=generator) * 0.5, dict(source)]]
    return positive, negative


def random_image(height: int, width: int, seed: int = 0, batch: int = 1) -> torch.Tensor:
    """A ComfyUI IMAGE [B, H, W, 3] in 0..1."""
    return torch.rand(batch, height, width, 3, generator=torch.Generator().manual_seed(seed))


def tiny_clip_l(comfy, seed: int = 0):
    """A 1-layer CLIP-L text encoder (hidden 64 = tiny Flux's context and pooled-vector width) with the
    real CLIP tokenizer, as a real comfy.sd.CLIP: stands in for Flux's text encoder in re-encoding tests."""
    import comfy.sd1_clip
    import comfy.supported_models_base

    config = {"hidden_size": FLUX_CONTEXT_DIM, "intermediate_size": 128, "num_attention_heads": 2,
              "num_hidden_layers": 1, "projection_dim": FLUX_POOLED_DIM}
    target = comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel)
    clip = comfy.sd.CLIP(target=target, model_options={"clip_l_model_config": config})
    state = random_state_dict(clip.cond_stage_model, seed, std=0.05)
    missing, unexpected = clip.load_sd(state, full_model=True)
    if missing or unexpected:
        raise RuntimeError(f"tiny CLIP state dict mismatch: missing {missing}, unexpected {unexpected}")
    return clip
