"""Training samples: (source render, instruction) -> the prompt exactly as the ``transformers_vlm`` backend builds
it (``cogniedit.decompose.prompt.build_messages`` through the folder's processor), followed by the four-stage
answer of ``stages.stage_text`` and ``<|im_end|>``.

Batches are a pure function of (seed, step): the cases, their phrasing and the instruction-token dropout are
drawn from generators seeded by both, so a resumed run sees exactly the batches the uninterrupted one would.
Instruction-token dropout replaces a few instruction tokens by an id the model never learns (it reads as a zero
vector, like any word the training data never held), so wordings outside the training pool still leave the rest
of the sentence to go by.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...decompose.prompt import USER_TEMPLATE, build_messages
from ..cases import KINDS, EditCase
from ..render import render_scene
from .stages import stage_text

END = "<|im_end|>"
VISION_START = "<|vision_start|>"
UNKNOWN_TOKEN = "<|box_start|>"   # never in any prompt or answer: its row stays zero
TRAIN_SEED_BASE = 3_000_000_000   # case seeds of training: far from every evaluation seed (small numbers, 20261129)


@dataclass
class Sample:
    suffix: list[int]          # prompt ids after the shared prefix, then the answer ids
    n_prompt: int              # how many of ``suffix`` are prompt
    instruction_span: tuple[int, int]
    pixel_values: torch.Tensor
    image_grid_thw: torch.Tensor


class Encoder:
    """Prompt + answer ids the way the backend's processor makes them, split at the shared prefix."""

    def __init__(self, processor):
        self.processor = processor
        self.tokenizer = processor.tokenizer
        text = self.prompt_text("x")
        self.prefix_text = text[: text.index(VISION_START) + len(VISION_START)]
        self.prefix_ids = self.tokenizer(self.prefix_text)["input_ids"]
        self.pad_id = self.tokenizer.pad_token_id
        self.unknown_id = self.tokenizer.convert_tokens_to_ids(UNKNOWN_TOKEN)
        self.image_token_id = self.tokenizer.convert_tokens_to_ids("<|image_pad|>")

    def prompt_text(self, instruction: str) -> str:
        return self.processor.apply_chat_template(build_messages(instruction), add_generation_prompt=True,
                                                  tokenize=False)

    def encode(self, image: np.ndarray, instruction: str, answer: str | None) -> Sample:
        return self.encode_many([image], [instruction], [answer])[0]

    def encode_many(self, images, instructions, answers) -> list[Sample]:
        """One processor call for the batch (right padding), split back into samples."""
        from PIL import Image

        inputs = self.processor(text=[self.prompt_text(t) for t in instructions],
                                images=[Image.fromarray(np.asarray(i, np.uint8)) for i in images],
                                return_tensors="pt", padding=True)
        p, start, samples = len(self.prefix_ids), 0, []
        sizes = inputs["image_grid_thw"].prod(-1).tolist()
        for row, instruction, answer, size, grid in zip(range(len(instructions)), instructions, answers, sizes,
                                                        inputs["image_grid_thw"]):
            ids = inputs["input_ids"][row][inputs["attention_mask"][row].bool()].tolist()
            if ids[:p] != self.prefix_ids:
                raise RuntimeError("the prompt does not start with the shared prefix; the chat template changed")
            suffix = ids[p:]
            answer_ids = self.tokenizer(answer + END)["input_ids"] if answer is not None else []
            samples.append(Sample(suffix + answer_ids, len(suffix), self._instruction_span(suffix, instruction),
                                  inputs["pixel_values"][start:start + size], grid[None]))
            start += size
        return samples

    def _instruction_span(self, suffix: list[int], instruction: str) -> tuple[int, int]:
        user = self.tokenizer(USER_TEMPLATE.format(instruction=instruction), return_offsets_mapping=True)
        start_char = USER_TEMPLATE.index("{instruction}")
        first = next((i for i, (a, b) in enumerate(user["offset_mapping"]) if b > start_char), len(user["input_ids"]))
        at = _find(suffix, user["input_ids"])
        return (at + first, at + len(user["input_ids"])) if at >= 0 else (0, 0)


def _find(seq: list[int], sub: list[int]) -> int:
    for i in range(len(seq) - len(sub) + 1):
        if seq[i:i + len(sub)] == sub:
            return i
    return -1


