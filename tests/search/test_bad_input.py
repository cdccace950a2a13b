"""Every failure path of ``blocknas search`` and ``blocknas ablate`` on broken input: one paragraph, exit 2.

A corpus of broken configs, spaces, data folders, storage and tracking URLs, each run in
process through :func:`blocknas.search.cli.main` in an empty working directory. For each:
exit status 2, no traceback, and nothing written (no ``runs/``, no ``mlflow.db``, no
``configs/discovered/<name>``, no storage file).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from blocknas.blocks import ConfigError, load_yaml
from blocknas.blocks.yaml_file import MAX_CONFIG_BYTES
from blocknas.search.ablation import MAX_VARIANTS
from blocknas.search.cli import build_parser, main
from blocknas.search.files import check_safe_name
from tests.conftest import REPO_ROOT, quick_run, quick_study

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


def _fifo(name: str, *, space: bool = False) -> Builder:
    """A FIFO that no writer ever opens, as the config (or, with ``space``, as the config's space file)."""

    def build(root: Path) -> list[str]:
        os.mkfifo(root / name)
        return _yaml(root, {**STUDY, "space": name}) if space else ["--config", name]

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
    ("config-fifo", _fifo("c.yaml"), "not a regular file"),
    ("config-device", lambda root: ["--config", "/dev/zero"], "/dev/zero: is not a regular file"),
    ("config-over-1-mib", _config_bytes(b"name: x\n#" + b"#" * 2**20), "at most 1,048,576 bytes"),
    ("config-yaml-syntax", _config_bytes(b"name: [x\n"), "YAML syntax"),
    ("config-alias", _config_bytes(b"a: &x 1\nname: *x\n"), "c.yaml"),
    ("config-not-mapping", _config_bytes(b"- 1\n- 2\n"), "c.yaml"),
    ("config-unknown-key", _config(STUDY, train={"lr_max": 1}), "lr_max"),
    ("config-wrong-type", _config(STUDY, n_trials="many"), "n_trials"),
    ("space-unknown", _config(STUDY, space="nosuchspace"), "nosuchspace"),
    ("space-not-utf8", _space(b"\xff\xfe"), "s.yaml"),
    ("space-is-folder", _space(None), "is a folder"),
    ("space-fifo", _fifo("s.yaml", space=True), "not a regular file"),
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
    # numbers outside their documented ranges, refused before the study is created
    ("epochs-huge", _config(STUDY, train={"epochs": 10**21}), "train.epochs"),
    ("epochs-over-the-cap", _config(STUDY, train={"epochs": 10**6}), "train.epochs: 1000000 must be >= 1 and <="),
    ("seed-negative", _flags(STUDY, "--seed", "-1"), "seed: -1 must be >= 0"),
    ("seed-over-32-bits", _config(STUDY, seed=2**32), "seed"),
    ("data-seed-negative", _config(STUDY, data={"name": "synthetic", "num_samples": 64, "seed": -5}), "data.seed"),
    ("batch-size-huge", _config(STUDY, train={"epochs": 1, "batch_size": 10**7}), "train.batch_size"),
    ("eval-batch-size-huge", _config(STUDY, train={"epochs": 1, "eval_batch_size": 10**7}), "eval_batch_size"),
    ("threads-huge", _config(STUDY, latency={"threads": 10**6}), "latency.threads"),
    ("latency-batch-huge", _config(STUDY, latency={"batch_size": 10**7}), "latency.batch_size"),
    ("samples-huge", _config(STUDY, data={"name": "synthetic", "num_samples": 10**9}), "data.num_samples"),
    ("max-samples-huge", _config(STUDY, data={"name": "synthetic", "max_train_samples": 10**12}), "max_train_samples"),
    ("n-trials-huge", _flags(STUDY, "--n-trials", str(10**9)), "n_trials"),
    ("timeout-huge", _flags(STUDY, "--timeout", "1e300"), "timeout_s"),
    ("screen-pool-huge", _config(STUDY, screen={"pool": 10**9}), "screen.pool"),
    (
        "space-depth-billion",
        _space(b"stages: [{blocks: [standard], widths: [8], depth: {min: 1, max: 1000000000}}]\n"),
        "depth.max",
    ),
    ("space-width-huge", _space(b"stages: [{blocks: [standard], widths: [8, 10000000]}]\n"), "widths[1]"),
    (
        "space-kernel-huge",
        _space(b"stages: [{blocks: [standard], widths: [8], kernel_sizes: [100001]}]\n"),
        "kernel_sizes[0]",
    ),
    (
        "space-input-huge",
        _space(b"input_size: [100000, 32]\nstages: [{blocks: [standard], widths: [8]}]\n"),
        "input_size: 100000 must be",
    ),
    # names that become folders: bounded by a documented cap and by the filesystem, path included
    ("name-300-chars", _config(STUDY, name="n" * 300), "name: 'nnnnn"),
    ("study-name-flag-300-chars", _flags(STUDY, "--study-name", "n" * 300), "name:"),
    ("runs-dir-past-path-max", _config(STUDY, runs_dir="d/" * 2100), "more than the filesystem allows"),
    ("export-dir-past-path-max", _config(STUDY, export_dir="d/" * 2100), "more than the filesystem allows"),
    ("yaml-duplicate-key", _config_bytes(b"name: a\nspace: tiny\nname: b\n"), "duplicate key 'name' on lines 1 and 3"),
]

