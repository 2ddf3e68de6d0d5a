"""detopt tune: exact trial slots over several workers (journal file and PostgreSQL), a killed
study restarted with every trial accounted for, pruning through the trainer callback, best.yaml
into detopt train, and bad input refused in one line before any training."""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
import yaml

from detopt.cli import main
from detopt.config import TrainConfig, TuneConfig, load_config
from detopt.data.synth import write_synthetic
from detopt.errors import DetoptInputError
from detopt.tune.hpo import claim, fail_stale, open_storage, prepare_study, run_trial, search, trial_space

TRAIN = ["model=yolo-p", "imgsz=64", "batch=8", "workers=0"]
SPACE = "lr0: {low: 0.001, high: 0.05, log: true}\nmomentum: {low: 0.8, high: 0.95}\nmosaic: [0.0, 1.0]\n"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tune") / "shapes"
    write_synthetic(out, train=24, val=8, imgsz=64, seed=5)
    return out / "data.yaml"


@pytest.fixture(scope="module")
def space_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("space") / "space.yaml"
    p.write_text(SPACE)
    return p


def _cmd(data, out, space_file, *extra):
    return [sys.executable, "-m", "detopt", "tune", "--data", str(data), "--out", str(out),
            "--space", str(space_file), "--no-postprocess", *extra, *TRAIN]


def _cfg(data, out, space_file, **kw) -> TuneConfig:
    values = {"data": str(data), "out": str(out), "space": str(space_file), "postprocess": False,
              "train": {"model": "yolo-p", "imgsz": 64, "batch": 8, "workers": 0}} | kw
    return TuneConfig(**values)


def _study(url, out, name="detopt"):
    return optuna.load_study(study_name=name, storage=open_storage(url, out))


def _check_accounted(study, n):
    """Every slot 0..n-1 ended exactly once (complete or pruned); nothing waits or runs; each
    failed trial was a dead worker's and was retried once with its parameters."""
    S = optuna.trial.TrialState
    trials = study.get_trials()
    done = [t for t in trials if t.state in (S.COMPLETE, S.PRUNED)]
    assert sorted(t.user_attrs["slot"] for t in done) == list(range(n))
    assert len({t.number for t in trials}) == len(trials)
    assert not [t for t in trials if t.state in (S.WAITING, S.RUNNING)]
    failed = [t for t in trials if t.state == S.FAIL]
    for f in failed:
        assert "no heartbeat" in f.user_attrs["error"]
        retry = [t for t in trials if t.user_attrs.get("retry_of") == f.number]
        assert len(retry) == 1 and retry[0].user_attrs["slot"] == f.user_attrs["slot"]
        assert {k: retry[0].params[k] for k in f.params} == f.params
    return trials


