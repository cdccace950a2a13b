"""A study is one experiment: resumes with another definition are refused, a grown space goes on.

Real resumed studies through ``blocknas search`` (journal storage, MLflow SQLite, synthetic
16×16 data, one epoch), each resume growing one knob of a small space file.
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from blocknas.search.cli import main
from blocknas.search.pause_points import PAUSE_ENV
from blocknas.search.study import (
    DEFINITION_ATTR,
    DUPLICATE_OF_ATTR,
    SEARCH_DEFINITION_ATTR,
    definition_changes,
    param_names_for,
)
from blocknas.search.tracking.attrs import WORKER_ATTR
from blocknas.spaces import SearchSpace
from tests.conftest import quick_run, quick_study
from tests.helpers.configs import GROW_CONFIG as CONFIG
from tests.helpers.configs import GROW_SPACE as SPACE


def _grow(space: dict[str, Any], knob: str) -> None:
    stage = space["stages"][0]
    if knob == "blocks":
        stage["blocks"].append("separable")
    elif knob == "widths":
        stage["widths"].append(24)
    elif knob == "kernel_sizes":
        stage["kernel_sizes"].append(5)
    elif knob == "depth":
        stage["depth"]["max"] = 2
    elif knob == "expand_ratios":
        stage["blocks"][1]["expand_ratios"].append(3)
    elif knob == "se_ratios":
        stage["se_ratios"].append(0.25)
    elif knob == "head_widths":
        space["head"]["widths"].append(32)


def _write(root: Path, config: dict[str, Any], space: dict[str, Any]) -> Path:
    (root / "space.yaml").write_text(yaml.safe_dump(space))
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _search(path: Path, *extra: str) -> int:
    return main(["search", "--config", str(path), "--no-progress", *extra])


def _study(name: str = "grow") -> optuna.Study:
    return optuna.load_study(
        study_name=name,
        storage=optuna.storages.JournalStorage(JournalFileBackend("runs/optuna.journal")),
    )


KNOBS = ["blocks", "widths", "kernel_sizes", "depth", "expand_ratios", "se_ratios", "head_widths"]


def test_space_grows_knob_by_knob_across_resumes(in_tmp_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    space, config = copy.deepcopy(SPACE), dict(CONFIG)
    assert _search(_write(in_tmp_dir, config, space)) == 0
    for knob in KNOBS:
        _grow(space, knob)
        config["n_trials"] += 2
        assert _search(_write(in_tmp_dir, config, space)) == 0, capsys.readouterr().err
    study = _study()
    trials = study.get_trials()
    assert len(trials) == config["n_trials"]
    assert all(t.state == TrialState.COMPLETE for t in trials), [t.user_attrs.get("fail_reason") for t in trials]
    # the grown knobs are offered with their new choices, under names Optuna has not seen other choices for
    offered: dict[str, set[tuple[Any, ...]]] = {}
    for t in trials:
        for name, dist in t.distributions.items():
            if isinstance(dist, optuna.distributions.CategoricalDistribution):
                offered.setdefault(name.split("~")[0], set()).add(tuple(dist.choices))
    assert ("standard", "inverted_residual", "separable") in offered["s0.block"]
    assert (8, 16, 24) in offered["s0.out_chs"]
    assert (0, 32) in offered["head.num_features"]
    depth = [t.distributions["s0.depth"] for t in trials if "s0.depth" in t.distributions]
    assert max(d.high for d in depth if isinstance(d, optuna.distributions.IntDistribution)) == 2
    # the definition keeps the first choices of every knob, so a later resume derives the same names
    stored = study.user_attrs[SEARCH_DEFINITION_ATTR]
    assert stored["choices"]["s0.block"] == ["standard", "inverted_residual"]
    assert stored["choices"]["s0.out_chs"] == [8, 16]


def test_param_names_are_stable_and_only_for_changed_knobs() -> None:
    space = SearchSpace.from_dict(SPACE)
    grown = copy.deepcopy(SPACE)
    _grow(grown, "widths")
    first = {k.name: list(k.choices) for k in space.knobs() if not k.is_range}
    names = param_names_for(SearchSpace.from_dict(grown), first)
    assert list(names) == ["s0.out_chs"] and names["s0.out_chs"].startswith("s0.out_chs~")
    assert param_names_for(SearchSpace.from_dict(grown), first) == names  # every worker agrees
    assert param_names_for(space, first) == {}


CHANGES: list[tuple[str, dict[str, Any], str]] = [
    ("data", {"data": {"name": "synthetic", "num_samples": 96, "num_classes": 4}}, "data.num_samples: 64 -> 96"),
    ("train budget", {"train": {"epochs": 2, "batch_size": 64}}, "train.epochs: 1 -> 2"),
    (
        "latency",
        {"latency": {"time_cap_s": 0.05, "min_repeats": 3, "warmup": 1, "batch_size": 4}},
        "latency.batch_size: 1 -> 4",
    ),
    ("constraints", {"constraints": {"params": 100000}}, "constraints.params: None -> 100000"),
]


def test_changed_definition_is_refused_with_the_diff(in_tmp_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = dict(CONFIG, n_trials=1)
    assert _search(_write(in_tmp_dir, config, SPACE)) == 0
    capsys.readouterr()
    for what, change, diff in CHANGES:
        assert _search(_write(in_tmp_dir, {**config, **change, "n_trials": 2}, SPACE)) == 2, what
        err = capsys.readouterr().err
        assert diff in err and "--allow-changed-definition" in err and "new name" in err, (what, err)
        assert "Traceback" not in err
    shape = copy.deepcopy(SPACE)
    shape["input_size"] = [12, 12]
    assert _search(_write(in_tmp_dir, {**config, "n_trials": 2}, shape)) == 2
    assert "space.input_size: [16, 16] -> [12, 12]" in capsys.readouterr().err
    assert _search(_write(in_tmp_dir, {**config, "objective": "accuracy", "n_trials": 2}, SPACE)) == 2
    assert "objective" in capsys.readouterr().err
    assert len(_study().trials) == 1  # nothing was run by the refused resumes
    # n_trials and timeout are not part of the definition
    assert _search(_write(in_tmp_dir, {**config, "n_trials": 2, "timeout_s": 600}, SPACE)) == 0
    assert "defined with other settings" not in capsys.readouterr().err
    # the explicit way on: the study continues, and the new settings become its definition
    changed = {**config, **CHANGES[1][1], "n_trials": 3}
    assert _search(_write(in_tmp_dir, changed, SPACE), "--allow-changed-definition") == 0
    assert _search(_write(in_tmp_dir, {**changed, "n_trials": 3}, SPACE)) == 0
    assert len(_study().trials) == 3


def test_definition_changes_name_key_paths_and_tell_unknown_settings() -> None:
    """The one diff of a stored definition (a search's and an ablation's): each key path with its old and new
    value; a setting only one side knows is one-sided, a value that became a mapping is not."""
    old = {"train": {"epochs": 4, "lr": 0.01, "ema": None}, "space": {"stages": 2}}
    new = {"train": {"epochs": 3, "lr": 0.01, "ema": {"decay": 0.9}, "min_time_s": 0.25}, "space": {"stages": 2}}
    changes = definition_changes(old, new)
    assert [str(c) for c in changes] == [
        "train.ema: None -> '<unset>'",
        "train.ema.decay: '<unset>' -> 0.9",
        "train.epochs: 4 -> 3",
        "train.min_time_s: '<unset>' -> 0.25",
    ]
    assert [c.key for c in changes if c.one_sided] == ["train.min_time_s"]


def _stopped(process: subprocess.Popen[str]) -> bool:
    """Whether ``process`` is stopped (``SIGSTOP``): state ``T`` in ``/proc/<pid>/stat``."""
    stat = Path(f"/proc/{process.pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "T"


def _race(
    root: Path, command: str, first: dict[str, Any], second: dict[str, Any]
) -> tuple[subprocess.Popen[str], str, subprocess.Popen[str], str]:
    """``blocknas COMMAND`` with ``first`` stopped at the pause point ``study-created`` (just created the
    study, its definition not stored), then with ``second`` run to its end, then ``first`` continued.

    Returns:
        Each worker with its output, once both have exited.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BLOCKNAS_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)

    def worker(name: str, config: dict[str, Any], **extra: str) -> subprocess.Popen[str]:
        (root / f"{name}.yaml").write_text(yaml.safe_dump(config))
        argv = [sys.executable, "-m", "blocknas.search.cli", command, "--config", f"{name}.yaml", "--no-progress"]
        return subprocess.Popen(
            argv, cwd=root, env={**env, **extra}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    a = worker("a", first, **{PAUSE_ENV: "study-created"})
    try:
        deadline = time.monotonic() + 120
        while not _stopped(a):
            assert a.poll() is None and time.monotonic() < deadline, "worker A never reached its pause point"
            time.sleep(0.1)
        b = worker("b", second)
        b_out, _ = b.communicate(timeout=300)
    finally:
        os.kill(a.pid, signal.SIGCONT)
    a_out, _ = a.communicate(timeout=300)
    return a, a_out, b, b_out


def _journal_study(root: Path, name: str) -> optuna.Study:
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(root / "runs/optuna.journal")))
    return optuna.load_study(study_name=name, storage=storage)


