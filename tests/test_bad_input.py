"""Every failure path of ``blocknas search`` and ``blocknas ablate`` on broken input: one paragraph, exit 2.

A corpus of broken configs, spaces, data folders, storage and tracking URLs, each run in
process through :func:`blocknas.search.cli.main` in an empty working directory. For each:
exit status 2, no traceback, and nothing written (no ``runs/``, no ``mlflow.db``, no
``configs/discovered/<name>``, no storage file).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from blocknas.search.cli import main

STUDY: dict[str, Any] = {
    "name": "bad",
    "space": "tiny",
    "data": {"name": "synthetic", "num_samples": 64},
    "train": {"epochs": 1, "batch_size": 64},
    "latency": {"time_cap_s": 0.05, "min_repeats": 3, "warmup": 1},
    "sampler": "random",
    "n_trials": 1,
}
ABLATION: dict[str, Any] = {
    "name": "badab",
    "base": "blocknet_separable",
    "factors": {"block": {"levels": ["standard", "separable"]}},
    "seeds": 1,
    "data": {"name": "synthetic", "num_samples": 64},
    "train": {"epochs": 1, "batch_size": 64},
    "latency": {"time_cap_s": 0.05, "min_repeats": 3, "warmup": 1},
}


def _yaml(root: Path, data: dict[str, Any], name: str = "c.yaml") -> list[str]:
    (root / name).write_text(yaml.safe_dump(data))
    return ["--config", name]


def _image_folder(root: Path, bad: Callable[[Path], None] | None = None) -> str:
    for label in ("a", "b"):
        (root / "imgs" / label).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((8, 8), 40 * i, dtype=np.uint8)).save(root / "imgs" / label / f"{i}.png")
    if bad is not None:
        bad(root / "imgs" / "a" / "0.png")
    return str(root / "imgs")


def _big_png(path: Path) -> None:
    Image.fromarray(np.zeros((64, 64), dtype=np.uint8)).save(path)  # 4,096 pixels; the test allows far fewer


def _with(base: dict[str, Any], /, **changes: Any) -> dict[str, Any]:
    return {**base, **changes}


# (id, argv builder, what the message must say); the builder gets the empty working directory
Case = tuple[str, Callable[[Path], list[str]], str]


def _text(root: Path, name: str, content: bytes) -> None:
    (root / name).write_bytes(content)


CASES: list[Case] = [
    (
        "config-not-utf8",
        lambda r: (_text(r, "c.yaml", b"name: x\n\xff\xfe\n"), ["--config", "c.yaml"])[1],
        "not a text file",
    ),
    ("config-is-folder", lambda r: ((r / "c.yaml").mkdir(), ["--config", "c.yaml"])[1], "is a folder"),
    ("config-missing", lambda r: ["--config", "nope.yaml"], "not found"),
    ("config-yaml-syntax", lambda r: (_text(r, "c.yaml", b"name: [x\n"), ["--config", "c.yaml"])[1], "YAML syntax"),
    ("config-alias", lambda r: (_text(r, "c.yaml", b"a: &x 1\nname: *x\n"), ["--config", "c.yaml"])[1], "c.yaml"),
    ("config-unknown-key", lambda r: _yaml(r, _with(STUDY, train={"lr_max": 1})), "lr_max"),
    ("config-wrong-type", lambda r: _yaml(r, _with(STUDY, n_trials="many")), "n_trials"),
    ("config-not-mapping", lambda r: (_text(r, "c.yaml", b"- 1\n- 2\n"), ["--config", "c.yaml"])[1], "c.yaml"),
    ("space-unknown", lambda r: _yaml(r, _with(STUDY, space="nosuchspace")), "nosuchspace"),
    (
        "space-not-utf8",
        lambda r: (_text(r, "s.yaml", b"\xff\xfe"), _yaml(r, _with(STUDY, space="s.yaml")))[1],
        "s.yaml",
    ),
    ("space-is-folder", lambda r: ((r / "s.yaml").mkdir(), _yaml(r, _with(STUDY, space="s.yaml")))[1], "is a folder"),
    (
        "space-even-kernel",
        lambda r: (
            _text(r, "s.yaml", b"stages: [{blocks: [standard], widths: [8], kernel_sizes: [4]}]\n"),
            _yaml(r, _with(STUDY, space="s.yaml")),
        )[1],
        "kernel_sizes",
    ),
    ("data-unknown", lambda r: _yaml(r, _with(STUDY, data={"name": "nosuchdata"})), "nosuchdata"),
    ("data-folder-missing", lambda r: _yaml(r, _with(STUDY, data={"name": "imagefolder", "root": "nope"})), "nope"),
    (
        "data-corrupt-image",
        lambda r: _yaml(
            r, _with(STUDY, data={"name": "imagefolder", "root": _image_folder(r, lambda p: p.write_bytes(b"x"))})
        ),
        "cannot decode",
    ),
    (
        "data-decompression-bomb",
        lambda r: _yaml(r, _with(STUDY, data={"name": "imagefolder", "root": _image_folder(r, _big_png)})),
        "too large",
    ),
    (
        "data-decompression-bomb-warning",  # between PIL's limit and twice it, PIL only warns
        lambda r: (
            setattr(Image, "MAX_IMAGE_PIXELS", 3000),
            _yaml(r, _with(STUDY, data={"name": "imagefolder", "root": _image_folder(r, _big_png)})),
        )[1],
        "too large",
    ),
    ("constraint-impossible", lambda r: _yaml(r, _with(STUDY, constraints={"params": 0})), "params"),
    ("baseline-unknown", lambda r: _yaml(r, _with(STUDY, baselines=["nosucharch"])), "baselines[0]"),
    ("n-trials-zero", lambda r: [*_yaml(r, STUDY), "--n-trials", "0"], "n_trials"),
    (
        "storage-journal-parent-is-file",
        lambda r: ((r / "f").touch(), [*_yaml(r, STUDY), "--storage", str(r / "f" / "o.journal")])[1],
        "storage",
    ),
    (
        "storage-sqlite-parent-is-file",
        lambda r: ((r / "f").touch(), [*_yaml(r, STUDY), "--storage", f"sqlite:///{r / 'f' / 'o.db'}"])[1],
        "storage",
    ),
    (
        "storage-unreachable-postgres",
        lambda r: [*_yaml(r, STUDY), "--storage", "postgresql://u:pw@127.0.0.1:1/x"],
        "storage",
    ),
    (
        "tracking-sqlite-parent-is-file",
        lambda r: ((r / "f").touch(), [*_yaml(r, STUDY), "--tracking-uri", f"sqlite:///{r / 'f' / 'mlflow.db'}"])[1],
        "tracking",
    ),
    (
        "tracking-unreachable-server",
        lambda r: [*_yaml(r, STUDY), "--tracking-uri", "http://127.0.0.1:1"],
        "not reachable",
    ),
]

ABLATE_CASES: list[Case] = [
    (
        "ablate-config-not-utf8",
        lambda r: (_text(r, "c.yaml", b"\xff\xfe"), ["--config", "c.yaml"])[1],
        "not a text file",
    ),
    ("ablate-config-is-folder", lambda r: ((r / "c.yaml").mkdir(), ["--config", "c.yaml"])[1], "is a folder"),
    ("ablate-unknown-factor", lambda r: _yaml(r, _with(ABLATION, factors={"nosuch": {"levels": [1, 2]}})), "nosuch"),
    ("ablate-unknown-base", lambda r: _yaml(r, _with(ABLATION, base="nosucharch")), "base"),
    (
        "ablate-data-bomb",
        lambda r: _yaml(r, _with(ABLATION, data={"name": "imagefolder", "root": _image_folder(r, _big_png)})),
        "too large",
    ),
    (
        "ablate-storage-parent-is-file",
        lambda r: ((r / "f").touch(), [*_yaml(r, ABLATION), "--storage", str(r / "f" / "o.journal")])[1],
        "storage",
    ),
    (
        "ablate-tracking-parent-is-file",
        lambda r: ((r / "f").touch(), [*_yaml(r, ABLATION), "--tracking-uri", f"sqlite:///{r / 'f' / 'mlflow.db'}"])[1],
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
