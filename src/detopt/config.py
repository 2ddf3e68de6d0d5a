"""Configs of the commands as pydantic models: validated once at the edge, written next to a run.

``key=value`` overrides (CLI) are parsed with YAML scalars (``lr0=0.02``, ``amp=false``,
``pipeline=aug.yaml``) and validated with the rest; an unknown key lists the close ones.
"""

from __future__ import annotations

import difflib
import importlib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from detopt.constants import IOU_THRESHOLD, MAX_DET, SCORE_THRESHOLD
from detopt.errors import DetoptInputError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*$")


def parse_duration(value: str | float | int) -> float:
    """``"90s"``, ``"10m"``, ``"1.5h"`` or a number of seconds -> seconds."""
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        m = _DURATION.match(str(value))
        if not m:
            raise DetoptInputError(f"time: expected a duration like 90s, 10m or 1.5h, got {value!r}")
        seconds = float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]
    if seconds <= 0:
        raise DetoptInputError(f"time: must be positive, got {value!r}")
    return seconds


# config key -> (module, registry) of the names it takes
_REGISTRIES = {
    "nms": ("detopt.ops.postprocess", "METHOD_REGISTRY"),
    "cls_loss": ("detopt.models.criterion", "CLS_LOSSES"),
    "box_loss": ("detopt.models.criterion", "BOX_LOSSES"),
    "optimizer": ("detopt.engine.optim", "OPTIMIZERS"),
}


def _check_registered(module: str, attr: str, value: str, key: str | None = None) -> str:
    """``value`` checked against the registry ``module.attr`` (imported here: a config stays cheap
    to load); its one-line error becomes the validation error."""
    registry = getattr(importlib.import_module(module), attr)
    try:
        return registry.check(value, key)
    except DetoptInputError as e:
        raise ValueError(str(e)) from None


class KDConfig(BaseModel):
    """Distillation settings (``kd.cls=0.5`` on the command line); used when ``teacher`` is set."""

    model_config = ConfigDict(extra="forbid")

    cls: float = Field(1.0, ge=0, description="weight of the class-score KL")
    ld: float = Field(1.0, ge=0, description="weight of localization distillation (DFL distributions)")
    feat: float = Field(1.0, ge=0, description="weight of channel-wise distillation of the neck outputs")
    temperature: float = Field(1.0, gt=0, description="temperature of the class and box terms")
    feat_temperature: float = Field(1.0, gt=0, description="temperature of the feature term")
    stop_epochs: int = Field(0, ge=0, description="train the last N epochs without the teacher")
    compile: bool = Field(False, description="run the teacher through torch.compile (inductor: "
                          "~1.4-1.6x faster on a CPU after ~15 s of compiling; eager if it fails)")