@pytest.mark.usefixtures("mlflow_store")  # a migrated store: the workers skip MLflow's migrations
def test_a_paused_creator_cannot_slip_in_another_definition(tmp_path: Path) -> None:
    """Worker A creates the study and stops (``SIGSTOP``, at the pause point) before storing its
    definition; worker B, with 2 epochs instead of 1, opens the study meanwhile. Exactly one
    definition is stored, by whichever worker gets there first (B: A is stopped), and the other
    worker exits 2 naming the difference, having trained nothing. Every trial trained under the
    stored definition: its epochs (one reported accuracy per epoch) are the stored ones.
    (Without the claim, B waited 10 s for a definition, stored its own and trained; A, continued,
    overwrote it with its own: both exited 0 and the study's definition said 1 epoch, its trials 2.)"""
    study = quick_study(
        "race", objective="accuracy", pruner="none", n_trials=2,
        data={"name": "synthetic", "num_samples": 64, "num_classes": 4},
    )  # fmt: skip
    a, a_out, b, b_out = _race(tmp_path, "search", study, {**study, "train": {"epochs": 2, "batch_size": 64}})
    assert b.returncode == 0, b_out[-3000:]
    assert a.returncode == 2, a_out[-3000:]
    assert "defined with other settings" in a_out and "train.epochs: 2 -> 1" in a_out, a_out[-3000:]
    assert "Traceback" not in a_out
    stored = _journal_study(tmp_path, "race")
    epochs = stored.user_attrs[SEARCH_DEFINITION_ATTR]["settings"]["train"]["epochs"]
    trained = [t for t in stored.trials if t.state == TrialState.COMPLETE]
    assert epochs == 2 and len(trained) == 2
    # a trial whose architecture an earlier one trained copies its result (duplicate_of) and trains nothing
    ran = [t for t in trained if DUPLICATE_OF_ATTR not in t.user_attrs]
    assert ran and all(len(t.intermediate_values) == epochs for t in ran), [t.intermediate_values for t in trained]
    assert all(t.user_attrs[WORKER_ATTR].endswith(f":{b.pid}") for t in stored.trials)


@pytest.mark.usefixtures("mlflow_store")
def test_a_paused_creator_cannot_slip_in_another_ablation_definition(tmp_path: Path) -> None:
    """The same race on an ablation: B (2 epochs) stores the definition and trains every cell, A
    (1 epoch), continued, exits 2 naming the difference. (Before the claim, B waited 30 s for A's
    definition, then exited 2 calling the study "not an ablation".)"""
    ablation = quick_run(
        name="race", base="blocknet_separable", factors={"block": {"levels": ["standard", "separable"]}}, seeds=1
    )
    a, a_out, b, b_out = _race(tmp_path, "ablate", ablation, {**ablation, "train": {"epochs": 2, "batch_size": 64}})
    assert b.returncode == 0, b_out[-3000:]
    assert a.returncode == 2 and "train.epochs: 2 -> 1" in a_out and "Traceback" not in a_out, a_out[-3000:]
    stored = _journal_study(tmp_path, "race")
    assert stored.user_attrs[DEFINITION_ATTR]["settings"]["train"]["epochs"] == 2
    assert len(stored.trials) == 2 and all(t.state == TrialState.COMPLETE for t in stored.trials)
    assert all(t.user_attrs[WORKER_ATTR].endswith(f":{b.pid}") for t in stored.trials)
