"""What a study leaves in its folder: ``trials.csv``, ``best.yaml``, plots, ``tune.json`` and
``report.html``. Written from the storage alone, so any worker (or a re-run) can write them."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from detopt.config import TuneConfig
from detopt.tune.space import Param, describe

if TYPE_CHECKING:
    import optuna

CSV_FIXED = ("number", "slot", "state", "value", "epochs", "seconds", "retry_of", "worker", "error")


def trial_rows(study: optuna.Study, space: dict[str, Param]) -> list[dict[str, Any]]:
    """One row per trial of the study, in number order: number, slot, state, value (mAP50-95;
    a pruned trial's last), epochs run, training seconds, retry_of, worker, error, parameters."""
    from detopt.tune.hpo import WORKER_ATTR

    rows = []
    for t in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {
            "number": t.number,
            "slot": t.user_attrs.get("slot", ""),
            "state": t.state.name,
            "value": "" if t.value is None else round(float(t.value), 6),
            "epochs": len(t.intermediate_values),
            "seconds": t.user_attrs.get("seconds", ""),
            "retry_of": t.user_attrs.get("retry_of", ""),
            "worker": t.system_attrs.get(WORKER_ATTR, ""),
            "error": t.user_attrs.get("error", ""),
        }
        for key in space:
            row[key] = t.params.get(key, "")
        rows.append(row)
    return rows


def write_trials_csv(rows: list[dict[str, Any]], space: dict[str, Param], path: Path) -> Path:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[*CSV_FIXED, *space])
        w.writeheader()
        w.writerows(rows)
    return path


