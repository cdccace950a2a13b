"""Every failure path of ``blocknas search`` and ``blocknas ablate`` on broken input: one paragraph, exit 2.

A corpus of broken configs, spaces, data folders, storage and tracking URLs, each run in
process through :func:`blocknas.search.cli.main` in an empty working directory. For each:
exit status 2, no traceback, and nothing written (no ``runs/``, no ``mlflow.db``, no
``configs/discovered/<name>``, no storage file).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from blocknas.search.cli import main

from .conftest import REPO_ROOT, quick_run, quick_study

STUDY = quick_study("bad")
ABLATION = quick_run(
    name="badab", base="blocknet_separable", factors={"block": {"levels": ["standard", "separable"]}}, seeds=1
)

Builder = Callable[[Path], list[str]]  # writes the case's files into the empty working directory, returns argv


def _yaml(root: Path, data: dict[str, Any], name: str = "c.yaml") -> list[str]:
    (root / name).write_text(yaml.safe_dump(data))
    return ["--config", name]


def _config(base: dict[str, Any], /, **changes: Any) -> Builder:
    return lambda root: _yaml(root, {**base, **changes})


def _config_bytes(content: bytes) -> Builder:
    def build(root: Path) -> list[str]:
        (root / "c.yaml").write_bytes(content)
        return ["--config", "c.yaml"]

    return build


def _config_folder(root: Path) -> list[str]:
    (root / "c.yaml").mkdir()
    return ["--config", "c.yaml"]


def _space(content: bytes | None) -> Builder:
    """A study whose space file holds ``content`` (None: the space path is a folder)."""

    def build(root: Path) -> list[str]:
        if content is None:
            (root / "s.yaml").mkdir()
        else:
            (root / "s.yaml").write_bytes(content)
        return _yaml(root, {**STUDY, "space": "s.yaml"})

    return build


def _image_folder(root: Path, bad: Callable[[Path], object] | None = None) -> str:
    for label in ("a", "b"):
        (root / "imgs" / label).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((8, 8), 40 * i, dtype=np.uint8)).save(root / "imgs" / label / f"{i}.png")
    if bad is not None:
        bad(root / "imgs" / "a" / "0.png")
    return str(root / "imgs")


def _big_png(path: Path) -> None:
    Image.fromarray(np.zeros((64, 64), dtype=np.uint8)).save(path)  # 4,096 pixels; the test allows far fewer


def _images(base: dict[str, Any], bad: Callable[[Path], object], max_pixels: int = 1000) -> Builder:
    """A study on an image folder with one bad image; PIL's pixel limit is set to ``max_pixels``."""

    def build(root: Path) -> list[str]:
        Image.MAX_IMAGE_PIXELS = max_pixels  # restored by the test's monkeypatch
        return _yaml(root, {**base, "data": {"name": "imagefolder", "root": _image_folder(root, bad)}})

    return build


def _store_under_a_file(base: dict[str, Any], flag: str, url: str) -> Builder:
    """``flag`` set to ``url`` (``{f}``: a path below a plain file)."""

    def build(root: Path) -> list[str]:
        (root / "f").touch()
        return [*_yaml(root, base), flag, url.format(f=root / "f")]

    return build


def _flags(base: dict[str, Any], *flags: str) -> Builder:
    return lambda root: [*_yaml(root, base), *flags]


Case = tuple[str, Builder, str]  # id, what to run, what the error must say