def _run_workers(data, out, space_file, n, *extra):
    r = subprocess.run(_cmd(data, out, space_file, "--trials", str(n), "--trial-epochs", "1",
                            "--workers", "2", *extra),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    logs = "".join(p.read_text() for p in sorted(out.glob("worker-*.log")))
    assert len(list(out.glob("worker-*.log"))) == 2
    for bad in ("locked", "Traceback", "Error"):
        assert bad not in logs + r.stderr, logs + r.stderr
    return r


# two workers on one journal file: the README's tune block (tests/test_readme.py) runs exactly that


def test_two_workers_on_postgresql(data, space_file, tmp_path):
    url = os.environ.get("DETOPT_POSTGRES_URL")
    if not url:
        if os.environ.get("DETOPT_REQUIRE_POSTGRES"):
            pytest.fail("DETOPT_REQUIRE_POSTGRES is set but DETOPT_POSTGRES_URL is not (.ci/run starts it)")
        pytest.skip("no PostgreSQL server: scripts/postgres.sh start DIR, then export DETOPT_POSTGRES_URL")
    name = f"test-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "study"
    _run_workers(data, out, space_file, 3, "--storage", url, "--study", name)
    assert not (out / "study.journal").exists()
    trials = _check_accounted(_study(url, out, name), 3)
    assert len(trials) == 3


def test_study_killed_mid_trial_resumes_with_every_trial_accounted(data, space_file, tmp_path):
    out = tmp_path / "study"
    cmd = _cmd(data, out, space_file, "--trials", "2", "--trial-epochs", "4", "--heartbeat", "0.5")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        running = []
        while not running and time.monotonic() < deadline:  # kill inside trial 1 (trial 0 done)
            time.sleep(0.3)
            if (out / "study.journal").exists():
                try:
                    st = _study(None, out)
                except Exception:
                    continue
                running = [t for t in st.get_trials(states=(optuna.trial.TrialState.RUNNING,))
                           if t.number >= 1 and t.intermediate_values]
        assert running, "no trial reached its first epoch"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    killed = running[0].number
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    trials = _check_accounted(_study(None, out), 2)
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert [t.number for t in failed] == [killed]
    assert len(trials) == 3  # two slots and one retry


def test_pruner_stops_the_trainer_and_the_trial_is_pruned(data, space_file, tmp_path):
    cfg = _cfg(data, tmp_path / "s", space_file, trials=1, trial_epochs=4)
    space = trial_space(cfg)
    storage = open_storage(None, cfg.out)
    study = prepare_study(cfg, space, storage)
    study = optuna.load_study(study_name="detopt", storage=storage,
                              pruner=optuna.pruners.ThresholdPruner(lower=2.0))  # mAP is never 2
    tid = claim(study, storage)
    assert tid is not None and claim(study, storage) is None  # one slot, claimed once
    run_trial(cfg, study, storage, tid, space, log=lambda m: None)
    t = study.get_trials()[0]
    assert t.state == optuna.trial.TrialState.PRUNED
    assert list(t.intermediate_values) == [1]  # stopped after its first epoch
    run = tmp_path / "s" / "trials" / "0000"
    assert (run / "last.pt").is_file() and (run / "results.csv").read_text().count("\n") == 2


def test_stale_trial_is_failed_and_retried_once(tmp_path):
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, direction="maximize")
    study.enqueue_trial({}, user_attrs={"slot": 0})
    tid = claim(study, storage)
    trial = optuna.Trial(study, tid)
    trial.suggest_float("lr0", 0.001, 0.1, log=True)
    storage.set_trial_system_attr(tid, "detopt:heartbeat", time.time() - 100)
    assert fail_stale(study, storage, stale_after=60) == [0]
    assert fail_stale(study, storage, stale_after=60) == []  # already failed: not again
    retry = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert len(retry) == 1 and retry[0].user_attrs == {"slot": 0, "retry_of": 0}
    tid2 = claim(study, storage)
    t2 = optuna.Trial(study, tid2)
    assert t2.suggest_float("lr0", 0.001, 0.1, log=True) == trial.params["lr0"]  # same parameters
    storage.set_trial_system_attr(tid2, "detopt:heartbeat", time.time() - 100)
    assert fail_stale(study, storage, stale_after=60) == [1]
    assert not study.get_trials(states=(optuna.trial.TrialState.WAITING,))  # a retry is not retried


def test_two_storages_claim_one_waiting_trial_once(tmp_path):
    """Two processes' view of one journal file (two storage objects): one claim wins."""
    a = open_storage(None, tmp_path)
    b = open_storage(None, tmp_path)
    study_a = optuna.create_study(storage=a, study_name="s", direction="maximize")
    study_a.enqueue_trial({}, user_attrs={"slot": 0})
    study_b = optuna.load_study(study_name="s", storage=b)
    assert study_b.get_trials(states=(optuna.trial.TrialState.WAITING,))  # b sees it waiting
    assert claim(study_a, a) is not None
    assert claim(study_b, b) is None


def test_rerun_resumes_extends_and_refuses_another_study(data, space_file, tmp_path):
    cfg = _cfg(data, tmp_path / "s", space_file, trials=2, trial_epochs=1)
    search(cfg, log=lambda m: None)
    st = _study(None, cfg.out)
    assert len(st.get_trials()) == 2
    search(cfg, log=lambda m: None)  # the same command again: nothing left to run
    assert len(_study(None, cfg.out).get_trials()) == 2
    search(cfg.model_copy(update={"trials": 3}), log=lambda m: None)  # one more slot
    trials = _study(None, cfg.out).get_trials()
    assert sorted(t.user_attrs["slot"] for t in trials) == [0, 1, 2]
    assert trials[2].params not in (trials[0].params, trials[1].params)  # the seed's draws not replayed
    other = cfg.model_copy(update={"trial_epochs": 2})
    with pytest.raises(DetoptInputError, match="made with other trial_epochs"):
        search(other, log=lambda m: None)


def test_best_yaml_round_trips_into_train(data, space_file, tmp_path, capsys):
    out = tmp_path / "study"
    assert main(["tune", "--data", str(data), "--out", str(out), "--space", str(space_file), "--trials", "2",
                 "--trial-epochs", "2", *TRAIN]) == 0
    best = yaml.safe_load((out / "best.yaml").read_text())
    number = int((out / "best.yaml").read_text().split("trial ")[1].split(",")[0])
    trial_cfg = load_config(TrainConfig, out / "trials" / f"{number:04d}" / "config.yaml")
    for key in ("lr0", "momentum", "mosaic"):
        assert best[key] == getattr(trial_cfg, key)
    assert best["nms"] and 0 <= best["iou_thr"] <= 1  # the post-processing study's choice
    run = tmp_path / "again"
    assert main(["train", "--cfg", str(out / "best.yaml"), "--out", str(run)]) == 0
    again = load_config(TrainConfig, run / "config.yaml").model_dump()
    first = trial_cfg.model_dump()
    differ = {k for k in first if first[k] != again[k]}
    assert differ <= {"out", "val_every", "progress", "nms", "iou_thr", "score_thr"}, differ
    assert "out" in differ
    html = (out / "report.html").read_text()
    assert "Hyperparameter search" in html
    from detopt.report.html import image_paths

    imgs = image_paths(html)
    assert imgs and all((out / p).is_file() for p in imgs)


