"""The training loop: warmup + schedule, accumulation to a nominal batch, AMP, EMA, multi-scale,
close-mosaic, time budgets, atomic checkpoints with exact resume, DDP under ``torchrun``."""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Sampler

from detopt.config import TrainConfig, build_config, save_config, upgrade_keys
from detopt.data.dataset import DetectionDataset, collate_detections, read_source, split_dataset
from detopt.data.transforms.multiscale import random_train_size, resize_batch
from detopt.data.transforms.pipeline import Compose, default_pipeline
from detopt.data.transforms.pipeline import build_pipeline as pipeline_from_config
from detopt.engine.callbacks import run_hook
from detopt.engine.checkpoint import atomic_save, load_checkpoint
from detopt.engine.criterion import criterion_for
from detopt.engine.distill import Distiller, load_float_model, load_teacher
from detopt.engine.ema import ModelEMA
from detopt.engine.optim import build_optimizer as make_optimizer
from detopt.engine.optim import set_hyperparameters
from detopt.engine.plan import EpochPlan
from detopt.engine.probe import seconds_per_image
from detopt.engine.recipe import adapt_to_budget
from detopt.engine.recipe import choose_model as choose_scale
from detopt.engine.validate import evaluate_detector
from detopt.errors import DetoptError, DetoptInputError
from detopt.evaluation import STAT_NAMES
from detopt.models import DetectionCriterion, Postprocessor, create_model
from detopt.runtime import autocast, resolve_device


class DetoptTrainingError(DetoptError):
    """Training cannot go on (e.g. the loss stays non-finite)."""


class EpochSampler(Sampler[int]):
    """Indices of one epoch: a permutation drawn from ``(seed, epoch)`` (or the identity), split
    round-robin over ``world`` ranks after padding to a multiple of ``world``. The same
    ``(seed, epoch)`` always gives the same order, which is what exact resume needs."""

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world: int = 1) -> None:
        self.n, self.seed, self.shuffle, self.rank, self.world = n, seed, shuffle, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> list[int]:
        if not self.shuffle:
            order = list(range(self.n))
        else:
            g = torch.Generator()
            g.manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        pad = (-len(order)) % self.world
        return order + order[:pad]

    def __iter__(self) -> Iterator[int]:
        return iter(self._order()[self.rank :: self.world])

    def __len__(self) -> int:
        return math.ceil(self.n / self.world)


class EpochKeys(Sampler[tuple[int, bool, int]]):
    """The keys of one epoch for :class:`EpochItems`: ``(epoch, mixing, index)`` for each index of
    ``sampler``. The epoch and the close-mosaic switch travel with every index, so loader workers
    can persist across epochs (no start-up cost per epoch) and still augment as a function of
    ``(seed, epoch, index)``. ``mixing`` is read as each key is drawn: a plan changed early in the
    first epoch reaches the images not loaded yet."""

    def __init__(self, sampler: EpochSampler) -> None:
        self.sampler = sampler
        self.epoch = 0
        self.mixing = True

    def set_epoch(self, epoch: int, mixing: bool) -> None:
        self.epoch, self.mixing = int(epoch), bool(mixing)
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, bool, int]]:
        for i in self.sampler:
            yield self.epoch, self.mixing, i

    def __len__(self) -> int:
        return len(self.sampler)


class EpochItems(torch.utils.data.Dataset):
    """A training set read by :class:`EpochKeys`: item ``(epoch, mixing, i)`` is ``dataset[i]``
    augmented for ``epoch``, with the mixing transforms on or off."""

    def __init__(self, dataset: DetectionDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, bool, int]) -> dict[str, Any]:
        epoch, mixing, i = key
        self.dataset.epoch = epoch
        if self.dataset.pipeline is not None:
            self.dataset.pipeline.set_mixing(mixing)
        return self.dataset[i]


