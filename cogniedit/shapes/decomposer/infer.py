"""Batched greedy answers of a stock decomposer model (the training run's held-out check and the bulk evaluation).

The backend generates one conversation at a time; this runs the same prompt (``build_messages``, the folder's
chat template and processor) for a batch, left-padded, greedy. ``evaluate`` reports both paths' agreement.
"""

from __future__ import annotations

import numpy as np

from ...decompose.prompt import build_messages

MAX_NEW_TOKENS = 256  # the longest four-stage answer of the grammar is about 150 tokens


def generate_answers(model, processor, images, instructions, batch_size: int = 32,
                     max_new_tokens: int = MAX_NEW_TOKENS) -> list[str]:
    import torch
    from PIL import Image

    tokenizer = processor.tokenizer
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    answers = []
    try:
        for start in range(0, len(instructions), batch_size):
            texts = [processor.apply_chat_template(build_messages(t), add_generation_prompt=True, tokenize=False)
                     for t in instructions[start:start + batch_size]]
            pil = [Image.fromarray(np.asarray(i, np.uint8)) for i in images[start:start + batch_size]]
            inputs = processor(text=texts, images=pil, return_tensors="pt", padding=True)
            with torch.inference_mode():
                out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id)
            answers.extend(processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
    return answers
