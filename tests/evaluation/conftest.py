"""pycocotools as the reference evaluator (quiet, on deep copies: it mutates its inputs)."""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
import pytest

pytest.importorskip("pycocotools")
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def pycoco_eval(gt: dict, dt: list, max_dets=(1, 10, 100), area_ranges: dict | None = None) -> COCOeval:
    """Run pycocotools' evaluate/accumulate/summarize; returns the COCOeval object (what it
    printed is in ``.printed``)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(dt))
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.maxDets = list(max_dets)
        if area_ranges is not None:
            ev.params.areaRng = [list(v) for v in area_ranges.values()]
            ev.params.areaRngLbl = list(area_ranges)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    ev.printed = buf.getvalue()
    return ev


def assert_same_as_pycoco(result, ev: COCOeval, stats_from: int = 0) -> None:
    """All 12 stats within 1e-9 (they are in fact bit-identical) and the eval arrays equal."""
    np.testing.assert_allclose(result.stats[stats_from:], ev.stats[stats_from:], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(result.precision, ev.eval["precision"])
    np.testing.assert_array_equal(result.recall, ev.eval["recall"])
    np.testing.assert_array_equal(result.scores, ev.eval["scores"])