class TrainConfig(BaseModel):
    """Everything ``detopt train`` uses. Defaults: the recipe for short CPU budgets."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    data: str
    images: str | dict[str, str] | None = Field(
        None, description="COCO image folder for every split, or split -> folder"
    )
    allow_outside_root: bool = Field(False, description="accept data-set paths outside its root")
    max_pixels: int | None = Field(89_478_485, ge=1, description="largest image decoded (pixels)")
    out: str = "runs/train"
    model: str = "yolo-n"
    p2: bool = False
    weights: str | None = Field(None, description="start from these weights (.pt, .safetensors): "
                                "fine-tuning; the architecture is theirs (model and p2 are not used)")
    imgsz: int = Field(320, ge=32)
    epochs: int = Field(100, ge=1)
    time: float | None = Field(None, description="budget in seconds; sets epochs to end on time")
    batch: int = Field(16, ge=1)
    nbs: int = Field(64, ge=1, description="nominal batch: gradients accumulate up to it")
    optimizer: str = Field("sgd", description="optimizer (detopt.engine.optim.OPTIMIZERS: sgd, adamw, musgd)")
    lr0: float = Field(0.01, gt=0)
    lrf: float = Field(0.01, gt=0, le=1)
    momentum: float = Field(0.937, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["cosine", "linear", "step"] = "cosine"
    warmup_epochs: float = Field(3.0, ge=0)
    warmup_min_iters: int = Field(100, ge=0)
    warmup_max_fraction: float = Field(0.1, ge=0, le=1, description="warmup at most this share of the run")
    warmup_bias_lr: float = Field(0.1, ge=0)
    warmup_momentum: float = Field(0.8, ge=0, lt=1)
    ema: bool = True
    ema_decay: float = Field(0.9999, ge=0, lt=1)
    ema_tau: float = Field(2000.0, gt=0)
    amp: bool = True
    channels_last: bool = Field(True, description="NHWC weights and images in training (faster convs)")
    grad_clip: float = Field(10.0, gt=0)
    multi_scale: bool = False
    multi_scale_range: tuple[float, float] = (0.5, 1.5)
    close_mosaic: int = Field(10, ge=0)
    close_mosaic_max_fraction: float = Field(0.15, ge=0, le=1, description="close-mosaic at most this share")
    pipeline: str | None = Field(None, description="augmentation YAML (default: mosaic, affine, HSV, flip)")
    mosaic: float = Field(1.0, ge=0, le=1, description="default pipeline: probability of a 4-image mosaic")
    mixup: float = Field(0.0, ge=0, le=1, description="default pipeline: probability of MixUp")
    copy_paste: float = Field(0.0, ge=0, le=1, description="default pipeline: probability of copy-paste")
    translate: float = Field(0.1, ge=0, le=0.5, description="default pipeline: affine translation (fraction)")
    scale: float = Field(0.5, ge=0, lt=1, description="default pipeline: affine scale gain (1 ± scale)")
    hsv_h: float = Field(0.015, ge=0, le=0.5, description="default pipeline: hue gain")
    hsv_s: float = Field(0.7, ge=0, le=1, description="default pipeline: saturation gain")
    hsv_v: float = Field(0.4, ge=0, le=1, description="default pipeline: value gain")
    fliplr: float = Field(0.5, ge=0, le=1, description="default pipeline: probability of a left-right flip")
    augment: bool = True
    assigner: str | dict[str, Any] = Field(
        "tal", description="label assigner: a name of detopt.assign.ASSIGNERS or {name: atss, topk: 9}"
    )
    cls_loss: str = Field("bce", description="classification loss (detopt.models.criterion.CLS_LOSSES)")
    box_loss: str = Field("ciou", description="box loss (detopt.models.criterion.BOX_LOSSES)")
    box_gain: float = Field(7.5, ge=0)
    cls_gain: float = Field(0.5, ge=0)
    dfl_gain: float = Field(1.5, ge=0)
    workers: int = Field(2, ge=0)
    cache: bool = True
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    teacher: str | None = Field(None, description="weights of a teacher to distil from (.pt, .safetensors)")
    kd: KDConfig = Field(default_factory=KDConfig)
    val: bool = True
    val_split: str = "val"
    val_every: int = Field(1, ge=1)
    nms: str = Field("nms", description="post-processing method (detopt.ops.postprocess.METHOD_REGISTRY)")
    score_thr: float = Field(SCORE_THRESHOLD, ge=0, le=1, description="validation score threshold")
    iou_thr: float = Field(IOU_THRESHOLD, ge=0, le=1, description="validation suppression IoU threshold")
    max_det: int = Field(MAX_DET, ge=1)
    max_bad_steps: int = Field(10, ge=1, description="consecutive non-finite losses before stopping")
    skip_invalid: bool = False
    tensorboard: bool = False
    progress: bool = True

    @field_validator("time", mode="before")
    @classmethod
    def _time(cls, v: Any) -> float | None:
        return None if v is None else parse_duration(v)

    @field_validator("nms", "cls_loss", "box_loss", "optimizer")
    @classmethod
    def _registered_name(cls, v: str, info: ValidationInfo) -> str:
        return _check_registered(*_REGISTRIES[info.field_name], v)

    @field_validator("assigner")
    @classmethod
    def _assigner(cls, v: str | dict[str, Any]) -> str | dict[str, Any]:
        from detopt.assign import build_assigner

        try:
            build_assigner(v)  # the name and every parameter, before any file is read
        except DetoptInputError as e:
            raise ValueError(str(e)) from None
        return v


class DemoConfig(BaseModel):
    """What ``detopt demo`` uses. ``None`` means the mode's default (:meth:`resolved`)."""

    model_config = ConfigDict(extra="forbid")

    out: str = "runs/demo"
    minutes: float | None = Field(None, gt=0, description="training budget (default 8; quick 0.25)")
    quick: bool = False
    train_images: int | None = Field(None, ge=16, description="default 2000; quick 160")
    val_images: int | None = Field(None, ge=4, description="default 300; quick 48")
    imgsz: int = Field(320, ge=64)
    model: str | None = Field(None, description="default: the short-budget recipe's (from the training "
                              "images the budget allows on this machine); quick yolo-p")
    seed: int = 0
    workers: int = Field(2, ge=0)
    device: str = "auto"
    speed: bool = Field(True, description="the speed half: prune, export, INT8, deployment table, tune study")
    train: dict[str, Any] = Field(default_factory=dict, description="extra TrainConfig keys")

    def resolved(self) -> dict[str, Any]:
        """The mode's defaults filled in: ``minutes``, ``train_images``, ``val_images``, ``model``."""
        # model None: the trainer's short-budget recipe chooses (engine.recipe.choose_model)
        full = {"minutes": 8.0, "train_images": 2000, "val_images": 300, "model": None}
        quick = {"minutes": 0.25, "train_images": 160, "val_images": 48, "model": "yolo-p"}
        base = quick if self.quick else full
        return {k: (getattr(self, k) if getattr(self, k) is not None else v) for k, v in base.items()}


