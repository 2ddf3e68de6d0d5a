"""``detopt tune``: an Optuna study whose trials are real training runs, shared by any number of
processes or machines through one storage.

How a study runs (every step is safe with several workers on one storage):

- **Slots.** The process that creates the study enqueues ``trials`` waiting trials (user attr
  ``slot``); a re-run with a larger ``trials`` enqueues the missing slots. Workers only claim
  waiting trials (``set_trial_state_values(RUNNING)`` succeeds for exactly one of them), so a
  study runs exactly its number of trials, none twice, however many workers share it.
- **Trials.** A claimed trial draws its parameters from the sampler, trains with
  :class:`~detopt.engine.Trainer` (the study's base keys + the draw + the trial's budget) and
  reports validation mAP50-95 after every epoch through a trainer callback; the pruner may stop it
  (state ``PRUNED``). Its value is the best mAP50-95 of its epochs.
- **Dead workers.** A running trial writes a heartbeat (system attr ``detopt:heartbeat``) every
  ``heartbeat`` seconds. Any worker that finds a running trial silent for ``stale_after`` seconds
  marks it ``FAIL`` (one worker wins the update) and enqueues it again with the same parameters
  and slot (``retry_of``), once. A trial that raised (bad parameters, a non-finite loss) fails for
  good with its error as user attr ``error``.
- **Storage.** Default: a journal file ``out/study.journal`` (several processes on one machine or a
  shared file system); an SQLAlchemy URL (``postgresql://...``, ``sqlite:///...``) for workers on
  many machines. Re-running the same command resumes the study.
- **Results.** ``trials.csv``, ``best.yaml`` (a config ``detopt train --cfg`` takes, with the
  post-processing tuned on the best trial's weights), plots and ``report.html``
  (:mod:`detopt.tune.results`).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detopt.config import TrainConfig, TuneConfig, build_config, save_config
from detopt.errors import DetoptError, DetoptInputError
from detopt.tune.space import Param, contains, default_space, describe, read_space, suggest, without

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage

DEFAULT_TRIAL_TIME = 180.0
"""Each trial's training budget in seconds when neither ``trial_time`` nor ``trial_epochs`` is given."""

HEARTBEAT_ATTR = "detopt:heartbeat"
WORKER_ATTR = "detopt:worker"
STUDY_ATTR = "detopt"
TARGET_ATTR = "detopt_trials"
RDB_SCHEMES = ("sqlite", "postgresql", "mysql")


def _optuna():
    """optuna, quiet (its INFO lines per trial and experimental warnings are ours to report)."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


# --------------------------------------------------------------------------- storage
def masked(url: str) -> str:
    """``url`` with its password hidden (for messages and files)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def open_storage(url: str | None, out: str | Path) -> BaseStorage:
    """The study's storage: a journal file ``out/study.journal`` when ``url`` is None (or a plain
    file path), else an SQLAlchemy URL (``postgresql://``, ``sqlite:///``, ``mysql://``). The
    connection is made here: an unreachable server or a missing driver is one line, before any
    training."""
    optuna = _optuna()
    if url is None or "://" not in url:
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(out) / "study.journal" if url is None else Path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    scheme = url.split("://", 1)[0].split("+", 1)[0]
    if scheme not in RDB_SCHEMES:
        raise DetoptInputError(
            f"storage {masked(url)}: unknown scheme {scheme!r} (a journal file path, or "
            f"{', '.join(s + '://' for s in RDB_SCHEMES)})")
    engine: dict[str, Any] = {"pool_pre_ping": True}
    if scheme == "sqlite":  # several processes: wait for the file lock instead of failing at once
        engine["connect_args"] = {"timeout": 120}
    elif scheme == "postgresql":
        engine["connect_args"] = {"connect_timeout": 10}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine)
    except Exception as e:  # sqlalchemy's OperationalError, ArgumentError, a missing driver ...
        cause = e.__cause__
        if isinstance(cause, ModuleNotFoundError):  # optuna hides which driver is missing
            raise DetoptInputError(
                f"storage {masked(url)}: its database driver is not installed ({cause}; for PostgreSQL: "
                "pip install 'psycopg[binary]')") from None
        raise DetoptInputError(f"storage {masked(url)}: cannot open it: {_one_line(e)}") from None


