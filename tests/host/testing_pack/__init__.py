"""Test-only ComfyUI node pack (like ComfyUI's tests/execution/testing_nodes), loaded by the live-server fixture.

Why it exists: core ComfyUI cannot produce Qwen-Image or Flux conditioning without the real text encoders
(Qwen2.5-VL-7B, T5-XXL + CLIP-L: many GB, never in tests), and their configs are fixed, so no tiny encoder can go
through CLIPLoader. This node emits CONDITIONING of exactly the shape those encoders give ([B, tokens, width] plus
the extras the model reads), seeded, so workflows of core nodes can run end to end on tiny models. It is never
shipped: the pack's own nodes live in nodes/.
"""

from comfy_api.latest import ComfyExtension, io


class TestingSeededConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CogniEditTestingSeededConditioning",
            display_name="Seeded conditioning (CogniEdit tests only)",
            category="testing/cogniedit",
            inputs=[
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1),
                io.Int.Input("tokens", default=8, min=1, max=4096, tooltip="sequence length (real tokenizer count)"),
                io.Int.Input("width", default=3584, min=1, max=8192, tooltip="3584 Qwen2.5-VL-7B, 4096 T5-XXL"),
                io.Int.Input("pooled_width", default=0, min=0, max=8192, tooltip="Flux: 768 (CLIP-L); 0 = none"),
                io.Float.Input("scale", default=1.0, min=0.0, max=100.0),
            ],
            outputs=[io.Conditioning.Output()],
        )

    @classmethod
    def execute(cls, seed, tokens, width, pooled_width, scale) -> io.NodeOutput:
        import torch

        generator = torch.Generator().manual_seed(seed)
        context = torch.randn(1, tokens, width, generator=generator) * scale
        extras = {}
        if pooled_width:
            extras["pooled_output"] = torch.randn(1, pooled_width, generator=generator) * scale
        return io.NodeOutput([[context, extras]])


class TestingRaise(io.ComfyNode):
    """Raises with the given message: proves that execution errors reach the test as readable failures."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CogniEditTestingRaise",
            display_name="Raise (CogniEdit tests only)",
            category="testing/cogniedit",
            inputs=[io.String.Input("message", default="boom")],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, message) -> io.NodeOutput:
        raise ValueError(message)


class TestingPackExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [TestingSeededConditioning, TestingRaise]


async def comfy_entrypoint():
    return TestingPackExtension()
