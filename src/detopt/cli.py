"""Command line: parse, validate, call the library. Only commands that work are listed."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import warnings
from pathlib import Path

from detopt.errors import DetoptError


def _cmd_info(args: argparse.Namespace) -> int:
    """Print versions and machine facts (paste them into bug reports)."""
    import numba
    import numpy
    import torch

    import detopt

    rows = [
        ("detopt", detopt.__version__),
        ("python", platform.python_version()),
        ("platform", platform.platform()),
        ("cpu cores", str(os.cpu_count())),
        ("torch", torch.__version__),
        ("torch threads", str(torch.get_num_threads())),
        ("cuda available", str(torch.cuda.is_available())),
        ("numpy", numpy.__version__),
        ("numba", numba.__version__),
        ("numba threads", str(numba.config.NUMBA_NUM_THREADS)),
        ("numba cache dir", numba.config.CACHE_DIR or "(next to the sources)"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    """COCO bbox evaluation: the 12-line table, a per-class table, optional JSON and plots."""
    from detopt.evaluation import evaluate_coco

    result = evaluate_coco(args.gt, args.pred, max_dets=tuple(args.max_dets))
    result.summary()
    print()
    print(result.per_class_table())
    counts = result.to_dict()["counts"]
    print(f"\n{counts['images']} images, {counts['categories']} categories, {counts['ground_truth']} "
          f"ground-truth boxes, {counts['predictions']} predictions evaluated"
          + (f", {counts['predictions_skipped']} skipped" if counts["predictions_skipped"] else ""))
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(result.to_dict(), indent=2))
        os.replace(tmp, out)
        print(f"wrote {out}")
    if args.plots:
        from detopt.evaluation.plots import save_plots

        paths = save_plots(result, args.plots, iou_threshold=args.iou_thr, confidence_threshold=args.conf)
        print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _unit_interval(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {v}")
    return v


def _coco_iou(text: str) -> float:
    from detopt.evaluation.coco import IOU_THRESHOLDS

    v = _unit_interval(text)
    if not any(abs(v - t) < 1e-9 for t in IOU_THRESHOLDS):
        raise argparse.ArgumentTypeError(f"must be one of 0.50, 0.55, ..., 0.95, got {text}")
    return v


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="detopt",
        description="Make object detectors more accurate and faster.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = sub.add_parser("info", help="print versions and machine facts")
    info.set_defaults(func=_cmd_info)

    ev = sub.add_parser("eval", help="COCO bbox evaluation (pycocotools' numbers), per-class table, plots",
                        description="Evaluate COCO results against COCO ground truth with exactly "
                                    "pycocotools' numbers.")
    ev.add_argument("--gt", required=True, help="COCO ground-truth json")
    ev.add_argument("--pred", required=True, help="COCO results json (image_id, category_id, bbox, score)")
    ev.add_argument("--json", help="write {stats, per_class, counts} to this file")
    ev.add_argument("--plots", help="write pr_curve.png, f1_curve.png, confusion_matrix*.png here")
    ev.add_argument("--max-dets", type=int, nargs=3, default=[1, 10, 100], metavar="N",
                    help="three per-image detection limits (default 1 10 100)")
    ev.add_argument("--iou-thr", type=_coco_iou, default=0.5,
                    help="IoU threshold of the F1 curve and the confusion matrix (default 0.5)")
    ev.add_argument("--conf", type=_unit_interval, default=None,
                    help="confidence of the confusion matrix (default: the best-F1 confidence)")
    ev.set_defaults(func=_cmd_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            code = int(args.func(args))
        except DetoptError as e:
            code = 2
            error = e
        else:
            error = None
    for w in caught:  # detopt's warnings count skipped or repaired records: show them plainly
        print(f"warning: {w.message}", file=sys.stderr)
    if error is not None:
        print(f"error: {error}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
