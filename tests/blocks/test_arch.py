"""ArchConfig: YAML/dict round trips, the short hash, and error messages for bad input."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest

from blocknas.blocks import ArchConfig, ConfigError
from blocknas.blocks.presets import PRESETS


def full_config() -> dict[str, Any]:
    """A config that sets every field away from its default."""
    return {
        "stem": {"out_chs": 24, "kernel_size": 5, "stride": 2},
        "stages": [
            {"block": "separable", "out_chs": 32, "depth": 2, "stride": 1, "kernel_size": 7, "mid_norm_act": False},
            {"block": "reversed", "out_chs": 48, "depth": 1, "stride": 2, "se_ratio": 0.25, "skip": True},
            {"block": "inverted_residual", "out_chs": 48, "depth": 3, "expand_ratio": 6.0, "skip": False},
            {"block": "standard", "out_chs": 64, "kernel_size": 1, "skip": None},
        ],
        "head": {"num_features": 128, "drop_rate": 0.2},
        "act_layer": "silu",
        "norm_layer": "layernorm2d",
        "in_chans": 1,
        "num_classes": 7,
        "input_size": [28, 30],
        "meta": {"found_by": "test", "accuracy": 0.5},
    }


ROUND_TRIP_CASES = {"full": full_config(), **PRESETS}


DELETE = object()


def with_change(path: str, value: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """A copy of ``base`` (a minimal valid config) with the value at a dotted/indexed ``path`` set or deleted."""
    data = copy.deepcopy(
        base or {"stages": [{"block": "separable", "out_chs": 16}, {"block": "standard", "out_chs": 32}]}
    )
    keys = [int(k) if k.isdigit() else k for k in re.findall(r"[^.\[\]]+", path)]
    target = data
    for key in keys[:-1]:
        target = target.setdefault(key, {}) if isinstance(key, str) else target[key]
    if value is DELETE:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    return data


# -- round trips ----------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(ROUND_TRIP_CASES))
def test_dict_round_trip(case: str) -> None:
    arch = ArchConfig.from_dict(ROUND_TRIP_CASES[case])
    again = ArchConfig.from_dict(arch.to_dict())
    assert again == arch
    assert again.to_dict() == arch.to_dict()
    assert again.meta == arch.meta


@pytest.mark.parametrize("case", sorted(ROUND_TRIP_CASES))
def test_yaml_round_trip(case: str, tmp_path: Path) -> None:
    arch = ArchConfig.from_dict(ROUND_TRIP_CASES[case])
    path = tmp_path / "arch.yaml"
    text = arch.to_yaml(path)
    assert path.read_text() == text
    loaded = ArchConfig.from_yaml(path)
    assert loaded == arch
    assert loaded.meta == arch.meta
    assert loaded.to_yaml() == text


def test_round_trip_keeps_every_field() -> None:
    arch = ArchConfig.from_dict(full_config())
    assert arch.to_dict() == {**full_config(), "stages": arch.to_dict()["stages"]}
    stages = arch.to_dict()["stages"]
    assert [s["skip"] for s in stages] == [None, True, False, None]
    assert stages[0]["mid_norm_act"] is False
    assert arch.input_size == (28, 30)


def test_defaults_fill_missing_keys() -> None:
    arch = ArchConfig.from_dict({"stages": [{"block": "standard", "out_chs": 8}]})
    stage = arch.stages[0]
    assert (stage.depth, stage.stride, stage.kernel_size, stage.expand_ratio, stage.se_ratio) == (1, 1, 3, 1.0, 0.0)
    assert (arch.act_layer, arch.in_chans, arch.num_classes, arch.input_size) == ("relu", 3, 10, (32, 32))


def test_int_and_float_spellings_are_equal() -> None:
    as_int = with_change("stages[0].expand_ratio", 4)
    as_float = with_change("stages[0].expand_ratio", 4.0)
    assert ArchConfig.from_dict(as_int) == ArchConfig.from_dict(as_float)
    assert ArchConfig.from_dict(as_int).short_hash() == ArchConfig.from_dict(as_float).short_hash()


def test_replace_validates() -> None:
    arch = ArchConfig.from_dict(PRESETS["blocknet_mobile"])
    assert arch.replace(num_classes=100).num_classes == 100
    with pytest.raises(ConfigError, match="act_layer"):
        arch.replace(act_layer="nope")


def test_flat_params_name_every_stage_field() -> None:
    flat = ArchConfig.from_dict(full_config()).flat_params()
    assert flat["stages.1.se_ratio"] == 0.25
    assert flat["stem.stride"] == 2
    assert flat["head.num_features"] == 128
    assert not any(key.startswith("meta") for key in flat)


# -- hash -----------------------------------------------------------------------------


def test_hash_is_stable() -> None:
    """Golden value: the hash names runs and files on disk, so changing it orphans stored results."""
    arch = ArchConfig.from_dict({"stages": [{"block": "separable", "out_chs": 16}]})
    assert arch.short_hash() == "b9e06689"


def test_same_config_same_hash() -> None:
    data = full_config()
    reordered = dict(reversed(list(data.items())))
    hashes = {ArchConfig.from_dict(d).short_hash() for d in (data, reordered, ArchConfig.from_dict(data).to_dict())}
    assert len(hashes) == 1
    assert re.fullmatch(r"[0-9a-f]{8}", hashes.pop())


def test_meta_is_not_part_of_identity() -> None:
    arch = ArchConfig.from_dict(full_config())
    other = ArchConfig.from_dict({**full_config(), "meta": {"something": "else"}})
    assert other == arch
    assert other.short_hash() == arch.short_hash()


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("stages[0].kernel_size", 5),
        ("stages[1].depth", 2),
        ("stages[0].block", "reversed"),
        ("stages[0].skip", True),
        ("stages[0].mid_norm_act", False),
        ("stem.stride", 2),
        ("head.drop_rate", 0.1),
        ("act_layer", "silu"),
        ("num_classes", 100),
        ("input_size", [32, 64]),
    ],
)
def test_changed_config_changes_hash(path: str, value: Any) -> None:
    base = ArchConfig.from_dict(with_change("num_classes", 10))
    changed = ArchConfig.from_dict(with_change(path, value))
    assert changed != base
    assert changed.short_hash() != base.short_hash()


def test_preset_hashes_are_distinct() -> None:
    assert len({ArchConfig.from_dict(d).short_hash() for d in PRESETS.values()}) == len(PRESETS)


# -- bad input ------------------------------------------------------------------------

# (case id, key path, value or DELETE, fragments that must all appear in the message)
BAD_INPUTS = [
    ("unknown block", "stages[0].block", "sepparable",
     ["stages[0].block", "'sepparable'", "inverted_residual, reversed, separable, standard"]),
    ("even kernel", "stages[1].kernel_size", 4, ["stages[1].kernel_size: 4 is not odd", "1, 3, 5, 7"]),
    ("zero kernel", "stages[0].kernel_size", 0, ["stages[0].kernel_size: 0", "odd integers >= 1"]),
    ("negative kernel", "stages[1].kernel_size", -3, ["stages[1].kernel_size: -3 is < 1", "odd integers >= 1"]),
    ("even stem kernel", "stem.kernel_size", 2, ["stem.kernel_size: 2 is not odd"]),
    ("stride 3", "stages[1].stride", 3, ["stages[1].stride: 3", "stride must be 1 or 2"]),
    ("stem stride 0", "stem.stride", 0, ["stem.stride: 0", "stride must be 1 or 2"]),
    ("depth 0", "stages[0].depth", 0, ["stages[0].depth: 0", ">= 1"]),
    ("zero width", "stages[1].out_chs", 0, ["stages[1].out_chs: 0", "> 0"]),
    ("negative stem width", "stem.out_chs", -8, ["stem.out_chs: -8", "> 0"]),
    ("zero expand ratio", "stages[0].expand_ratio", 0.0, ["stages[0].expand_ratio: 0.0", "> 0"]),
    ("se ratio 1", "stages[0].se_ratio", 1.0, ["stages[0].se_ratio: 1.0", "[0, 1)"]),
    ("unknown activation", "act_layer", "relu7", ["act_layer", "'relu7'", "relu, relu6, silu"]),
    ("unknown norm", "norm_layer", "groupnorm", ["norm_layer", "'groupnorm'", "batchnorm2d, layernorm2d"]),
    ("negative head width", "head.num_features", -1, ["head.num_features: -1", ">= 0"]),
    ("drop rate 1", "head.drop_rate", 1.0, ["head.drop_rate: 1.0", "[0, 1)"]),
    ("zero input size", "input_size", [32, 0], ["input_size[1]: 0", "> 0"]),
    ("input size length", "input_size", [32], ["input_size", "2 items"]),
    ("missing stages", "stages", DELETE, ["missing required key 'stages'"]),
    ("empty stages", "stages", [], ["stages", "at least one stage"]),
    ("stages not a list", "stages", {"block": "standard"}, ["stages", "expected a list"]),
    ("stage not a mapping", "stages[1]", "standard", ["stages[1]", "expected a mapping"]),
    ("missing block", "stages[1].block", DELETE, ["stages[1]", "missing required key 'block'"]),
    ("string for int", "stages[0].out_chs", "16", ["stages[0].out_chs", "expected an integer", "'16' (str)"]),
    ("bool for int", "stages[1].depth", True, ["stages[1].depth", "expected an integer", "True (bool)"]),
    ("float for int", "num_classes", 10.0, ["num_classes", "expected an integer", "10.0 (float)"]),
    ("string for float", "stages[0].se_ratio", "0.25", ["stages[0].se_ratio", "expected a number"]),
    ("string for bool", "stages[0].mid_norm_act", "yes", ["stages[0].mid_norm_act", "expected true or false"]),
    ("string for optional bool", "stages[0].skip", "no", ["stages[0].skip", "'no' (str)", "expected true or false"]),
    ("unknown top-level key", "widths", [16], ["widths: unknown key 'widths'", "allowed keys: stages, stem, head"]),
    ("unknown nested key", "stages[1].kernel", 3,
     ["stages[1].kernel: unknown key 'kernel'", "allowed keys: block, out_chs, depth, stride, kernel_size"]),
    ("unknown head key", "head.dropout", 0.1, ["head.dropout: unknown key 'dropout'", "num_features, drop_rate"]),
]  # fmt: skip


@pytest.mark.parametrize(("path", "value", "fragments"), [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_names_key_path_and_allowed_values(path: str, value: Any, fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        ArchConfig.from_dict(with_change(path, value))
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_bad_input_in_a_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "arch.yaml"
    path.write_text("stages:\n  - {block: standard, out_chs: 8}\n  - {block: standard, out_chs: 8, kernel_size: 4}\n")
    with pytest.raises(ConfigError) as info:
        ArchConfig.from_yaml(path)
    assert (
        str(info.value)
        == f"{path}: stages[1].kernel_size: 4 is not odd; kernel sizes must be odd integers >= 1 (1, 3, 5, 7, ...)"
    )
    assert (info.value.source, info.value.path) == (str(path), "stages[1].kernel_size")


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("stages:\n  - block: standard\n    out_chs: [8\n  num_classes: 3\n")
    with pytest.raises(ConfigError) as info:
        ArchConfig.from_yaml(path)
    message = str(info.value)
    assert message.startswith(f"{path}: YAML syntax error")
    assert re.search(r"line [34], column \d+", message), message


def test_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(ConfigError, match=re.escape(f"{path}: file not found")):
        ArchConfig.from_yaml(path)


@pytest.mark.parametrize("text", ["", "- just\n- a list\n", "42\n"])
def test_yaml_that_is_not_a_mapping(text: str, tmp_path: Path) -> None:
    path = tmp_path / "arch.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(f"{path}: expected a mapping")):
        ArchConfig.from_yaml(path)


@pytest.mark.parametrize("stages", [600, 1000])
def test_what_to_yaml_writes_from_yaml_reads_at_any_depth(stages: int, tmp_path: Path) -> None:
    """A large plain file has no aliases, so the alias-expansion bound never refuses it."""
    arch = ArchConfig.from_dict({"stages": [{"block": "standard", "out_chs": 8 + i % 4} for i in range(stages)]})
    path = tmp_path / "deep.yaml"
    arch.to_yaml(path)
    assert ArchConfig.from_yaml(path) == arch