# --------------------------------------------------------------------------- sampler, pruner
def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """``tpe`` (multivariate, constant liar for parallel workers), ``random`` or ``cmaes``."""
    optuna = _optuna()
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":  # categorical keys go to its independent sampler (random)
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    raise DetoptInputError(f"sampler: unknown {name!r} (tpe, random, cmaes)")


def make_pruner(name: str, max_epochs: int | None) -> optuna.pruners.BasePruner:
    """``hyperband`` (from one epoch up to the trial's epochs; reduction factor 3), ``median``
    (after 3 finished trials and one epoch) or ``none``."""
    optuna = _optuna()
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=max_epochs if max_epochs else "auto", reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise DetoptInputError(f"pruner: unknown {name!r} (hyperband, median, none)")


# --------------------------------------------------------------------------- the study
def trial_space(cfg: TuneConfig) -> dict[str, Param]:
    """The searched keys: the space file over the default space (its learning-rate range that of
    the optimizer the trials train with, e.g. AdamW's when ``optimizer=adamw`` is fixed), less the
    keys ``cfg.train`` fixes."""
    optimizer = base_trial_config(cfg).optimizer
    space = without(read_space(cfg.space, default_space(optimizer)), set(cfg.train))
    if not space:
        raise DetoptInputError("tune: every key of the search space is fixed by a key=value override")
    return space


def study_identity(cfg: TuneConfig, space: dict[str, Param]) -> dict[str, Any]:
    """What makes two commands the same study: workers joining it must agree on all of it."""
    return {
        "data": str(Path(cfg.data).resolve()) if "://" not in cfg.data else cfg.data,
        "space": describe(space),
        "train": cfg.train,
        "trial_time": cfg.trial_time,
        "trial_epochs": cfg.trial_epochs,
        "seed": cfg.seed,
    }


def baseline_params(cfg: TuneConfig, space: dict[str, Param]) -> dict[str, Any]:
    """The values a trial would train with if nothing were drawn (TrainConfig's defaults, the study's
    train keys, and what the short-budget recipe fills in for the trial's budget), for each key
    of ``space`` that can take its value (a value outside a range is left to the sampler)."""
    base = base_trial_config(cfg).model_dump()
    return {k: base[k] for k, p in space.items() if contains(p, base[k])}


def base_trial_config(cfg: TuneConfig) -> TrainConfig:
    """The config a trial trains with when nothing is drawn: TrainConfig's defaults, the study's
    train keys and the trial budget, adapted by the short-budget recipe as ``Trainer`` does."""
    from detopt.engine.recipe import adapt_to_budget

    return adapt_to_budget(build_config(TrainConfig, trial_values(cfg, {}, 0)))[0]


def _trial_id(t: optuna.trial.FrozenTrial) -> int:
    return t._trial_id  # optuna keeps the storage id private; its own queue code reads it the same way


