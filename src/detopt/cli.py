"""Command line: parse, validate, call the library. Only commands that work are listed."""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from detopt.constants import IOU_THRESHOLD, MAX_DET, SCORE_THRESHOLD
from detopt.errors import DetoptError, DetoptInputError


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
    print(result.summary())
    print()
    print(result.per_class_table())
    counts = result.to_dict()["counts"]
    print(
        f"\n{counts['images']} images, {counts['categories']} categories, {counts['ground_truth']} "
        f"ground-truth boxes, {counts['predictions']} predictions evaluated"
        + (f", {counts['predictions_skipped']} skipped" if counts["predictions_skipped"] else "")
    )
    if args.json:
        _write_json(Path(args.json), result.to_dict())
    if args.plots:
        from detopt.evaluation.plots import save_plots

        paths = save_plots(result, args.plots, iou_thr=args.iou_thr, score_thr=args.score_thr)
        print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _cmd_data_synth(args: argparse.Namespace) -> int:
    """Write the embedded synthetic data set (YOLO + COCO)."""
    import time

    from detopt.data.synth import write_synthetic

    t = time.perf_counter()
    options = ("train", "val", "imgsz", "seed", "workers", "overwrite")
    counts = write_synthetic(args.out, **{k: getattr(args, k) for k in options})
    dt = time.perf_counter() - t
    n = counts["train_images"] + counts["val_images"]
    print(
        f"wrote {args.out}: train {counts['train_images']} images / {counts['train_objects']} objects, "
        f"val {counts['val_images']} images / {counts['val_objects']} objects "
        f"({n / max(dt, 1e-9):.0f} images/s)"
    )
    print(f"YOLO: {Path(args.out) / 'data.yaml'}   COCO: {Path(args.out) / 'annotations'}/{{train,val}}.json")
    return 0


def _cmd_data_convert(args: argparse.Namespace) -> int:
    """Convert between COCO, YOLO and VOC."""
    from detopt.data.formats import detect_format, load_dataset, read_dataset, write_dataset

    fmt, path = detect_format(args.src)
    ds = load_dataset(args.src, tolerance=args.tolerance, skip_invalid=args.skip_invalid, **_source_kw(args))
    notes = write_dataset(ds, args.dst, args.to, mode=args.mode, overwrite=args.overwrite, sources=[path],
                          skip_invalid=args.skip_invalid, max_pixels=args.max_pixels)
    for n in notes:
        print(f"note: {n}")
    # count what was written (and nothing else); --link writes symlinks to the source's files
    out, _, _ = read_dataset(args.dst, allow_outside_root=args.mode == "link")
    print(
        f"wrote {args.dst} ({args.to}): {out.num_images} images, {out.num_boxes} boxes, "
        f"{len(out.names)} classes "
        f"from {fmt} {args.src} ({'symlinked' if args.mode == 'link' else 'copied'} images)"
    )
    return 0


def _cmd_data_validate(args: argparse.Namespace) -> int:
    """Report every defect; exit 0 when clean, 1 otherwise."""
    from detopt.data.validate import validate_dataset

    try:
        report = validate_dataset(args.src, tolerance=args.tolerance, **_source_kw(args))
    except DetoptError:
        raise
    except Exception as e:  # validate promises a report, never a traceback
        raise DetoptError(
            f"{args.src}: validation stopped unexpectedly ({type(e).__name__}: {e}); "
            "please report this with the file that caused it"
        ) from e
    for line in report.lines():
        print(line)
    if args.json:
        doc = {
            "source": str(report.source),
            "format": report.format,
            "images": report.images,
            "clean_images": report.clean_images,
            "boxes": report.boxes,
            "backgrounds": report.backgrounds,
            "splits": report.splits,
            "defects_by_kind": report.by_kind(),
            "defects": [
                {"kind": d.kind, "file": str(d.file), "line": d.line, "message": d.message}
                for d in report.defects
            ],
        }
        _write_json(Path(args.json), doc)
    return 0 if report.ok else 1


def _cmd_data_stats(args: argparse.Namespace) -> int:
    """Class balance, box sizes, aspect ratios; optional plots and json."""
    from detopt.data.formats import load_dataset
    from detopt.data.stats import dataset_stats, save_stats_plots

    ds = load_dataset(args.src, skip_invalid=args.skip_invalid, **_source_kw(args))
    st = dataset_stats(ds)
    for line in st.lines():
        print(line)
    if args.json:
        _write_json(Path(args.json), st.to_dict())
    if args.plots:
        paths = save_stats_plots(st, args.plots)
        print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _cmd_data_split(args: argparse.Namespace) -> int:
    """Pool every split and split again (stratified by class presence)."""
    from detopt.data.formats import detect_format, load_dataset, read_dataset, write_dataset
    from detopt.data.split import split_dataset

    fmt, path = detect_format(args.src)
    ds = load_dataset(args.src, skip_invalid=args.skip_invalid, **_source_kw(args))
    out = split_dataset(ds, val=args.val, seed=args.seed)
    notes = write_dataset(
        out, args.dst, args.to or fmt, mode=args.mode, overwrite=args.overwrite, sources=[path],
        skip_invalid=args.skip_invalid, max_pixels=args.max_pixels,
    )
    out, _, _ = read_dataset(args.dst, allow_outside_root=args.mode == "link")  # what was written
    for n in notes:
        print(f"note: {n}")
    tr, va = out.splits.get("train", []), out.splits.get("val", [])
    print(f"{'class':<20} {'train':>7} {'val':>7} {'val %':>6}  (images containing the class)")
    for k, name in enumerate(out.names):
        a = sum(bool((r.labels == k).any()) for r in tr)
        b = sum(bool((r.labels == k).any()) for r in va)
        print(f"{name[:20]:<20} {a:>7} {b:>7} {100 * b / max(1, a + b):>5.1f}%")
    print(f"wrote {args.dst} ({args.to or fmt}): train {len(tr)} images, val {len(va)} images")
    return 0


