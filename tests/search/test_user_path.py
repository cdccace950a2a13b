"""A user's path: own data with the shipped space, one error for every config problem, endings said out loud."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

import blocknas.blocks  # noqa: F401  (registers blocknet)
from blocknas.blocks import ArchConfig, ConfigError, parse
from blocknas.search.data import PREPROCESSING_KEY, DataConfig, DataError, Preprocessing, fetch_dataset, load_data
from blocknas.search.report import flat_scores
from blocknas.search.study import ARCH_ATTR, BASELINE_ATTR, StudyConfig, run_search
from blocknas.search.tracking import PARENT_RUN_ATTR, STOPPED_TAG
from blocknas.spaces import SearchSpace
from tests.conftest import REPO_ROOT, load_benchmark, quick_study, seed_mlflow_store


def write_image_folder(root: Path, *, per_class: int = 8, size: int = 48, corrupt: bool = True) -> Path:
    """3 classes of ``size``×``size`` images, RGB and grayscale mixed, each class its own brightness
    pattern (learnable), plus one corrupt file when ``corrupt``."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(("circle", "square", "stripe")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            base = np.zeros((size, size), dtype=np.float64)
            base[:, c * size // 3 : (c + 1) * size // 3] = 200.0
            pixels = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
            image = Image.fromarray(pixels) if i % 2 else Image.fromarray(np.stack([pixels] * 3, axis=-1))
            image.save(root / name / f"{i}.png")
    if corrupt:
        (root / "square" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    return root


# -- spaces and data that fit each other ---------------------------------------------------------------


def test_shipped_space_takes_its_shape_from_the_data() -> None:
    space = SearchSpace.load("mobile32")
    assert (space.in_chans, space.num_classes, space.input_size) == (None, None, None)
    data = load_data(DataConfig(), input_size=None, in_chans=None)  # digits: 8×8 grey, 10 classes
    sized = space.for_data(data)
    assert (sized.in_chans, sized.num_classes, sized.input_size) == (1, 10, (8, 8))
    tiny = SearchSpace.load("tiny").for_data(data)  # pins 1 channel at 16×16, not the classes
    assert (tiny.in_chans, tiny.num_classes, tiny.input_size) == (1, 10, (16, 16))
    assert "the data's classes" in SearchSpace.load("tiny").describe()


def test_image_folder_own_shape_and_bad_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = write_image_folder(tmp_path / "images", per_class=4)
    (root / "circle" / "also-broken.jpg").write_bytes(b"nope")
    Image.fromarray(np.zeros((20, 30), dtype=np.uint8)).save(root / "stripe" / "odd-size.png")
    with pytest.raises(DataError) as info:
        load_data(DataConfig(name="imagefolder", root=str(root)), input_size=None, in_chans=None)
    message = str(info.value)
    assert "2 image(s) cannot be decoded" in message and "on_bad_file: skip" in message
    assert "broken.png" in message and "also-broken.jpg" in message  # every bad file at once
    skip = DataConfig(name="imagefolder", root=str(root), on_bad_file="skip", val_fraction=0.25)
    with caplog.at_level(logging.WARNING):
        split = load_data(skip, input_size=None, in_chans=None)
    assert "skipped 2 image(s)" in caplog.text and "broken.png" in caplog.text and "also-broken.jpg" in caplog.text
    assert (split.in_chans, split.input_size, split.num_classes) == (3, (48, 48), 3)  # colour; most common size
    assert len(split.y_train) + len(split.y_val) == 13


def test_on_bad_file_skip_is_for_image_folders() -> None:
    with pytest.raises(ConfigError, match="on_bad_file: skipping bad files applies to imagefolder only"):
        DataConfig(on_bad_file="skip")


def test_every_config_problem_in_one_error(in_tmp_dir: Path) -> None:
    space = {**SearchSpace.load("tiny").to_dict(), "num_classes": 10, "input_size": [16, 16]}
    Path("pinned.yaml").write_text(yaml.safe_dump(space))
    config = parse(
        StudyConfig,
        quick_study(
            "problems",
            space="pinned.yaml",
            data={"name": "synthetic", "num_samples": 64, "num_classes": 3, "input_size": [12, 12]},
            baselines=["blocknet_nope", "blocknet_separable", "missing.yaml"],
        ),
    )
    with pytest.raises(ConfigError) as info:
        run_search(config, progress=False)
    message = str(info.value)
    assert message.startswith("3 problems")
    assert "baselines[0]" in message and "blocknet_nope" in message and "baselines[2]" in message
    assert "pins input_size [16, 16], but data.input_size is [12, 12]" in message
    assert not Path("runs/optuna.journal").exists()  # nothing written


def test_pinned_classes_that_differ_name_both(in_tmp_dir: Path) -> None:
    space = {**SearchSpace.load("tiny").to_dict(), "num_classes": 10}
    Path("pinned.yaml").write_text(yaml.safe_dump(space))
    data = {"name": "synthetic", "num_samples": 64, "num_classes": 3}
    config = parse(StudyConfig, quick_study("classes", space="pinned.yaml", data=data))
    with pytest.raises(
        ConfigError, match=r"the space 'pinned.yaml' pins num_classes 10, but dataset 'synthetic' has 3"
    ):
        run_search(config, progress=False)


def test_baselines_are_rebuilt_for_the_data(in_tmp_dir: Path) -> None:
    data = {"name": "synthetic", "num_samples": 64, "num_classes": 3}
    config = parse(StudyConfig, quick_study("rebuilt", n_trials=1, data=data, baselines=["blocknet_separable"]))
    result = run_search(config, progress=False)
    (trial,) = result.study.trials
    arch = ArchConfig.from_dict(trial.user_attrs[ARCH_ATTR])
    assert trial.user_attrs[BASELINE_ATTR] == "blocknet_separable"
    assert (arch.num_classes, arch.in_chans, tuple(arch.input_size)) == (3, 1, (16, 16))  # tiny pins 1×16×16


# -- flat scores ---------------------------------------------------------------------------------------


def _trial(accuracy: float, classes: int) -> optuna.trial.FrozenTrial:
    arch = ArchConfig.from_dict({"stages": [{"block": "standard", "out_chs": 8}], "num_classes": classes})
    return optuna.trial.create_trial(values=[accuracy, 1.0], user_attrs={ARCH_ATTR: arch.to_dict()})


def test_flat_scores_say_chance_or_equal() -> None:
    at_chance = flat_scores([_trial(1 / 3, 3), _trial(0.35, 3)])
    assert at_chance is not None and "all 2 complete trials scored at chance" in at_chance
    equal = flat_scores([_trial(0.8, 3), _trial(0.8, 3)])
    assert equal is not None and "scored the same accuracy (0.8000)" in equal
    assert flat_scores([_trial(0.5, 3), _trial(0.8, 3)]) is None
    assert flat_scores([_trial(1 / 3, 3)]) is None  # one trial ranks nothing either way


# -- endings -------------------------------------------------------------------------------------------


def test_timeout_says_so_and_ends_the_parent_run(in_tmp_dir: Path) -> None:
    config = parse(StudyConfig, quick_study("cut", n_trials=30, timeout_s=0.01))
    result = run_search(config, progress=False)
    done = len(result.study.trials)
    assert result.ending == f"stopped by timeout at {done}/30; rerun to continue"
    client = MlflowClient(result.tracking_uri)
    parent = client.get_run(result.study.user_attrs[PARENT_RUN_ATTR])
    assert parent.info.status == "KILLED"
    assert parent.data.tags[STOPPED_TAG] == result.ending

    resumed = run_search(config.with_overrides(n_trials=done + 1, timeout_s=3600.0), progress=False)
    assert resumed.ending is None
    parent = client.get_run(parent.info.run_id)
    assert parent.info.status == "FINISHED" and STOPPED_TAG not in parent.data.tags


def test_an_error_ends_the_parent_run_failed(in_tmp_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from blocknas.search.study import runner

    def broken(*args: object, **kwargs: object) -> bool:
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(runner, "optimize_until_done", broken)
    config = parse(StudyConfig, quick_study("crash", n_trials=3))
    with pytest.raises(RuntimeError):
        run_search(config, progress=False)
    study = optuna.load_study(study_name="crash", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend("runs/optuna.journal")))  # fmt: skip
    parent = MlflowClient("sqlite:///runs/mlflow.db").get_run(study.user_attrs[PARENT_RUN_ATTR])
    assert parent.info.status == "FAILED"
    assert "stopped by an error (RuntimeError: the disk is full) at 0/3" in parent.data.tags[STOPPED_TAG]


def test_the_summary_prints_names_as_typed(
    in_tmp_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rich markup in a study name, a folder or an error message is printed as typed: not styled, not a
    link, and no failed summary over a closing tag that opened nothing."""
    from rich.console import Console

    from blocknas.search.cli import main
    from blocknas.search.report import print_search_summary
    from blocknas.search.study import runner

    monkeypatch.setenv("COLUMNS", "400")  # no line of the summary wrapped
    name = "[red]x[link=file:passwd]y"  # a study name holds no '/'
    folder = "[red]x[/red]/[link=file:///etc/passwd]y[/link]"
    Path("study.yaml").write_text(yaml.safe_dump(quick_study(name, runs_dir=folder, export_dir=folder)))
    assert main(["search", "--config", "study.yaml", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"Pareto front of {name} (1 trials)" in out
    assert f"Exported:  {Path(folder, name)}/" in out and f"under {folder}/{name}/report/" in out

    def broken(*args: object, **kwargs: object) -> bool:
        raise OSError(f"cannot read {folder}/[/]")

    monkeypatch.setattr(runner, "optimize_until_done", broken)
    assert main(["search", "--config", "study.yaml", "--n-trials", "2", "--no-progress"]) == 1
    config = parse(StudyConfig, quick_study(name, n_trials=2, runs_dir=folder, export_dir=folder))
    console = Console(record=True, width=400)
    print_search_summary(runner.search_result(config), config, console)  # what ``blocknas workers`` prints
    assert f"stopped by an error (OSError: cannot read {folder}/[/]) at 1/2" in console.export_text()


def test_fetch_never_says_nothing_to_fetch_for_missing_data(tmp_path: Path) -> None:
    assert fetch_dataset(DataConfig()) == "digits: built in, no files needed"
    with pytest.raises(DataError, match="does not exist; put your images there"):
        fetch_dataset(DataConfig(name="imagefolder", root=str(tmp_path / "none")))
    with pytest.raises(DataError, match="no dataset found"):
        fetch_dataset(DataConfig(name="cifar10", root=str(tmp_path)))
    write_image_folder(tmp_path / "mine", per_class=1, corrupt=False)
    assert fetch_dataset(DataConfig(name="imagefolder", root=str(tmp_path / "mine"))).startswith("imagefolder: found")


# -- hints that work when pasted -----------------------------------------------------------------------

HINTS = ("MLflow:", "Reuse:", "Report:", "Resume:")


def _hints(stdout: str) -> dict[str, str]:
    """The commands a summary printed, by label (``Report:`` → ``blocknas report …``)."""
    return {line.split()[0]: line.split(None, 1)[1] for line in stdout.splitlines() if line.startswith(HINTS)}


def _path_env() -> dict[str, str]:
    """The environment with this interpreter's folder first on PATH (``blocknas``, ``python``, ``mlflow``)."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def _run(command: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=_path_env(), capture_output=True, text=True, timeout=timeout
    )


def _serve_mlflow_ui(command: str, cwd: Path) -> None:
    """Start the printed ``mlflow ui`` command (on a free port) and wait until it answers; then stop it."""
    chaos = load_benchmark("chaos")
    port = chaos.free_port()
    line = f"{command.split('   # ')[0]} --port {port}"
    proc = subprocess.Popen(["bash", "-c", f"exec {line}"], cwd=cwd, env=_path_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        chaos.wait_until_up(f"http://127.0.0.1:{port}/health", proc, timeout_s=180)
    finally:
        chaos.stop(proc)


@pytest.mark.parametrize("store", ["journal", "sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def test_every_printed_hint_runs(
    store: str, tmp_path: Path, empty_mlflow_store: Path, request: pytest.FixtureRequest
) -> None:
    """A search run with --study-name, --storage and --tracking-uri (journal: by ``blocknas workers``, which
    prints one summary; PostgreSQL: with an MLflow server) prints commands that each succeed as pasted."""
    name = f"shapes8_{uuid.uuid4().hex[:8]}"
    (tmp_path / "elsewhere").mkdir()
    tracking = f"sqlite:///{seed_mlflow_store(empty_mlflow_store, tmp_path / 'elsewhere')}"
    storage = {"journal": "stores/j.journal", "sqlite": "sqlite:///stores/optuna.db"}.get(store, "")
    if store == "postgresql":
        storage, tracking = request.getfixturevalue("postgres_url"), request.getfixturevalue("mlflow_server")
    (tmp_path / "stores").mkdir()
    Path(tmp_path / "study.yaml").write_text(yaml.safe_dump(quick_study("other_name", n_trials=2)))
    command = "workers -n 2" if store == "journal" else "search"
    flags = f"--config study.yaml --study-name {name} --storage {storage} --tracking-uri {tracking} --no-progress"
    try:
        done = _run(f"blocknas {command} {flags}", tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.count("Pareto front of") == 1  # workers: one summary, not one per worker
        assert "ExperimentalWarning" not in done.stderr and "View run" not in done.stdout
        hints = _hints(done.stdout)
        assert set(hints) == set(HINTS)
        assert "import blocknas.blocks" in hints["Reuse:"]
        ran = {label: _run(hints[label], tmp_path) for label in ("Report:", "Reuse:", "Resume:")}
        for label, result in ran.items():
            assert result.returncode == 0, f"{label} {hints[label]}\n{result.stderr[-3000:]}"
        assert f"runs/{name}/report/report.html" in ran["Report:"].stdout  # this study's report, not another's
        if tracking.startswith("http"):
            urllib.request.urlopen(hints["MLflow:"].split()[0], timeout=30).close()
        elif store == "journal":
            _serve_mlflow_ui(hints["MLflow:"], tmp_path)
    finally:
        if store == "postgresql":
            with contextlib.suppress(KeyError):
                optuna.delete_study(study_name=name, storage=storage)


def test_offline_download_is_one_paragraph(
    in_tmp_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import urllib.error

    from blocknas.search.cli import main

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    data = {"name": "cifar10", "root": "cifar", "download": True}
    Path("study.yaml").write_text(yaml.safe_dump(quick_study("offline", data=data)))
    assert main(["search", "--config", "study.yaml", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "cifar10: download into" in err and "check the network" in err


def test_version_data_and_space_describe(capsys: pytest.CaptureFixture[str]) -> None:
    from blocknas.search.cli import main

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.startswith("blocknas ")
    assert main(["space", "describe", "mobile32", "--samples", "20"]) == 0
    out = capsys.readouterr().out
    assert "73,598,976 architectures" in out and "s1.inverted_residual.expand_ratio" in out
    assert "cost of 20 random networks (seed 0) at 3x32x32, 10 classes" in out and "params  min" in out
    assert main(["data", "--config", str(REPO_ROOT / "configs" / "digits.yaml")]) == 0
    assert capsys.readouterr().out == "digits: built in, no files needed\n"


# -- discovered configs carry the preprocessing their network was searched with -----------------------


def test_front_configs_carry_the_datas_preprocessing(in_tmp_dir: Path) -> None:
    import timm

    write_image_folder(in_tmp_dir / "images", per_class=4, corrupt=False)  # 48×48 RGB and grey, named classes
    data = {"name": "imagefolder", "root": "images", "val_fraction": 0.25}
    result = run_search(parse(StudyConfig, quick_study("shapes", data=data)), progress=False)
    (path,) = result.exported
    expected = Preprocessing.of(load_data(DataConfig(**data), input_size=(16, 16), in_chans=1))  # tiny: 1×16×16
    assert expected.classes == ("circle", "square", "stripe") and expected.input_size == (1, 16, 16)
    arch = ArchConfig.from_yaml(path)
    assert Preprocessing.from_meta(arch.meta) == expected
    assert yaml.safe_load(path.read_text())["meta"][PREPROCESSING_KEY]["classes"] == ["circle", "square", "stripe"]
    cfg = timm.create_model("blocknet", arch=str(path)).pretrained_cfg
    assert (cfg["mean"], cfg["std"], cfg["label_names"]) == (expected.mean, expected.std, expected.classes)
    assert cfg["input_size"] == expected.input_size and cfg["num_classes"] == 3


# -- the report answers the question -------------------------------------------------------------------


def _study_of(points: list[tuple[str, float, float, str | None]]) -> optuna.Study:
    """A two-objective study of complete trials ``(blocks "a/b", accuracy, latency ms, baseline name or None)``."""
    from blocknas.search.study import LATENCY_ATTR

    study = optuna.create_study(directions=["maximize", "minimize"], study_name="answer")
    study.set_metric_names(["accuracy", "latency_ms"])
    for blocks, accuracy, latency, baseline in points:
        stages = [{"block": b, "out_chs": 8} for b in blocks.split("/")]
        attrs = {ARCH_ATTR: ArchConfig.from_dict({"stages": stages}).to_dict(), LATENCY_ATTR: latency}
        params, dists = ({}, {}) if baseline else ({"x": 0.5}, {"x": optuna.distributions.FloatDistribution(0, 1)})
        attrs |= {BASELINE_ATTR: baseline} if baseline else {}
        study.add_trial(optuna.trial.create_trial(values=[accuracy, latency], user_attrs=attrs, params=params,
                                                  distributions=dists))  # fmt: skip
    return study


def test_best_accuracy_per_latency_budget_per_block() -> None:
    from blocknas.search.report import best_per_budget, main_block

    assert main_block(["separable", "standard", "standard"]) == "standard"
    assert main_block(["separable", "standard"]) == "standard"  # a tie: the later stage's
    study = _study_of([
        ("standard/standard", 0.70, 1.0, None), ("separable/separable", 0.60, 0.5, None),
        ("separable/separable", 0.90, 2.0, None), ("standard/separable", 0.80, 4.0, None),
    ])  # fmt: skip
    rows = best_per_budget(study.trials, budgets=[0.5, 1.0, 4.0])
    assert [(r.budget_ms, r.winner()) for r in rows] == [(0.5, "separable"), (1.0, "standard"), (4.0, "separable")]
    assert rows[0].best["standard"] is None and rows[2].best["separable"].values[0] == 0.9  # type: ignore[union-attr]


def test_report_answers_the_question_and_warns(tmp_path: Path) -> None:
    from blocknas.search.report import write_report

    only_baselines = _study_of([
        ("standard/standard", 0.9, 1.0, "blocknet_standard"), ("separable/separable", 0.95, 0.5, "blocknet_separable"),
        *[("separable/standard", 0.5 + i / 100, 2.0 + i, None) for i in range(6)],
    ])  # fmt: skip
    text = write_report(only_baselines, tmp_path).markdown.read_text()
    assert "## Which block wins, per latency budget" in text and (tmp_path / "blocks_scatter.png").is_file()
    assert "| latency ≤ ms | separable | standard | best |" in text
    assert "the Pareto front is made only of baselines (blocknet_separable)" in text
    assert "importances come from only 6 sampled complete trials" in text
    chance = _study_of([("standard", 0.1, 1.0, None), ("separable", 0.1, 2.0, None)])
    assert "scored at chance" in write_report(chance, tmp_path / "chance").markdown.read_text()


# -- end to end: a user's own image folder, the shipped space and baselines, no edits ------------------


def test_own_image_folder_with_the_shipped_space_and_baselines(
    in_tmp_dir: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    from blocknas.search.cli import main

    write_image_folder(in_tmp_dir / "images", per_class=8)  # 3 classes, 48×48, RGB and grey mixed, one corrupt
    config = {
        "name": "own",
        "space": "mobile32",
        "baselines": ["blocknet_separable", "blocknet_inverted_residual"],
        "data": {"name": "imagefolder", "root": "images", "on_bad_file": "skip", "val_fraction": 0.25},
        "train": {"epochs": 1, "batch_size": 16},
        "latency": {"time_cap_s": 0.05, "min_repeats": 3, "warmup": 1},
        "n_trials": 3,
    }
    Path("own.yaml").write_text(yaml.safe_dump(config))
    with caplog.at_level(logging.WARNING):
        assert main(["search", "--config", "own.yaml", "--no-progress"]) == 0
    assert "skipped 1 image(s)" in caplog.text and "broken.png" in caplog.text
    study = optuna.load_study(study_name="own", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend("runs/optuna.journal")))  # fmt: skip
    assert len(study.trials) == 3
    assert {t.user_attrs.get(BASELINE_ATTR) for t in study.trials} >= {
        "blocknet_separable",
        "blocknet_inverted_residual",
    }
    for trial in study.trials:
        arch = ArchConfig.from_dict(trial.user_attrs[ARCH_ATTR])
        assert (arch.num_classes, arch.in_chans, tuple(arch.input_size)) == (3, 3, (48, 48))
    out = capsys.readouterr().out
    assert "Pareto front of own" in out and "Report:    blocknas report --config own.yaml" in out


def test_the_resume_hint_keeps_what_the_command_line_changed(tmp_path: Path) -> None:
    from blocknas.search.report.text import study_flags
    from blocknas.search.study import load_study_config

    config_path = REPO_ROOT / "configs" / "tiny.yaml"
    config = load_study_config(config_path).with_overrides(n_trials=7, parallel=2)
    flags = study_flags(config, n_trials=True)
    assert flags[flags.index("--n-trials") + 1] == "7"
    assert flags[flags.index("--parallel") + 1] == "2"
    assert "--parallel" not in study_flags(load_study_config(config_path), n_trials=True)