TRIAL_KEYS = frozenset({"data", "out", "epochs", "time", "seed", "val", "val_every", "progress"})
"""TrainConfig keys each tuning trial sets itself (not fixed by the user, not searched)."""


class TuneConfig(BaseModel):
    """What ``detopt tune`` uses (:func:`detopt.tune.search`): an Optuna study over training runs."""

    model_config = ConfigDict(extra="forbid")

    data: str = Field(description="the data set (data.yaml, COCO json, VOC root); trials score its val split")
    out: str = Field(description="the study folder: trials/, trials.csv, best.yaml, plots, report.html")
    space: str | None = Field(None, description="YAML search space (default: tune.space.DEFAULT_SPACE)")
    trials: int = Field(20, ge=1, description="trials of the study (counted over every worker and re-run)")
    time: float | None = Field(None, description="stop starting trials after this long (a re-run goes on)")
    trial_time: float | None = Field(None, description="each trial's training budget (default 3m)")
    trial_epochs: int | None = Field(None, ge=1, description="each trial's epochs (not with trial_time)")
    storage: str | None = Field(None, description="SQLAlchemy URL; default a journal file in out")
    study: str = Field("detopt", min_length=1, description="study name in the storage")
    workers: int = Field(1, ge=1, description="processes running trials on this machine")
    threads: int | None = Field(None, ge=1, description="torch threads per worker (default cores / workers)")
    sampler: Literal["tpe", "random", "cmaes"] = "tpe"
    pruner: Literal["hyperband", "median", "none"] = "hyperband"
    seed: int = Field(0, description="seed of the sampler (worker i uses seed + i) and of every trial")
    heartbeat: float = Field(10.0, gt=0, description="seconds between a running trial's heartbeats")
    grace: float | None = Field(None, gt=0, description="a trial silent this long is dead (default 6 beats)")
    postprocess: bool = Field(True, description="tune NMS method, IoU and score threshold on the best trial")
    baseline: bool = Field(False, description="trial 0 trains with the base values (TrainConfig's defaults "
                           "and the train keys) so the study shows what its best trial changes")
    train: dict[str, Any] = Field(default_factory=dict, description="TrainConfig keys every trial uses")

    @field_validator("time", "trial_time", mode="before")
    @classmethod
    def _time(cls, v: Any) -> float | None:
        return None if v is None else parse_duration(v)

    @field_validator("train")
    @classmethod
    def _train_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        own = sorted(set(v) & TRIAL_KEYS)
        if own:
            raise ValueError(f"{', '.join(own)}: set by each trial (the budget: trial_time or trial_epochs; "
                             "the folder: under out; the seed: seed)")
        try:
            build_config(TrainConfig, {"data": "-"} | v)
        except DetoptInputError as e:
            raise ValueError(str(e)) from None
        return v

    def model_post_init(self, context: Any) -> None:
        if self.trial_time is not None and self.trial_epochs is not None:
            raise ValueError("give trial_time or trial_epochs, not both")

    @property
    def stale_after(self) -> float:
        """Seconds without a heartbeat after which a running trial counts as dead."""
        return self.grace if self.grace is not None else 6 * self.heartbeat


