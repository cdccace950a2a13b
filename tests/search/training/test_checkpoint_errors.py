"""Export and resume on broken input: a checkpoint that is truncated, corrupt or computes NaN, a
tolerance that cannot fail, an output folder that is a file. Each is one paragraph naming the
file and what is wrong, exit 2, no traceback, and nothing written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

from blocknas.search.cli import main
from blocknas.search.training import load_weights, save_weights

ARCH = {"stem": {"out_chs": 8, "stride": 2}, "stages": [{"block": "separable", "out_chs": 8, "stride": 2}]}
ARCH |= {"input_size": [16, 16], "num_classes": 10}
TRAIN = ["--dataset", "synthetic", "--epochs", "1", "--no-tracking", "--no-progress"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of a one-epoch training: arch.yaml, last.pt, best.pt, best.safetensors."""
    root = tmp_path_factory.mktemp("trained")
    (root / "arch.yaml").write_text(yaml.safe_dump(ARCH))
    assert main(["train", "--arch", str(root / "arch.yaml"), "--out", str(root / "run"), *TRAIN]) == 0
    return root / "run"


def _copy(trained: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "run"))


def _fails_in_one_paragraph(argv: list[str], capsys: pytest.CaptureFixture[str], *expected: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith(f"blocknas {argv[0]}: error: ") and "\n\n" not in err and "Traceback" not in err, err
    assert all(text in err for text in expected), err
    return err


CUTS = {"empty": 0, "header only": 100, "half": 0.5, "all but the end": -64}


@pytest.mark.parametrize("cut", CUTS)
@pytest.mark.parametrize("command", ["export", "train --resume"])
def test_a_truncated_checkpoint_is_named_with_what_is_wrong(
    cut: str, command: str, trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(trained, tmp_path)
    data = (run / "last.pt").read_bytes()
    keep = CUTS[cut]
    (run / "last.pt").write_bytes(data[: int(keep * len(data)) if isinstance(keep, float) else keep])
    before = sorted(p.name for p in run.iterdir())
    if command == "export":
        argv = ["export", "--checkpoint", str(run / "last.pt")]
    else:
        argv = ["train", "--arch", str(run / "arch.yaml"), "--out", str(run), "--resume", *TRAIN]
    _fails_in_one_paragraph(argv, capsys, f"{run / 'last.pt'}", "truncated or corrupt")
    assert sorted(p.name for p in run.iterdir()) == before, "nothing written"


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_broken_safetensors_file_is_named_with_what_is_wrong(
    damage: str, trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(trained, tmp_path)
    weights = run / "best.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\xff" * 8 + data[8:])
    _fails_in_one_paragraph(["export", "--checkpoint", str(weights)], capsys, str(weights), "truncated or corrupt")
    assert not (run / "export").exists()


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_network_with_non_finite_outputs_is_not_exported(
    value: float, trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(trained, tmp_path)
    weights = load_weights(run / "best.safetensors")
    first = next(k for k, v in weights.items() if v.is_floating_point() and v.numel() > 1)
    weights[first] = torch.full_like(weights[first], value)
    save_weights(run / "broken.safetensors", weights)
    argv = ["export", "--checkpoint", str(run / "broken.safetensors"), "--out", str(run / "export")]
    _fails_in_one_paragraph(argv, capsys, "non-finite outputs (NaN or inf)", "nothing was written")
    assert not (run / "export").exists()


@pytest.mark.parametrize("atol", ["nan", "inf", "-inf", "0", "-1e-4"])
def test_the_tolerance_must_be_a_finite_positive_number(
    atol: str, trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["export", "--checkpoint", str(trained / "best.safetensors"), "--out", str(tmp_path / "export")]
    _fails_in_one_paragraph([*argv, f"--atol={atol}"], capsys, "atol", "not a finite positive number")
    assert not (tmp_path / "export").exists()


@pytest.mark.parametrize("out", ["a_file", "a_file/below"])
def test_export_into_a_file_is_refused_before_anything_is_written(
    out: str, trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a_file").write_text("mine")
    argv = ["export", "--checkpoint", str(trained / "best.safetensors"), "--out", str(tmp_path / out)]
    _fails_in_one_paragraph(argv, capsys, f"{tmp_path / 'a_file'} is a file, not a folder")
    assert (tmp_path / "a_file").read_text() == "mine" and sorted(tmp_path.iterdir()) == [tmp_path / "a_file"]