def collate(samples: list[Sample], encoder: Encoder, rope_index, dropout: float = 0.0,
            rng: np.random.Generator | None = None, answer_weight: float = 1.0, answer_marker: list[int] | None = None):
    """One padded batch (right padding) with the label positions of the answers and 3-D rope positions."""
    b, t = len(samples), max(len(s.suffix) for s in samples)
    p = len(encoder.prefix_ids)
    ids = torch.full((b, t), encoder.pad_id, dtype=torch.long)
    mask = torch.zeros((b, t), dtype=torch.long)
    label_index, label_ids, label_weights = [], [], []
    for i, s in enumerate(samples):
        row = list(s.suffix)
        if dropout > 0 and rng is not None:
            a, z = s.instruction_span
            for j in range(a, z):
                if rng.random() < dropout:
                    row[j] = encoder.unknown_id
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
        weights = _answer_weights(s.suffix[s.n_prompt:], answer_marker, answer_weight)
        for j in range(s.n_prompt - 1, len(row) - 1):
            label_index.append(i * t + j)
            label_ids.append(s.suffix[j + 1])
        label_weights.extend(weights)
    prefix = torch.tensor(encoder.prefix_ids)
    full_ids = torch.cat([prefix.expand(b, -1), ids], dim=1)
    full_mask = torch.cat([torch.ones(b, p, dtype=torch.long), mask], dim=1)
    grid = torch.cat([s.image_grid_thw for s in samples])
    positions, _ = rope_index(full_ids, mm_token_type_ids=(full_ids == encoder.image_token_id).int(),
                              image_grid_thw=grid, attention_mask=full_mask)
    return {"prefix_ids": prefix, "input_ids": ids, "attention_mask": mask, "position_ids": positions[:, :, p:],
            "pixel_values": torch.cat([s.pixel_values for s in samples]), "image_grid_thw": grid,
            "label_index": torch.tensor(label_index), "label_ids": torch.tensor(label_ids),
            "label_weights": torch.tensor(label_weights, dtype=torch.float32)}


def cell_labels(cases) -> dict[str, torch.Tensor]:
    """Per merged visual token (cells in reading order, as the vision tower emits them): its row and column, and
    the colour and shape index of the cell's object (0 for an empty cell)."""
    out = {"cell_row": [], "cell_col": [], "cell_colour": [], "cell_shape": []}
    for case in cases:
        world = case.world
        for r in range(world.grid):
            for c in range(world.grid):
                obj = case.source.at((r, c))
                out["cell_row"].append(r)
                out["cell_col"].append(c)
                out["cell_colour"].append(0 if obj is None else 1 + world.colour_names.index(obj.colour))
                out["cell_shape"].append(0 if obj is None else 1 + world.shapes.index(obj.shape))
    return {k: torch.tensor(v) for k, v in out.items()}


def _answer_weights(answer_ids: list[int], marker: list[int] | None, weight: float) -> list[float]:
    """Loss weight per answer token: ``weight`` from the ``<answer>`` tag on, 1 before it."""
    if marker is None or weight == 1.0:
        return [1.0] * len(answer_ids)
    at = _find(answer_ids, marker)
    return [1.0 if at < 0 or j < at else weight for j in range(len(answer_ids))]


# ----------------------------------------------------------------------------- where the cases come from

def template_cases(n: int, seed: int) -> list[EditCase]:
    from ..cases import generate_cases

    return generate_cases(n, seed)


def batch_cases(step: int, batch: int, seed: int, source=template_cases) -> list[EditCase]:
    """The cases of one training step: a pure function of (seed, step)."""
    return source(batch, TRAIN_SEED_BASE + seed * 1_000_003 + step)


def encode_cases(encoder: Encoder, cases: list[EditCase], with_answer: bool = True) -> list[Sample]:
    return encoder.encode_many([render_scene(c.source, c.world) for c in cases], [c.instruction for c in cases],
                               [stage_text(c.source, c.ops, c.world) if with_answer else None for c in cases])


def vocabulary(encoder: Encoder, cases: list[EditCase]) -> torch.Tensor:
    """Every id of the prompts and answers of ``cases`` plus each grammar word in both spellings (with and without a
    leading space), so that every answer the grammar can write is inside the vocabulary."""
    from ..palette import COLOURS, SHAPES
    from ..refer import POSITION_WORDS

    tok = encoder.tokenizer
    ids = set(encoder.prefix_ids)
    words = {"the", "in", "to", "a", "an", "one", "two", "three", "four", "five", "is", "are", "added", "removed",
             "becomes", "moves", "make", "turn", "move", "remove", "add", "and", "then", "left", "right", "up", "down",
             "top", "bottom", "middle", "centre", "corner", ";", ",", "<", ">", "</", "info", "think", "answer",
             "object", *COLOURS, *SHAPES, *(s + "s" for s in SHAPES), *POSITION_WORDS}
    for word in words:
        for text in (word, " " + word, "\n" + word, ">" + word):
            ids.update(tok(text)["input_ids"])
    ids.update(tok(END)["input_ids"])
    ids.add(encoder.image_token_id)
    for c in cases:
        ids.update(tok(encoder.prompt_text(c.instruction))["input_ids"])
        ids.update(tok(stage_text(c.source, c.ops, c.world) + END)["input_ids"])
    ids.discard(encoder.unknown_id)
    ids.discard(encoder.pad_id)
    return torch.tensor(sorted(ids))


__all__ = ["Encoder", "Sample", "collate", "batch_cases", "encode_cases", "vocabulary", "KINDS", "TRAIN_SEED_BASE"]
