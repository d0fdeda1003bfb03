"""CogniEdit Instruction Decompose: IMAGE + instruction -> DIRECTIVES (enriched instruction, targets, focus phrases).

The adapter only converts ComfyUI values, picks a backend and wires the host in; the work is
cogniedit.decompose.decompose(). Model trouble never stops the graph: the node falls back to the rule-based
decomposition and says why in its report, unless "strict" is on. ComfyUI's Cancel stops a model that is
still answering.

What a workflow may choose is limited (docs/security.md): a server with a key only by the name of a profile
in the user's own configuration (a workflow-given server_url gets no key), and a transformers model folder
only inside ComfyUI's LLM model folders or the folders the user allows there.
"""

from __future__ import annotations

import os
from collections import OrderedDict

import torch
from comfy_api.latest import io, ui

from ..cogniedit.decompose import Cancelled, DecomposeSettings, DecompositionCache, decompose, make_backend
from ..cogniedit.decompose.backends import ComfyTextEncoderBackend, OpenAIHTTPBackend
from ..cogniedit.decompose.model_folders import resolve_model_folder
from ..cogniedit.decompose.report import report_text
from ..cogniedit.decompose.user_config import config_path, load_user_config
from .encoder_generation import clip_generate_fn, encoder_generation
from .types import Directives

BACKEND_CHOICES = ["rules", "text_encoder", "openai_http", "transformers_vlm"]
DEFAULT_SERVER_URL = "http://127.0.0.1:8000/v1"
REFUSED_VIA = "nothing: the connected text encoder cannot generate text (see the warning)"
LLM_FOLDER = "LLM"  # models/LLM, as other VLM packs use it; extra_model_paths.yaml can add more under "LLM:"
# The ShapeEdit decomposer that ships in the pack (cogniedit/shapes/weights/decomposer), usable by this name
# without copying it into models/LLM (docs/shapeedit-decomposer.md).
SHIPPED_DECOMPOSER = "shapeedit_decomposer"
_CACHE = DecompositionCache(max_entries=128)  # one per ComfyUI process: same inputs, no second model call
_LOADED: OrderedDict = OrderedDict()         # keeps the last two model backends (a transformers model loads once)


