"""The ShapeEdit palette: named colours chosen far apart in CIE Lab, shape names, and an sRGB -> Lab conversion.

The scorer reads colours back by nearest palette entry in Lab, so the entries are picked with a large
pairwise Lab distance (> 40, see tests) and far from the light background; a slightly wrong editor
colour still lands on the intended name.
"""

from __future__ import annotations

import numpy as np

# name -> sRGB uint8. Order matters only for determinism of generation (it is the sampling order).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (20, 110, 240),
    "yellow": (245, 210, 20),
    "purple": (170, 30, 170),
    "orange": (250, 140, 0),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
BACKGROUND: tuple[int, int, int] = (240, 240, 236)

# D65 reference white; sRGB companding per IEC 61966-2-1.
_WHITE = np.array([0.95047, 1.0, 1.08883])
_RGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                        [0.2126729, 0.7151522, 0.0721750],
                        [0.0193339, 0.1191920, 0.9503041]])


def srgb_to_lab(rgb) -> np.ndarray:
    """sRGB (uint8 0..255 or float 0..1, any leading shape, last axis 3) -> CIE Lab (D65), float64."""
    arr = np.asarray(rgb)
    scaled = arr.dtype == np.uint8 or arr.max(initial=0) > 1.0
    arr = arr.astype(np.float64) / 255.0 if scaled else arr.astype(np.float64)
    linear = np.where(arr <= 0.04045, arr / 12.92, ((arr + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _RGB_TO_XYZ.T / _WHITE
    eps, kappa = 216 / 24389, 24389 / 27
    f = np.where(xyz > eps, np.cbrt(xyz), (kappa * xyz + 16) / 116)
    L = 116 * f[..., 1] - 16
    a = 500 * (f[..., 0] - f[..., 1])
    b = 200 * (f[..., 1] - f[..., 2])
    return np.stack([L, a, b], axis=-1)


def palette_lab(colours: dict[str, tuple[int, int, int]] = COLOURS) -> np.ndarray:
    """Lab coordinates of the palette entries, rows in ``colours`` order."""
    return srgb_to_lab(np.array(list(colours.values()), np.uint8))


def nearest_colour(lab, colours: dict[str, tuple[int, int, int]] = COLOURS) -> tuple[str, float]:
    """Name of the palette entry nearest to one Lab triple, and the Lab distance (Delta E 1976)."""
    dist = np.linalg.norm(palette_lab(colours) - np.asarray(lab, np.float64)[None], axis=-1)
    i = int(np.argmin(dist))
    return list(colours)[i], float(dist[i])
