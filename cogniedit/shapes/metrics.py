"""Image similarity for preservation: masked PSNR and single-scale Gaussian SSIM (Wang et al. 2004), numpy+scipy."""

from __future__ import annotations

import numpy as np


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None, data_range: float = 255.0) -> float:
    """PSNR in dB over the pixels where ``mask`` ([H, W] bool) is set; inf when equal, nan when the mask is empty."""
    diff = (a.astype(np.float64) - b.astype(np.float64)) ** 2
    if mask is not None:
        diff = diff[mask]
    if diff.size == 0:
        return float("nan")
    mse = float(diff.mean())
    return float("inf") if mse == 0 else float(10 * np.log10(data_range ** 2 / mse))


def ssim_map(a: np.ndarray, b: np.ndarray, sigma: float = 1.5, truncate: float = 3.5,
             data_range: float = 255.0) -> np.ndarray:
    """Per-pixel SSIM ``[H, W]`` (mean over channels), Gaussian window, population (not sample) covariance,
    K1=0.01, K2=0.03, reflect padding: skimage's ``structural_similarity(gaussian_weights=True,
    use_sample_covariance=False)`` before its border crop."""
    from scipy.ndimage import gaussian_filter

    x = np.atleast_3d(a.astype(np.float64))
    y = np.atleast_3d(b.astype(np.float64))
    if x.shape != y.shape:
        raise ValueError(f"ssim: images differ in shape {x.shape} vs {y.shape}")
    blur = lambda t: np.stack([gaussian_filter(t[..., c], sigma, truncate=truncate, mode="reflect")
                               for c in range(t.shape[-1])], -1)
    ux, uy = blur(x), blur(y)
    vx, vy, vxy = blur(x * x) - ux * ux, blur(y * y) - uy * uy, blur(x * y) - ux * uy
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(-1)


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None, **kwargs) -> float:
    """Mean SSIM over ``mask`` (all pixels without one); nan when the mask is empty."""
    m = ssim_map(a, b, **kwargs)
    vals = m[mask] if mask is not None else m.ravel()
    return float(vals.mean()) if vals.size else float("nan")


def similarity_outside_edit(edited: np.ndarray, source: np.ndarray, keep: np.ndarray | None = None) -> tuple[float, float]:
    """(PSNR, SSIM) of ``edited`` vs ``source`` over ``keep`` ([H, W] bool; None = every pixel). Pixels outside
    ``keep`` (where the edit may change things) are pasted from the source first, so they do not leak into the SSIM
    windows at the border."""
    composite = edited if keep is None else np.where(keep[..., None], edited, source)
    return psnr(composite, source, keep), ssim(composite, source, keep)
