"""The run report: one static HTML page (inline CSS, PNGs beside it) that opens offline.

:func:`write_report` takes the step summaries the demo writes (plain JSON-ready dicts, see
:mod:`detopt.demo`) and lays them out in sections; every figure has a caption saying what it
shows. A small inline script counts images that failed to load and shows a warning at the top
(``<body data-missing-images="N">``), which the browser test reads.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

SECTIONS = (
    ("data", "Data set"),
    ("anchors", "Anchor fit"),
    ("training", "Training"),
    ("evaluation", "COCO evaluation"),
    ("predictions", "Predictions"),
    ("postprocessing", "Post-processing"),
    ("deploy", "Deploy"),
    ("tune", "Hyperparameter search"),
    ("environment", "Environment"),
)

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d1d1f;
background:#fafafa}
header{background:#1f3a5f;color:#fff;padding:18px 32px}header h1{margin:0 0 4px;font-size:24px}
header p{margin:2px 0;opacity:.9}nav{position:sticky;top:0;background:#e9eef5;padding:8px 32px;z-index:1}
nav a{margin-right:16px;color:#1f3a5f;text-decoration:none;font-weight:600}
main{padding:8px 32px 40px;max-width:1500px}section{margin-top:28px}
h2{border-bottom:2px solid #1f3a5f;padding-bottom:4px}h3{margin-bottom:6px}
table{border-collapse:collapse;margin:8px 0 14px;font-size:13px;background:#fff}
th,td{border:1px solid #d0d7de;padding:4px 9px;text-align:right}th{background:#f0f3f7}
td:first-child,th:first-child,td.t{text-align:left}tr.best td{background:#e6f4ea;font-weight:600}
figure{display:inline-block;vertical-align:top;margin:8px 18px 14px 0;background:#fff;padding:8px;
border:1px solid #e1e4e8;max-width:100%}figure img{max-width:100%;height:auto;display:block}
figcaption{font-size:13px;color:#444;max-width:760px;margin-top:6px}
.cards{display:flex;gap:14px;flex-wrap:wrap;margin:14px 0}.card{background:#fff;border:1px solid #d0d7de;
padding:10px 16px;min-width:140px}.card b{display:block;font-size:22px;color:#1f3a5f}
.note{color:#555;font-size:13px;max-width:1000px}.warn{background:#ffe8e6;color:#a40e26;padding:10px 32px;
font-weight:600}code{background:#eef1f4;padding:1px 4px}pre{background:#fff;border:1px solid #e1e4e8;
padding:8px;font-size:12px;overflow-x:auto}
.legend span{display:inline-block;padding:1px 8px;margin-right:8px;color:#fff;font-size:13px}
"""

_SCRIPT = """
window.addEventListener('load', function () {
  var bad = Array.prototype.filter.call(document.images, function (i) {
    return !i.complete || i.naturalWidth === 0; });
  document.body.setAttribute('data-images', document.images.length);
  document.body.setAttribute('data-missing-images', bad.length);
  if (bad.length) {
    var d = document.createElement('div'); d.className = 'warn';
    d.textContent = bad.length + ' image(s) of this report are missing: ' +
      bad.map(function (i) { return i.getAttribute('src'); }).join(', ');
    document.body.insertBefore(d, document.body.firstChild);
  }
});
"""


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def fmt(v: Any, digits: int = 4) -> str:
    """Numbers as text: floats with ``digits`` decimals, -1 (COCO's "no value") as a dash."""
    if isinstance(v, bool) or v is None:
        return "-" if v is None else str(v)
    if isinstance(v, float):
        if v != v:  # NaN
            return "-"
        if v == -1.0:
            return "-"
        return f"{v:.{digits}f}"
    return str(v)


def table(
    head: Sequence[str], rows: Iterable[Sequence[Any]], best: Iterable[int] = (), digits: int = 4
) -> str:
    """An HTML table; the rows whose index is in ``best`` are highlighted."""
    best = set(best)
    out = ["<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"]
    for i, row in enumerate(rows):
        cls = ' class="best"' if i in best else ""
        cells = "".join(
            f"<td>{esc(fmt(v, digits))}</td>"
            if isinstance(v, (int, float)) or k == 0
            else f'<td class="t">{esc(fmt(v, digits))}</td>'
            for k, v in enumerate(row)
        )
        out.append(f"<tr{cls}>{cells}</tr>")
    out.append("</table>")
    return "\n".join(out)