def _cmd_data_preview(args: argparse.Namespace) -> int:
    """Augmented samples with boxes and names drawn, as one PNG grid."""
    from detopt.data.dataset import DetectionDataset
    from detopt.data.formats import load_dataset
    from detopt.data.preview import preview_grid, save_preview
    from detopt.data.transforms.pipeline import build_pipeline, default_pipeline

    ds = load_dataset(args.src, skip_invalid=args.skip_invalid, **_source_kw(args))
    records = ds.splits[args.split] if args.split in ds.splits else ds.all_records()
    if not records:
        raise DetoptError(f"{args.src}: no images to preview")
    if args.pipeline:
        pipe = build_pipeline(args.pipeline, size=args.imgsz)
    else:
        pipe = default_pipeline(args.imgsz or 320)
    data = DetectionDataset(
        records, imgsz=pipe.size, pipeline=pipe, seed=args.seed, max_pixels=args.max_pixels
    )
    path = save_preview(preview_grid(data, ds.names, args.n, args.seed), args.out)
    print(f"wrote {path} ({args.n} samples, {len(pipe.transforms)} transforms, {pipe.size} px)")
    return 0


def _cmd_anchors(args: argparse.Namespace) -> int:
    """Fit anchors to a data set's training boxes: IoU k-means + evolution vs Euclidean k-means."""
    from detopt.anchors import euclidean_kmeans_anchors, kmeans_anchors, normalized_wh
    from detopt.data.formats import load_dataset

    ds = load_dataset(args.data, skip_invalid=args.skip_invalid, **_source_kw(args))
    split = "train" if "train" in ds.splits else None
    records = ds.splits[split] if split else ds.all_records()
    wh = normalized_wh(records)
    if len(wh) < args.k:
        raise DetoptInputError(f"{args.data}: {len(wh)} boxes, need at least k = {args.k} to fit anchors")
    kw = {"levels": args.levels, "thr": args.thr, "seed": args.seed}
    ours = kmeans_anchors(wh, args.k, args.imgsz, generations=args.generations, **kw)
    base = euclidean_kmeans_anchors(wh, args.k, args.imgsz, **kw)
    print(
        f"{len(wh)} boxes ({split or 'all splits'}) letterboxed to {args.imgsz} px; "
        f"k = {args.k} over {args.levels} levels; threshold IoU {args.thr:g}"
    )
    print(f"{'metric':<22} {'iou-kmeans+evolve':>18} {'euclidean-kmeans':>18} {'diff':>8}")
    for name in ("mean_best_iou", "bpr", "anchors_per_box", "fitness"):
        a, b = getattr(ours, name), getattr(base, name)
        print(f"{name:<22} {a:>18.4f} {b:>18.4f} {a - b:>+8.4f}")
    for fit in (ours, base):
        levels = "  |  ".join(" ".join(f"{w:.0f}x{h:.0f}" for w, h in level) for level in fit.per_level())
        print(f"{fit.method:<18} (w x h, small to large): {levels}")
    if args.json:
        _write_json(Path(args.json), {"boxes": len(wh), "fits": [ours.to_dict(), base.to_dict()]})
    if args.plot:
        from detopt.anchors.plot import save_anchor_plot

        print(f"wrote {save_anchor_plot(wh * args.imgsz, [ours, base], args.plot)}")
    return 0


def _images_arg(values: list[str] | None) -> str | dict[str, str] | None:
    """``--images DIR`` (every split) or ``--images train=DIR val=DIR`` (per split)."""
    if not values:
        return None
    if len(values) == 1 and "=" not in values[0]:
        return values[0]
    out: dict[str, str] = {}
    for v in values:
        split, sep, folder = v.partition("=")
        if not sep or not split or not folder:
            raise DetoptInputError(
                f"--images: expected one folder or SPLIT=DIR pairs (train=DIR val=DIR), got {v!r}"
            )
        if split in out:
            raise DetoptInputError(f"--images: split {split!r} given twice")
        out[split] = folder
    return out


def _source_kw(args: argparse.Namespace) -> dict:
    """What every data-set reader takes from the command line (see ``_add_source_opts``)."""
    return {
        "images_dir": _images_arg(args.images),
        "allow_outside_root": args.allow_outside_root,
        "max_pixels": args.max_pixels,
    }


def _max_pixels(text: str) -> int | None:
    if text.strip().lower() in ("none", "0"):
        return None
    return _int_at_least(1)(text)


def _add_tolerance(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--tolerance", type=_non_negative, default=1.0, help=help)


def _add_source_opts(p: argparse.ArgumentParser, skip_invalid: bool = True) -> None:
    """The options of every command that reads a data set."""
    from detopt.data.image_io import DEFAULT_MAX_PIXELS

    p.add_argument(
        "--images",
        nargs="+",
        metavar="DIR",
        help="COCO: the folder file_names are relative to, for every split (DIR) or per split "
        "(train=DIR val=DIR); default: found from the layout",
    )
    p.add_argument(
        "--allow-outside-root",
        action="store_true",
        help="accept image/label paths that resolve outside the data set's root (default: a defect)",
    )
    p.add_argument(
        "--max-pixels",
        type=_max_pixels,
        default=DEFAULT_MAX_PIXELS,
        help=f"larger images (read from the header) are a too_large defect, never decoded "
        f"(default {DEFAULT_MAX_PIXELS}, like PIL; 'none' for no limit)",
    )
    if skip_invalid:
        p.add_argument(
            "--skip-invalid",
            action="store_true",
            help="leave defective images out (counted) instead of stopping",
        )


def _write_json(out: Path, doc: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, ensure_ascii=False))
    os.replace(tmp, out)
    print(f"wrote {out}")


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        v = _parse_number(text, int)
        if v < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {v}")
        return v

    return parse


def _parse_number(text: str, kind: type[int] | type[float]) -> Any:
    """``kind(text)``, or the argparse error that names the text."""
    try:
        return kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None


def _non_negative(text: str) -> float:
    v = _parse_number(text, float)
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return v


def _compress_io(p: argparse.ArgumentParser, out_help: str) -> None:
    """``--weights``, ``--data``, ``--out`` of a compression command."""
    p.add_argument("--weights", required=True, help="float weights: a checkpoint (.pt) or safetensors")
    p.add_argument("--data", required=True, help="the training data set (data.yaml, COCO json, VOC root)")
    p.add_argument("--out", required=True, help=out_help)


def _command(
    sub: argparse._SubParsersAction,
    name: str,
    func: Callable[[argparse.Namespace], int],
    help: str,
    description: str | None = None,
    positionals: tuple[str, ...] = (),
) -> argparse.ArgumentParser:
    """One sub-command: its parser, its positional arguments and the function it runs."""
    p = sub.add_parser(name, help=help, description=description)
    for arg in positionals:
        p.add_argument(arg)
    p.set_defaults(func=func)
    return p


