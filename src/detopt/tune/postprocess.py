"""Post-processing study: every suppression method and its thresholds, scored on a validation set.

The model runs once: :func:`collect_candidates` keeps, per image, what enters suppression (boxes in
the network input, best-class score and label). :func:`run_setting` then applies one
post-processing setting to every image (timing only the suppression), maps the boxes back to the
original images exactly as :func:`detopt.engine.validate.predict_batches` does, and scores them
with the exact COCO evaluation. :func:`study` sweeps the methods and thresholds of
:data:`METHOD_SWEEPS` plus an IoU × score grid for hard NMS, and checks the choice on held-out
halves (chosen on the even images, scored on the odd ones) because a setting picked and scored on
the same images is optimistic.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from detopt.constants import IOU_THRESHOLD, MAX_DET, PRE_NMS_TOPK, SCORE_THRESHOLD
from detopt.data.dataset import DetectionDataset, make_loader
from detopt.data.transforms.letterbox import LetterboxMeta
from detopt.engine.validate import coco_records, file_names, to_original
from detopt.errors import DetoptInputError
from detopt.evaluation import CocoEvalResult, CocoGroundTruth, evaluate_detections
from detopt.models.postprocessor import Postprocessor
from detopt.ops.postprocess import METHOD_REGISTRY, postprocess
from detopt.runtime import autocast
from detopt.structures.detections import Detections
from detopt.structures.records import coco_image_ids


@dataclass(frozen=True)
class Candidates:
    """Pre-suppression candidates of a data set, one entry per image (in data set order).

    boxes: float32 ``[N_i, 4]`` xyxy in network-input pixels; scores: float32 ``[N_i]`` (best class
    probability, all ``> min_score``); labels: int64 ``[N_i]``; metas / orig_sizes ``(h, w)``: to map
    boxes back; gt: the ground truth (arrays, built once); image_ids: the ground-truth id of each
    image; file_names: ``file_name`` of each image; category_ids: the data set's category id of
    each label (None: ``label + 1``).
    """

    boxes: list[np.ndarray]
    scores: list[np.ndarray]
    labels: list[np.ndarray]
    metas: list[LetterboxMeta]
    orig_sizes: list[tuple[int, int]]
    gt: CocoGroundTruth
    image_ids: list[int]
    file_names: list[str]
    min_score: float
    category_ids: list[int] | None = None

    def __len__(self) -> int:
        return len(self.boxes)

    def records(self, dets: Sequence[Detections]) -> list[dict[str, Any]]:
        """COCO results records (with ``file_name``) of one detection list per image: for files."""
        return [
            r
            for d, i, f in zip(dets, self.image_ids, self.file_names, strict=True)
            for r in coco_records(d, i, f, self.category_ids)
        ]

    def evaluate(self, dets: Sequence[Detections], image_ids: Sequence[int] | None = None) -> CocoEvalResult:
        """Exact COCO evaluation of one detection list per image, in memory (``image_ids``: score
        only those images, ``dets`` being theirs in the same order)."""
        if image_ids is None:
            return evaluate_detections(self.gt, dets, self.image_ids, self.category_ids)
        return evaluate_detections(self.gt.subset(image_ids), dets, image_ids, self.category_ids)


@torch.no_grad()
def collect_candidates(
    model: nn.Module,
    dataset: DetectionDataset,
    names: Sequence[str],
    device: torch.device | str = "cpu",
    batch_size: int = 16,
    amp: bool = False,
    min_score: float = 0.001,
) -> Candidates:
    """Run ``model`` over ``dataset`` once and keep the candidates scoring above ``min_score``
    (single-label: each location's best class, as :class:`Postprocessor` does by default)."""
    device = torch.device(device)
    pp = Postprocessor(model.strides, model.reg_max)
    n = len(dataset)
    boxes: list[np.ndarray | None] = [None] * n
    scores: list[np.ndarray | None] = [None] * n
    labels: list[np.ndarray | None] = [None] * n
    metas: list[LetterboxMeta | None] = [None] * n
    sizes: list[tuple[int, int] | None] = [None] * n
    was = model.training
    model.eval()
    try:
        for batch in make_loader(dataset, batch_size=batch_size):
            images = batch["images"].to(device).float().div_(255)
            with autocast(device, amp):
                outputs = model(images)
            for i, (b, s, lab), meta, hw in zip(
                batch["indices"], pp.candidates(outputs), batch["metas"], batch["orig_sizes"], strict=True
            ):
                keep = s > min_score
                boxes[i] = b[keep].float().cpu().numpy()
                scores[i] = s[keep].float().cpu().numpy()
                labels[i] = lab[keep].cpu().numpy().astype(np.int64)
                metas[i], sizes[i] = meta, hw
    finally:
        model.train(was)
    fnames = file_names([r.path for r in dataset.records])
    cat_ids = getattr(dataset, "category_ids", None)
    gt = CocoGroundTruth.from_records(dataset.records, list(names), cat_ids, fnames)
    return Candidates(boxes, scores, labels, metas, sizes, gt, coco_image_ids(dataset.records), fnames,
                      float(min_score), cat_ids)


@dataclass(frozen=True)
class Setting:
    """One post-processing setting (see :func:`detopt.ops.postprocess.postprocess`)."""

    method: str = "nms"
    iou_thr: float = IOU_THRESHOLD
    score_thr: float = SCORE_THRESHOLD
    sigma: float | None = None
    agnostic: bool = False
    max_det: int = MAX_DET

    def label(self) -> str:
        """What the report calls it: the method's registered label and its knob."""
        m = METHOD_REGISTRY.get(self.method, "method")
        name = m.display(self.agnostic)
        if m.knob == "sigma":
            knob = f"sigma {self.sigma if self.sigma is not None else 'default'}"
        else:
            knob = f"IoU {self.iou_thr:g}"
        return f"{name} ({knob}, score > {self.score_thr:g})"


def apply_setting(cands: Candidates, setting: Setting) -> tuple[list[Detections], float]:
    """Suppress every image's candidates -> (detections in original-image pixels, seconds of
    suppression per image)."""
    if setting.score_thr < cands.min_score:
        raise DetoptInputError(
            f"score_thr {setting.score_thr} is below the candidates' floor "
            f"{cands.min_score}: collect them with a lower min_score"
        )
    out = []
    spent = 0.0
    for b, s, lab, meta, hw in zip(
        cands.boxes, cands.scores, cands.labels, cands.metas, cands.orig_sizes, strict=True
    ):
        t = time.perf_counter()
        d = postprocess(b, s, lab, **asdict(setting), pre_nms_topk=PRE_NMS_TOPK)
        spent += time.perf_counter() - t
        out.append(to_original(d, meta, hw))
    return out, spent / max(len(cands), 1)


@dataclass
class SettingResult:
    """COCO numbers of one setting on all images and on the two halves (even / odd images)."""

    setting: Setting
    label: str
    ap: float
    ap50: float
    ap_small: float
    ms_per_image: float
    dets_per_image: float
    ap_even: float
    ap_odd: float
    group: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["setting"] = asdict(self.setting)
        return d


def run_setting(cands: Candidates, setting: Setting, group: str = "") -> SettingResult:
    """Apply ``setting`` and score it: COCO mAP50-95, mAP50, AP_small on every image, mAP50-95 on
    the even and on the odd images, suppression milliseconds and detections per image."""
    dets, seconds = apply_setting(cands, setting)
    res = cands.evaluate(dets)
    halves = []
    for parity in (0, 1):
        ids = cands.image_ids[parity::2]
        if not ids:
            halves.append(float("nan"))
            continue
        halves.append(float(cands.evaluate(dets[parity::2], ids).stats[0]))
    return SettingResult(
        setting,
        setting.label(),
        float(res.stats[0]),
        float(res.stats[1]),
        float(res.stats[3]),
        1000.0 * seconds,
        sum(len(d.scores) for d in dets) / max(len(cands), 1),
        halves[0],
        halves[1],
        group,
    )


class _MethodSweeps(Mapping):
    """Tuner group -> ``(fixed settings, the knob swept, its values)``, read live from
    :data:`~detopt.ops.postprocess.METHOD_REGISTRY` (each method's ``sweeps``), in registration
    order; the score threshold stays 0.001 (what mAP wants)."""

    def _table(self) -> dict[str, tuple[dict[str, Any], str, tuple[float, ...]]]:
        return {
            group: ({"method": name} | fixed, m.knob, values)
            for name, m in METHOD_REGISTRY.items()
            for group, fixed, values in m.sweeps
        }

    def __getitem__(self, group: str) -> tuple[dict[str, Any], str, tuple[float, ...]]:
        return self._table()[group]

    def __iter__(self):
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


METHOD_SWEEPS: Mapping[str, tuple[dict[str, Any], str, tuple[float, ...]]] = _MethodSweeps()
SCORE_GRID = (0.001, 0.01, 0.05, 0.1, 0.25)
NMS_IOU_GRID = (0.5, 0.6, 0.7, 0.8)
DEFAULT = Setting("nms", iou_thr=0.7, score_thr=0.001)


@dataclass
class StudyResult:
    """Every setting scored, the best per method, the IoU × score grid of hard NMS and the
    held-out check of the choice."""

    results: list[SettingResult]
    default: SettingResult
    best: SettingResult
    holdout: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "results": [r.to_dict() for r in self.results],
            "default": self.default.to_dict(),
            "best": self.best.to_dict(),
            "holdout": self.holdout,
        }