def figure(src: str, caption: str, width: int | None = None) -> str:
    """An ``<img>`` (path relative to the report) with a caption that says what it shows."""
    style = f' style="width:{width}px"' if width else ""
    return (
        f'<figure><img src="{esc(src)}" alt="{esc(caption.split(".")[0])}"{style}>'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def card(label: str, value: str) -> str:
    return f'<div class="card">{esc(label)}<b>{esc(value)}</b></div>'


def image_paths(report_html: str) -> list[str]:
    """Every ``src`` of an ``<img>`` in the report's HTML (for checks that they exist)."""
    return re.findall(r'<img src="([^"]+)"', report_html)


def _rel(path: str | Path, root: Path) -> str:
    """A path of a summary (relative to the run folder, or absolute) as the page refers to it."""
    p = Path(path)
    return Path(os.path.relpath(p, root)).as_posix() if p.is_absolute() else p.as_posix()


def _figures(paths: dict[str, str], root: Path, **captions: str) -> list[str]:
    """One :func:`figure` per ``key=caption``, in that order: the summary's figure ``paths[key]``."""
    return [figure(_rel(paths[key], root), caption) for key, caption in captions.items()]


# --------------------------------------------------------------------------- sections
def _data_section(s: dict[str, Any], root: Path) -> str:
    st, va = s["stats"], s["validation"]
    sizes = st["sizes"]
    rows = [
        (n, v["instances"], v["images"], v["small"], v["medium"], v["large"])
        for n, v in st["per_class"].items()
    ]
    parts = [
        f'<p class="note">{esc(s["description"])}</p>',
        "<h3>Validation of the files</h3>",
        f"<pre>{esc(chr(10).join(va['lines']))}</pre>",
        "<h3>Classes and sizes</h3>",
        f'<p class="note">{st["images"]} images, {st["boxes"]} boxes, {st["backgrounds"]} background '
        f"images; COCO sizes: small {sizes['small']}, medium {sizes['medium']}, large {sizes['large']}; "
        f"imbalance ratio (most / least frequent class) {fmt(st['imbalance_ratio'], 2)}.</p>",
        table(("class", "instances", "images", "small", "medium", "large"), rows),
        *_figures(
            s["figures"],
            root,
            samples="Training images as the network sees them at evaluation (letterboxed, no augmentation) "
            "with their ground-truth boxes and class names.",
            augmented="The same kind of grid after the training augmentation (mosaic, random affine, HSV, "
            "flip): what the model is trained on. Every box must still fit its object.",
            classes="Instances per class over train + val (class balance).",
            sizes="Left: boxes per COCO size class (small < 32², medium < 96² px²). Right: histogram of "
            "sqrt(box area) in pixels; dashed lines at 32 and 96 px.",
            boxes_per_image="How many boxes each image has.",
            aspect_ratios="Histogram of box aspect ratios, log2(w / h).",
        ),
    ]
    return "\n".join(parts)


def _anchor_section(s: dict[str, Any], root: Path) -> str:
    fits = s["fits"]
    keys = ("mean_best_iou", "bpr", "anchors_per_box", "fitness")
    rows = [(f["method"], *(f[k] for k in keys)) for f in fits]
    anchors = [
        (f["method"], "  |  ".join(" ".join(f"{w:.0f}x{h:.0f}" for w, h in lvl) for lvl in f["per_level"]))
        for f in fits
    ]
    return "\n".join(
        [
            f'<p class="note">k = {s["k"]} anchors over {s["levels"]} levels fitted to {s["boxes"]} training '
            f"boxes letterboxed to {s['imgsz']} px. The detector trained here is anchor-free (it "
            f"regresses distances from grid points), so this is an analysis of the box sizes: how well k "
            f"prototype shapes cover them, and what an anchor-based head would use. BPR: share of boxes with "
            f"an anchor of IoU ≥ {s['thr']:g}.</p>",
            table(("method", *keys), rows, best=[0]),
            table(("method", "anchors w x h per level (small to large)"), anchors),
            figure(
                _rel(s["figure"], root),
                "Box sizes (w, h) of the training set (grey, log-log) and the anchors each method "
                "fits (markers): IoU-distance k-means refined by evolution vs plain Euclidean k-means.",
            ),
        ]
    )


def _training_section(s: dict[str, Any], root: Path) -> str:
    cfg = s["config"]
    rows = [
        (
            "model",
            f"{cfg['model']} ({s['params_m']:.2f} M parameters, {s['gflops']:.2f} GFLOPs at {cfg['imgsz']})",
        ),
        ("data", f"{s['train_images']} training images, {s['val_images']} validation images"),
        ("budget", f"{fmt(cfg['time'], 0)} s of training; {s['epochs']} epochs ran in {s['elapsed']:.0f} s"),
        ("batch", f"{cfg['batch']} (gradients accumulated to a nominal batch of {cfg['nbs']})"),
        (
            "optimizer",
            f"{cfg['optimizer']}, lr0 {cfg['lr0']}, {cfg['schedule']} to lr0·{cfg['lrf']}, "
            f"momentum {cfg['momentum']}, weight decay {cfg['weight_decay']}",
        ),
        (
            "recipe",
            f"warmup {cfg['warmup_epochs']} epochs (at most {cfg['warmup_max_fraction']:.0%} of the run), "
            f"EMA {cfg['ema']}, AMP (bf16 on CPU) {cfg['amp']}, close-mosaic {cfg['close_mosaic']}, "
            f"classification loss {cfg['cls_loss']}, gains box {cfg['box_gain']} / cls {cfg['cls_gain']} "
            f"/ dfl {cfg['dfl_gain']}",
        ),
        ("non-finite steps skipped", s["bad_steps"]),
        ("reused", "yes (a finished run found in RUN/train)" if s.get("reused") else "no"),
    ]
    return "\n".join(
        [
            table(("setting", "value"), rows),
            figure(
                _rel(s["figure"], root),
                "Per epoch: training loss terms, learning rate, validation COCO AP of the EMA weights,"
                " and training throughput (images / s, augmentation included).",
            ),
            f'<p class="note">Checkpoints and the resolved config are in '
            f"<code>{esc(_rel(s['run'], root))}/</code> (<code>last.pt</code>, <code>best.pt</code>, "
            "<code>results.csv</code>, <code>config.yaml</code>).</p>",
        ]
    )


def _evaluation_section(s: dict[str, Any], root: Path) -> str:
    names = s["stat_names"]
    stats = s["stats"]
    per = s["per_class"]
    pc_keys = list(next(iter(per.values())).keys()) if per else []
    counts = s["counts"]
    return "\n".join(
        [
            f'<p class="note">Exact COCO bbox evaluation (pycocotools\' numbers) of the final EMA weights on '
            f"{counts['images']} validation images ({counts['ground_truth']} boxes, {counts['predictions']} "
            f"detections), post-processing {esc(s['setting'])}.</p>",
            table(("metric", "value"), list(zip(names, stats, strict=True))),
            "<pre>" + esc("\n".join(s["summary_lines"])) + "</pre>",
            "<h3>Per class</h3>",
            table(
                ("class", *pc_keys, "gt", "detections"),
                [(n, *row.values(), s["gt_per_class"][n], s["dt_per_class"][n]) for n, row in per.items()],
            ),
            *_figures(
                s["figures"],
                root,
                pr_curve="Precision against recall per class (thin) and averaged over classes (thick), at "
                "IoU 0.5 and averaged over IoU 0.5:0.95 (COCO's interpolated precision).",
                f1_curve="F1 against the confidence threshold at IoU 0.5, per class and averaged; the "
                "dashed line marks the confidence with the best mean F1 (used for the confusion matrix "
                "and the drawings).",
                confusion_matrix=f"Confusion matrix at IoU 0.5 and confidence {s['confidence']:.3f}, "
                "columns normalised: which class the detections matched to each true class are given; "
                "the background row holds missed objects, the background column false detections.",
            ),
        ]
    )


def _predictions_section(s: dict[str, Any], root: Path) -> str:
    return "\n".join(
        [
            '<p class="legend"><span style="background:#3cb43c">true positive</span>'
            '<span style="background:#ff8c00">false positive</span>'
            '<span style="background:#e62828">missed object</span></p>',
            figure(
                _rel(s["figure"], root),
                f"{s['images']} validation images (enlarged 2x) with detections scoring at least "
                f"{s['confidence']:.3f} (the best-F1 confidence), matched to ground truth at IoU 0.5 as COCO "
                f"matches them: {s['tp']} true positives, {s['fp']} false positives, {s['missed']} missed "
                "objects in these images.",
            ),
        ]
    )


def _postprocess_section(s: dict[str, Any], root: Path) -> str:
    results = s["results"]
    best_rows = s["best_per_method"]
    head = ("setting", "mAP50-95", "mAP50", "AP_small", "ms / image", "detections / image")
    rows = [
        (r["label"], r["ap"], r["ap50"], r["ap_small"], r["ms_per_image"], r["dets_per_image"])
        for r in best_rows
    ]
    top = max(range(len(rows)), key=lambda i: rows[i][1]) if rows else -1
    full = [
        (r["label"], r["ap"], r["ap50"], r["ap_small"], r["ms_per_image"], r["dets_per_image"])
        for r in sorted(results, key=lambda r: -r["ap"])
    ]
    h = s["holdout"]
    d = s["default"]
    return "\n".join(
        [
            f'<p class="note">The model ran once over the validation set; each setting below suppresses the '
            f"same {s['candidates_per_image']:.0f} candidates per image "
            f"(score &gt; {s['min_score']:g}) and is "
            f"scored with the exact COCO evaluation. Time is the suppression alone, per image, on this CPU. "
            f"Default: {esc(d['label'])} = mAP50-95 {d['ap']:.4f}.</p>",
            "<h3>Each method at its best threshold</h3>",
            table(head, rows, best=[top]),
            f'<p class="note">Held-out check (a setting chosen and scored on the same images is optimistic): '
            f"chosen on the even-numbered images, <b>{esc(h['chosen_on_even'])}</b> scores mAP50-95 "
            f"{h['chosen_map_odd']:.4f} on the odd-numbered ones, against {h['default_map_odd']:.4f} for the "
            f"default ({h['gain_odd']:+.4f}).</p>",
            *_figures(
                s["figures"],
                root,
                tradeoff="mAP50-95 on validation against suppression time per image for every setting "
                "studied (one colour per method; the best of each method labelled).",
                grid="Hard NMS per class: mAP50-95 for each IoU threshold (rows) and score threshold "
                "(columns).",
            ),
            f"<details><summary>All {len(full)} settings, best first</summary>",
            table(head, full, best=[0]),
            "</details>",
        ]
    )


def _deploy_section(s: dict[str, Any], root: Path) -> str:
    """The deployment variants: accuracy, latency, size, the Pareto front, the recommendation and
    the commands that reproduce each file."""
    rows = s["rows"]
    rec = s["recommendation"]
    head = ("variant", "backend", "mAP50-95", "mAP50", "AP_small", "p50 ms (b1)", "p90 ms (b1)",
            "images/s (b8)", "× torch FP32", "file MB", "params M", "GFLOPs", "Pareto")
    ref = rows[rec["reference"]]["p50_ms"]
    body = [(r["name"], r["backend"], r["map"], r["map50"], r["ap_small"], f"{r['p50_ms']:.2f}",
             f"{r['p90_ms']:.2f}", f"{r['images_per_s_b8']:.1f}", f"{ref / r['p50_ms']:.2f}",
             f"{r['size_mb']:.2f}", f"{r['params_m']:.2f}", f"{r['gflops']:.2f}",
             "yes" if r["pareto"] else "")
            for r in rows]
    pr, q = s["prune"], s["quantize"]
    parts = [
        f'<p class="note">The trained model as deployable variants, measured on this machine with '
        f"{s['threads']} threads at {s['imgsz']} px. Accuracy: exact COCO evaluation of each file on the "
        f"{s['val_images']} validation images (score &gt; 0.001). Latency: one image (median and 90th "
        "percentile) and images per second at batch 8, every variant timed in alternating rounds in one "
        "process, network and hard NMS (score 0.25) included; torch runs eager, ONNX Runtime on the CPU "
        "with the NMS inside the graph. bf16 autocast computes in bf16 from the FP32 file.</p>",
        f"<p><b>{esc(rec['text'])}</b> (the fastest variant within {rec['max_drop']} mAP50-95 of torch "
        "FP32, computed from the table.)</p>",
        table(head, body, best=[rec["index"]]),
        f'<p class="note">Pruning: {pr["ratio"]:.0%} of the FLOPs removed ({pr["importance"]} importance; '
        f"{pr['gflops_before']:.2f} → {pr['gflops_after']:.2f} GFLOPs, {pr['params_before'] / 1e6:.2f} → "
        f"{pr['params_after'] / 1e6:.2f} M parameters); mAP50-95 {pr['map_before']:.4f} before, "
        f"{pr['map_after_pruning']:.4f} right after pruning, "
        + (f"{pr['map_after_finetune']:.4f} after one epoch of fine-tuning distilled from the unpruned model"
           if pr["map_after_finetune"] is not None else "not fine-tuned")
        + ". INT8: activations uint8, weights int8 per channel, calibrated on "
        f"{q['trained']['calib']} training images; layers kept float: "
        f"{', '.join(q['trained']['kept_float']) or 'none'} (trained), "
        f"{', '.join(q['pruned']['kept_float']) or 'none'} (pruned).</p>",
        *_figures({"chart": s["figure"]}, root,
                  chart="mAP50-95 against latency per image at batch 1 for every variant; filled points "
                  "and the line: the Pareto front (no other variant is both faster and more accurate)."),
        "<h3>Commands that reproduce each variant</h3>",
    ]
    for r in rows:
        parts.append(f"<p class=\"note\"><b>{esc(r['name'])}</b> (<code>{esc(r['file'])}</code>)</p>"
                     f"<pre>{esc(chr(10).join(r['commands']))}</pre>")
    return "\n".join(parts)


def _tune_section(s: dict[str, Any], root: Path) -> str:
    """The study: what was searched, how each trial ended, the best parameters, the plots."""
    c = s["counts"]
    best = s["best"]
    keys = list(s["space"])
    head = ("trial", "state", "mAP50-95", "epochs", "seconds", *keys)
    def value(r: dict[str, Any]) -> float:
        return r["value"] if isinstance(r["value"], float) else -1.0

    def cell(v: Any) -> Any:
        return None if v == "" else v

    order = sorted(s["trials"], key=lambda r: -value(r))
    rows = [(r["number"], r["state"], cell(r["value"]), r["epochs"], cell(r["seconds"]),
             *[cell(r[k]) for k in keys]) for r in order]
    parts = [
        f'<p class="note">Each trial is a training run of {esc(s["trial_budget"])} scored by mAP50-95 on the '
        f"validation split after every epoch; the {esc(s['pruner'])} pruner stops weak trials early. "
        f"Sampler {esc(s['sampler'])}. {c['COMPLETE']} complete, {c['PRUNED']} pruned, {c['FAIL']} failed "
        f"of {s['target_trials']} trials; training compute {s['train_seconds']:.0f} s "
        f"({s['epochs_run']} epochs).</p>",
    ]
    setup = s.get("setup")
    if setup:  # the demo's small study of fine-tunes
        parts.append(
            '<p class="note">Here each trial fine-tunes the trained weights '
            f'(<code>{esc(setup["weights"])}</code>) '
            f"for {setup['epochs']} epoch(s) on {setup['train_images']} training images and is scored on the "
            f"first {setup['val_images']} validation images; searched: {esc(', '.join(keys))} "
            f"(<code>{esc(setup['space_file'])}</code>). Trial 0 trains with the base values. "
            "<b>Its findings are not applied to the model of this report</b>: trials this short on this "
            "few images are a hint (a few thousandths of mAP50-95 are within the noise of a hundred "
            "images). This study: "
            f"<code>{esc(setup['command'])}</code>. A real one (hours): "
            f"<code>{esc(setup['real_command'])}</code>.</p>")
    if best is not None:
        first = s.get("first_trial_value")
        what = "trial 0, the base values" if s.get("baseline") else "the first trial"
        vs = (f" ({what}: {first:.4f}; {best['value'] - first:+.4f} against it)"
              if isinstance(first, float) else "")
        parts.append(
            f"<p>Best: trial {best['number']}, mAP50-95 <b>{best['value']:.4f}</b>{vs}; its keys are in "
            "<code>best.yaml</code> (<code>detopt train --cfg best.yaml</code>). These are findings on the "
            "validation split with short trials: confirm them on held-out data with a full run before "
            "adopting them.</p>")
        parts.append(table(("key", "best value"), [(k, v) for k, v in best["params"].items()], digits=5))
    post = s.get("postprocess")
    if post:
        parts.append(f'<p class="note">Post-processing on the best trial\'s weights: {esc(post["label"])} '
                     f"mAP50-95 {post['ap']:.4f} against {post['default_ap']:.4f} for the default "
                     f"(held-out halves: {post['holdout']['gain_odd']:+.4f}).</p>")
    captions = {
        "history": "Each trial's value (mAP50-95) and the best so far, by trial number.",
        "importances": "How much each key explains the value (PED-ANOVA over the finished trials).",
        "parallel": "Parallel coordinates: each line a finished trial, coloured by its value.",
        "intermediate": "Validation mAP50-95 after each epoch of every trial; pruned trials stop early.",
    }
    parts += _figures(s["figures"], root, **{k: v for k, v in captions.items() if k in s["figures"]})
    parts.append(f"<details><summary>All {len(rows)} trials, best first</summary>")
    parts.append(table(head, rows, best=[0] if best is not None else [], digits=5))
    parts.append("</details>")
    return "\n".join(parts)


def _environment_section(s: dict[str, Any]) -> str:
    rows = list(s["versions"].items())
    steps = [
        (k, f"{v:.1f}", "reused" if k in s.get("reused", []) else "") for k, v in s["step_seconds"].items()
    ]
    return "\n".join(
        [
            table(("", "value"), rows),
            "<h3>Wall time per step</h3>",
            table(
                ("step", "seconds", ""), [*steps, ("total (this invocation)", f"{s['wall_seconds']:.1f}", "")]
            ),
            f'<p class="note">Command: <code>{esc(s["command"])}</code></p>',
        ]
    )


def write_report(run_dir: str | Path, summary: dict[str, Any]) -> Path:
    """Write ``run_dir/report.html`` from the step summaries (keys: ``title``, ``headline``, and
    one per section of :data:`SECTIONS` it shows: a section without its key is left out). Figure
    paths in the summaries are relative to
    ``run_dir`` (or absolute); the page refers to them relative to ``run_dir``."""
    root = Path(run_dir).resolve()
    builders = {
        "data": lambda: _data_section(summary["data"], root),
        "anchors": lambda: _anchor_section(summary["anchors"], root),
        "training": lambda: _training_section(summary["training"], root),
        "evaluation": lambda: _evaluation_section(summary["evaluation"], root),
        "predictions": lambda: _predictions_section(summary["predictions"], root),
        "postprocessing": lambda: _postprocess_section(summary["postprocessing"], root),
        "deploy": lambda: _deploy_section(summary["deploy"], root),
        "tune": lambda: _tune_section(summary["tune"], root),
        "environment": lambda: _environment_section(summary["environment"]),
    }
    hl = summary["headline"]
    body = [
        f"<header><h1>{esc(summary['title'])}</h1><p>{esc(summary['subtitle'])}</p></header>",
        "<nav>" + "".join(f'<a href="#{k}">{esc(t)}</a>' for k, t in SECTIONS if k in summary) + "</nav>",
        "<main>",
        '<div class="cards">' + "".join(card(k, v) for k, v in hl.items()) + "</div>",
    ]
    for key, title in SECTIONS:
        if key not in summary:
            continue
        body.append(f'<section id="{key}"><h2>{esc(title)}</h2>{builders[key]()}</section>')
    body.append("</main>")
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(summary['title'])}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + f"\n<script>{_SCRIPT}</script>\n</body></html>\n"
    )
    out = root / "report.html"
    tmp = root / ".report.html.tmp"
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out