def _add_data_parser(sub: argparse._SubParsersAction) -> None:
    from detopt.data.formats import FORMATS
    from detopt.data.synth import default_workers

    data = sub.add_parser(
        "data",
        help="data sets: synth, convert, validate, stats, split",
        description="Data sets: COCO json, YOLO data.yaml, Pascal VOC.",
    )
    dsub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)

    def out_opts(p: argparse.ArgumentParser) -> None:
        """The options of a command that reads a data set and writes one."""
        _add_source_opts(p)
        g = p.add_mutually_exclusive_group()
        g.add_argument(
            "--copy", dest="mode", action="store_const", const="copy", help="copy images (default)"
        )
        g.add_argument("--link", dest="mode", action="store_const", const="link", help="symlink images")
        p.set_defaults(mode="copy")
        p.add_argument("--overwrite", action="store_true", help="replace DST when it exists and is not empty")

    sy = _command(
        dsub, "synth", _cmd_data_synth,
        help="write the embedded synthetic data set (YOLO + COCO)",
        description="Procedural scenes: 8 classes that differ by shape and texture, many small "
        "objects, occlusion, clutter, distractors, masks. Deterministic by seed."
    )
    sy.add_argument("out", help="output folder")
    sy.add_argument("--train", type=_int_at_least(0), default=2000, help="training images (default 2000)")
    sy.add_argument("--val", type=_int_at_least(0), default=300, help="validation images (default 300)")
    sy.add_argument("--imgsz", type=_int_at_least(32), default=320, help="image side in pixels (default 320)")
    sy.add_argument("--seed", type=int, default=0)
    sy.add_argument(
        "--workers", type=_int_at_least(1), default=default_workers(), help="processes (default: cores)"
    )
    sy.add_argument("--overwrite", action="store_true", help="replace OUT when it exists and is not empty")

    cv = _command(
        dsub, "convert", _cmd_data_convert,
        help="convert between COCO, YOLO and VOC",
        description="SRC: a COCO json (or a folder of them), a YOLO data.yaml, or a VOC root; "
        "the format is detected.", positionals=("src", "dst")
    )
    cv.add_argument("--to", required=True, choices=FORMATS)
    _add_tolerance(cv, "pixels a box may pass the image border (it is clipped; default 1)")
    out_opts(cv)

    va = _command(
        dsub, "validate", _cmd_data_validate,
        help="decode every image and name every defect (exit 1 when any)",
        description="One line per defect with the file (and line), then a summary. "
        "Exit status 0 when clean, 1 when any defect.", positionals=("src",)
    )
    _add_tolerance(va, "pixels a box may pass the image border (default 1)")
    va.add_argument("--json", help="also write the report here")
    _add_source_opts(va, skip_invalid=False)

    st = _command(
        dsub,
        "stats",
        _cmd_data_stats,
        help="class balance, box sizes, aspect ratios (+ plots)",
        positionals=("src",),
    )
    st.add_argument(
        "--plots", help="write classes.png, boxes_per_image.png, sizes.png, aspect_ratios.png here"
    )
    st.add_argument("--json", help="also write the statistics here")
    _add_source_opts(st)

    sp = _command(
        dsub, "split", _cmd_data_split,
        help="train/val split stratified by class presence",
        description="Pools every split of SRC and writes DST with train and val.", positionals=("src", "dst")
    )
    sp.add_argument("--val", type=_unit_interval, default=0.2, help="validation fraction (default 0.2)")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--to", choices=FORMATS, help="output format (default: that of SRC)")
    out_opts(sp)

    pv = _command(
        dsub, "preview", _cmd_data_preview,
        help="a PNG grid of augmented samples with boxes and class names",
        description="Runs the augmentation pipeline (YAML; default: mosaic, affine, HSV, flip) on "
        "random training images and draws the boxes, so a person can look before training.",
        positionals=("src",),
    )
    pv.add_argument("--pipeline", help="pipeline YAML (size, close_mosaic, transforms: [{name, ...}])")
    pv.add_argument("--out", required=True, help="folder for preview.png")
    pv.add_argument("-n", type=_int_at_least(1), default=16, help="samples (default 16)")
    pv.add_argument(
        "--imgsz", type=_int_at_least(32), default=None, help="output size (default: the YAML's, else 320)"
    )
    pv.add_argument("--split", default="train", help="split to sample (default train; all when absent)")
    pv.add_argument("--seed", type=int, default=0)
    _add_source_opts(pv)


def _positive_float(text: str) -> float:
    v = _non_negative(text)
    if v == 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return v


def _unit_interval(text: str) -> float:
    v = _parse_number(text, float)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {v}")
    return v


def _coco_iou(text: str) -> float:
    from detopt.evaluation.coco import IOU_THRESHOLDS

    v = _unit_interval(text)
    if not any(abs(v - t) < 1e-9 for t in IOU_THRESHOLDS):
        raise argparse.ArgumentTypeError(f"must be one of 0.50, 0.55, ..., 0.95, got {text}")
    return v


def _cmd_train(args: argparse.Namespace) -> int:
    """Train a detector (or resume a run) and print the final metrics."""
    from detopt.config import TrainConfig, build_config, parse_overrides, read_config_values
    from detopt.data.image_io import DEFAULT_MAX_PIXELS
    from detopt.engine import Trainer

    overrides = parse_overrides(args.overrides)
    flags = {k: v for k, v in {
        "data": args.data, "images": _images_arg(args.images), "model": args.model, "imgsz": args.imgsz,
        "epochs": args.epochs, "time": args.time, "batch": args.batch, "out": args.out,
        "workers": args.workers, "device": args.device, "seed": args.seed,
        "skip_invalid": True if args.skip_invalid else None,
        "allow_outside_root": True if args.allow_outside_root else None,
    }.items() if v is not None}
    if args.max_pixels != DEFAULT_MAX_PIXELS:
        flags["max_pixels"] = args.max_pixels
    if args.resume:
        trainer = Trainer.resume(args.resume, **(flags | overrides))
        if trainer.start_epoch >= trainer.epochs:
            print(f"{args.resume} finished its {trainer.epochs} epochs; nothing to resume "
                  "(pass epochs=N to train further)")
            return 0
        print(f"resuming {args.resume} at epoch {trainer.start_epoch + 1}/{trainer.epochs}")
    else:
        values = read_config_values(args.config) if args.config else {}  # only the keys it gives
        values |= flags | overrides
        if "data" not in values:
            raise DetoptInputError("train: --data is required (or --config with a data key, or --resume)")
        trainer = Trainer(build_config(TrainConfig, values))
    from detopt.models import count_flops, count_parameters

    m = trainer.model
    print(f"{trainer.cfg.model}: {count_parameters(m) / 1e6:.2f} M parameters, "
          f"{count_flops(m, trainer.cfg.imgsz) / 1e9:.2f} GFLOPs at {trainer.cfg.imgsz}; "
          f"{len(trainer.train_set)} training images, batch {trainer.cfg.batch} "
          f"x accumulate {trainer.accumulate}")
    if trainer.adapted:
        chosen = ", ".join(f"{k}={getattr(trainer.cfg, k)}" for k in trainer.adapted)
        print(f"short-budget recipe: {chosen} (the reasons are in {trainer.out / 'config.yaml'}; "
              "give a key to override it)")
    summary = trainer.train()
    if trainer.main:
        print(f"done: {summary['epochs']} epochs in {summary['elapsed']:.0f} s -> {summary['out']}")
        if summary["metrics"]:
            ap, ap50 = summary["metrics"]["metrics/AP"], summary["metrics"]["metrics/AP50"]
            best = summary["best_fitness"]
            print(f"last validation: mAP50-95 {ap:.4f}  mAP50 {ap50:.4f}  (best mAP50-95 {best:.4f})")
        if summary["bad_steps"]:
            print(f"{summary['bad_steps']} steps skipped for a non-finite loss")
    return 0