class QuantizeConfig(BaseModel):
    """What ``detopt quantize`` uses (:func:`detopt.compress.quantize`)."""

    model_config = ConfigDict(extra="forbid")

    weights: str = Field(description="float weights: a checkpoint (.pt) or a safetensors export")
    data: str = Field(description="the data set the weights were trained on (data.yaml, COCO json, VOC)")
    out: str = Field(description="folder for model-int8.onnx, report.json, report.md, tradeoff.png")
    method: Literal["ptq", "qat"] = Field("ptq", description="ptq; qat adds quantization-aware fine-tuning")
    calib: int = Field(256, ge=16, description="calibration images from the training split")
    calibrator: str = Field("minmax", description="detopt.compress.quantization.CALIBRATORS")
    per_channel: bool = Field(True, description="int8 weights per output channel (else per tensor)")
    keep_fp32: Literal["auto", "none"] | list[str] = Field(
        "auto", description="layers kept float: auto (search), none, or layer names")
    target_drop: float = Field(0.01, ge=0, le=1, description="mAP50-95 drop the auto search accepts")
    max_kept: int = Field(8, ge=0, description="most layers the auto search keeps float")
    search_images: int = Field(128, ge=8, description="training images (not calibration ones) the "
                                                       "sensitivity and the search score on")
    imgsz: int | None = Field(None, ge=32, description="input side (default: the training size)")
    nms: str = Field("nms", description="post-processing inside the graph (detopt.export.onnx_nms.ONNX_NMS)")
    score_thr: float = Field(0.25, ge=0, le=1, description="the graph's default score threshold")
    iou_thr: float = Field(IOU_THRESHOLD, ge=0, le=1)
    max_det: int = Field(MAX_DET, ge=1)
    time: float | None = Field(None, description="QAT budget in seconds (or 90s, 5m); default: epochs")
    epochs: int | None = Field(None, ge=1, description="QAT epochs when no time is given (default 2)")
    qat_lr: float = Field(0.001, gt=0, description="QAT learning rate (SGD, cosine to a tenth)")
    batch: int = Field(16, ge=1, description="QAT batch size")
    workers: int = Field(2, ge=0, description="QAT data loader processes")
    val_split: str = "val"
    threads: int | None = Field(None, ge=1, description="ONNX Runtime and torch threads (default: torch's)")
    latency: bool = Field(True, description="time every variant (the report's latency columns)")
    seed: int = Field(0, description="draws the calibration and search images")
    images: str | dict[str, str] | None = None
    allow_outside_root: bool = False
    max_pixels: int | None = Field(89_478_485, ge=1)
    skip_invalid: bool = False

    @field_validator("time", mode="before")
    @classmethod
    def _time(cls, v: Any) -> float | None:
        return None if v is None else parse_duration(v)

    @field_validator("calibrator", "nms")
    @classmethod
    def _registered_name(cls, v: str, info: ValidationInfo) -> str:
        where = {"calibrator": ("detopt.compress.quantization.graph", "CALIBRATORS"),
                 "nms": ("detopt.export.onnx_nms", "ONNX_NMS")}  # the methods ONNX graphs implement
        return _check_registered(*where[info.field_name], v, info.field_name)