def prepare_study(cfg: TuneConfig, space: dict[str, Param], storage: BaseStorage,
                  wait: float = 60.0) -> optuna.Study:
    """Create the study (and its ``cfg.trials`` waiting slots), or load it: a re-run or another
    machine's worker must describe the same study (data, space, base keys, trial budget), and a
    larger ``trials`` enqueues the missing slots."""
    optuna = _optuna()
    from optuna.exceptions import DuplicatedStudyError
    from optuna.study import StudyDirection

    ident = study_identity(cfg, space)
    try:
        storage.create_new_study([StudyDirection.MAXIMIZE], cfg.study)
        created = True
    except DuplicatedStudyError:
        created = False
    study = optuna.load_study(study_name=cfg.study, storage=storage)
    if created:
        study.set_user_attr(STUDY_ATTR, ident)
    else:
        t0 = time.monotonic()  # the creator may be enqueuing right now
        while TARGET_ATTR not in study.user_attrs and time.monotonic() - t0 < wait:
            time.sleep(0.5)
        if STUDY_ATTR not in study.user_attrs:
            raise DetoptInputError(f"study {cfg.study!r} exists in the storage but was not made by detopt "
                                   "tune (or its creator died while setting it up); use another --study")
        theirs = study.user_attrs[STUDY_ATTR]
        diff = sorted(k for k in ident if theirs.get(k) != ident[k])
        if diff:
            raise DetoptInputError(
                f"study {cfg.study!r} was made with other {', '.join(diff)} "
                f"(stored: {', '.join(f'{k}={theirs.get(k)!r}' for k in diff)}); give the same "
                "settings to resume or join it, or another --study")
        if study.directions != [StudyDirection.MAXIMIZE]:
            raise DetoptInputError(f"study {cfg.study!r} does not maximize; use another --study")
    have = {t.user_attrs.get("slot") for t in study.get_trials(deepcopy=False)}
    for slot in range(cfg.trials):
        if slot not in have:
            if slot == 0 and cfg.baseline:
                study.enqueue_trial(baseline_params(cfg, space), user_attrs={"slot": 0, "baseline": True})
            else:
                study.enqueue_trial({}, user_attrs={"slot": slot})
    if cfg.trials > int(study.user_attrs.get(TARGET_ATTR, 0)):
        study.set_user_attr(TARGET_ATTR, cfg.trials)
    return study


class Heartbeat:
    """Writes ``time.time()`` to the trial's system attr every ``interval`` seconds, on a thread."""

    def __init__(self, storage: BaseStorage, trial_id: int, interval: float) -> None:
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="detopt-heartbeat", daemon=True)

    def _beat(self) -> bool:
        try:
            self.storage.set_trial_system_attr(self.trial_id, HEARTBEAT_ATTR, time.time())
            return True
        except Exception:  # the trial was failed by another worker, or the storage went away
            return False

    def _run(self) -> None:
        while not self._stop.wait(self.interval) and self._beat():
            pass

    def __enter__(self) -> Heartbeat:
        self._beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def fail_stale(study: optuna.Study, storage: BaseStorage, stale_after: float,
               now: float | None = None) -> list[int]:
    """Fail the running trials silent for more than ``stale_after`` seconds (their worker died)
    and enqueue each once more with its parameters and slot, unless it was itself a retry.
    Returns the numbers of the trials failed here (another worker may win some of them)."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    now = time.time() if now is None else now
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        beat = t.system_attrs.get(HEARTBEAT_ATTR)
        if beat is None:
            beat = t.datetime_start.timestamp() if t.datetime_start is not None else now
        if now - beat <= stale_after:
            continue
        why = f"no heartbeat for {now - beat:.0f} s: its worker {t.system_attrs.get(WORKER_ATTR, '?')} died"
        try:
            fail_and_retry(study, storage, t, why)
        except UpdateFinishedTrialError:
            continue  # another worker failed it first (and retries it)
        failed.append(t.number)
    return failed


def fail_and_retry(study: optuna.Study, storage: BaseStorage, t: optuna.trial.FrozenTrial, why: str) -> None:
    """Mark the running trial ``t`` failed with ``why`` (user attr ``error``) and, unless it was
    itself a retry, queue its parameters and slot once more. Raises optuna's
    ``UpdateFinishedTrialError`` when the trial already ended (another worker won)."""
    from optuna.trial import TrialState

    tid = _trial_id(t)
    storage.set_trial_user_attr(tid, "error", why)
    storage.set_trial_state_values(tid, TrialState.FAIL)
    if "retry_of" not in t.user_attrs:
        study.enqueue_trial(dict(t.params),
                            user_attrs={"slot": t.user_attrs.get("slot"), "retry_of": t.number})


def claim(study: optuna.Study, storage: BaseStorage) -> int | None:
    """The storage id of a waiting trial this process now runs (exactly one claimant wins each),
    or None when none is waiting."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        try:
            if storage.set_trial_state_values(_trial_id(t), TrialState.RUNNING):
                return _trial_id(t)
        except UpdateFinishedTrialError:
            continue
    return None