def _postprocessor_from_args(model, args: argparse.Namespace):
    from detopt.inference import default_postprocessor

    return default_postprocessor(model, args.nms, args.score_thr, args.iou_thr, args.max_det)


def label_map_by_name(
    weights_names: list[str], weights_ids: list[int], data_names: list[str], data_ids: list[int],
    remap: bool, where: str,
) -> list[int]:
    """The data set's category id of each of the weights' labels.

    Equal class lists (names and ids) map as they are; otherwise ``remap`` matches by name.

    Raises:
        DetoptInputError: the lists differ and not ``remap``; or a name is missing on either side.
    """
    if list(weights_names) == list(data_names) and list(weights_ids) == list(data_ids):
        return list(data_ids)

    def show(names: list[str], ids: list[int]) -> str:
        text = ", ".join(f"{i}:{n}" for i, n in zip(ids, names, strict=True))
        return text if len(text) <= 160 else text[:160] + " ..."

    if not remap:
        raise DetoptInputError(
            f"{where}: its classes (id:name) {show(data_names, data_ids)} differ from the weights' "
            f"{show(weights_names, weights_ids)}; pass --remap to match them by name"
        )
    missing = sorted(set(weights_names) ^ set(data_names))
    if missing:
        raise DetoptInputError(
            f"{where}: --remap matches classes by name, but {', '.join(map(repr, missing[:10]))} "
            "are only on one side (weights or data set)"
        )
    by_name = dict(zip(data_names, data_ids, strict=True))
    return [by_name[n] for n in weights_names]


def _cmd_val(args: argparse.Namespace) -> int:
    """Evaluate trained weights on a split: COCO metrics, per-class table, JSON, plots."""
    from detopt.data.dataset import dataset_from_source
    from detopt.engine import evaluate_detector
    from detopt.inference import load_weights
    from detopt.runtime import resolve_device

    w = load_weights(args.weights)
    imgsz = args.imgsz or w.imgsz or 640
    if hasattr(w.model, "check_size"):
        w.model.check_size(imgsz)
    ds, data_names = dataset_from_source(args.data, args.split, imgsz, skip_invalid=args.skip_invalid,
                                         **_source_kw(args))
    data_ids = ds.category_ids or list(range(1, len(data_names) + 1))
    pred_ids = label_map_by_name(w.names, w.category_ids, data_names, data_ids, args.remap, args.data)
    ev = evaluate_detector(w.model, ds, data_names, _postprocessor_from_args(w.model, args),
                           resolve_device(args.device), batch_size=args.batch, amp=args.amp,
                           category_ids=data_ids, pred_category_ids=pred_ids)
    result = ev.result
    print(result.summary())
    print()
    print(result.per_class_table())
    print(f"\n{len(ds)} images, {ev.num_detections} predictions")
    if args.save_json:
        _write_json(Path(args.save_json), ev.records())
    if args.plots:
        from detopt.evaluation.plots import save_plots

        paths = save_plots(result, args.plots)
        print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    """Detect objects in an image or a folder; draw PNGs and write COCO-style JSON."""
    from detopt.inference import Predictor, load_weights
    from detopt.runtime import resolve_device

    w = load_weights(args.weights)
    pred = Predictor(w.model, w.names, args.imgsz or w.imgsz or 640,
                     _postprocessor_from_args(w.model, args), resolve_device(args.device),
                     batch_size=args.batch, category_ids=w.category_ids)
    records = pred.predict_to(args.source, args.out)
    n_img = len({r["file_name"] for r in records})
    drawn = f"; drawn into {args.out}" if args.out else ""
    print(f"{len(records)} detections in {n_img} images with any{drawn}")
    if args.save_json:
        _write_json(Path(args.save_json), records)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    """Export trained weights: safetensors, or ONNX with post-processing inside the graph."""
    from detopt.export import export
    from detopt.export.onnx_nms import OPSET

    fmt = args.format or ("onnx" if Path(args.out).suffix == ".onnx" else "safetensors")
    options = {}
    if fmt == "onnx":
        options = {"dynamic": args.dynamic, "dynamic_batch": args.dynamic_batch, "nms": args.nms,
                   "score_thr": args.score_thr,
                   "iou_thr": args.iou_thr, "sigma": args.sigma, "max_det": args.max_det,
                   "agnostic": args.agnostic, "opset": args.opset or OPSET}
        if args.imgsz:
            options["imgsz"] = args.imgsz
    else:
        given = [f"--{k.replace('_', '-')}" for k in ("imgsz", "dynamic", "sigma", "agnostic", "opset")
                 if getattr(args, k) not in (None, False)]
        if given:
            raise DetoptInputError(f"{', '.join(given)}: options of --format onnx, not {fmt}")
    path = export(args.weights, args.out, fmt, use_ema=not args.raw, **options)
    print(f"wrote {path}")
    return 0


