"""Colour transforms: the image changes, the boxes do not. ``uint8 [H, W, 3]`` BGR in and out."""

from __future__ import annotations

import cv2
import numpy as np

_RAMP = np.arange(256, dtype=np.float64)


def hsv_gain(
    img: np.ndarray, rng: np.random.Generator, h: float = 0.015, s: float = 0.7, v: float = 0.4
) -> np.ndarray:
    """YOLO's HSV jitter: hue, saturation and value multiplied by ``1 + U(±gain)``.

    One diagonal ``cv2.transform`` on the HSV image (float32 products rounded to nearest,
    saturated at 255) between the two conversions, all in one buffer. Hue may leave OpenCV's
    ``[0, 180)`` range by up to ``179·h``; the HSV→BGR conversion wraps it (hue 182 is hue 2).
    """
    gains = rng.uniform(-1, 1, 3) * (h, s, v) + 1
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
    cv2.transform(hsv, np.diag(gains).astype(np.float32), dst=hsv)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR, dst=hsv)


def brightness_contrast(img: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """``clip(alpha · img + beta)`` (contrast ``alpha``, brightness ``beta`` in grey levels)."""
    return cv2.LUT(img, np.clip(_RAMP * alpha + beta, 0, 255).round().astype(np.uint8))


def clahe(img: np.ndarray, clip_limit: float = 2.0, tile: int = 8) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation of the L channel (Lab)."""
    lab = cv2.cvtColor(img, cv2.COLOR_BGR2LAB)
    lab[..., 0] = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tile, tile)).apply(lab[..., 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with kernel size ``2·ceil(3σ) + 1``."""
    k = 2 * int(np.ceil(3 * sigma)) + 1
    return cv2.GaussianBlur(img, (k, k), sigma)


def gaussian_noise(img: np.ndarray, rng: np.random.Generator, std: float) -> np.ndarray:
    """Additive gaussian noise of ``std`` grey levels, clipped to ``[0, 255]``."""
    noise = rng.standard_normal(img.shape, dtype=np.float32) * np.float32(std)
    return np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def grayscale(img: np.ndarray) -> np.ndarray:
    """Luma (BT.601) copied to the three channels."""
    return cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
