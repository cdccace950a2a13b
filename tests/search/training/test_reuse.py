"""Reusing found architectures: references, timm registration, full training, kill/resume, checkpoints, export."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import optuna
import pytest
import timm
import torch
import yaml
from mlflow.tracking import MlflowClient

import blocknas.blocks  # noqa: F401  (registers the blocknet models)
from blocknas.blocks import (
    ArchConfig,
    ConfigError,
    get_block,
    register_arch,
    register_arch_dir,
    register_block,
    resolve_arch,
)
from blocknas.search.cli import main
from blocknas.search.data import DataConfig, Preprocessing, load_data
from blocknas.search.latency import LatencyTarget
from blocknas.search.study import ARCH_ATTR, SEARCH_DEFINITION_ATTR, export_front
from blocknas.search.training import (
    AugmentConfig,
    CheckpointError,
    FullTrainConfig,
    RandomCropFlip,
    TrainRun,
    evaluate,
    export_checkpoint,
    load_model,
    load_training_state,
    load_weights,
    save_weights,
    searched_data,
    train_full,
)
from tests.conftest import REPO_ROOT

ARCH = {
    "stem": {"out_chs": 8, "stride": 2},
    "stages": [
        {"block": "separable", "out_chs": 16, "stride": 2},
        {"block": "inverted_residual", "out_chs": 16, "expand_ratio": 2.0},
    ],
    "head": {"drop_rate": 0.1},  # dropout: the global RNG state must survive a resume
    "input_size": [16, 16],
    "num_classes": 10,
}
FAST_TIMING = LatencyTarget(warmup=1, min_repeats=5, max_repeats=20, time_cap_s=0.05)


def train_config(tmp: Path, out: str, **changes: object) -> FullTrainConfig:
    (tmp / "arch.yaml").write_text(yaml.safe_dump(ARCH))
    data = {
        "arch": str(tmp / "arch.yaml"),
        "data": {"name": "synthetic", "num_samples": 256},
        "train": {"epochs": 3, "batch_size": 32},
        "augment": {"crop_padding": 2, "hflip": True},
        "ema": {"enabled": True, "decay": 0.99},
        "tracking": False,
        "out_dir": str(tmp / out),
        "runs_dir": str(tmp / "runs"),
        **changes,
    }
    return FullTrainConfig.from_dict(data)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> FullTrainConfig:
    """One short uninterrupted run, shared by the checkpoint and export tests."""
    tmp = tmp_path_factory.mktemp("trained")
    config = train_config(tmp, "run", train={"epochs": 2, "batch_size": 32})
    train_full(config, progress=False)
    return config


# -- architecture references and timm registration -------------------------------------


def test_discovered_names_resolve_with_helpful_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study = tmp_path / "mystudy"
    study.mkdir()
    ArchConfig.from_dict(ARCH).replace(meta={"accuracy": 0.9}).to_yaml(study / "t0003_aaaa1111.yaml")
    ArchConfig.from_dict({**ARCH, "num_classes": 5}).to_yaml(study / "t0012_bbbb2222.yaml")
    monkeypatch.setenv("BLOCKNAS_DISCOVERED", str(tmp_path))

    assert resolve_arch("mystudy/t0003_aaaa1111").meta["accuracy"] == 0.9
    assert timm.create_model("blocknet", arch="mystudy/t0012").num_classes == 5  # unique prefix
    with pytest.raises(ConfigError, match=r"'t9' is not there .*available: t0003_aaaa1111, t0012_bbbb2222"):
        resolve_arch("mystudy/t9")
    with pytest.raises(ConfigError, match="is ambiguous"):
        resolve_arch("mystudy/t00")
    with pytest.raises(ConfigError, match=r"no discovered study 'other' .*studies there: mystudy"):
        resolve_arch("other/t0003_aaaa1111")


def test_register_arch_and_a_discovered_folder(tmp_path: Path) -> None:
    path = tmp_path / "net.yaml"
    ArchConfig.from_dict(ARCH).to_yaml(path)
    register_arch("reuse_test_net", path, overwrite=True)
    assert "reuse_test_net" in timm.list_models("reuse_test_*")
    assert timm.create_model("reuse_test_net")(torch.randn(2, 3, 16, 16)).shape == (2, 10)

    ArchConfig.from_dict({**ARCH, "num_classes": 4}).to_yaml(tmp_path / "t0001-x.yaml")
    names = register_arch_dir(tmp_path, prefix="reuse_found_", overwrite=True)
    assert names == ["reuse_found_net", "reuse_found_t0001_x"]
    assert timm.create_model("reuse_found_t0001_x").num_classes == 4


@pytest.fixture(scope="module")
def arch_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A real MLflow SQLite store holding one run with an ``arch.yaml`` artifact: (tracking URI, run id)."""
    tmp_path = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("s", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    client.log_text(run_id, ArchConfig.from_dict(ARCH).to_yaml(), "arch.yaml")  # what a trial's child run holds
    client.log_text(run_id, ArchConfig.from_dict({**ARCH, "num_classes": 3}).to_yaml(), "other/arch.yaml")
    return uri, run_id


def test_runs_uri_resolves_from_sqlite_store(arch_run: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    uri, run_id = arch_run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert resolve_arch(f"runs:/{run_id}") == ArchConfig.from_dict(ARCH)
    assert timm.create_model("blocknet", arch=f"runs:/{run_id}/other/arch.yaml").num_classes == 3
    with pytest.raises(ConfigError, match=r"MLflow run 'f{32}' from tracking URI 'sqlite:///"):
        resolve_arch("runs:/" + "f" * 32)


def test_runs_uri_works_with_only_blocks_imported(arch_run: tuple[str, str], tmp_path: Path) -> None:
    uri, run_id = arch_run
    code = (
        "import sys, timm, blocknas.blocks\n"
        f"m = timm.create_model('blocknet', arch='runs:/{run_id}')\n"
        "assert m.num_classes == 10 and 'blocknas.search' not in sys.modules\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=tmp_path, timeout=120)


# -- full training ------------------------------------------------------------------------


def test_train_config_defaults_and_errors() -> None:
    config = FullTrainConfig.from_dict({"train": {"lr": 0.01}})
    assert (config.train.epochs, config.train.lr) == (30, 0.01)  # merged over the full-training defaults
    assert config.with_overrides(epochs=5, dataset="synthetic").train.epochs == 5
    with pytest.raises(ConfigError, match=r"train\.time_budget_s"):
        FullTrainConfig.from_dict({"train": {"time_budget_s": 10}})
    with pytest.raises(ConfigError, match=r"augment\.crop_padding: -1"):
        FullTrainConfig.from_dict({"augment": {"crop_padding": -1}})
    with pytest.raises(ConfigError, match="no architecture"):
        train_full(FullTrainConfig(), progress=False)


@pytest.mark.usefixtures("isolated_registry")
def test_full_training_pins_the_configured_threads_and_restores_them(tmp_path: Path) -> None:
    seen: list[int] = []

    @register_block("thread_probe", override=True)
    class ThreadProbe(get_block("standard")):  # type: ignore[misc]
        """A standard conv that records torch's intra-op thread count on every training forward."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.training:
                seen.append(torch.get_num_threads())
            return super().forward(x)

    before = torch.get_num_threads()
    pinned = 1 if before > 1 else 2
    arch = {**ARCH, "stages": [{"block": "thread_probe", "out_chs": 16, "stride": 2}]}
    config = train_config(tmp_path, "threads", arch=arch, train={"epochs": 1, "batch_size": 64, "threads": pinned})
    train_full(config, progress=False)
    assert seen and set(seen) == {pinned}
    assert torch.get_num_threads() == before


def test_random_crop_flip_moves_pixels_without_changing_them() -> None:
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4) + 1
    assert torch.equal(RandomCropFlip(padding=0, hflip=False, seed=0)(x), x)
    out = RandomCropFlip(padding=1, hflip=True, seed=0)(x)
    assert out.shape == x.shape
    for i in range(2):
        kept = set(out[i].flatten().tolist()) - {0.0}
        assert kept <= set(x[i].flatten().tolist()) and len(kept) >= 9  # a shifted window, zeros at the border


@pytest.mark.parametrize(
    ("dataset", "hflip"),
    [("cifar10", True), ("fashion_mnist", True), ("imagefolder", True), ("digits", False), ("mnist", False),
     ("kmnist", False), ("synthetic", False)],
)  # fmt: skip
def test_flips_are_on_by_default_only_where_a_mirror_image_keeps_its_class(dataset: str, hflip: bool) -> None:
    assert RandomCropFlip.create(AugmentConfig(), dataset, seed=0).hflip is hflip
    assert RandomCropFlip.create(AugmentConfig(hflip=False), dataset, seed=0).hflip is False


def test_killed_training_resumes_to_the_same_weights(tmp_path: Path) -> None:
    killed = train_config(tmp_path, "killed", train={"epochs": 30, "batch_size": 32})
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(killed.to_dict()))
    env = {**os.environ, "BLOCKNAS_THREADS": "1", "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        str(REPO_ROOT / "scripts" / "train.py"),
        "--config",
        str(tmp_path / "train.yaml"),
        "--no-progress",
    ]
    process = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = tmp_path / "killed" / "last.pt"
    deadline = time.monotonic() + 120
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "training ended before it could be killed"
    epoch_at_kill = load_training_state(last)["epoch"]
    assert epoch_at_kill < 29

    with pytest.raises(CheckpointError, match="pass --resume"):
        train_full(killed, progress=False)
    with pytest.raises(ConfigError, match=r"seed"):
        train_full(train_config(tmp_path, "killed", train={"epochs": 30, "batch_size": 32}, seed=1), resume=True)
    resumed = train_full(killed, resume=True, progress=False)
    straight = train_full(train_config(tmp_path, "straight", train={"epochs": 30, "batch_size": 32}), progress=False)

    assert resumed.resumed_from_epoch is not None and resumed.resumed_from_epoch >= epoch_at_kill
    assert [h["accuracy"] for h in resumed.history] == [h["accuracy"] for h in straight.history]
    for kind in ("last", "best"):
        a, b = (load_weights(r.out_dir / f"{kind}.safetensors") for r in (resumed, straight))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), kind


def test_resume_without_a_checkpoint_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"cannot resume: .*last\.pt does not exist"):
        train_full(train_config(tmp_path, "nothing"), resume=True)


# -- checkpoints -----------------------------------------------------------------------


def test_checkpoint_loads_back_through_timm_with_identical_outputs(trained: FullTrainConfig) -> None:
    out = Path(str(trained.out_dir))
    arch = out / "arch.yaml"
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    via_timm = timm.create_model("blocknet", arch=str(arch), checkpoint_path=str(out / "best.safetensors")).eval()
    via_state = timm.create_model("blocknet", arch=str(arch), checkpoint_path=str(out / "best.pt")).eval()  # EMA key
    state = load_training_state(out / "best.pt")
    manual = timm.create_model("blocknet", arch=ArchConfig.from_dict(state["arch"]))
    manual.load_state_dict(state["model_ema"])
    with torch.inference_mode():
        outputs = [m(x) for m in (via_timm, via_state, manual.eval(), load_model(arch, out / "best.safetensors"))]
    assert all(torch.equal(outputs[0], o) for o in outputs[1:])

    # and they are the trained network: its validation accuracy is the one training recorded as best
    data = load_data(trained.data, input_size=(16, 16))
    _, accuracy = evaluate(via_timm, data.x_val, data.y_val, batch_size=64, device="cpu")
    assert accuracy == pytest.approx(state["best_accuracy"], abs=1e-9)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_missing_or_malformed_checkpoints_give_clear_errors(
    trained: FullTrainConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = Path(str(trained.out_dir))
    with pytest.raises(CheckpointError, match=r"nope\.safetensors does not exist; files there: best\.pt"):
        load_weights(out / "nope.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot read safetensors checkpoint"):
        load_weights(tmp_path / "bad.safetensors")
    (tmp_path / "bad.pt").write_bytes(b"\x80\x04garbage")
    with pytest.raises(CheckpointError, match=r"weights_only=True"):
        load_weights(tmp_path / "bad.pt")
    torch.save({"epoch": 3}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="holds no state dict"):
        load_weights(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a blocknas training state"):
        load_training_state(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"does not fit blocknet_separable: .*missing keys"):
        load_model("blocknet_separable", out / "best.safetensors")
    save_weights(tmp_path / "w.pth", load_weights(out / "best.safetensors"))
    assert load_model(out / "arch.yaml", tmp_path / "w.pth") is not None

    assert (
        main(["export", "--checkpoint", str(tmp_path / "missing.safetensors"), "--arch", str(out / "arch.yaml")]) == 2
    )
    assert "missing.safetensors does not exist" in capsys.readouterr().err


# -- export ----------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_export_onnx_and_torchscript_match_pytorch(trained: FullTrainConfig, tmp_path: Path) -> None:
    import json

    import onnxruntime as ort

    out = Path(str(trained.out_dir))
    result = export_checkpoint(
        out / "arch.yaml", out / "best.safetensors", tmp_path, target=FAST_TIMING.replace(batch_size=2)
    )
    model = load_model(out / "arch.yaml", out / "best.safetensors")
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(7))  # timed at 2, any batch runs
    with torch.inference_mode():
        expected = model(x).numpy()
        scripted = torch.jit.load(str(result.files["torchscript"]))(x).numpy()
    session = ort.InferenceSession(str(result.files["onnx"]), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(onnx_out, expected, atol=1e-4, rtol=0)
    np.testing.assert_allclose(scripted, expected, atol=1e-5, rtol=0)

    report = json.loads((tmp_path / "latency.json").read_text())
    assert set(report) == {"onnx", "torchscript"}
    assert (
        report["onnx"]["target"]["runtime"] == "onnxruntime"
        and report["torchscript"]["target"]["runtime"] == "torchscript"
    )
    assert all(
        r["latency_p50_ms"] > 0 and r["input_shape"] == [2, 3, 16, 16] and r["fingerprint_id"] for r in report.values()
    )


def test_training_and_export_record_the_preprocessing(trained: FullTrainConfig, tmp_path: Path) -> None:
    out = Path(str(trained.out_dir))
    data = load_data(trained.data or DataConfig(), input_size=(16, 16))
    record = Preprocessing.of(data)
    assert Preprocessing.from_meta(ArchConfig.from_yaml(out / "arch.yaml").meta) == record
    export_checkpoint(out / "arch.yaml", out / "best.pt", tmp_path, formats=["onnx"], target=FAST_TIMING)
    props = {p.key: p.value for p in onnx.load(tmp_path / "model.onnx").metadata_props}
    assert Preprocessing.from_metadata(props) == record
    assert ArchConfig.from_yaml(tmp_path / "arch.yaml") == ArchConfig.from_yaml(out / "arch.yaml")


def test_pretrained_cfg_without_a_preprocessing_record_is_neutral_per_channel() -> None:
    cfg = timm.create_model("blocknet", arch={**ARCH, "in_chans": 1}).pretrained_cfg
    assert (cfg["mean"], cfg["std"]) == ((0.5,), (0.5,)) and "label_names" not in cfg


def test_training_defaults_to_the_data_the_architecture_was_searched_on() -> None:
    searched = {"name": "fashion_mnist", "max_train_samples": 2000, "max_val_samples": 5000, "seed": 3}
    arch = ArchConfig.from_dict(ARCH).replace(meta={"study": "default", "trial": 12, "data": searched})
    config = FullTrainConfig(arch="default/t0012")
    assert searched_data(arch, config) == DataConfig(name="fashion_mnist", seed=3)  # all of it, split the same
    assert config.run_name(arch) == f"t0012_{arch.short_hash()}"  # the prefix names the exported config
    assert config.with_overrides(dataset="digits").data == DataConfig(name="digits")
    with pytest.raises(ConfigError, match=r"'blocknet_mobile' records no dataset .*--dataset"):
        searched_data(ArchConfig.from_dict(ARCH), FullTrainConfig(arch="blocknet_mobile"))


def test_front_export_records_the_studys_data(tmp_path: Path) -> None:
    study = optuna.create_study(study_name="s", directions=["maximize", "minimize"])
    study.set_user_attr(SEARCH_DEFINITION_ATTR, {"settings": {"data": {"name": "digits", "seed": 1}}})
    arch = ArchConfig.from_dict(ARCH)
    study.add_trial(optuna.trial.create_trial(values=[0.9, 1.0], user_attrs={ARCH_ATTR: arch.to_dict()}))
    (path,) = export_front(study, tmp_path)
    meta = ArchConfig.from_yaml(path).meta
    assert meta["data"] == {"name": "digits", "seed": 1} and meta["study"] == "s" and meta["trial"] == 0
    assert searched_data(ArchConfig.from_yaml(path), FullTrainConfig(arch="s/t0000")) == DataConfig(seed=1)


# -- MLflow ------------------------------------------------------------------------------


def test_training_run_is_logged_to_mlflow_and_resolvable(in_tmp_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    config = train_config(
        in_tmp_dir, "tracked", train={"epochs": 2, "batch_size": 32}, tracking=True, experiment="reuse"
    )
    result = train_full(config, progress=False)
    client = MlflowClient(f"sqlite:///{in_tmp_dir / 'runs' / 'mlflow.db'}")
    run = client.get_run(str(result.run_id))
    assert run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == "2" and run.data.params["ema.enabled"] == "True"
    assert run.data.metrics["best_accuracy"] == pytest.approx(result.best_accuracy)
    assert len(client.get_metric_history(run.info.run_id, "epoch_val_accuracy")) == 2
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)} | {
        a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")
    }
    assert {"arch.yaml", "train.yaml", "history.json", "checkpoint/best.safetensors"} <= artifacts

    # training used MLflow's fluent API on its store and left the process's tracking URI as it was:
    # unset, so MLflow still follows $MLFLOW_TRACKING_URI
    assert "MLFLOW_TRACKING_URI" not in os.environ
    monkeypatch.setenv("MLFLOW_TRACKING_URI", client.tracking_uri)
    assert mlflow.get_tracking_uri() == client.tracking_uri
    assert resolve_arch(f"runs:/{result.run_id}") == ArchConfig.from_yaml(result.arch_path)
    logged = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    assert [m.source_run_id for m in logged] == [result.run_id]
    info = mlflow.models.get_model_info(logged[0].model_uri)
    assert info.signature is not None and info.saved_input_example_info is not None
    loaded = mlflow.pytorch.load_model(logged[0].model_uri)
    x = torch.randn(3, 3, 16, 16)
    with torch.inference_mode():
        np.testing.assert_allclose(
            loaded(x).numpy(), load_model(result.arch_path, result.weights)(x).numpy(), atol=1e-5
        )


def test_resuming_a_finished_training_changes_nothing(in_tmp_dir: Path) -> None:
    config = train_config(in_tmp_dir, "done", train={"epochs": 2, "batch_size": 32}, tracking=True, experiment="done")
    first = train_full(config, progress=False)
    again = train_full(config, resume=True, progress=False)
    assert (again.run_id, again.best_accuracy, again.history) == (first.run_id, first.best_accuracy, first.history)
    client = MlflowClient(f"sqlite:///{in_tmp_dir / 'runs' / 'mlflow.db'}")
    assert client.get_run(str(first.run_id)).info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(str(first.run_id), "epoch_accuracy")] == [0, 1]
    assert len(client.search_logged_models(experiment_ids=[client.get_run(str(first.run_id)).info.experiment_id])) == 1


def test_a_resumed_run_logs_the_epochs_a_kill_left_unlogged_once(in_tmp_dir: Path) -> None:
    """A kill between an epoch's checkpoint and its logging: the reopened run logs that epoch, and only it."""
    config = train_config(in_tmp_dir, "gap", tracking=True, experiment="gap")
    (in_tmp_dir / "gap").mkdir()
    for name in ("arch.yaml", "train.yaml"):
        (in_tmp_dir / "gap" / name).write_text("{}")
    arch = ArchConfig.from_dict(ARCH)
    history = [{"epoch": e, "accuracy": 0.5 + e / 10, "val_loss": 1.0 - e / 10} for e in range(3)]
    run = TrainRun.open(config, arch, in_tmp_dir / "gap")
    run.log_epoch({k: v for k, v in history[0].items() if k != "epoch"}, 0)
    run.end("KILLED")
    reopened = TrainRun.open(config, arch, in_tmp_dir / "gap", run_id=run.run_id, history=history)
    assert reopened.run_id == run.run_id
    client = MlflowClient(f"sqlite:///{in_tmp_dir / 'runs' / 'mlflow.db'}")
    logged = client.get_metric_history(str(run.run_id), "epoch_accuracy")
    assert sorted((m.step, m.value) for m in logged) == [(e, 0.5 + e / 10) for e in range(3)]
    assert client.get_run(str(run.run_id)).info.status == "RUNNING"


def test_export_command_writes_verified_files(trained: FullTrainConfig, tmp_path: Path) -> None:
    out = tmp_path / "export"
    checkpoint = trained.output_dir(ArchConfig.from_dict(ARCH)) / "best.safetensors"
    code = main(["export", "--checkpoint", str(checkpoint), "--out", str(out), "--batch-size", "2"])
    assert code == 0
    assert {"model.onnx", "model.torchscript.pt", "latency.json"} <= {p.name for p in out.iterdir()}
