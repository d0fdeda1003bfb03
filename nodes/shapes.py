"""ShapeEdit nodes: render a scene of the ShapeEdit world as an IMAGE (a test and demo source), and load the
shipped ShapeEdit editor as MODEL + CLIP + VAE (nodes/shapeedit_model.py)."""

from __future__ import annotations

from comfy_api.latest import io

from ..cogniedit.shapes.render import render_scene_tensor
from ..cogniedit.shapes.scene import random_scene
from .common import MODELS_FOLDER, register_models_folder, resolve_safetensors, safetensors_files

SHIPPED_EDITOR = "shapeedit_editor (shipped)"  # the pack's own file (cogniedit/shapes/weights)
# The command-line editor's sampling settings (cogniedit.shapes.editor.DefaultEditor): what the report advises.
EDITOR_SAMPLING = "steps 12, cfg 1.0, sampler euler, scheduler simple, denoise 1.0"

register_models_folder()


class ShapeEditScene(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CogniEditShapeScene",
            display_name="CogniEdit ShapeEdit Scene",
            category="CogniEdit/shapeedit",
            description="Renders a random scene of the ShapeEdit world (coloured shapes on a grid), "
            "the embedded benchmark of CogniEdit. Same seed, same scene.",
            inputs=[
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, tooltip="Scene seed."),
            ],
            outputs=[io.Image.Output(display_name="image", tooltip="The rendered 48x48 scene."),
                     io.String.Output(display_name="scene_json", tooltip="The scene's objects (shape, colour, cell) as JSON.")],
        )

    @classmethod
    def execute(cls, seed: int) -> io.NodeOutput:
        scene = random_scene(seed)
        return io.NodeOutput(render_scene_tensor(scene), scene.to_json())


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def load_editor_file(name: str):
    """The ShapeEditor of the shipped file or of ``name`` in models/cogniedit; one line (file, problem, fix) when
    it is missing, not safetensors, unreadable or not an editor file."""
    from ..cogniedit.shapes.editor.weights import DEFAULT_PATH, EditorWeightsError, load_editor

    path = DEFAULT_PATH if name == SHIPPED_EDITOR else resolve_safetensors(MODELS_FOLDER, name)
    try:
        return load_editor(path), path
    except EditorWeightsError as error:
        raise ValueError(one_line(error)) from None


class ShapeEditLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CogniEditShapeEditLoader",
            display_name="CogniEdit ShapeEdit Loader",
            category="CogniEdit/shapeedit",
            description="Loads the ShapeEdit editor that ships with the pack (a narrow Qwen-Image-Edit DiT on an "
            "exact pixel-patch latent, with its own small text encoder) as a MODEL for ComfyUI's samplers, its text "
            "encoder as CLIP and its latent codec as VAE. No download. Sample with "
            f"{EDITOR_SAMPLING} for the command-line editor's result.",
            inputs=[
                io.Combo.Input("editor", options=[SHIPPED_EDITOR] + safetensors_files(MODELS_FOLDER),
                               default=SHIPPED_EDITOR,
                               tooltip="The shipped editor, or an editor file you trained (python -m "
                               "cogniedit.shapes.editor.train) in models/cogniedit."),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="The editor's DiT (ComfyUI's Qwen-Image class), "
                                "a FLOW model with shift 1; it needs the source as reference latent."),
                io.Clip.Output(display_name="clip", tooltip="The editor's text encoder (for CLIP Text Encode)."),
                io.Vae.Output(display_name="vae", tooltip="The editor's exact latent codec for 48x48 images "
                              "(VAE Encode / VAE Decode)."),
                io.String.Output(display_name="report", tooltip="Which file, its version and training metadata."),
            ],
        )

    @classmethod
    def execute(cls, editor=SHIPPED_EDITOR) -> io.NodeOutput:
        from .shapeedit_model import ShapeEditLatentCodec, comfy_clip, comfy_model

        loaded, path = load_editor_file(editor)
        meta = loaded.metadata
        report = "\n".join([
            f"editor: {path.name} ({meta.get('version', '?')}, {loaded.num_parameters() / 1e6:.2f} M parameters, "
            f"{meta.get('steps_done', '?')} training steps)",
            f"prediction: {loaded.config.prediction}; latent: the editor's tokens as [B, 48, 12, 12] (48x48 scenes)",
            f"sample with: {EDITOR_SAMPLING} (the command-line editor's settings)",
        ])
        return io.NodeOutput(comfy_model(loaded), comfy_clip(loaded), ShapeEditLatentCodec(), report)


NODES = [ShapeEditScene, ShapeEditLoader]