def _cmd_prune(args: argparse.Namespace) -> int:
    """Structured or unstructured pruning with fine-tuning: a run folder plus prune.json."""
    from detopt.compress import prune
    from detopt.config import PruneConfig, build_config

    values = {
        "weights": args.weights, "data": args.data, "out": args.out, "ratio": args.ratio,
        "method": "unstructured" if args.unstructured else "structured", "importance": args.importance,
        "global_rank": args.global_rank, "round_to": args.round_to, "steps": args.steps,
        "finetune": args.finetune, "finetune_epochs": args.finetune_epochs, "teacher": args.teacher,
        "sparsity": args.sparsity, "sparsity_epochs": args.sparsity_epochs, "sparsity_l1": args.sparsity_l1,
        "lr0": args.lr0, "imgsz": args.imgsz, "batch": args.batch, "workers": args.workers,
        "seed": args.seed, "device": args.device, "latency": not args.no_latency, "threads": args.threads,
        "val_split": args.split, "images": _images_arg(args.images),
        "allow_outside_root": args.allow_outside_root, "max_pixels": args.max_pixels,
        "skip_invalid": args.skip_invalid,
    }
    r = prune(build_config(PruneConfig, values), on_progress=print)
    tuned = ("not fine-tuned" if r.map_after_finetune is None
             else f"{r.map_after_finetune:.4f} after fine-tuning")
    print(f"\n{r.method} pruning: {r.params_before / 1e6:.2f} -> {r.params_after / 1e6:.2f} M parameters, "
          f"{r.gflops_before:.2f} -> {r.gflops_after:.2f} GFLOPs; mAP50-95 {r.map_before:.4f} before, "
          f"{r.map_after_pruning:.4f} after pruning, {tuned}")
    if r.latency:
        lat = r.latency
        print(f"latency (batch 1, p50): torch {lat['torch_before']['p50_ms']:.1f} -> "
              f"{lat['torch_after']['p50_ms']:.1f} ms ({lat['torch_speedup']:.2f}x), ONNX Runtime "
              f"{lat['ort_before']['p50_ms']:.1f} -> {lat['ort_after']['p50_ms']:.1f} ms "
              f"({lat['ort_speedup']:.2f}x)")
    for note in r.notes:
        print(note)
    print(f"wrote {Path(args.out) / 'best.pt'}, {Path(args.out) / 'prune.json'}")
    return 0