ABLATE_CASES: list[Case] = [
    ("ablate-config-not-utf8", _config_bytes(b"\xff\xfe"), "not a text file"),
    ("ablate-config-is-folder", _config_folder, "is a folder"),
    ("ablate-unknown-factor", _config(ABLATION, factors={"nosuch": {"levels": [1, 2]}}), "nosuch"),
    ("ablate-unknown-base", _config(ABLATION, base="nosucharch"), "base"),
    ("ablate-data-bomb", _images(ABLATION, _big_png), "too large"),
    ("ablate-seeds-huge", _config(ABLATION, seeds=10**9), "seeds"),
    ("ablate-seed-negative", _config(ABLATION, seeds=[0, -1]), "seeds[1]"),
    (
        "ablate-multiplier-huge",
        _config(ABLATION, match={"metric": "params", "max_multiplier": 1e300}),
        "max_multiplier",
    ),
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
    assert len(message) == 1, err
    # one paragraph: the error line, then (for image folders) every bad file listed below it, no blank line
    paragraph = err[err.index(message[0]) :].strip()
    assert expected in paragraph and "\n\n" not in paragraph, err
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


def test_an_absurd_ablation_grid_is_refused_at_once(tmp_path: Path) -> None:
    """A grid of 10^5 variants (5 factors × 10 levels) is refused when the config is read, naming the
    count and the limit: planning builds (and budget-matches) every variant, ~4-20 ms each here, so it
    ran for many minutes without a word, and the cells could never all be trained. A real
    ``blocknas ablate`` subprocess; before the refusal it was still planning at the timeout."""
    levels = [[1, 3, 5, 7, 9, 11, 13, 15, 17, 19]] + [[8 * i for i in range(1, 11)]] * 3 + [list(range(1, 11))]
    names = ["kernel_size", "s0.out_chs", "s1.out_chs", "s2.out_chs", "depth"]
    config = {**ABLATION, "factors": {n: {"levels": lv} for n, lv in zip(names, levels)}}
    (tmp_path / "big.yaml").write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "blocknas.search.cli", "ablate", "--config", "big.yaml", "--no-progress"]
    proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "factors: a grid of 100,000 variants (10 × 10 × 10 × 10 × 10 levels)" in proc.stderr, proc.stderr
    assert f"{MAX_VARIANTS:,}" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.yaml"], "nothing written"


# -- config files: regular files of bounded size, strict YAML --------------------------


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "c.yaml"
    os.mkfifo(fifo)
    outcome: list[BaseException | None] = []

    def read() -> None:
        try:
            load_yaml(fifo)
            outcome.append(None)
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=10)
    if reader.is_alive():  # blocked in open(): a writer that closes at once lets it go
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(timeout=10)
        pytest.fail("load_yaml waited for a writer on a FIFO")
    assert isinstance(outcome[0], ConfigError) and "not a regular file" in str(outcome[0]), outcome


