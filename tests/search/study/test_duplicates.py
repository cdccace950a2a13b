"""No duplicate training: two real worker processes on one journal file, a two-architecture space.

With 2 architectures and 6 trials, duplicates are certain, and the two workers often draw the
same architecture at the same moment; still each (architecture, seed) is trained once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from blocknas.search.cli import main
from blocknas.search.study import ARCH_ATTR, DUPLICATE_OF_ATTR, FINGERPRINT_ATTR, TRAINING_KEY_ATTR
from blocknas.search.tracking import RUN_ID_ATTR
from tests.conftest import ran
from tests.helpers.configs import GROW_CONFIG as CONFIG
from tests.helpers.configs import GROW_SPACE as SPACE

TWO = {**SPACE, "stages": [{**SPACE["stages"][0], "blocks": ["standard"]}]}  # widths 8 | 16: 2 architectures


def _workers(config: Path, n: int, *args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BLOCKNAS_THREADS": "1"}
    command = [sys.executable, "-m", "blocknas.search.cli", "search", "--config", str(config), "--no-progress", *args]
    procs = [
        subprocess.Popen(
            command, cwd=config.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(n)
    ]
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out[-3000:]


def _trained_once(trials: list[optuna.trial.FrozenTrial]) -> dict[str, int]:
    """Each training key's original; asserts every other trial with that key is its duplicate."""
    by_key = defaultdict(list)
    for t in trials:
        by_key[t.user_attrs[TRAINING_KEY_ATTR]["key"]].append(t)
    originals = {}
    for key, group in by_key.items():
        trained = [t for t in group if DUPLICATE_OF_ATTR not in t.user_attrs]
        assert len(trained) == 1, f"{key} trained by trials {[t.number for t in trained]}"
        originals[key] = trained[0].number
        for dup in group:
            if dup is not trained[0]:
                assert dup.user_attrs[DUPLICATE_OF_ATTR] == trained[0].number
                assert dup.values == trained[0].values and dup.user_attrs[ARCH_ATTR] == trained[0].user_attrs[ARCH_ATTR]
    return originals


@pytest.mark.usefixtures("mlflow_store")  # a migrated store: the workers skip MLflow's migrations
def test_two_workers_never_train_one_architecture_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(TWO))
    config = tmp_path / "dup.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, "name": "dup", "n_trials": 6}))  # the definition test's study
    _workers(config, 2)
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "runs/optuna.journal")))
    trials = ran(optuna.load_study(study_name="dup", storage=storage).get_trials())
    assert len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials)
    assert len(_trained_once(trials)) <= 2
    assert optuna.get_all_study_names(storage) == ["dup"]  # every training claim deleted once its result was recorded
    # another seed is another key: the same architectures are trained again, once each
    # (in this process: the two workers above already raced for the keys)
    monkeypatch.chdir(tmp_path)
    assert main(["search", "--config", str(config), "--no-progress", "--seed", "1", "--n-trials", "12"]) == 0
    trials = ran(optuna.load_study(study_name="dup", storage=storage).get_trials())
    assert len(trials) == 12 and all(t.state == TrialState.COMPLETE for t in trials)
    originals = _trained_once(trials)
    assert len(originals) <= 4 and len({t.user_attrs[ARCH_ATTR]["stages"][0]["out_chs"] for t in trials}) == 2
    exported = [int(p.stem.split("_")[0][1:]) for p in (tmp_path / "configs/discovered/dup").glob("t*.yaml")]
    by_number = {t.number: t for t in trials}
    assert exported and all(by_number[n].user_attrs.get(DUPLICATE_OF_ATTR) is None for n in exported), exported
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs/mlflow.db'}")
    for t in trials:
        run = client.get_run(t.user_attrs[RUN_ID_ATTR])
        assert run.data.tags.get("blocknas.duplicate_of") == (
            str(t.user_attrs[DUPLICATE_OF_ATTR]) if DUPLICATE_OF_ATTR in t.user_attrs else None
        )
        # a duplicate's run names the device its (copied) latency was measured on, as the original's does
        tags = run.data.tags
        assert tags.get("latency.fp.cpu_model") and tags["latency.fingerprint_id"] == t.user_attrs[FINGERPRINT_ATTR]
        assert run.data.metrics["accuracy"] == t.values[0]