def best_per_method(results: Sequence[SettingResult]) -> list[SettingResult]:
    """The highest-mAP setting of each method group (ties: the faster one), in sweep order."""
    out: dict[str, SettingResult] = {}
    for r in results:
        if r.group not in METHOD_SWEEPS:
            continue
        cur = out.get(r.group)
        if cur is None or (r.ap, -r.ms_per_image) > (cur.ap, -cur.ms_per_image):
            out[r.group] = r
    return [out[g] for g in METHOD_SWEEPS if g in out]


def study(
    cands: Candidates,
    sweeps: dict[str, tuple[dict[str, Any], str, tuple[float, ...]]] | None = None,
    score_grid: Sequence[float] = SCORE_GRID,
    nms_iou_grid: Sequence[float] = NMS_IOU_GRID,
    on_result: Callable[[SettingResult], None] | None = None,
) -> StudyResult:
    """Score every method over its knob (score threshold 0.001) and hard NMS over
    ``nms_iou_grid`` × ``score_grid``. The best setting is the highest mAP50-95 on all images; the
    held-out check picks the best on the even images and reports it on the odd ones against the
    default (hard NMS, IoU 0.7, score 0.001). ``on_result`` is called with each new result (progress
    display is the caller's)."""
    sweeps = METHOD_SWEEPS if sweeps is None else sweeps
    seen: dict[Setting, SettingResult] = {}

    def score(setting: Setting, group: str) -> SettingResult:
        if setting not in seen:
            seen[setting] = run_setting(cands, setting, group)
            if on_result is not None:
                on_result(seen[setting])
        return seen[setting]

    default = score(DEFAULT, "hard NMS, per class")
    for group, (fixed, knob, values) in sweeps.items():
        for v in values:
            score(Setting(**(fixed | {knob: float(v)})), group)
    for iou in nms_iou_grid:
        for s in score_grid:
            score(Setting("nms", iou_thr=float(iou), score_thr=float(s)), "grid")
    results = list(seen.values())
    best = max(results, key=lambda r: (r.ap, -r.ms_per_image))
    pick = max(results, key=lambda r: (r.ap_even, -r.ms_per_image))
    holdout = {
        "chosen_on_even": pick.label,
        "chosen_map_odd": pick.ap_odd,
        "default_map_odd": default.ap_odd,
        "gain_odd": pick.ap_odd - default.ap_odd,
    }
    return StudyResult(results, default, best, holdout)
