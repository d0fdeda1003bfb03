"""A captioned PNG grid of image rows (sample sheets of the evaluator and the trainer), written atomically."""

from __future__ import annotations

import numpy as np

from .atomic_io import atomic_write

BLACK = (0, 0, 0)


def save_png(path, image) -> None:
    """A uint8 ``[H, W, 3]`` array (or a PIL image) as a PNG, written atomically."""
    from PIL import Image

    picture = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, np.uint8))
    atomic_write(path, lambda f: picture.save(f, format="PNG"), binary=True)


def save_image_grid(path, titles, rows, tile: int) -> None:
    """``rows``: ``[(images, caption, caption_rgb), ...]``, one uint8 ``[H, W, 3]`` image per title; each image
    is scaled to fit a ``tile`` pixel square, its aspect kept (nearest neighbour: pixel-exact sheets of small
    images)."""
    from PIL import Image, ImageDraw, ImageFont

    if not rows:
        raise ValueError("no rows to draw")
    pad, caption = 4, 14
    font = ImageFont.load_default()
    width = len(titles) * (tile + pad) + pad
    header = caption + pad
    canvas = Image.new("RGB", (width, header + len(rows) * (tile + caption + 2 * pad)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, title in enumerate(titles):
        draw.text((pad + i * (tile + pad), 2), title, fill=BLACK, font=font)
    for r, (images, text, colour) in enumerate(rows):
        y = header + r * (tile + caption + 2 * pad)
        for i, img in enumerate(images):
            picture = Image.fromarray(np.asarray(img, np.uint8))
            scale = tile / max(picture.size)
            w, h = max(1, round(picture.width * scale)), max(1, round(picture.height * scale))
            canvas.paste(picture.resize((w, h), Image.NEAREST),
                         (pad + i * (tile + pad) + (tile - w) // 2, y + (tile - h) // 2))
        while len(text) > 3 and draw.textlength(text, font=font) > width - 2 * pad:
            text = text[:-4] + "..."
        draw.text((pad, y + tile + 2), text, fill=colour, font=font)
    save_png(path, canvas)