def image_to_uint8(image: torch.Tensor):
    """First image of a ComfyUI IMAGE batch [B, H, W, C] (0..1) as numpy uint8 [H, W, 3]."""
    if image.ndim != 4 or image.shape[-1] not in (3, 4):
        raise ValueError(f"IMAGE must be [batch, height, width, 3], got {tuple(image.shape)}")
    return (image[0, :, :, :3].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def user_config_file():
    """<user dir>/__cogniedit/config.json: a system-user folder, which ComfyUI's /userdata HTTP API never
    serves or writes; COGNIEDIT_CONFIG overrides it."""
    import folder_paths

    if hasattr(folder_paths, "get_system_user_directory"):
        folder = folder_paths.get_system_user_directory("cogniedit")
    else:  # older ComfyUI: the same place
        folder = os.path.join(folder_paths.get_user_directory(), "__cogniedit")
    return config_path(os.path.join(folder, "config.json"))


def llm_model_roots(config) -> list[str]:
    """ComfyUI's LLM model folders (models/LLM and extra_model_paths.yaml entries) + the user's allow-list."""
    import folder_paths

    folder_paths.add_model_folder_path(LLM_FOLDER, os.path.join(folder_paths.models_dir, LLM_FOLDER))  # idempotent
    return folder_paths.get_folder_paths(LLM_FOLDER) + [str(folder) for folder in config.model_folders]


def _server_backend(server_url: str, model: str, api_key_env: str, profile_name: str, notes: list[str]):
    path = user_config_file()
    if profile_name:
        profile = load_user_config(path).server(profile_name)
        chosen = profile.model or model
        if not chosen:
            raise ValueError(f"server profile {profile_name!r} names no model: set 'model' on the node or in {path}")
        if profile.model and model and model != profile.model:
            notes.append(f"server profile {profile_name!r} serves {profile.model!r}; the node's model {model!r} is not used")
        if server_url and server_url not in (DEFAULT_SERVER_URL, profile.url):
            notes.append(f"server_url is not used: server profile {profile_name!r} sets the address")
        if profile.key_note():
            notes.append(profile.key_note())
        return OpenAIHTTPBackend.from_profile(profile, chosen)
    load_user_config(path).check_workflow_url(server_url)
    if not model:
        raise ValueError("backend 'openai_http' needs 'model': the served model name (or a server_profile that names one)")
    if api_key_env:
        notes.append(f"api_key_env is no longer used: a server_url set in the workflow gets no key. To send a key, "
                     f"define a server profile in {path} and name it in server_profile (docs/security.md)")
    return make_backend("openai_http", base_url=server_url, model=model)


def shipped_folder(name: str, roots: list[str]) -> str | None:
    """The decomposer folder that ships with the pack, when ``name`` is its name and no model folder of that name
    is in the LLM folders (a copy there wins). Only this one folder, by this one name: nothing else of the pack's
    is readable through the node (docs/security.md)."""
    if name != SHIPPED_DECOMPOSER or any(os.path.lexists(os.path.join(root, name)) for root in roots):
        return None
    from ..cogniedit.shapes.decomposer.folder import DEFAULT_FOLDER

    return str(DEFAULT_FOLDER)


def _folder_backend(model: str):
    config = load_user_config(user_config_file())
    roots = llm_model_roots(config)
    name = model[len(LLM_FOLDER) + 1:] if model.startswith((f"{LLM_FOLDER}/", f"{LLM_FOLDER}\\")) else model  # old form
    shipped = shipped_folder(name, roots)
    if shipped is not None:
        roots = [shipped]  # the folder is its own (and only) root: its files are checked as any model folder's
    folder = str(resolve_model_folder(shipped or name, roots))
    key = ("transformers_vlm", folder)
    if key not in _LOADED:
        _LOADED[key] = make_backend("transformers_vlm", model_path=folder, allowed_roots=roots)
        while len(_LOADED) > 2:
            _LOADED.popitem(last=False)
    _LOADED.move_to_end(key)
    return _LOADED[key]


def _text_encoder_backend(clip, strict: bool, notes: list[str]):
    """The connected encoder as a backend; None when it cannot generate, said up front in `notes` (strict:
    an error) instead of a failed generation on every run."""
    if clip is None:
        raise ValueError("backend 'text_encoder' needs a CLIP input: connect a text encoder that can generate text")
    generation = encoder_generation(clip)
    if not generation.can_generate:
        if strict:
            raise ValueError(generation.refusal())
        notes.append(generation.refusal())
        return None
    if not generation.sees_images:
        notes.append(f"the text encoder ({generation.model}) has no vision: it decomposed the instruction without "
                     "seeing the image")
    encoder = getattr(clip, "cond_stage_model", clip)  # identifies the loaded model for the cache
    return ComfyTextEncoderBackend(clip_generate_fn(clip, generation), model_id=f"clip-{id(encoder)}",
                                   sees_images=generation.sees_images)


def _model_backend(kind: str, clip, server_url: str, model: str, api_key_env: str, profile_name: str,
                   notes: list[str], strict: bool = False):
    if kind == "text_encoder":
        return _text_encoder_backend(clip, strict, notes)
    if kind == "openai_http":
        return _server_backend(server_url.strip(), model.strip(), api_key_env.strip(), profile_name.strip(), notes)
    if not model.strip():
        raise ValueError("backend 'transformers_vlm' needs 'model': the name of a model folder in models/LLM")
    return _folder_backend(model.strip())


def _asked(backend) -> str:
    """Which model was asked, and where the request went (the user should see where their image was sent)."""
    if isinstance(backend, OpenAIHTTPBackend):
        return f"{backend.model} at {backend.url}" + (", with the profile's key" if backend.sends_a_key else ", no key")
    return "" if backend == "rules" else getattr(backend, "model_path", None) or backend.name


def _raise_interrupt():
    """ComfyUI's own interrupt exception, with its flag reset as its nodes do."""
    import comfy.model_management

    comfy.model_management.throw_exception_if_processing_interrupted()
    raise comfy.model_management.InterruptProcessingException()


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
                               "OpenAI-compatible server. transformers_vlm: a model folder in models/LLM."),
                io.Clip.Input("clip", optional=True, tooltip="For backend text_encoder: a text encoder that can generate."),
                io.String.Input("server_url", default=DEFAULT_SERVER_URL, optional=True, advanced=True,
                                tooltip="For openai_http without a server_profile: the server's base URL. No API key "
                                "is ever sent to it; use a server profile for servers that need one."),
                io.String.Input("model", default="", optional=True, advanced=True,
                                tooltip="openai_http: the served model name. transformers_vlm: the name of a model "
                                "folder in models/LLM (or an extra_model_paths.yaml LLM folder); "
                                f"{SHIPPED_DECOMPOSER} = the ShapeEdit decomposer that ships with the pack."),
                io.String.Input("api_key_env", default="", optional=True, advanced=True,
                                tooltip="No longer used (kept so older workflows load): a workflow cannot choose which "
                                "secret goes to which server. Put the server and its key in a server profile."),
                io.Int.Input("max_new_tokens", default=1024, min=16, max=8192, optional=True, advanced=True,
                             tooltip="Model backends: the most tokens the model may generate for its answer."),
                io.Float.Input("temperature", default=0.0, min=0.0, max=2.0, step=0.05, optional=True, advanced=True,
                               tooltip="0 = greedy (reproducible, cached)."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, optional=True, advanced=True,
                             tooltip="Model backends: sampling seed (used when temperature > 0; part of the cache key)."),
                io.Float.Input("timeout_s", default=120.0, min=1.0, max=3600.0, optional=True, advanced=True,
                               tooltip="openai_http: the most seconds to wait for the whole answer, retries included."),
                io.Boolean.Input("strict", default=False, optional=True, advanced=True,
                                 tooltip="Stop with an error instead of falling back to the rules."),
                io.String.Input("server_profile", default="", optional=True, advanced=True,
                                tooltip="For openai_http: the name of a server profile in your CogniEdit configuration "
                                "(ComfyUI/user/__cogniedit/config.json), which sets the URL, the model and the key."),
            ],
            outputs=[Directives.Output(display_name="directives",
                                       tooltip="Enriched instruction, targets and tagged focus phrases, for the "
                                       "Token Focus and CogniEdit Sampler nodes."),
                     io.String.Output(display_name="enriched_instruction",
                                      tooltip="The explicit instruction to encode instead of the original."),
                     io.String.Output(display_name="report", tooltip="What was decided, which backend, warnings.")],
        )

    @classmethod
    def execute(cls, image, instruction, backend, clip=None, server_url=DEFAULT_SERVER_URL, model="",
                api_key_env="", max_new_tokens=1024, temperature=0.0, seed=0, timeout_s=120.0,
                strict=False, server_profile="") -> io.NodeOutput:
        import comfy.model_management
        import comfy.utils

        settings = DecomposeSettings(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                                     timeout_s=timeout_s, strict=strict)
        notes: list[str] = []
        chosen = "rules" if backend == "rules" else _model_backend(backend, clip, server_url, model, api_key_env,
                                                                    server_profile, notes, strict)
        refused = chosen is None  # the connected text encoder cannot generate: the rules, said in the report
        chosen = "rules" if refused else chosen
        bar = comfy.utils.ProgressBar(3)
        try:
            result = decompose(image_to_uint8(image), instruction, chosen, settings, cache=_CACHE,
                               progress=lambda step, total, message: bar.update_absolute(step, total),
                               cancel=comfy.model_management.processing_interrupted)
        except Cancelled:
            _raise_interrupt()
        if image.shape[0] > 1:
            notes.append(f"the IMAGE batch holds {image.shape[0]} images; the first was used")
        result.warnings = notes + result.warnings
        if refused:
            result.source = "fallback"  # a model was chosen but could not be asked
        report = report_text(result, via=REFUSED_VIA if refused else _asked(chosen))
        return io.NodeOutput(result.to_dict(), result.enriched_instruction, report, ui=ui.PreviewText(report))


NODES = [InstructionDecompose]