def best_values(cfg: TuneConfig, best: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """The keys the best trial trained with, less what only a trial sets (its folder, the
    per-epoch validation the pruner needs, the progress bar): ``detopt train --cfg`` takes them."""
    from detopt.tune.hpo import trial_values

    values = trial_values(cfg, dict(best.params), best.number)
    for key in ("out", "val", "val_every", "progress"):
        values.pop(key, None)
    return values


def write_best_yaml(cfg: TuneConfig, best: optuna.trial.FrozenTrial, post: dict[str, Any] | None,
                    path: Path) -> Path:
    """``best.yaml``: the best trial's training keys and, when tuned, its post-processing
    (``nms``, ``iou_thr``, ``score_thr``), with comments saying where each came from."""
    values = best_values(cfg, best)
    head = [
        f"# detopt tune: study {cfg.study!r}, best of its trials: trial {best.number}, "
        f"mAP50-95 {best.value:.4f} on the val split after {len(best.intermediate_values)} epochs",
        f"# searched: {', '.join(best.params)}",
        "# train with it: detopt train --cfg best.yaml [--time 1h | --epochs N] [--out RUN]",
    ]
    if post is not None:
        values |= {"nms": post["method"], "iou_thr": post["iou_thr"], "score_thr": post["score_thr"]}
        head.append(f"# nms, iou_thr, score_thr: the post-processing study on the best trial's weights "
                    f"({post['label']}: mAP50-95 {post['ap']:.4f} vs {post['default_ap']:.4f} default)")
    path.write_text("\n".join(head) + "\n" + yaml.safe_dump(values, sort_keys=False))
    return path


def tune_postprocess(run: Path, log: Any) -> dict[str, Any] | None:
    """The post-processing study (:func:`detopt.tune.study`) on ``run/best.pt`` over the val split:
    the best setting and the default's mAP, or None when the weights are not on this machine."""
    weights = run / "best.pt"
    if not weights.is_file():
        log(f"post-processing not tuned: {weights} is not on this machine (trained by another worker)")
        return None
    from detopt.config import TrainConfig, load_config
    from detopt.data.dataset import dataset_from_source
    from detopt.inference import load_weights
    from detopt.tune.postprocess import collect_candidates, study

    tcfg = load_config(TrainConfig, run / "config.yaml")
    model, names, _, _ = load_weights(weights)
    val, _ = dataset_from_source(tcfg.data, tcfg.val_split, tcfg.imgsz, images_dir=tcfg.images,
                                 allow_outside_root=tcfg.allow_outside_root, max_pixels=tcfg.max_pixels)
    res = study(collect_candidates(model, val, names, batch_size=16), score_grid=(0.001, 0.01, 0.05),
                nms_iou_grid=(0.5, 0.6, 0.7))
    # a training config carries a method, its IoU and score thresholds: the best setting with the
    # method's own sigma and per-class suppression (what best.yaml can say)
    expressible = [r for r in res.results if r.setting.sigma is None and not r.setting.agnostic]
    pick = max(expressible, key=lambda r: (r.ap, -r.ms_per_image))
    s = pick.setting
    return {"method": s.method, "iou_thr": s.iou_thr, "score_thr": s.score_thr, "label": pick.label,
            "ap": pick.ap, "default_ap": res.default.ap, "holdout": res.holdout,
            "best_any": {"label": res.best.label, "ap": res.best.ap}}


def write_plots(study: optuna.Study, out: Path, log: Any) -> dict[str, str]:
    """Optimization history, parameter importances (PED-ANOVA: no scikit-learn), parallel
    coordinates and intermediate values (the pruned trials' curves stop early) as PNGs; a plot the
    study cannot make yet (too few finished trials) is skipped with a line saying why."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.importance import PedAnovaImportanceEvaluator
    from optuna.visualization import matplotlib as ovm

    makers = {
        "history": lambda: ovm.plot_optimization_history(study),
        "importances": lambda: ovm.plot_param_importances(study, evaluator=PedAnovaImportanceEvaluator()),
        "parallel": lambda: ovm.plot_parallel_coordinate(study),
        "intermediate": lambda: ovm.plot_intermediate_values(study),
    }
    import warnings

    paths = {}
    for name, make in makers.items():
        try:
            with warnings.catch_warnings():  # few trials: "importances will be equal", flat axes
                warnings.simplefilter("ignore", UserWarning)
                ax = make()
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            keys = len(study.best_trial.params) if name == "parallel" else 0
            fig.set_size_inches(max(8.0, 1.1 * keys), 5)  # parallel coordinates: room per axis
            fig.tight_layout()
            path = out / f"{name}.png"
            fig.savefig(path, dpi=100)
            plt.close(fig)
            paths[name] = path.name
        except Exception as e:  # too few complete trials, one value only, ...
            plt.close("all")
            why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            log(f"plot {name} skipped: {why}")
    return paths


def write_results(cfg: TuneConfig, study: optuna.Study, space: dict[str, Param], wall: float,
                  log: Any = print) -> dict[str, Any]:
    """Every output of the study folder; returns the summary (also ``tune.json``)."""
    from optuna.trial import TrialState

    from detopt.tune.hpo import DEFAULT_TRIAL_TIME

    out = Path(cfg.out)
    rows = trial_rows(study, space)
    write_trials_csv(rows, space, out / "trials.csv")
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    counts = {s.name: sum(r["state"] == s.name for r in rows) for s in TrialState}
    summary: dict[str, Any] = {
        "study": cfg.study,
        "target_trials": int(study.user_attrs.get("detopt_trials", cfg.trials)),
        "counts": counts,
        "space": describe(space),
        "sampler": cfg.sampler,
        "pruner": cfg.pruner,
        "trial_budget": (f"{cfg.trial_epochs} epochs" if cfg.trial_epochs is not None
                         else f"{cfg.trial_time or DEFAULT_TRIAL_TIME:.0f} s"),
        "train_seconds": round(sum(float(r["seconds"] or 0) for r in rows), 1),
        "epochs_run": sum(int(r["epochs"]) for r in rows),
        "wall_seconds": round(wall, 1),
        "trials": rows,
        "best": None,
        "postprocess": None,
        "baseline": cfg.baseline,
    }
    if done:
        best = max(done, key=lambda t: (t.value, -t.number))
        post = tune_postprocess(out / "trials" / f"{best.number:04d}", log) if cfg.postprocess else None
        write_best_yaml(cfg, best, post, out / "best.yaml")
        summary["best"] = {"number": best.number, "value": best.value, "params": dict(best.params),
                           "epochs": len(best.intermediate_values)}
        summary["postprocess"] = post
        baseline = [t for t in done if t.user_attrs.get("slot") == 0]
        summary["first_trial_value"] = baseline[0].value if baseline else None
        log(f"best: trial {best.number}, mAP50-95 {best.value:.4f} -> {out / 'best.yaml'}")
    else:
        log("no trial completed yet: no best.yaml")
    summary["figures"] = write_plots(study, out, log) if done else {}
    (out / "tune.json").write_text(json.dumps(_finite(summary), indent=1))
    from detopt.report.html import write_report

    write_report(out, {"title": f"detopt tune: study {cfg.study}",
                       "subtitle": f"data {cfg.data}; {summary['trial_budget']} per trial",
                       "headline": _headline(summary), "tune": summary})
    return summary


def _headline(s: dict[str, Any]) -> dict[str, str]:
    c = s["counts"]
    out = {"trials": f"{c['COMPLETE']} complete, {c['PRUNED']} pruned",
           "training compute": f"{s['train_seconds']:.0f} s, {s['epochs_run']} epochs"}
    if s["best"] is not None:
        out["best mAP50-95"] = f"{s['best']['value']:.4f} (trial {s['best']['number']})"
    return out


def _finite(x: Any) -> Any:
    """JSON without NaN (a failed trial has no value)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x