CASES: list[Case] = [
    ("config-not-utf8", _config_bytes(b"name: x\n\xff\xfe\n"), "not a text file"),
    ("config-is-folder", _config_folder, "is a folder"),
    ("config-missing", lambda root: ["--config", "nope.yaml"], "not found"),
    ("config-yaml-syntax", _config_bytes(b"name: [x\n"), "YAML syntax"),
    ("config-alias", _config_bytes(b"a: &x 1\nname: *x\n"), "c.yaml"),
    ("config-not-mapping", _config_bytes(b"- 1\n- 2\n"), "c.yaml"),
    ("config-unknown-key", _config(STUDY, train={"lr_max": 1}), "lr_max"),
    ("config-wrong-type", _config(STUDY, n_trials="many"), "n_trials"),
    ("space-unknown", _config(STUDY, space="nosuchspace"), "nosuchspace"),
    ("space-not-utf8", _space(b"\xff\xfe"), "s.yaml"),
    ("space-is-folder", _space(None), "is a folder"),
    ("space-even-kernel", _space(b"stages: [{blocks: [standard], widths: [8], kernel_sizes: [4]}]\n"), "kernel_sizes"),
    ("data-unknown", _config(STUDY, data={"name": "nosuchdata"}), "nosuchdata"),
    ("data-folder-missing", _config(STUDY, data={"name": "imagefolder", "root": "nope"}), "nope"),
    ("data-corrupt-image", _images(STUDY, lambda p: p.write_bytes(b"x")), "cannot decode"),
    ("data-decompression-bomb", _images(STUDY, _big_png), "too large"),
    # between PIL's limit and twice it, PIL only warns
    ("data-decompression-bomb-warning", _images(STUDY, _big_png, max_pixels=3000), "too large"),
    ("constraint-impossible", _config(STUDY, constraints={"params": 0}), "params"),
    ("baseline-unknown", _config(STUDY, baselines=["nosucharch"]), "baselines[0]"),
    ("n-trials-zero", _flags(STUDY, "--n-trials", "0"), "n_trials"),
    ("storage-journal-under-a-file", _store_under_a_file(STUDY, "--storage", "{f}/o.journal"), "storage"),
    ("storage-sqlite-under-a-file", _store_under_a_file(STUDY, "--storage", "sqlite:///{f}/o.db"), "storage"),
    ("storage-unreachable-postgres", _flags(STUDY, "--storage", "postgresql://u:pw@127.0.0.1:1/x"), "storage"),
    (
        "tracking-sqlite-under-a-file",
        _store_under_a_file(STUDY, "--tracking-uri", "sqlite:///{f}/mlflow.db"),
        "tracking",
    ),
    ("tracking-unreachable-server", _flags(STUDY, "--tracking-uri", "http://127.0.0.1:1"), "not reachable"),
]

ABLATE_CASES: list[Case] = [
    ("ablate-config-not-utf8", _config_bytes(b"\xff\xfe"), "not a text file"),
    ("ablate-config-is-folder", _config_folder, "is a folder"),
    ("ablate-unknown-factor", _config(ABLATION, factors={"nosuch": {"levels": [1, 2]}}), "nosuch"),
    ("ablate-unknown-base", _config(ABLATION, base="nosucharch"), "base"),
    ("ablate-data-bomb", _images(ABLATION, _big_png), "too large"),
    ("ablate-storage-under-a-file", _store_under_a_file(ABLATION, "--storage", "{f}/o.journal"), "storage"),
    (
        "ablate-tracking-under-a-file",
        _store_under_a_file(ABLATION, "--tracking-uri", "sqlite:///{f}/mlflow.db"),
        "tracking",
    ),
]


def _written(root: Path, before: set[Path]) -> list[str]:
    """What the command left behind that the case itself did not create."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p not in before)


@pytest.mark.parametrize(
    ("command", "case"),
    [("search", c) for c in CASES] + [("ablate", c) for c in ABLATE_CASES],
    ids=[c[0] for c in CASES] + [c[0] for c in ABLATE_CASES],
)
def test_broken_input_is_one_paragraph_and_exit_2(
    command: str, case: Case, in_tmp_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # a 64×64 PNG is a "bomb": cheap to write
    _, build, expected = case
    argv = build(in_tmp_dir)
    before = set(in_tmp_dir.rglob("*"))
    code = main([command, *argv, "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and "Warning" not in err, err
    message = [line for line in err.splitlines() if line.startswith(f"blocknas {command}: error:")]
    assert len(message) == 1 and expected in message[0], err
    assert "pw@" not in err
    assert _written(in_tmp_dir, before) == []


@pytest.mark.parametrize(
    ("script", "config", "expected"),
    [
        (
            "search.py",
            {"name": "x", "space": "tiny", "sampler": "grid-ish"},
            "bad.yaml: sampler: 'grid-ish' is not one of",
        ),
        (
            "ablate.py",
            {**ABLATION, "factors": {"kernel": {"levels": [3, 5]}}},
            "bad.yaml: factors.kernel: unknown factor 'kernel'",
        ),
    ],
)
def test_script_with_a_bad_config_exits_2_and_writes_nothing(
    script: str, config: dict[str, Any], expected: str, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / script), "--config", str(bad)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr
    assert not (tmp_path / "runs").exists()
