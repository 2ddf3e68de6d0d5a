"""Soft-NMS (gaussian and linear): the numba kernel (CPU path: SIMD chunks of boxes, lazy chunk
maxima), its torch twin and the public functions.

Gaussian soft-NMS must decay every remaining box that *intersects* the selected one
(``exp(-iou²/σ) < 1`` for any ``iou > 0``), so the IoU-bound pruning that makes hard NMS fast
does not apply; what remains is to make each decay cheap and to visit few boxes that do not
intersect. The layout:

- Boxes whose score is above ``score_thr`` (the others can never be kept nor decay anything)
  are ordered by horizontal strips of centre y, then by x within a strip (a counting sort), and
  cut into *chunks* of ``_LANES`` boxes stored as structure-of-arrays rows. A decay processes a
  whole chunk with vector instructions (IoU, ``exp`` as a branch-free polynomial, the update),
  with no per-box branch to mispredict.
- Each chunk keeps the bounding box of its live boxes and its best key; ``_GROUP`` chunks form a
  group with a (static) bounding box and the best key of its chunks. A selected box visits the
  groups, then the chunks, whose bounding box it intersects.
- Chunk maxima are updated lazily: a decay only marks the chunk stale (decays only lower
  scores, so a stale maximum is an upper bound). Selection takes the best group key; if a stale
  chunk holds it, that chunk is summarised again and selection retries.

Keys are order-preserving integer images of the scores, so every maximum is an integer max and
ties resolve exactly (highest score, then lowest original index) as in the reference.
Every expression of the decay has a twin in ``soft_nms_torch``; ``exp`` differs from the
libm/torch one by at most one ulp (float32: a degree-6 polynomial, < 0.8 ulp; float64: a
degree-13 polynomial).
"""

from __future__ import annotations

import numba as nb
import numpy as np
import torch
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload
from torch import Tensor

from detopt.errors import DetoptInputError
from detopt.ops._array import ArrayLike, check_threshold
from detopt.ops._pairwise import areas, iou_matrix
from detopt.ops.nms._prepared import Prepared

_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}  # numpy: division stays vectorizable
_LANES = 16  # boxes per chunk: one AVX-512 register of float32
_GROUP = 8  # chunks per group
_BIG = np.int64(1 << 62)


# --------------------------------------------------------------------------- bit casts
@intrinsic
def _f32_bits(typingctx, x):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))
    return types.int32(types.float32), codegen


@intrinsic
def _f64_bits(typingctx, x):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))
    return types.int64(types.float64), codegen


@intrinsic
def _bits_f32(typingctx, x):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


@intrinsic
def _bits_f64(typingctx, x):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return types.float64(types.int64), codegen


def _key(x):
    """Order-preserving int64 image of a float (``a < b`` iff ``_key(a) < _key(b)``; -0 < +0)."""
    raise NotImplementedError  # only called from numba code, see the overload


@overload(_key)
def _key_impl(x):
    if x == types.float32:
        def key32(x):
            u = np.int64(_f32_bits(x))
            return u if u >= 0 else u ^ 0x7FFFFFFF
        return key32

    def key64(x):
        u = _f64_bits(x)
        return u if u >= 0 else u ^ 0x7FFFFFFFFFFFFFFF
    return key64


def _exp_neg(x):
    """``exp(x)`` for ``x <= 0`` in the dtype of ``x``, branch-free (vectorizes)."""
    raise NotImplementedError  # only called from numba code, see the overload


