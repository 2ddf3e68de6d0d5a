"""Float64 closed forms of the detection losses, one scalar at a time, from the papers.

Nothing here imports detopt: plain ``math`` on Python floats, loops over elements.
"""

from __future__ import annotations

import math

import numpy as np

from tests.reference import ops_reference as boxref


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def bce_logits(x: float, t: float) -> float:
    """-(t log σ(x) + (1-t) log(1-σ(x))), stable form."""
    return max(x, 0.0) - x * t + math.log1p(math.exp(-abs(x)))


def sigmoid_focal(x: float, t: float, alpha: float, gamma: float) -> float:
    p = sigmoid(x)
    p_t = p * t + (1 - p) * (1 - t)
    a_t = alpha * t + (1 - alpha) * (1 - t) if alpha >= 0 else 1.0
    return a_t * (1 - p_t) ** gamma * bce_logits(x, t)


def softmax_focal(row, y: int, alpha, gamma: float) -> float:
    m = max(row)
    logz = m + math.log(sum(math.exp(v - m) for v in row))
    logp = row[y] - logz
    a = 1.0 if alpha is None else (alpha[y] if hasattr(alpha, "__len__") else alpha)
    return -a * (1 - math.exp(logp)) ** gamma * logp


def qfl(x: float, q: float, beta: float) -> float:
    return abs(q - sigmoid(x)) ** beta * bce_logits(x, q)


def vfl(x: float, q: float, alpha: float, gamma: float) -> float:
    p = sigmoid(x)
    if q > 0:
        return q * bce_logits(x, q)  # -q (q log p + (1-q) log(1-p))
    return alpha * p**gamma * bce_logits(x, 0.0)


def smooth_l1(d: float, beta: float) -> float:
    d = abs(d)
    if beta == 0:
        return d
    return 0.5 * d * d / beta if d < beta else d - 0.5 * beta


def dfl(row, t: float) -> float:
    n = len(row)
    t = min(max(t, 0.0), n - 1 - 0.01)
    left = math.floor(t)
    right = left + 1
    m = max(row)
    logz = m + math.log(sum(math.exp(v - m) for v in row))
    return -(row[left] - logz) * (right - t) - (row[right] - logz) * (t - left)


def box_loss(kind: str, a, b) -> float:
    fn = {"iou": boxref.iou, "giou": boxref.giou, "diou": boxref.diou, "ciou": boxref.ciou}[kind]
    return 1.0 - fn(np.asarray(a, np.float64), np.asarray(b, np.float64))


def elementwise(fn, *arrays, **kw) -> np.ndarray:
    flat = [np.asarray(a, np.float64).reshape(-1) for a in arrays]
    out = np.array([fn(*(float(f[i]) for f in flat), **kw) for i in range(flat[0].size)])
    return out.reshape(np.asarray(arrays[0]).shape)