class PruneConfig(BaseModel):
    """What ``detopt prune`` uses (:func:`detopt.compress.prune`)."""

    model_config = ConfigDict(extra="forbid")

    weights: str = Field(description="float weights: a checkpoint (.pt) or a safetensors export")
    data: str = Field(description="the data set the weights were trained on")
    out: str = Field(description="the run folder: best.pt, last.pt, results.csv, config.yaml, prune.json")
    ratio: float = Field(0.5, gt=0, lt=1, description="structured: share of FLOPs to remove; "
                                                        "unstructured: share of conv weights set to 0")
    method: Literal["structured", "unstructured"] = "structured"
    importance: str = Field("l1", description="detopt.compress.pruning.structured.IMPORTANCES")
    global_rank: bool = Field(False, description="rank channels over the whole model (else per layer)")
    round_to: int = Field(16, ge=1, description="kept channels per layer (each part a convolution reads): a "
                          "multiple of this; 16 = the float lanes of AVX-512, ONNX Runtime's NCHWc block "
                          "(benchmarks/README.md: 50 % pruned, ORT 1.69x with 16, 1.50x with 8)")
    steps: int = Field(1, ge=1, description="prune in this many steps, fine-tuning after each")
    finetune: float | None = Field(None, description="fine-tune budget in seconds (or 5m) over all steps; "
                                                      "default a quarter of the weights' training time")
    finetune_epochs: int | None = Field(None, ge=0, description="fine-tune epochs per step instead of a time")
    teacher: str | None = Field(None, description="distil from these weights while fine-tuning")
    sparsity: float | None = Field(None, description="network slimming: train this long (seconds, or 2m) "
                                                      "with an L1 penalty on BN scales before pruning")
    sparsity_epochs: int | None = Field(None, ge=1, description="the slimming phase in epochs instead")
    sparsity_l1: float = Field(0.01, gt=0, description="L1 subgradient on the BN scales while slimming")
    lr0: float = Field(0.002, gt=0, description="fine-tune learning rate (no warmup)")
    taylor_batches: int = Field(8, ge=1, description="training batches the taylor importance sums")
    imgsz: int | None = Field(None, ge=32, description="default: the training size")
    batch: int = Field(16, ge=1)
    workers: int = Field(2, ge=0)
    seed: int = 0
    device: str = "auto"
    latency: bool = Field(True, description="time torch and ONNX Runtime before / after")
    threads: int | None = Field(None, ge=1, description="latency threads (default: torch's)")
    val_split: str = "val"
    images: str | dict[str, str] | None = None
    allow_outside_root: bool = False
    max_pixels: int | None = Field(89_478_485, ge=1)
    skip_invalid: bool = False

    @field_validator("finetune", "sparsity", mode="before")
    @classmethod
    def _time(cls, v: Any) -> float | None:
        return None if v is None else parse_duration(v)

    @field_validator("importance")
    @classmethod
    def _registered_name(cls, v: str) -> str:
        return _check_registered("detopt.compress.pruning.structured", "IMPORTANCES", v, "importance")


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["lr0=0.02", "amp=false", "kd.cls=0.5"]`` -> ``{"lr0": 0.02, "amp": False, "kd": {"cls":
    0.5}}`` (YAML scalars; a dotted key sets a key of a nested section)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise DetoptInputError(f"override {pair!r}: expected key=value")
        key, value = pair.split("=", 1)
        try:
            parsed = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError as e:
            raise DetoptInputError(f"override {pair!r}: {e}") from None
        *parents, leaf = key.strip().split(".")  # kd.cls=0.5 -> {"kd": {"cls": 0.5}}
        node = out
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise DetoptInputError(f"override {pair!r}: {part!r} is also given a value")
        node[leaf] = parsed
    return out


RENAMED_KEYS = {"conf": "score_thr", "iou": "iou_thr"}
"""Config keys of earlier versions -> their one spelling now (configs and checkpoints written
before the vocabulary pass still load)."""


def upgrade_keys(cls: type[BaseModel], values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with the keys of :data:`RENAMED_KEYS` under their new name (both given: an error)."""
    fields = cls.model_fields
    values = dict(values)
    for old, new in RENAMED_KEYS.items():
        if old in values and old not in fields and new in fields:
            if new in values:
                raise DetoptInputError(f"config keys {old!r} and {new!r} are one setting; give {new!r}")
            values[new] = values.pop(old)
    return values


def build_config(cls: type[BaseModel], values: dict[str, Any]) -> BaseModel:
    """Validate ``values`` into ``cls``; errors name every bad key (unknown keys with close matches).
    Keys of :data:`RENAMED_KEYS` are read under their new name."""
    fields = list(cls.model_fields)
    values = upgrade_keys(cls, values)
    unknown = [k for k in values if k not in fields]
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(k, fields, n=3, cutoff=0.5)
            hints.append(f"{k!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
        raise DetoptInputError(f"unknown config key(s): {', '.join(hints)}")
    try:
        return cls(**values)
    except ValidationError as e:
        msgs = [
            f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']} (got {err.get('input')!r})"
            for err in e.errors()
        ]
        raise DetoptInputError("invalid config: " + "; ".join(msgs)) from None


def save_config(cfg: BaseModel, path: str | Path, notes: dict[str, str] | None = None) -> Path:
    """Write every key of ``cfg`` as YAML; ``notes`` ({key: text}) become comments on the lines of
    their top-level keys (``nbs: 16  # adapted: ...``), which reading the file ignores."""
    path = Path(path)
    lines = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False).splitlines()
    for i, line in enumerate(lines):
        key = line.split(":", 1)[0]
        if notes and key in notes and not line.startswith(" "):
            lines[i] = f"{line}  # adapted: {notes[key]}"
    path.write_text("\n".join(lines) + "\n")
    return path


def read_config_values(path: str | Path) -> dict[str, Any]:
    """The keys of a YAML config file, unvalidated (a command merges its flags in first)."""
    try:
        values = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise DetoptInputError(f"{path}: cannot read the config: {e}") from None
    if not isinstance(values, dict):
        raise DetoptInputError(f"{path}: expected a mapping of config keys")
    return values


def load_config(cls: type[BaseModel], path: str | Path) -> BaseModel:
    return build_config(cls, read_config_values(path))