def test_a_device_is_refused_unread() -> None:
    with pytest.raises(ConfigError, match="/dev/zero: is not a regular file"):
        load_yaml("/dev/zero")


def test_a_config_over_the_size_cap_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("name: x\n" + "#" * MAX_CONFIG_BYTES + "\n")  # valid YAML, one byte too many
    with pytest.raises(ConfigError, match=r"big\.yaml: is 1,048,585 bytes; a config file may hold at most 1,048,576"):
        load_yaml(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: a\nseed: 1\nname: b\n", "duplicate key 'name' on lines 1 and 3"),
        ("train:\n  epochs: 1\n  lr: 0.1\n  epochs: 2\n", "duplicate key 'epochs' on lines 2 and 4"),
        ("stages: [{block: standard, block: separable}]\n", "duplicate key 'block' on lines 1 and 1"),
        ("1: a\n0x1: b\n", "duplicate key 1 on lines 1 and 2"),
    ],
)
def test_duplicate_keys_name_the_key_and_both_lines(text: str, expected: str, tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"dup\.yaml: {re.escape(expected)}"):
        load_yaml(path)


def test_a_merge_key_may_still_override_what_it_merges(tmp_path: Path) -> None:
    path = tmp_path / "merge.yaml"
    path.write_text("base: &b {x: 1, y: 2}\nuse: {<<: *b, y: 3}\n")
    assert load_yaml(path)["use"] == {"x": 1, "y": 3}


def test_nesting_too_deep_for_the_parser_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("[" * 5_000 + "]" * 5_000)
    with pytest.raises(ConfigError, match=r"deep\.yaml: .*(nested too deeply|exceeded maximum nesting depth)"):
        load_yaml(path)


@pytest.mark.parametrize("name", ["n" * 101, "é" * 51])
def test_a_name_is_at_most_100_bytes(name: str) -> None:
    with pytest.raises(ConfigError, match=r"name: .* bytes long; a name becomes a folder, so at most 100 bytes"):
        check_safe_name(name)
    check_safe_name(name[:50])


def test_a_name_is_at_most_what_the_filesystem_allows(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The folder's own NAME_MAX wins when it is below the cap (the folder need not exist yet)."""
    monkeypatch.setattr(os, "pathconf", lambda _path, key: 16 if key == "PC_NAME_MAX" else 4096)
    with pytest.raises(ConfigError, match="at most 16 bytes"):
        check_safe_name("n" * 17, folder=tmp_path / "not" / "yet")


# -- every subcommand, every kind of unusable config or arch file --------------------------


def _file_flags() -> list[tuple[str, str]]:
    """``(subcommand, flag)`` for every ``--config`` and ``--arch`` of every subcommand, read from the parser."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return [
        (name, flag)
        for name, parser in sorted(sub.choices.items())
        for flag in ("--config", "--arch")
        if flag in parser._option_string_actions
    ]


UNUSABLE_FILES: dict[str, Callable[[Path], object] | None] = {
    "missing": None,
    "folder": Path.mkdir,
    "empty": Path.touch,
    "binary": lambda p: p.write_bytes(bytes(range(256)) * 4),
}


def _export_checkpoint(root: Path) -> list[str]:
    """A readable weights file, so ``export`` gets as far as its ``--arch``."""
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(root / "w.safetensors"))
    return ["--checkpoint", "w.safetensors"]


@pytest.mark.parametrize("kind", sorted(UNUSABLE_FILES))
@pytest.mark.parametrize(("command", "flag"), _file_flags())
def test_every_subcommand_refuses_an_unusable_file(
    command: str, flag: str, kind: str, bare_tmp_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make = UNUSABLE_FILES[kind]
    if make is not None:
        make(bare_tmp_dir / "f.yaml")
    extra = _export_checkpoint(bare_tmp_dir) if command == "export" else []
    before = set(bare_tmp_dir.rglob("*"))
    code = main([command, flag, "f.yaml", *extra])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith(f"blocknas {command}: error:"), err
    assert _written(bare_tmp_dir, before) == []