class TrialReporter:
    """Trainer callback: report each epoch's validation mAP50-95 to the trial (step = epochs
    done) and stop the run when the pruner says so (never after its last epoch)."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial
        self.pruned = False

    def on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, Any]) -> None:
        ap = metrics.get("metrics/AP")
        if ap is None:
            return
        self.trial.report(float(ap), epoch + 1)
        if epoch + 1 < trainer.epochs and self.trial.should_prune():
            self.pruned = True
            trainer.request_stop()


def trial_values(cfg: TuneConfig, params: dict[str, Any], number: int) -> dict[str, Any]:
    """The ``TrainConfig`` keys of trial ``number``: the study's base keys, the drawn parameters,
    and what each trial sets (its folder, the seed, the budget, validation every epoch)."""
    budget: dict[str, Any] = (
        {"epochs": cfg.trial_epochs} if cfg.trial_epochs is not None
        else {"time": cfg.trial_time or DEFAULT_TRIAL_TIME})
    return {"data": cfg.data, **cfg.train, **params, **budget, "seed": cfg.seed,
            "out": str(Path(cfg.out) / "trials" / f"{number:04d}"),
            "val": True, "val_every": 1, "progress": False}


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def run_trial(cfg: TuneConfig, study: optuna.Study, storage: BaseStorage, trial_id: int,
              space: dict[str, Param], log: Any = print) -> None:
    """Train the claimed trial ``trial_id`` and tell the study how it ended."""
    optuna = _optuna()
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    from detopt.engine import Trainer

    trial = optuna.Trial(study, trial_id)
    storage.set_trial_system_attr(trial_id, WORKER_ATTR, f"{socket.gethostname()}:{os.getpid()}")
    with Heartbeat(storage, trial_id, cfg.heartbeat):
        try:
            params = suggest(trial, space)
            values = trial_values(cfg, params, trial.number)
            reporter = TrialReporter(trial)
            trainer = Trainer(build_config(TrainConfig, values), callbacks=[reporter])
            summary = trainer.train()
            trial.set_user_attr("seconds", round(float(summary["elapsed"]), 2))
            if reporter.pruned:
                study.tell(trial, state=TrialState.PRUNED)
                log(f"trial {trial.number}: pruned after {trainer.epochs} epochs "
                    f"(mAP50-95 {summary['metrics'].get('metrics/AP', float('nan')):.4f})")
            else:
                study.tell(trial, float(summary["best_fitness"]))
                log(f"trial {trial.number}: mAP50-95 {summary['best_fitness']:.4f} "
                    f"after {trainer.epochs} epochs")
        except UpdateFinishedTrialError:
            log(f"trial {trial.number}: failed by another worker (no heartbeat seen); dropped here")
        except KeyboardInterrupt:  # not the trial's fault: queue it again for the re-run
            try:
                fail_and_retry(study, storage, storage.get_trial(trial_id), "interrupted (Ctrl-C)")
            except UpdateFinishedTrialError:
                pass
            raise
        except (DetoptError, RuntimeError, ValueError, FloatingPointError) as e:
            try:
                trial.set_user_attr("error", _one_line(e))
                study.tell(trial, state=TrialState.FAIL)
            except UpdateFinishedTrialError:
                pass
            log(f"trial {trial.number}: failed: {_one_line(e)}")


def run_worker(cfg: TuneConfig, index: int = 0, deadline: float | None = None, log: Any = print,
               storage: BaseStorage | None = None, space: dict[str, Param] | None = None) -> int:
    """Claim and run waiting trials of the study until none waits and none runs (a running one
    is waited for: it may yet die and be retried), or until ``deadline`` (``time.time()``).
    ``storage`` and ``space``: the caller's (in-process), else opened and read from ``cfg``.
    Returns the number of trials this worker ran."""
    optuna = _optuna()
    from optuna.trial import TrialState

    space = trial_space(cfg) if space is None else space
    storage = open_storage(cfg.storage, cfg.out) if storage is None else storage
    study = optuna.load_study(study_name=cfg.study, storage=storage)
    # a resumed study must not replay the first draws of its seed: the sampler's seed also counts
    # the trials already started (0 for a new study: worker i draws with seed + i)
    started = sum(t.state != TrialState.WAITING for t in study.get_trials(deepcopy=False))
    study.sampler = make_sampler(cfg.sampler, cfg.seed + index + 7919 * started)
    study.pruner = make_pruner(cfg.pruner, cfg.trial_epochs)

    ran = 0
    while deadline is None or time.time() < deadline:
        fail_stale(study, storage, cfg.stale_after)
        tid = claim(study, storage)
        if tid is None:
            if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                break
            time.sleep(min(cfg.heartbeat, 2.0))
            continue
        run_trial(cfg, study, storage, tid, space, log)
        ran += 1
    return ran


def _set_threads(cfg: TuneConfig) -> None:
    import torch

    threads = cfg.threads or max(1, (os.cpu_count() or 1) // cfg.workers)
    torch.set_num_threads(threads)


def _spawn_workers(cfg: TuneConfig, deadline: float | None, log: Any) -> list[int]:
    """``cfg.workers`` processes on this machine (``python -m detopt.tune.worker``); their exit codes."""
    out = Path(cfg.out)
    cfg_path = out / "tune.yaml"
    procs = []
    for i in range(cfg.workers):
        args = [sys.executable, "-m", "detopt.tune.worker", str(cfg_path), str(i),
                "" if deadline is None else repr(deadline)]
        log_file = (out / f"worker-{i}.log").open("ab")
        procs.append((subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT), log_file))
    log(f"{cfg.workers} workers started (logs: {out}/worker-*.log)")
    codes = []
    for p, f in procs:
        codes.append(p.wait())
        f.close()
    return codes


def search(cfg: TuneConfig, log: Any = print) -> dict[str, Any]:
    """Run (or resume, or join) the study of ``cfg`` and write its results; returns the summary
    that ``report.html`` shows (:func:`detopt.tune.results.write_results`)."""
    from detopt.tune.results import write_results

    space = trial_space(cfg)  # every input checked before the storage is touched
    if "://" not in cfg.data and not Path(cfg.data).exists():
        raise DetoptInputError(f"data: {cfg.data} does not exist")
    storage = open_storage(cfg.storage, cfg.out)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "tune.yaml")
    study = prepare_study(cfg, space, storage)
    log(f"study {cfg.study!r} in {masked(cfg.storage) if cfg.storage else out / 'study.journal'}: "
        f"{len(space)} keys searched, {study.user_attrs[TARGET_ATTR]} trials")
    deadline = None if cfg.time is None else time.time() + cfg.time
    t0 = time.perf_counter()
    if cfg.workers == 1:
        _set_threads(cfg)
        run_worker(cfg, 0, deadline, log, storage=storage, space=space)
    else:
        codes = _spawn_workers(cfg, deadline, log)
        bad = [i for i, c in enumerate(codes) if c != 0]
        if bad:
            log(f"workers {bad} exited with an error; see their logs in {out}")
    return write_results(cfg, study, space, wall=time.perf_counter() - t0, log=log)


def worker_main(argv: list[str]) -> int:
    """``python -m detopt.tune.worker TUNE_YAML INDEX [DEADLINE]``: one worker of ``--workers``."""
    from detopt.config import load_config

    cfg = load_config(TuneConfig, argv[0])
    assert isinstance(cfg, TuneConfig)
    _set_threads(cfg)
    deadline = float(argv[2]) if len(argv) > 2 and argv[2] else None
    run_worker(cfg, int(argv[1]), deadline, log=lambda m: print(m, flush=True))
    return 0

