"""ShapeEdit nodes: render a scene of the ShapeEdit world as an IMAGE (a test and demo source)."""

from __future__ import annotations

from comfy_api.latest import io

from ..cogniedit.shapes.scene import random_scene
from ..cogniedit.shapes.render import render_scene_tensor


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


NODES = [ShapeEditScene]