@overload(_exp_neg)
def _exp_neg_impl(x):
    if x == types.float32:
        f = np.float32

        def exp32(x):
            # Cody-Waite reduction x = k ln2 + r, |r| <= ln2/2; Cephes expf polynomial;
            # 2^k as two normal factors so results down to the denormals round once.
            x = max(x, f(-104.0))
            k = (x * f(1.44269504) + f(12582912.0)) - f(12582912.0)  # round to nearest
            r = (x - k * f(0.693359375)) - k * f(-2.12194440e-4)
            p = f(1.9875691500e-4)
            p = p * r + f(1.3981999507e-3)
            p = p * r + f(8.3334519073e-3)
            p = p * r + f(4.1665795894e-2)
            p = p * r + f(1.6666665459e-1)
            p = p * r + f(5.0000001201e-1)
            p = p * (r * r) + r + f(1.0)
            ki = np.int32(k)
            k1 = ki >> np.int32(1)
            k2 = ki - k1
            return (p * _bits_f32((k1 + np.int32(127)) << np.int32(23))) * _bits_f32(
                (k2 + np.int32(127)) << np.int32(23))
        return exp32

    def exp64(x):
        x = max(x, -1400.0)  # 2^k as two normal factors needs k >= -2044
        k = (x * 1.4426950408889634 + 6755399441055744.0) - 6755399441055744.0
        r = (x - k * 6.93147180369123816490e-01) - k * 1.90821492927058770002e-10
        p = 1.0 / 6227020800.0  # Taylor to r^13: truncation < 1e-17 on |r| <= ln2/2
        p = p * r + 1.0 / 479001600.0
        p = p * r + 1.0 / 39916800.0
        p = p * r + 1.0 / 3628800.0
        p = p * r + 1.0 / 362880.0
        p = p * r + 1.0 / 40320.0
        p = p * r + 1.0 / 5040.0
        p = p * r + 1.0 / 720.0
        p = p * r + 1.0 / 120.0
        p = p * r + 1.0 / 24.0
        p = p * r + 1.0 / 6.0
        p = p * r + 0.5
        p = p * r + 1.0
        p = p * r + 1.0
        ki = np.int64(k)
        k1 = ki >> 1
        k2 = ki - k1
        return (p * _bits_f64((k1 + 1023) << 52)) * _bits_f64((k2 + 1023) << 52)
    return exp64