@pytest.mark.parametrize(("args", "needle"), [
    (["--storage", "postgresql://u:secret@127.0.0.1:1/x"], "storage postgresql://u:***@127.0.0.1:1/x"),
    (["--storage", "redis://127.0.0.1/0"], "unknown scheme 'redis'"),
    (["bogus_key=1"], "unknown config key(s): 'bogus_key'"),
    (["epochs=3"], "epochs: set by each trial"),
])
def test_bad_input_is_one_line_before_training(data, space_file, tmp_path, capsys, args, needle):
    out = tmp_path / "study"
    assert main(["tune", "--data", str(data), "--out", str(out), "--space", str(space_file), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "secret" not in err
    assert not (out / "trials").exists()


def test_bad_space_file_is_one_line_before_training(data, tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("lr0: {low: 0.1, high: 0.01}\n")
    out = tmp_path / "study"
    assert main(["tune", "--data", str(data), "--out", str(out), "--space", str(space)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{space}: lr0: empty range" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_baseline_trial_trains_with_the_base_values(data, tmp_path):
    """--baseline: trial 0 is enqueued with the values a plain trial would use (defaults and the
    train keys; a value outside its range is left to the sampler), and trains with them."""
    from detopt.tune.hpo import baseline_params

    space = tmp_path / "space.yaml"
    space.write_text("lr0: {low: 0.001, high: 0.05, log: true}\nmomentum: {low: 0.8, high: 0.9}\n"
                     "mosaic: [0.0, 1.0]\nnbs: [8, 16, 64]\n")
    cfg = _cfg(data, tmp_path / "study", space, trials=1, trial_epochs=1, baseline=True,
               train={"model": "yolo-p", "imgsz": 64, "batch": 8, "workers": 0, "nbs": 8})
    base = baseline_params(cfg, trial_space(cfg))
    default = TrainConfig(data="-")
    assert base["lr0"] == default.lr0 and base["mosaic"] == default.mosaic
    assert "momentum" not in base and "nbs" not in base  # 0.937 is outside its range; nbs is fixed
    assert all(v == getattr(default, k) for k, v in base.items())  # the default space's keys too
    summary = search(cfg, log=lambda _m: None)
    t0 = summary["trials"][0]
    assert t0["number"] == 0 and t0["state"] == "COMPLETE"
    assert t0["lr0"] == default.lr0 and t0["mosaic"] == default.mosaic
    ran = load_config(TrainConfig, tmp_path / "study" / "trials" / "0000" / "config.yaml")
    assert (ran.lr0, ran.mosaic, ran.nbs) == (default.lr0, default.mosaic, 8)
    assert 0.8 <= ran.momentum <= 0.9  # drawn
    assert summary["baseline"] is True


def test_trials_search_the_learning_rates_of_their_optimizer(data, tmp_path):
    """The default lr0 range is the one of the optimizer the trials train with: AdamW's (ten times
    lower than SGD's) when optimizer=adamw is fixed; SGD's for SGD and for the short-budget
    recipe's MuSGD (its steps are SGD's plus the Muon step); a range of the space file always wins."""
    from detopt.tune.space import DEFAULT_SPACE, OPTIMIZER_RANGES

    def plain(out, **kw):
        return _cfg(data, tmp_path / out, "-", **kw).model_copy(update={"space": None})

    adam = trial_space(plain("a", trial_time=30, train={"optimizer": "adamw"}))
    assert adam["lr0"] == OPTIMIZER_RANGES["adamw"]["lr0"] and adam["lr0"].high == 1e-2
    assert trial_space(plain("b", trial_epochs=2))["lr0"] == DEFAULT_SPACE["lr0"]
    assert trial_space(plain("c", trial_time=30))["lr0"] == DEFAULT_SPACE["lr0"]  # MuSGD
    space = tmp_path / "space.yaml"
    space.write_text("lr0: {low: 0.01, high: 0.05, log: true}\n")
    mine = _cfg(data, tmp_path / "d", space, trial_time=30, train={"optimizer": "adamw"})
    assert trial_space(mine)["lr0"].low == 0.01
