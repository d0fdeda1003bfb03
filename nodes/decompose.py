"""CogniEdit Instruction Decompose: IMAGE + instruction -> DIRECTIVES (enriched instruction, targets, focus phrases).

The adapter only converts ComfyUI values and picks a backend; the work is cogniedit.decompose.decompose().
Model trouble never stops the graph: the node falls back to the rule-based decomposition and says why in
its report, unless "strict" is on.
"""

from __future__ import annotations

import os
from collections import OrderedDict

import torch
from comfy_api.latest import io, ui

from ..cogniedit.decompose import DecomposeSettings, DecompositionCache, decompose, make_backend
from ..cogniedit.decompose.backends import ComfyTextEncoderBackend
from .types import Directives

BACKEND_CHOICES = ["rules", "text_encoder", "openai_http", "transformers_vlm"]
_CACHE = DecompositionCache(max_entries=128)  # one per ComfyUI process: same inputs, no second model call
_LOADED: OrderedDict = OrderedDict()         # keeps the last two model backends (a transformers model loads once)


def image_to_uint8(image: torch.Tensor):
    """First image of a ComfyUI IMAGE batch [B, H, W, C] (0..1) as numpy uint8 [H, W, 3]."""
    if image.ndim != 4 or image.shape[-1] not in (3, 4):
        raise ValueError(f"IMAGE must be [batch, height, width, 3], got {tuple(image.shape)}")
    return (image[0, :, :, :3].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def clip_generate_fn(clip):
    """A cogniedit generate function running ComfyUI's own text generation on a loaded CLIP/text encoder.

    The prompt starts with <|im_start|>, so ComfyUI's Qwen tokenizers keep it as is and attach the image to
    its <|image_pad|> token. Only text encoders that implement generation can answer (e.g. Qwen3-VL); the
    Qwen-Image Qwen2.5-VL encoder of ComfyUI 0.33 cannot, and the node then falls back to the rules."""

    def generate(request):
        images = [] if request.image is None else [torch.from_numpy(request.image)[None].float() / 255.0]
        tokens = clip.tokenize(request.prompt, images=images)
        s = request.settings
        sampling = s.temperature > 0
        ids = clip.generate(tokens, do_sample=sampling, max_length=s.max_new_tokens,
                            temperature=s.temperature if sampling else 1.0, top_k=0, top_p=s.top_p,
                            seed=s.seed if sampling else None)
        return clip.decode(ids)

    return generate


def _model_backend(kind: str, clip, server_url: str, model: str, api_key_env: str):
    if kind == "text_encoder":
        if clip is None:
            raise ValueError("backend 'text_encoder' needs a CLIP input: connect a text encoder that can generate text")
        encoder = getattr(clip, "cond_stage_model", clip)  # identifies the loaded model for the cache
        return ComfyTextEncoderBackend(clip_generate_fn(clip), model_id=f"clip-{id(encoder)}")
    if not model.strip():
        raise ValueError(f"backend {kind!r} needs 'model': the served model name (openai_http) or a model folder "
                         "(transformers_vlm)")
    if kind == "openai_http":
        api_key = os.environ.get(api_key_env.strip()) if api_key_env.strip() else None
        return make_backend("openai_http", base_url=server_url.strip(), model=model.strip(), api_key=api_key)
    key = (kind, model.strip())
    if key not in _LOADED:
        folder = model.strip()
        if not os.path.isabs(folder):
            import folder_paths

            folder = os.path.join(folder_paths.models_dir, folder)
        _LOADED[key] = make_backend("transformers_vlm", model_path=folder)
        while len(_LOADED) > 2:
            _LOADED.popitem(last=False)
    _LOADED.move_to_end(key)
    return _LOADED[key]


def report_text(result) -> str:
    lines = [f"source: {result.source}", f"enriched instruction: {result.enriched_instruction}",
             "focus: " + (", ".join(f"{p.text} ({p.kind})" for p in result.focus) or "none"),
             "targets: " + ("; ".join(result.targets) or "none")]
    lines += [f"warning: {w}" for w in result.warnings]
    return "\n".join(lines)


class InstructionDecompose(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CogniEditInstructionDecompose",
            display_name="CogniEdit Instruction Decompose",
            category="CogniEdit/decompose",
            description="Turns the source image and an editing instruction into explicit directives: an enriched "
            "instruction, the targets to edit, and the colour/position/count phrases to focus on. 'rules' needs no "
            "model; the model backends fall back to the rules (with a warning in the report) when they fail.",
            inputs=[
                io.Image.Input("image", tooltip="The source image (the first of a batch is used)."),
                io.String.Input("instruction", multiline=True, default="", tooltip="The editing instruction."),
                io.Combo.Input("backend", options=BACKEND_CHOICES, default="rules",
                               tooltip="rules: no model. text_encoder: the connected CLIP generates. openai_http: an "
                               "OpenAI-compatible server. transformers_vlm: a local transformers model folder."),
                io.Clip.Input("clip", optional=True, tooltip="For backend text_encoder: a text encoder that can generate."),
                io.String.Input("server_url", default="http://127.0.0.1:8000/v1", optional=True, advanced=True,
                                tooltip="For openai_http: the server's base URL."),
                io.String.Input("model", default="", optional=True, advanced=True,
                                tooltip="openai_http: the served model name. transformers_vlm: a model folder "
                                "(absolute, or relative to ComfyUI's models folder)."),
                io.String.Input("api_key_env", default="OPENAI_API_KEY", optional=True, advanced=True,
                                tooltip="For openai_http: the environment variable holding the API key (keeps the "
                                "key out of saved workflows); empty for none."),
                io.Int.Input("max_new_tokens", default=1024, min=16, max=8192, optional=True, advanced=True,
                             tooltip="Model backends: the most tokens the model may generate for its answer."),
                io.Float.Input("temperature", default=0.0, min=0.0, max=2.0, step=0.05, optional=True, advanced=True,
                               tooltip="0 = greedy (reproducible, cached)."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, optional=True, advanced=True,
                             tooltip="Model backends: sampling seed (used when temperature > 0; part of the cache key)."),
                io.Float.Input("timeout_s", default=120.0, min=1.0, max=3600.0, optional=True, advanced=True,
                               tooltip="openai_http: seconds to wait for one reply before retrying."),
                io.Boolean.Input("strict", default=False, optional=True, advanced=True,
                                 tooltip="Stop with an error instead of falling back to the rules."),
            ],
            outputs=[Directives.Output(display_name="directives",
                                       tooltip="Enriched instruction, targets and tagged focus phrases, for the "
                                       "Token Focus and CogniEdit Sampler nodes."),
                     io.String.Output(display_name="enriched_instruction",
                                      tooltip="The explicit instruction to encode instead of the original."),
                     io.String.Output(display_name="report", tooltip="What was decided, which backend, warnings.")],
        )

    @classmethod
    def execute(cls, image, instruction, backend, clip=None, server_url="http://127.0.0.1:8000/v1", model="",
                api_key_env="OPENAI_API_KEY", max_new_tokens=1024, temperature=0.0, seed=0, timeout_s=120.0,
                strict=False) -> io.NodeOutput:
        import comfy.utils

        settings = DecomposeSettings(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                                     timeout_s=timeout_s, strict=strict)
        chosen = "rules" if backend == "rules" else _model_backend(backend, clip, server_url, model, api_key_env)
        bar = comfy.utils.ProgressBar(3)
        result = decompose(image_to_uint8(image), instruction, chosen, settings, cache=_CACHE,
                           progress=lambda step, total, message: bar.update_absolute(step, total))
        if image.shape[0] > 1:
            result.warnings.append(f"the IMAGE batch holds {image.shape[0]} images; the first was used")
        report = report_text(result)
        return io.NodeOutput(result.to_dict(), result.enriched_instruction, report, ui=ui.PreviewText(report))


NODES = [InstructionDecompose]