# --------------------------------------------------------------------------- layout
@nb.njit(**_JIT)
def _layout(boxes, scores, labels, use_labels, score_thr):
    """Chunked structure-of-arrays of the boxes with ``score > score_thr``.

    Returns ``data [C, 6, L]`` (x1, y1, x2, y2, area, live score; padding lanes have zero
    boxes and score ``-inf``), ``lab [C, L]``, ``orig [C, L]`` (input index; padding 2^40) and
    ``pos [N]`` (lane position ``chunk * L + lane`` of each input box, -1 when left out).
    Without ``use_labels``, ``labels`` may be empty and every lane gets label 0.
    """
    n = boxes.shape[0]
    dt = boxes.dtype
    members = np.empty(n, np.int64)
    m = 0
    hsum = 0.0
    ymin = np.inf
    ymax = -np.inf
    xmin = np.inf
    xmax = -np.inf
    for i in range(n):
        if scores[i] > score_thr:
            members[m] = i
            m += 1
            h = float(boxes[i, 3]) - float(boxes[i, 1])
            hsum += max(h, 0.0)
            cy = (float(boxes[i, 1]) + float(boxes[i, 3])) * 0.5
            ymin = min(ymin, cy)
            ymax = max(ymax, cy)
            xmin = min(xmin, float(boxes[i, 0]))
            xmax = max(xmax, float(boxes[i, 0]))
    # strips about one mean box height tall; x cells a quarter of that wide (order within a
    # cell is arbitrary: it only affects speed)
    strip = hsum / m if m > 0 else 1.0
    ny = 1
    if m > 0 and strip > 0 and ymax > ymin:
        ny = min(int((ymax - ymin) / strip) + 1, m)
    cellw = strip / 4.0
    nx = 1
    if m > 0 and cellw > 0 and xmax > xmin:
        nx = min(int((xmax - xmin) / cellw) + 1, max(4 * m // ny, 1))
    sy = ny / (ymax - ymin) if ymax > ymin else 0.0
    sx = nx / (xmax - xmin) if xmax > xmin else 0.0
    cell = np.empty(m, np.int64)
    start = np.zeros(ny * nx + 1, np.int64)
    for t in range(m):
        i = members[t]
        cy = (float(boxes[i, 1]) + float(boxes[i, 3])) * 0.5
        a = min(int((cy - ymin) * sy), ny - 1)
        b = min(int((float(boxes[i, 0]) - xmin) * sx), nx - 1)
        cell[t] = a * nx + b
        start[cell[t] + 1] += 1
    for c in range(ny * nx):
        start[c + 1] += start[c]
    nch = max((m + _LANES - 1) // _LANES, 1)
    data = np.zeros((nch, 6, _LANES), dt)
    data[:, 5, :] = -np.inf
    lab = np.full((nch, _LANES), -1, np.int64)
    orig = np.full((nch, _LANES), 1 << 40, np.int64)
    pos = np.full(n, -1, np.int64)
    zero = boxes.dtype.type(0)
    for t in range(m):
        i = members[t]
        p = start[cell[t]]
        start[cell[t]] += 1
        c = p // _LANES
        q = p - c * _LANES
        x1 = boxes[i, 0]
        y1 = boxes[i, 1]
        x2 = boxes[i, 2]
        y2 = boxes[i, 3]
        data[c, 0, q] = x1
        data[c, 1, q] = y1
        data[c, 2, q] = x2
        data[c, 3, q] = y2
        data[c, 4, q] = max(x2 - x1, zero) * max(y2 - y1, zero)
        data[c, 5, q] = scores[i] + zero  # -0.0 -> +0.0
        lab[c, q] = labels[i] if use_labels else 0
        orig[c, q] = i
        pos[i] = p
    return data, lab, orig, pos, m


# --------------------------------------------------------------------------- summaries
@nb.njit(**_JIT, inline="always")
def _summarize(chunk, corig, kthr, c, ckey, corig_best, cbox):
    """Best key of chunk ``c`` (ties: lowest original index) and the box of its live lanes."""
    s = chunk[5]
    best = _key(s[0])
    for q in range(1, _LANES):
        best = max(best, _key(s[q]))
    o = _BIG
    for q in range(_LANES):
        o = min(o, corig[q] if _key(s[q]) == best else _BIG)
    ckey[c] = best
    corig_best[c] = o
    x1 = chunk[0]
    y1 = chunk[1]
    x2 = chunk[2]
    y2 = chunk[3]
    inf = x1[0] - x1[0] + np.inf
    a1 = inf
    b1 = inf
    a2 = -inf
    b2 = -inf
    for q in range(_LANES):
        live = _key(s[q]) > kthr
        a1 = min(a1, x1[q] if live else inf)
        b1 = min(b1, y1[q] if live else inf)
        a2 = max(a2, x2[q] if live else -inf)
        b2 = max(b2, y2[q] if live else -inf)
    cbox[c, 0] = a1
    cbox[c, 1] = b1
    cbox[c, 2] = a2
    cbox[c, 3] = b2


@nb.njit(**_JIT, inline="always")
def _summarize_group(g, ckey, corig_best, gkey, gorig):
    k = ckey[g * _GROUP: g * _GROUP + _GROUP]
    o = corig_best[g * _GROUP: g * _GROUP + _GROUP]
    best = k[0]
    for t in range(1, _GROUP):
        best = max(best, k[t])
    ob = _BIG
    for t in range(_GROUP):
        ob = min(ob, o[t] if k[t] == best else _BIG)
    gkey[g] = best
    gorig[g] = ob


# --------------------------------------------------------------------------- soft-NMS
@nb.njit(**_JIT)
def soft_nms_kernel(boxes, scores, labels, use_labels, thr, sigma, score_thr, linear):
    """Soft-NMS (Bodla et al. 2017). Gaussian: every remaining box j is multiplied by
    ``exp(-(iou * iou) / sigma)``; linear: by ``1 - iou`` where ``iou > thr``. Selection:
    highest current score, ties by lower index; stops when the best remaining score is
    ``<= score_thr``; a box whose score drops to ``<= score_thr`` leaves. With ``use_labels``
    only boxes of the same label decay each other (per-class soft-NMS, one selection order).
    ``thr``, ``sigma`` and ``score_thr`` are scalars of the boxes' dtype.

    Returns (indices in selection order, their scores at selection).
    """
    data, lab, orig, pos, m = _layout(boxes, scores, labels, use_labels, score_thr)
    dt = data.dtype
    nch = data.shape[0]
    ngr = (nch + _GROUP - 1) // _GROUP
    zero = dt.type(0)
    one = dt.type(1)
    ninf = -np.inf
    kthr = _key(score_thr)
    ckey = np.full(ngr * _GROUP, -_BIG, np.int64)
    corig = np.full(ngr * _GROUP, _BIG, np.int64)
    cbox = np.empty((ngr * _GROUP, 4), dt)
    cbox[:, :2] = np.inf
    cbox[:, 2:] = -np.inf
    stale = np.zeros(ngr * _GROUP, np.bool_)
    for c in range(nch):
        _summarize(data[c], orig[c], kthr, c, ckey, corig, cbox)
    gkey = np.empty(ngr, np.int64)
    gorig = np.empty(ngr, np.int64)
    gbox = np.empty((ngr, 4), dt)
    for g in range(ngr):
        _summarize_group(g, ckey, corig, gkey, gorig)
        b = cbox[g * _GROUP: g * _GROUP + _GROUP]
        gbox[g, 0] = b[:, 0].min()
        gbox[g, 1] = b[:, 1].min()
        gbox[g, 2] = b[:, 2].max()
        gbox[g, 3] = b[:, 3].max()
    keep = np.empty(m, np.int64)
    kept = np.empty(m, dt)
    nk = 0
    ghit = np.empty(ngr, np.int64)
    chit = np.empty(_GROUP, np.int64)
    while True:
        best = gkey[0]
        for g in range(1, ngr):
            best = max(best, gkey[g])
        if not best > kthr:
            break
        # a stale chunk holding the best key may be lower now: summarise it and retry
        retry = False
        o = _BIG
        for g in range(ngr):
            if gkey[g] == best:
                fixed = False
                for c in range(g * _GROUP, g * _GROUP + _GROUP):
                    if stale[c] and ckey[c] == best:
                        _summarize(data[c], orig[c], kthr, c, ckey, corig, cbox)
                        stale[c] = False
                        fixed = True
                if fixed:
                    _summarize_group(g, ckey, corig, gkey, gorig)
                    retry = True
                o = min(o, gorig[g])
        if retry:
            continue
        p = pos[o]
        ci = p // _LANES
        qi = p - ci * _LANES
        sel = data[ci]
        keep[nk] = o
        kept[nk] = sel[5, qi]
        nk += 1
        sel[5, qi] = ninf
        stale[ci] = True
        ax1 = sel[0, qi]
        ay1 = sel[1, qi]
        ax2 = sel[2, qi]
        ay2 = sel[3, qi]
        aa = sel[4, qi]
        la = lab[ci, qi]
        if not aa > 0:
            continue
        ng = 0
        for g in range(ngr):
            ghit[ng] = g
            ng += ((gbox[g, 0] < ax2) & (gbox[g, 2] > ax1) & (gbox[g, 1] < ay2)
                   & (gbox[g, 3] > ay1) & (gkey[g] > kthr))
        for u in range(ng):
            g = ghit[u]
            nc = 0
            for c in range(g * _GROUP, g * _GROUP + _GROUP):
                chit[nc] = c
                nc += ((cbox[c, 0] < ax2) & (cbox[c, 2] > ax1) & (cbox[c, 1] < ay2)
                       & (cbox[c, 3] > ay1))
            for h in range(nc):
                c = chit[h]
                chunk = data[c]
                x1 = chunk[0]
                y1 = chunk[1]
                x2 = chunk[2]
                y2 = chunk[3]
                area = chunk[4]
                s = chunk[5]
                cl = lab[c]
                for q in range(_LANES):
                    iw = max(min(ax2, x2[q]) - max(ax1, x1[q]), zero)
                    ih = max(min(ay2, y2[q]) - max(ay1, y1[q]), zero)
                    inter = iw * ih
                    union = aa + area[q] - inter
                    iou = inter / union if union > zero else zero
                    if use_labels:
                        iou = iou if cl[q] == la else zero
                    if linear:
                        f = one - iou if iou > thr else one
                    else:
                        f = _exp_neg(-(iou * iou) / sigma)
                    old = s[q]
                    v = old * f + zero  # -0.0 -> +0.0
                    s[q] = v if (old > score_thr and v > score_thr) else ninf
                stale[c] = True
    return keep[:nk].copy(), kept[:nk].copy()


# --------------------------------------------------------------------------- torch twin
def soft_nms_torch(boxes: Tensor, scores: Tensor, labels: Tensor | None, thr: float, sigma: float,
             score_thr: float, linear: bool) -> tuple[Tensor, Tensor]:
    """Soft-NMS, one vectorized decay per selected box. Returns (indices, scores at selection)."""
    n = boxes.shape[0]
    dev = boxes.device
    s = scores.clone()
    area = areas(boxes)
    dt = boxes.dtype
    thr_t = torch.tensor(thr, dtype=dt, device=dev)
    sigma_t = torch.tensor(sigma, dtype=dt, device=dev)
    sthr = torch.tensor(score_thr, dtype=dt, device=dev)
    alive = s > sthr
    neg = torch.tensor(float("-inf"), dtype=dt, device=dev)
    keep: list[Tensor] = []
    kept: list[Tensor] = []
    for _ in range(n):
        masked = torch.where(alive, s, neg)
        i = torch.argmax(masked)
        if not bool(masked[i] > sthr):
            break
        keep.append(i)
        kept.append(s[i])
        alive[i] = False
        iou = iou_matrix(boxes[i : i + 1], boxes, area[i : i + 1], area)[0]
        hit = alive & (iou > 0)
        if labels is not None:
            hit &= labels == labels[i]
        if linear:
            hit &= iou > thr_t
            s = torch.where(hit, s * (1 - iou), s)
        else:
            s = torch.where(hit, s * torch.exp(-(iou * iou) / sigma_t), s)
    if not keep:
        return torch.zeros(0, dtype=torch.int64, device=dev), torch.zeros(0, dtype=dt, device=dev)
    return torch.stack(keep).to(torch.int64), torch.stack(kept)


# --------------------------------------------------------------------------- public
def _soft(p: Prepared, iou_threshold: float, sigma: float, score_threshold: float,
          method: str) -> tuple[ArrayLike, ArrayLike]:
    if method not in ("gaussian", "linear"):
        raise DetoptInputError(f"method: expected 'gaussian' or 'linear', got {method!r}")
    thr = check_threshold(iou_threshold, "iou_threshold")
    sigma = check_threshold(sigma, "sigma")
    if sigma <= 0:
        raise DetoptInputError(f"sigma: must be > 0, got {sigma}")
    sthr = check_threshold(score_threshold, "score_threshold")
    linear = method == "linear"
    if p.torch_path:
        return soft_nms_torch(p.t_boxes(), p.t_scores(), p.t_labels(), thr, sigma, sthr,
                                     linear)
    keep, new = soft_nms_kernel(p.np_boxes(), p.np_scores(), p.np_labels(),
                                             p.labels is not None, p.scalar(thr),
                                             p.scalar(sigma), p.scalar(sthr), linear)
    return p.out(keep), p.out(new)


def soft_nms(boxes: ArrayLike, scores: ArrayLike, iou_threshold: float = 0.3, sigma: float = 0.5,
             score_threshold: float = 0.001, method: str = "gaussian"
             ) -> tuple[ArrayLike, ArrayLike]:
    """Soft-NMS (Bodla et al. 2017).

    Repeatedly selects the highest-scoring remaining box (ties: lower index) and decays every
    remaining box j: gaussian ``s_j *= exp(-iou² / sigma)``; linear ``s_j *= 1 - iou`` only
    where ``iou > iou_threshold`` (``iou_threshold`` is unused by the gaussian method). Stops
    when the best remaining score is ``<= score_threshold``. The input is never modified.

    Returns:
        ``(indices [K] int64, new_scores [K])`` in selection order; ``new_scores`` are the
        decayed scores at selection (non-increasing).
    """
    return _soft(Prepared(boxes, scores), iou_threshold, sigma, score_threshold, method)


def batched_soft_nms(boxes: ArrayLike, scores: ArrayLike, labels: ArrayLike,
                     iou_threshold: float = 0.3, sigma: float = 0.5,
                     score_threshold: float = 0.001, method: str = "gaussian"
                     ) -> tuple[ArrayLike, ArrayLike]:
    """:func:`soft_nms` run independently per label; selection order interleaves labels."""
    return _soft(Prepared(boxes, scores, labels), iou_threshold, sigma, score_threshold, method)