def _dense(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with row-major tensors (a channels_last model saves like any other)."""
    return {k: v.contiguous() for k, v in state.items()}


def _distributed() -> tuple[int, int, int]:
    """``(rank, world, local_rank)`` from the torchrun environment (``(0, 1, 0)`` without it)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


class Trainer:
    """Train a registered detector on a data set (see :class:`~detopt.config.TrainConfig`).

    ``Trainer(cfg).train()`` writes ``cfg.out``: ``config.yaml``, ``results.csv``, ``last.pt``,
    ``best.pt`` (and ``tensorboard/``). ``Trainer.resume(run_dir)`` continues a run from its
    ``last.pt`` (model, EMA, optimizer, scaler, RNG, epoch; the data order and the augmentation
    are functions of ``(seed, epoch, index)``), so a killed run ends with the same weights as an
    uninterrupted one in deterministic mode.

    Built from parts, each a method a subclass can override: :meth:`setup_runtime`,
    :meth:`build_datasets` (the data set is read once for both splits), :meth:`build_pipeline`,
    :meth:`choose_model` (the short-budget recipe's scale), :meth:`build_model`,
    :meth:`build_criterion`, :meth:`build_postprocessor`, :meth:`build_optimizer`,
    :meth:`build_loader`. The run's length, schedule and close-mosaic are
    one :class:`~detopt.engine.plan.EpochPlan` (``self.plan``). ``callbacks``: objects with any of
    the hooks of :class:`~detopt.engine.callbacks.Callback` (``on_epoch_end(trainer, epoch,
    metrics)`` ...); one may call :meth:`request_stop`.
    """

    def __init__(self, cfg: TrainConfig, callbacks: Sequence[Any] = (),
                 _resume: dict[str, Any] | None = None) -> None:
        # a time budget adapts the keys the user did not give (engine.recipe); a resumed run keeps
        # the values (and the reasons) of its first start
        cfg, self.adapted = adapt_to_budget(cfg)
        if _resume is not None:
            self.adapted = dict(_resume.get("adapted") or {})
        self.cfg = cfg
        self.callbacks: list[Any] = list(callbacks)
        self.rank, self.world, self.device = self.setup_runtime()
        self.main = self.rank == 0
        self.out = Path(cfg.out)
        torch.manual_seed(cfg.seed)

        self.train_set, self.val_set, self.names, self.category_ids = self.build_datasets()
        probe_seconds = 0.0
        if _resume is None:
            t = time.perf_counter()
            self.cfg = cfg = self.choose_model(cfg)
            probe_seconds = time.perf_counter() - t
        self.model = self.build_model()
        self.distiller = self.build_distiller()
        self.criterion = self.build_criterion()
        self.postprocessor = self.build_postprocessor()
        total_batch = cfg.batch * self.world
        self.accumulate = max(round(cfg.nbs / total_batch), 1)
        self.optimizer = self.build_optimizer()
        self.ema = ModelEMA(self.model, cfg.ema_decay, cfg.ema_tau) if cfg.ema else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and self.device.type == "cuda")
        self.net: nn.Module = self.model
        if self.world > 1:
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.sampler = EpochSampler(len(self.train_set), cfg.seed, True, self.rank, self.world)
        self.keys = EpochKeys(self.sampler)
        self.loader = self.build_loader()
        self.iters_per_epoch = len(self.loader)
        if self.iters_per_epoch == 0:
            raise DetoptInputError(f"{cfg.data}: no full batch of {cfg.batch} images")

        pipeline = self.train_set.pipeline
        self.plan = EpochPlan.from_config(cfg, pipeline.close_mosaic if pipeline is not None else 0)
        self.start_epoch = 0
        self.best_fitness = -1.0
        self.bad_steps = 0
        self.elapsed = probe_seconds  # training seconds before this process (resume), the probe's included
        self.metrics: dict[str, float] = {}
        self.stop_requested = False
        self.stopped_early = False
        if _resume is not None:
            self._load_state(_resume)

    # ---------------------------------------------------------------- parts (override to change one)
    def setup_runtime(self) -> tuple[int, int, torch.device]:
        """``(rank, world, device)``: the device of this process, the DDP process group under
        ``torchrun``, deterministic algorithms when asked."""
        cfg = self.cfg
        rank, world, local_rank = _distributed()
        device = resolve_device(cfg.device)
        if world > 1:
            if device.type == "cuda":
                device = torch.device("cuda", local_rank)
                torch.cuda.set_device(device)
            if not dist.is_initialized():
                dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True)
            if device.type == "cuda":
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
                torch.backends.cudnn.benchmark = False
        return rank, world, device

    def build_pipeline(self) -> Compose | None:
        """The training augmentation: the YAML pipeline of ``cfg.pipeline`` (its own close_mosaic
        kept), else the default one with ``cfg.close_mosaic`` and the config's probabilities and
        gains (``mosaic``, ``mixup``, ``copy_paste``, ``hsv_*``, ...); None without ``cfg.augment``."""
        cfg = self.cfg
        if not cfg.augment:
            return None
        if cfg.pipeline:
            return pipeline_from_config(cfg.pipeline, size=cfg.imgsz)
        return default_pipeline(
            cfg.imgsz, close_mosaic=cfg.close_mosaic, mosaic=cfg.mosaic, copy_paste=cfg.copy_paste,
            mixup=cfg.mixup, translate=cfg.translate, scale=cfg.scale,
            hsv=(cfg.hsv_h, cfg.hsv_s, cfg.hsv_v), fliplr=cfg.fliplr,
        )

    def build_datasets(self) -> tuple[DetectionDataset, DetectionDataset | None, list[str], list[int]]:
        """``(train_set, val_set or None, names, category_ids)``; the data set is read once."""
        cfg = self.cfg
        ds, defects = read_source(cfg.data, cfg.images, cfg.allow_outside_root, cfg.max_pixels)
        common = {"imgsz": cfg.imgsz, "skip_invalid": cfg.skip_invalid, "cache": cfg.cache,
                  "max_pixels": cfg.max_pixels}
        train_set = split_dataset(cfg.data, ds, defects, "train", pipeline=self.build_pipeline(),
                                  seed=cfg.seed, **common)
        names = list(ds.names)
        category_ids = list(train_set.category_ids or range(1, len(names) + 1))
        if len(train_set) == 0:
            raise DetoptInputError(f"{cfg.data}: the train split has no images")
        val_set = split_dataset(cfg.data, ds, defects, cfg.val_split, **common) if cfg.val else None
        return train_set, val_set, names, category_ids

    def choose_model(self, cfg: TrainConfig) -> TrainConfig:
        """``cfg`` with the short-budget recipe's model scale when a time budget is given and
        neither ``model`` nor ``weights`` is (:func:`~detopt.engine.recipe.choose_model`: the scale
        probe measures this machine; its seconds count in the budget). Under DDP rank 0 chooses."""
        if cfg.time is None or "model" in cfg.model_fields_set or cfg.weights is not None:
            return cfg
        chosen: list[Any] = [None, None]
        if self.main:
            chosen[:] = choose_scale(
                cfg.time, len(self.train_set),
                lambda name: seconds_per_image(name, len(self.names), cfg, self.device),
                self.val_set is not None,
            )
        if self.world > 1:
            dist.broadcast_object_list(chosen, src=0)
        model, reason = chosen
        self.adapted = {**self.adapted, "model": reason}
        adapted = cfg.model_copy(update={"model": model})
        adapted.__pydantic_fields_set__ = set(cfg.model_fields_set)  # still "not given by the user"
        return adapted

    def build_model(self) -> nn.Module:
        """The registered model ``cfg.model`` for the data set's classes (or the model of
        ``cfg.weights``, fine-tuned), on the device (NHWC
        with ``cfg.channels_last``)."""
        cfg = self.cfg
        if cfg.weights is not None:  # fine-tuning: the architecture and the values are the file's
            model = load_float_model(cfg.weights, self.names, "weights").train().requires_grad_(True)
            model = model.to(self.device)
        else:
            model = create_model(cfg.model, len(self.names), p2=cfg.p2, imgsz=cfg.imgsz).to(self.device)
        return model.to(memory_format=torch.channels_last) if cfg.channels_last else model

    def build_distiller(self) -> Distiller | None:
        """The teacher of ``cfg.teacher`` with the ``cfg.kd`` weights, or None (no distillation)."""
        cfg = self.cfg
        if cfg.teacher is None:
            return None
        teacher = load_teacher(cfg.teacher, self.names).to(self.device)
        kd = cfg.kd
        bf16 = cfg.amp and self.device.type == "cpu"  # as the student: autocast bf16 under amp
        return Distiller(teacher, self.model, cfg.imgsz, cls_weight=kd.cls, ld_weight=kd.ld,
                         feat_weight=kd.feat, temperature=kd.temperature,
                         feat_temperature=kd.feat_temperature, bf16=bf16,
                         compile_teacher=kd.compile).to(self.device)

    def build_criterion(self) -> DetectionCriterion:
        """The loss: ``cfg.assigner`` with ``cfg.cls_loss`` / ``cfg.box_loss`` and the gains."""
        return criterion_for(self.cfg, len(self.names), self.model)

    def build_postprocessor(self) -> Postprocessor:
        """Decode + suppression used by validation (``cfg.nms``, ``conf``, ``iou``, ``max_det``)."""
        cfg = self.cfg
        return Postprocessor(self.model.strides, self.model.reg_max, method=cfg.nms, score_thr=cfg.score_thr,
                             iou_thr=cfg.iou_thr, max_det=cfg.max_det)

    def build_optimizer(self) -> torch.optim.Optimizer:
        """``cfg.optimizer`` over the model's parameter groups; weight decay scaled to the
        nominal batch (``cfg.nbs``) the accumulation reaches."""
        cfg = self.cfg
        weight_decay = cfg.weight_decay * (cfg.batch * self.world) * self.accumulate / cfg.nbs
        trained: nn.Module = self.model
        if self.distiller is not None and any(True for _ in self.distiller.adapters.parameters()):
            trained = nn.ModuleList([self.model, self.distiller.adapters])  # the adapters learn too
        return make_optimizer(trained, cfg.optimizer, cfg.lr0, cfg.momentum, weight_decay)

    def build_loader(self) -> DataLoader:
        """The training loader over ``self.keys`` (the epoch's order is a function of the seed
        and the epoch, which exact resume needs; the epoch travels with each index, so the
        workers persist across epochs and prefetch)."""
        cfg = self.cfg
        return DataLoader(
            EpochItems(self.train_set),
            batch_size=cfg.batch,
            sampler=self.keys,
            num_workers=cfg.workers,
            collate_fn=collate_detections,
            drop_last=len(self.sampler) >= cfg.batch,
            pin_memory=self.device.type == "cuda",
            persistent_workers=cfg.workers > 0,
            prefetch_factor=4 if cfg.workers > 0 else None,
            # the workers' base seed from a generator of its own: starting the persistent workers
            # (once per process, so again after a resume) leaves torch's global RNG alone
            generator=torch.Generator().manual_seed(cfg.seed),
        )

    # ---------------------------------------------------------------- plan and callbacks
    @property
    def epochs(self) -> int:
        """Planned number of epochs (see :class:`~detopt.engine.plan.EpochPlan`)."""
        return self.plan.epochs

    def request_stop(self) -> None:
        """End the run after the current epoch (its checkpoint is written); for callbacks."""
        self.stop_requested = True

    def _hook(self, name: str, *args: Any) -> None:
        run_hook(self.callbacks, name, self, *args)

    # ---------------------------------------------------------------- state
    @classmethod
    def resume(cls, run: str | Path, callbacks: Sequence[Any] = (), **overrides: Any) -> Trainer:
        """A trainer that continues ``run`` (its folder or its ``last.pt``) with the run's config;
        ``overrides`` change keys of it (``epochs=`` extends a finished run). Changing keys that
        shape the data or the model breaks exactness (and the model must still load)."""
        path = Path(run)
        path = path / "last.pt" if path.is_dir() else path
        ckpt = load_checkpoint(path)
        values = upgrade_keys(TrainConfig, ckpt["config"]) | upgrade_keys(TrainConfig, overrides)
        cfg = build_config(TrainConfig, values)
        trainer = cls(cfg, callbacks=callbacks, _resume=ckpt)
        if "epochs" in overrides:  # extend (or shorten) a run explicitly
            trainer.plan.set_epochs(int(overrides["epochs"]), trainer.start_epoch)
        return trainer

    def _load_state(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        if self.ema is not None and ckpt.get("ema"):
            self.ema.load_state_dict(ckpt["ema"])
        if self.distiller is not None and ckpt.get("distiller") is not None:
            self.distiller.adapters.load_state_dict(ckpt["distiller"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        self.start_epoch = int(ckpt["epoch"]) + 1
        self.plan.epochs = int(ckpt["epochs"])
        self.best_fitness = float(ckpt["best_fitness"])
        self.bad_steps = int(ckpt["bad_steps"])
        self.elapsed = float(ckpt["elapsed"])
        self.metrics = dict(ckpt.get("metrics") or {})

    def _checkpoint(self, epoch: int) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "epochs": self.epochs,
            "model": _dense(self.model.state_dict()),
            "ema": ({**self.ema.state_dict(), "module": _dense(self.ema.module.state_dict())}
                    if self.ema is not None else None),
            "distiller": self.distiller.adapters.state_dict() if self.distiller is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": {"torch": torch.get_rng_state()},
            "spec": dict(self.model.spec),
            "names": list(self.names),
            "category_ids": list(self.category_ids),
            "config": self.cfg.model_dump(mode="json"),
            "best_fitness": self.best_fitness,
            "bad_steps": self.bad_steps,
            "elapsed": self.elapsed,
            "metrics": dict(self.metrics),
            "adapted": dict(self.adapted),
        }

    # ---------------------------------------------------------------- loop
    def adjust_gradients(self) -> None:
        """Called before each optimizer step, after the gradients are unscaled and clipped: a
        subclass adds terms that clipping must not scale (network slimming's L1 subgradient)."""

    def _optimizer_step(self) -> None:
        self.scaler.unscale_(self.optimizer)
        nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=self.cfg.grad_clip)
        self.adjust_gradients()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)

    def compute_loss(self, images: torch.Tensor, outputs: list[torch.Tensor], targets: dict[str, Any],
                     epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        """The step's loss and its logged terms: the criterion's, plus the distillation terms
        (``kd_cls``, ``kd_ld``, ``kd_feat``; zero in the last ``kd.stop_epochs`` epochs)."""
        loss, items = self.criterion(outputs, targets)
        if self.distiller is not None:
            active = epoch < self.epochs - self.cfg.kd.stop_epochs
            kd, kd_items = self.distiller.loss(images, outputs, active=active)
            loss = loss + kd
            items = {**items, **kd_items}
        return loss, items

    def _finite(self, loss: torch.Tensor) -> bool:
        ok = torch.isfinite(loss.detach()).to(torch.float32).reshape(1)
        if self.world > 1:  # every rank must skip together, or DDP waits forever
            dist.all_reduce(ok, op=dist.ReduceOp.MIN)
        return bool(ok.item())

    def _first_estimate(self, i: int, nb: int, epoch: int) -> None:
        """Early in the first epoch, fit the plan to the budget so warmup, schedule and
        close-mosaic are planned for the real length (iterations 5-25 are timed: the first ones
        carry the loader's start-up). Refined after every epoch with measured epoch times."""
        first, last = min(5, nb - 1), min(25, nb - 1)
        if i == first:
            self._t_first = time.perf_counter()
        if i == last:
            per_iter = (time.perf_counter() - self._t_first) / max(last - first, 1)
            self.plan.fit_first_epoch(per_iter, nb, epoch, self.elapsed, self.val_set is not None)
            self._set_data_epoch(epoch)

    def _set_data_epoch(self, epoch: int) -> None:
        """Seed the augmentation with the epoch; the plan decides whether mixing runs (for the
        loader's keys and for reads of ``train_set`` in this process)."""
        mixing = self.plan.mixing_on(epoch)
        self.keys.set_epoch(epoch, mixing)
        self.train_set.set_epoch(epoch)
        if self.train_set.pipeline is not None:
            self.train_set.pipeline.set_mixing(mixing)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        cfg = self.cfg
        nb = self.iters_per_epoch
        self._set_data_epoch(epoch)
        self.net.train()
        # every logged term from the start: an epoch of skipped steps still writes all columns
        kd_terms = ("kd_cls", "kd_ld", "kd_feat") if self.distiller is not None else ()
        sums = dict.fromkeys(("box", "cls", "dfl", *kd_terms), 0.0)
        n_ok = 0
        consecutive = 0
        images_seen = 0
        pending = False
        last_step = -1
        bar = None
        if self.main and cfg.progress:
            from tqdm import tqdm

            bar = tqdm(total=nb, desc=f"epoch {epoch + 1}/{self.epochs}", leave=True, dynamic_ncols=True)
        t0 = time.perf_counter()
        lr = 0.0
        sched = self.plan.schedule(nb)
        for i, batch in enumerate(self.loader):
            ni = i + nb * epoch
            lr, bias_lr, mom = sched.at(ni, nb * self.epochs)
            set_hyperparameters(self.optimizer, lr, bias_lr, mom)
            accumulate = self.accumulate
            if ni < sched.warmup_iters:
                accumulate = max(1, round(1 + (self.accumulate - 1) * ni / sched.warmup_iters))
            images = batch["images"].to(self.device, non_blocking=True).float().div_(255)
            boxes = batch["boxes"]
            if cfg.multi_scale:
                size = random_train_size(
                    np.random.default_rng([cfg.seed, epoch, i]),
                    cfg.imgsz,
                    self.model.max_stride,
                    tuple(cfg.multi_scale_range),
                )
                images, boxes = resize_batch(images, boxes, size)
            if cfg.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            targets = {
                "boxes": boxes,
                "labels": batch["labels"],
                "batch_index": batch["batch_index"],
                "crowd": batch["crowd"],
            }
            with autocast(self.device, cfg.amp):
                outputs = self.net(images)
            loss, items = self.compute_loss(images, outputs, targets, epoch)
            if not self._finite(loss):
                self.bad_steps += 1
                consecutive += 1
                self.optimizer.zero_grad(set_to_none=True)
                pending = False
                if consecutive >= cfg.max_bad_steps:
                    raise DetoptTrainingError(
                        f"the loss was not finite for {consecutive} steps in a row (epoch {epoch + 1}, "
                        f"iteration {i}); lower lr0 (now {cfg.lr0}), turn amp off, or check the labels"
                    )
                continue
            consecutive = 0
            self.scaler.scale(loss).backward()
            pending = True
            if i - last_step >= accumulate:
                self._optimizer_step()
                last_step, pending = i, False
            n_ok += 1
            for k, v in items.items():
                sums[k] = sums.get(k, 0.0) + v
            images_seen += images.shape[0]
            if bar is not None:
                dt = time.perf_counter() - t0
                bar.set_postfix(
                    {
                        **{k: f"{v / n_ok:.3f}" for k, v in sums.items()},
                        "lr": f"{lr:.2e}",
                        "img/s": f"{images_seen * self.world / dt:.1f}",
                    },
                    refresh=False,
                )
                bar.update(1)
            if cfg.time is not None and epoch == self.start_epoch:
                self._first_estimate(i, nb, epoch)
                sched = self.plan.schedule(nb)  # the planned epochs may have changed
        if pending:  # never carry gradients across an epoch boundary (exact resume)
            self._optimizer_step()
        if bar is not None:
            bar.close()
        dt = time.perf_counter() - t0
        out = {f"train/{k}": v / max(n_ok, 1) for k, v in sums.items()}
        out.update({"lr": lr, "img/s": images_seen * self.world / max(dt, 1e-9), "bad_steps": self.bad_steps})
        return out

    def validate(self) -> dict[str, float]:
        model = self.ema.module if self.ema is not None else self.model
        res = evaluate_detector(
            model,
            self.val_set,
            self.names,
            self.postprocessor,
            self.device,
            batch_size=self.cfg.batch * 2,
            workers=0,
            amp=self.cfg.amp,
        ).result
        return {f"metrics/{k}": float(v) for k, v in zip(STAT_NAMES, res.stats, strict=True)}

    def _warm_validation(self) -> float:
        """Validate on a few images once before a time-budgeted run, so one-off costs (numba
        compiling the NMS and COCO kernels on a fresh machine) do not land in the first epoch's
        time and shrink the planned epochs. Returns the seconds spent (they count in the budget)."""
        t = time.perf_counter()
        few = DetectionDataset(self.val_set.records[:2], imgsz=self.val_set.imgsz)
        model = self.ema.module if self.ema is not None else self.model
        evaluate_detector(model, few, self.names, self.postprocessor, self.device, batch_size=2, workers=0,
                          amp=self.cfg.amp)
        return time.perf_counter() - t

    def _write_row(self, row: dict[str, Any]) -> None:
        path = self.out / "results.csv"
        new = not path.exists()
        with path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)

    def _trim_results(self) -> None:
        """On resume, drop rows of epochs after the checkpoint (written before a crash)."""
        path = self.out / "results.csv"
        if not path.exists():
            return
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        keep = [r for r in rows if int(r["epoch"]) <= self.start_epoch]
        if len(keep) != len(rows) and rows:
            with path.open("w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(keep)

    def train(self) -> dict[str, Any]:
        """Run the remaining epochs; returns a summary (best fitness, last metrics, timings)."""
        cfg = self.cfg
        writer = None
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out / "config.yaml", notes=self.adapted)
            self._trim_results()
            if cfg.tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError:
                    raise DetoptInputError(
                        "tensorboard=true needs the tensorboard package (pip install tensorboard)"
                    ) from None
                writer = SummaryWriter(str(self.out / "tensorboard"))
        if cfg.time is not None and self.val_set is not None and self.main:
            self.elapsed += self._warm_validation()
        epoch = self.start_epoch
        epoch_times: list[float] = []
        self._hook("on_train_start")
        while epoch < self.epochs:
            t_epoch = time.perf_counter()
            self._hook("on_epoch_start", epoch)
            row: dict[str, Any] = {"epoch": epoch + 1}
            row.update(self.train_epoch(epoch))
            last = epoch + 1 >= self.epochs
            if self.val_set is not None and self.main and ((epoch + 1) % cfg.val_every == 0 or last):
                self.metrics = self.validate()
            row.update(self.metrics)
            fitness = self.metrics.get("metrics/AP", -1.0)
            epoch_times.append(time.perf_counter() - t_epoch)
            self.elapsed += epoch_times[-1]
            row["time"] = round(self.elapsed, 2)
            if cfg.time is not None:  # refine the number of epochs with measured epoch times
                self.plan.refine(epoch_times, epoch + 1, self.elapsed)
            if self.main:
                improved = fitness > self.best_fitness
                if improved:
                    self.best_fitness = fitness
                self._write_row(row)  # before the checkpoint: a resume trims rows it does not cover
                ckpt = self._checkpoint(epoch)
                atomic_save(ckpt, self.out / "last.pt")
                if improved or self.val_set is None:
                    atomic_save(ckpt, self.out / "best.pt")
                if writer is not None:
                    for k, v in row.items():
                        if k != "epoch":
                            writer.add_scalar(k, v, epoch + 1)
            self._hook("on_epoch_end", epoch, row)
            epoch += 1
            if self.stop_requested and epoch < self.epochs:
                self.plan.set_epochs(epoch, epoch)
                self.stopped_early = True
        if writer is not None:
            writer.close()
        summary = {
            "epochs": self.epochs,
            "best_fitness": self.best_fitness,
            "metrics": dict(self.metrics),
            "bad_steps": self.bad_steps,
            "elapsed": self.elapsed,
            "out": str(self.out),
            "skipped": dict(self.train_set.skipped),
            "stopped_early": self.stopped_early,
        }
        self._hook("on_train_end", summary)
        return summary


class ModelTrainer(Trainer):
    """The trainer of a given model instead of a new one of ``cfg.model`` (fine-tuning a pruned or
    a fake-quantized model); its checkpoints carry the model's own spec, so they load alone."""

    def __init__(self, cfg: TrainConfig, model: nn.Module, callbacks: Sequence[Any] = ()) -> None:
        self._given = model
        super().__init__(cfg, callbacks=callbacks)

    def choose_model(self, cfg: TrainConfig) -> TrainConfig:
        """The model is given: nothing to choose."""
        return cfg

    def build_model(self) -> nn.Module:
        model = self._given.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.cfg.channels_last else model