def _cmd_quantize(args: argparse.Namespace) -> int:
    """INT8 (PTQ, optionally QAT): model-int8.onnx with post-processing inside, and the report."""
    from detopt.compress import quantize
    from detopt.config import QuantizeConfig, build_config

    if args.method == "ptq" and (args.time or args.epochs):
        raise DetoptInputError("--time / --epochs: the QAT budget; add --method qat")
    keep = args.keep_fp32
    values = {
        "weights": args.weights, "data": args.data, "out": args.out, "method": args.method,
        "calib": args.calib, "calibrator": args.calibrator, "per_channel": args.per_channel,
        "keep_fp32": keep if keep in ("auto", "none") else [k for k in keep.split(",") if k],
        "target_drop": args.target_drop, "max_kept": args.max_kept, "search_images": args.search_images,
        "imgsz": args.imgsz, "nms": args.nms, "score_thr": args.score_thr, "iou_thr": args.iou_thr,
        "max_det": args.max_det, "val_split": args.split, "threads": args.threads, "seed": args.seed,
        "time": args.time, "epochs": args.epochs, "qat_lr": args.qat_lr, "batch": args.batch,
        "workers": args.workers,
        "images": _images_arg(args.images), "allow_outside_root": args.allow_outside_root,
        "max_pixels": args.max_pixels, "skip_invalid": args.skip_invalid,
    }
    result = quantize(build_config(QuantizeConfig, values), on_progress=print)
    print()
    print((Path(args.out) / "report.md").read_text())
    print(f"wrote {result.model_path}, {Path(args.out) / 'report.md'}, {Path(args.out) / 'report.json'}, "
          f"{Path(args.out) / 'tradeoff.png'}")
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    """An Optuna study over training runs: trials.csv, best.yaml, plots and report.html in OUT."""
    from detopt.config import TuneConfig, build_config, parse_overrides
    from detopt.tune.hpo import search

    values = {
        "data": args.data, "out": args.out, "space": args.space, "trials": args.trials, "time": args.time,
        "trial_time": args.trial_time, "trial_epochs": args.trial_epochs, "storage": args.storage,
        "study": args.study, "workers": args.workers, "threads": args.threads, "sampler": args.sampler,
        "pruner": args.pruner, "seed": args.seed, "heartbeat": args.heartbeat,
        "postprocess": not args.no_postprocess, "baseline": args.baseline,
        "train": parse_overrides(args.overrides),
    }
    s = search(build_config(TuneConfig, {k: v for k, v in values.items() if v is not None}))
    c = s["counts"]
    print(f"\n{c['COMPLETE']} complete, {c['PRUNED']} pruned, {c['FAIL']} failed, {c['WAITING']} waiting; "
          f"training compute {s['train_seconds']:.0f} s ({s['epochs_run']} epochs)")
    if s["best"] is not None:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in s["best"]["params"].items())
        print(f"best: trial {s['best']['number']} mAP50-95 {s['best']['value']:.4f}: {params}")
        if s["postprocess"]:
            p = s["postprocess"]
            print(f"post-processing: {p['label']} mAP50-95 {p['ap']:.4f} (default {p['default_ap']:.4f})")
    out = Path(args.out)
    print(f"wrote {out / 'trials.csv'}, {out / 'best.yaml'}, {out / 'report.html'}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    """The whole optimize loop on the embedded data set, ending in RUN/report.html."""
    from detopt.config import DemoConfig, build_config, parse_overrides
    from detopt.demo import run_config

    values = {"out": args.out, "minutes": args.minutes, "quick": args.quick, "seed": args.seed,
              "device": args.device, "workers": args.workers, "speed": False if args.accuracy_only else None}
    values = {k: v for k, v in values.items() if v is not None}
    if args.overrides:
        values["train"] = parse_overrides(args.overrides)
    cfg = build_config(DemoConfig, values)
    run_config(cfg, argv=["detopt", *args.argv])
    return 0


def build_parser() -> argparse.ArgumentParser:
    from detopt.ops.postprocess import METHOD_REGISTRY

    parser = argparse.ArgumentParser(
        prog="detopt",
        description="Make object detectors more accurate and faster.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _command(sub, "info", _cmd_info, help="print versions and machine facts")

    ev = _command(
        sub, "eval", _cmd_eval,
        help="COCO bbox evaluation (pycocotools' numbers), per-class table, plots",
        description="Evaluate COCO results against COCO ground truth with exactly pycocotools' numbers."
    )
    ev.add_argument("--gt", required=True, help="COCO ground-truth json")
    ev.add_argument("--pred", required=True, help="COCO results json (image_id, category_id, bbox, score)")
    ev.add_argument("--json", help="write {stats, per_class, counts} to this file")
    ev.add_argument("--plots", help="write pr_curve.png, f1_curve.png, confusion_matrix*.png here")
    ev.add_argument(
        "--max-dets",
        type=int,
        nargs=3,
        default=[1, 10, 100],
        metavar="N",
        help="three per-image detection limits (default 1 10 100)",
    )
    ev.add_argument(
        "--iou-thr",
        type=_coco_iou,
        default=0.5,
        help="IoU threshold of the F1 curve and the confusion matrix (default 0.5)",
    )
    ev.add_argument(
        "--score-thr",
        "--conf",
        dest="score_thr",
        type=_unit_interval,
        default=None,
        help="score threshold of the confusion matrix (default: the best-F1 confidence; --conf is an alias)",
    )
    _add_data_parser(sub)

    an = _command(
        sub, "anchors", _cmd_anchors,
        help="fit anchors to a data set (IoU k-means + evolution vs Euclidean k-means)",
        description="Fits k anchors (w, h) to the training boxes letterboxed to IMGSZ and compares "
        "the IoU-distance k-means + evolution with the Euclidean k-means baseline."
    )
    an.add_argument("--data", required=True, help="data.yaml, COCO json or VOC root")
    an.add_argument("--k", type=_int_at_least(1), default=9, help="number of anchors (default 9)")
    an.add_argument("--imgsz", type=_int_at_least(1), default=640, help="training size (default 640)")
    an.add_argument("--levels", type=_int_at_least(1), default=3, help="pyramid levels (default 3)")
    an.add_argument(
        "--thr", type=_unit_interval, default=0.5, help="IoU threshold of BPR and the fitness (default 0.5)"
    )
    an.add_argument(
        "--generations", type=_int_at_least(0), default=1000, help="evolution steps (default 1000)"
    )
    an.add_argument("--seed", type=int, default=0)
    an.add_argument("--plot", help="write the (w, h) scatter of boxes and anchors to this PNG")
    an.add_argument("--json", help="also write both fits here")
    _add_source_opts(an)

    tr = _command(
        sub, "train", _cmd_train,
        help="train a detector (YOLO-style, anchor-free) with the full recipe",
        description="Train on a data.yaml or a COCO json (+ --images). Extra KEY=VALUE arguments "
        "override any config key (lr0=0.02 amp=false close_mosaic=2 ...); see detopt.config.TrainConfig."
    )
    tr.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    tr.add_argument("--data", help="data.yaml, COCO json or VOC root")
    tr.add_argument("--config", "--cfg", dest="config",
                    help="a YAML of config keys, e.g. a study's best.yaml (flags and overrides win)")
    tr.add_argument("--model", help="registered model name (default yolo-n; see detopt.models.list_models)")
    tr.add_argument("--imgsz", type=_int_at_least(32), help="input size (default 320)")
    budget = tr.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=_int_at_least(1), help="epochs (default 100)")
    budget.add_argument("--time", help="time budget (90s, 10m, 1.5h): epochs and schedule end on time")
    tr.add_argument("--batch", type=_int_at_least(1), help="batch size (default 16)")
    tr.add_argument("--out", help="run folder (default runs/train)")
    tr.add_argument("--workers", type=_int_at_least(0), help="data loader processes (default 2)")
    tr.add_argument("--device", help="auto (default), cpu, cuda, cuda:1")
    tr.add_argument("--seed", type=int)
    tr.add_argument("--resume", metavar="RUN", help="continue RUN (its folder or last.pt) exactly")
    _add_source_opts(tr)

    def add_post(p: argparse.ArgumentParser, conf: float) -> None:
        p.add_argument("--weights", required=True, help="RUN/best.pt, last.pt or a .safetensors export")
        p.add_argument("--imgsz", type=_int_at_least(32), help="input size (default: the training size)")
        p.add_argument("--batch", type=_int_at_least(1), default=16)
        p.add_argument("--device", default="auto")
        p.add_argument("--score-thr", "--conf", dest="score_thr", type=_unit_interval, default=conf,
                       help=f"score threshold (default {conf}; --conf is an alias)")
        p.add_argument("--iou-thr", "--iou", dest="iou_thr", type=_unit_interval, default=IOU_THRESHOLD,
                       help=f"suppression IoU threshold (default {IOU_THRESHOLD}; --iou is an alias)")
        p.add_argument("--max-det", type=_int_at_least(1), default=MAX_DET)
        p.add_argument("--nms", default=None, choices=list(METHOD_REGISTRY.names()),
                       help="suppression method (detopt.ops.postprocess.METHOD_REGISTRY; default nms, "
                       "or the one inside an ONNX export)")

    va = _command(
        sub, "val", _cmd_val, help="evaluate weights on a split: COCO metrics, per-class table, plots"
    )
    add_post(va, SCORE_THRESHOLD)
    va.add_argument("--data", required=True, help="data.yaml, COCO json or VOC root")
    va.add_argument("--split", default="val")
    va.add_argument("--amp", action="store_true",
                    help="run the network under autocast: bf16 on CPU, fp16 on CUDA (torch weights)")
    va.add_argument("--save-json", help="write the predictions (COCO results + file_name) here")
    va.add_argument("--plots", help="write PR, F1 and confusion-matrix plots here")
    va.add_argument(
        "--remap",
        action="store_true",
        help="the data set's classes are the weights' in another order or with other ids: match by name",
    )
    _add_source_opts(va)

    pr = _command(sub, "predict", _cmd_predict, help="detect objects in images: drawn PNGs and JSON")
    add_post(pr, 0.25)
    pr.add_argument("--source", required=True, help="an image or a folder of images")
    pr.add_argument("--out", help="write the drawn images (PNG) here")
    pr.add_argument("--save-json", help="write the detections (COCO results + file_name) here")

    from detopt.export import EXPORT_FORMATS
    from detopt.export.onnx_nms import ONNX_NMS, OPSET

    ex = _command(
        sub,
        "export",
        _cmd_export,
        help="export trained weights: safetensors, or ONNX with NMS inside the graph",
        description="Write the weights as safetensors, or the network, its box decode and a "
        "post-processing method as one ONNX graph (outputs detections [B, max_det, 6] and "
        "num_detections [B]; thresholds are graph inputs with these defaults)."
    )
    ex.add_argument("--weights", required=True, help="a checkpoint (.pt) or safetensors export")
    ex.add_argument("--out", required=True, help="the file to write (.safetensors or .onnx)")
    ex.add_argument("--format", choices=list(EXPORT_FORMATS.names()),
                    help="default: onnx for an .onnx --out, else safetensors")
    ex.add_argument("--raw", action="store_true", help="the raw weights instead of the EMA")
    ex.add_argument("--imgsz", type=_int_at_least(32), help="ONNX input side (default: the training size)")
    ex.add_argument("--dynamic", action="store_true", help="ONNX: batch, height and width symbolic")
    ex.add_argument("--dynamic-batch", action="store_true",
                    help="ONNX: the batch alone symbolic (the side stays --imgsz)")
    ex.add_argument("--nms", default="nms", choices=[*ONNX_NMS.names(), "none"],
                    help="ONNX: post-processing inside the graph (default nms; none: boxes and scores)")
    ex.add_argument("--score-thr", "--conf", dest="score_thr", type=_unit_interval, default=0.25,
                    help="ONNX: default score threshold (a graph input; default 0.25)")
    ex.add_argument("--iou-thr", "--iou", dest="iou_thr", type=_unit_interval, default=IOU_THRESHOLD,
                    help=f"ONNX: default IoU threshold (a graph input; default {IOU_THRESHOLD})")
    ex.add_argument("--sigma", type=_positive_float, help="ONNX: default sigma of soft / matrix NMS")
    ex.add_argument("--max-det", type=_int_at_least(1), default=MAX_DET, help="ONNX: rows per image")
    ex.add_argument("--agnostic", action="store_true", help="ONNX: suppress across classes")
    ex.add_argument("--opset", type=_int_at_least(18), help=f"ONNX opset (default {OPSET})")

    from detopt.compress.quantization import CALIBRATORS

    qu = _command(
        sub,
        "quantize",
        _cmd_quantize,
        help="INT8 post-training quantization to ONNX (NMS inside), with an accuracy / latency report",
        description="Calibrate on training images, quantize the network to INT8 (QDQ; the box decode "
        "and post-processing stay float), keep the most sensitive layers float until the mAP drop on "
        "held-out training images is within --target-drop, and measure FP32 torch, FP32 ONNX Runtime "
        "and INT8 on the validation split: OUT/model-int8.onnx, report.md, report.json, tradeoff.png.",
    )
    _compress_io(qu, "output folder")
    qu.add_argument("--method", default="ptq", choices=["ptq", "qat"],
                    help="ptq: post-training static INT8 (default); qat: then quantization-aware fine-tuning")
    qat_budget = qu.add_mutually_exclusive_group()
    qat_budget.add_argument("--time", help="QAT budget (90s, 5m, 1h)")
    qat_budget.add_argument("--epochs", type=_int_at_least(1), help="QAT epochs (default 2)")
    qu.add_argument("--qat-lr", type=_positive_float, default=0.001, help="QAT learning rate (default 0.001)")
    qu.add_argument("--batch", type=_int_at_least(1), default=16, help="QAT batch size (default 16)")
    qu.add_argument("--workers", type=_int_at_least(0), default=2, help="QAT loader processes (default 2)")
    qu.add_argument("--calib", type=_int_at_least(16), default=256,
                    help="calibration images from the training split (default 256)")
    qu.add_argument("--calibrator", default="minmax", choices=list(CALIBRATORS.names()),
                    help="how activation ranges are chosen (default minmax)")
    granularity = qu.add_mutually_exclusive_group()
    granularity.add_argument("--per-channel", dest="per_channel", action="store_true", default=True,
                             help="int8 weights per output channel (default)")
    granularity.add_argument("--per-tensor", dest="per_channel", action="store_false",
                             help="int8 weights per tensor")
    qu.add_argument("--keep-fp32", default="auto", metavar="auto|none|LAYER,...",
                    help="layers kept float: auto (search, default), none, or comma-separated names")
    qu.add_argument("--target-drop", type=_unit_interval, default=0.01,
                    help="mAP50-95 drop the auto search accepts (default 0.01)")
    qu.add_argument("--max-kept", type=_int_at_least(0), default=8,
                    help="most layers the auto search keeps float (default 8)")
    qu.add_argument("--search-images", type=_int_at_least(8), default=128,
                    help="training images (not calibration ones) the search scores on (default 128)")
    qu.add_argument("--imgsz", type=_int_at_least(32), help="input side (default: the training size)")
    qu.add_argument("--nms", default="nms", choices=list(ONNX_NMS.names()),
                    help="post-processing inside the graph (default nms)")
    qu.add_argument("--score-thr", "--conf", dest="score_thr", type=_unit_interval, default=0.25,
                    help="the graph's default score threshold (an input; default 0.25)")
    qu.add_argument("--iou-thr", "--iou", dest="iou_thr", type=_unit_interval, default=IOU_THRESHOLD,
                    help=f"the graph's default IoU threshold (default {IOU_THRESHOLD})")
    qu.add_argument("--max-det", type=_int_at_least(1), default=MAX_DET)
    qu.add_argument("--split", default="val", help="the split the report scores (default val)")
    qu.add_argument("--threads", type=_int_at_least(1), help="threads (default: torch's)")
    qu.add_argument("--seed", type=int, default=0, help="draws calibration and search images")
    _add_source_opts(qu)

    from detopt.compress.pruning.structured import IMPORTANCES

    pr = _command(
        sub,
        "prune",
        _cmd_prune,
        help="structured (channels) or unstructured (weights) pruning with fine-tuning and a report",
        description="Remove output channels across every coupled group (C2f split and concat, residual "
        "adds, neck concats; the prediction convs stay whole) until --ratio of the FLOPs are gone, "
        "fine-tune, and write a run folder OUT (best.pt loads alone: the widths are in its spec) with "
        "OUT/prune.json (widths, parameters, GFLOPs, mAP before / after pruning / after fine-tuning, "
        "latency). --unstructured zeroes the smallest --ratio of the conv weights instead.",
    )
    _compress_io(pr, "the run folder to write")
    pr.add_argument("--ratio", type=float, default=0.5,
                    help="structured: share of FLOPs to remove; unstructured: sparsity (default 0.5)")
    kind = pr.add_mutually_exclusive_group()
    kind.add_argument("--structured", action="store_true", default=True, help="remove channels (default)")
    kind.add_argument("--unstructured", action="store_true", help="zero weights (global magnitude)")
    pr.add_argument("--importance", default="l1", choices=list(IMPORTANCES.names()),
                    help="channel score (default l1)")
    pr.add_argument("--global", dest="global_rank", action="store_true",
                    help="rank channels over the whole model (default: the same ratio per layer)")
    pr.add_argument("--round-to", type=_int_at_least(1), default=16,
                    help="kept widths a multiple of (default 16: the AVX-512 SIMD width that ONNX "
                         "Runtime's and oneDNN's blocked kernels use)")
    pr.add_argument("--steps", type=_int_at_least(1), default=1, help="prune in N steps, fine-tuning between")
    budget = pr.add_mutually_exclusive_group()
    budget.add_argument("--finetune", help="fine-tune budget over all steps (90s, 5m; default a quarter "
                        "of the weights' training time)")
    budget.add_argument("--finetune-epochs", type=_int_at_least(0),
                        help="fine-tune epochs per step (0: none)")
    pr.add_argument("--teacher", help="distil from these weights while fine-tuning (kd: see train)")
    slim = pr.add_mutually_exclusive_group()
    slim.add_argument("--sparsity", help="network slimming first: train this long (2m) with an L1 penalty "
                      "on the BN scales (use with --importance bn_scale)")
    slim.add_argument("--sparsity-epochs", type=_int_at_least(1), help="the slimming phase in epochs")
    pr.add_argument("--sparsity-l1", type=_positive_float, default=0.01,
                    help="L1 weight on the BN scales while slimming (default 0.01)")
    pr.add_argument("--lr0", type=_positive_float, default=0.002,
                    help="fine-tune learning rate (default 0.002)")
    pr.add_argument("--imgsz", type=_int_at_least(32), help="input side (default: the training size)")
    pr.add_argument("--batch", type=_int_at_least(1), default=16)
    pr.add_argument("--workers", type=_int_at_least(0), default=2)
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--device", default="auto")
    pr.add_argument("--split", default="val", help="the split mAP is measured on (default val)")
    pr.add_argument("--threads", type=_int_at_least(1), help="latency threads (default: torch's)")
    pr.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    _add_source_opts(pr)

    tu = _command(
        sub, "tune", _cmd_tune,
        help="hyperparameter search: an Optuna study of training runs, pruned early, shared by workers",
        description="Each trial trains with the study's keys and one draw of the search space, reports "
        "validation mAP50-95 after every epoch and may be pruned. The study lives in a journal file in "
        "OUT (or --storage URL, shared by workers on many machines); re-running the command resumes it. "
        "Writes OUT/trials.csv, OUT/best.yaml (detopt train --cfg OUT/best.yaml), plots and "
        "OUT/report.html. Extra KEY=VALUE arguments fix training keys for every trial (not searched).",
    )
    tu.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="training keys of every trial")
    tu.add_argument("--data", required=True, help="data.yaml, COCO json or VOC root (val split scores)")
    tu.add_argument("--out", required=True, help="the study folder")
    tu.add_argument("--space", help="YAML search space (lr0: {low: 1e-4, high: 0.1, log: true}, "
                    "optimizer: [sgd, adamw]); default: the guide's table")
    tu.add_argument("--trials", type=_int_at_least(1), help="trials of the study (default 20)")
    tu.add_argument("--time", help="start no trial after this long (a re-run goes on)")
    tb = tu.add_mutually_exclusive_group()
    tb.add_argument("--trial-time", help="each trial's training budget (default 3m)")
    tb.add_argument("--trial-epochs", type=_int_at_least(1), help="each trial's epochs")
    tu.add_argument("--storage", help="SQLAlchemy URL (postgresql://user@host/db, sqlite:///s.db) or a "
                    "journal file path (default OUT/study.journal)")
    tu.add_argument("--study", help="study name in the storage (default detopt)")
    tu.add_argument("--workers", type=_int_at_least(1), help="trial processes on this machine (default 1)")
    tu.add_argument("--threads", type=_int_at_least(1),
                    help="torch threads per worker (default cores / workers)")
    tu.add_argument("--sampler", choices=["tpe", "random", "cmaes"], help="default tpe")
    tu.add_argument("--pruner", choices=["hyperband", "median", "none"], help="default hyperband")
    tu.add_argument("--seed", type=int, help="sampler and trial seed (default 0)")
    tu.add_argument("--heartbeat", type=_positive_float,
                    help="seconds between heartbeats of a running trial (default 10; silent for 6 = dead)")
    tu.add_argument("--no-postprocess", action="store_true",
                    help="skip the NMS / threshold study on the best trial")
    tu.add_argument("--baseline", action="store_true",
                    help="trial 0 trains with the base values (defaults and key=value), to compare with")

    de = _command(
        sub, "demo", _cmd_demo,
        help="the whole loop on the embedded data: data, anchors, train, COCO eval, NMS study, prune, "
        "export, INT8, deployment table, a small tuning study, report",
        description="Synthesize the embedded data set, analyse it, fit anchors, train the default CPU "
        "model on a time budget, evaluate it exactly, study every post-processing method and threshold "
        "on the validation predictions; then prune it (with distillation), export it to ONNX, quantize "
        "both to INT8, measure every deployment variant side by side, run a small fine-tuning study, "
        "and write RUN/report.html. Steps already done in RUN with the "
        "same parameters are reused; an unfinished training run is resumed. Extra KEY=VALUE arguments "
        "override training config keys (lr0=0.02 nbs=64 ...)."
    )
    de.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="training config overrides")
    de.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    de.add_argument(
        "--minutes", type=_positive_float, help="training budget in minutes (default 8; --quick 0.25)"
    )
    de.add_argument("--quick", action="store_true",
                    help="small data, a 15-second training: every step in under a minute, numbers "
                    "meaningless (smoke tests, CI)")
    de.add_argument("--accuracy-only", action="store_true",
                    help="stop after the post-processing study (no prune, export, INT8, deploy, tune)")
    de.add_argument("--seed", type=int)
    de.add_argument("--device", help="auto (default), cpu, cuda")
    de.add_argument("--workers", type=_int_at_least(0), help="data loader processes (default 2)")
    return parser


class _PrintHandler(logging.Handler):
    """Prints detopt's INFO messages (how a data set was read) to the current ``sys.stdout``."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"data: {record.getMessage()}" if record.name == "detopt.data" else record.getMessage())


def _print_library_messages() -> None:
    from detopt.data.formats import forget_announcements

    forget_announcements()  # each command says once how it read its data set
    logger = logging.getLogger("detopt")
    if not any(isinstance(h, _PrintHandler) for h in logger.handlers):
        logger.addHandler(_PrintHandler())
    logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    _print_library_messages()
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
