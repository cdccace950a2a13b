"""SearchSpace: YAML loading and errors, define-by-run sampling with real Optuna studies, size and grid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
import timm
import torch

from blocknas.blocks import ArchConfig, ConfigError, list_blocks
from blocknas.spaces import SHIPPED_DIR, SearchSpace, block_uses, list_spaces

optuna.logging.set_verbosity(optuna.logging.WARNING)

SAMPLERS = {
    "random": lambda: optuna.samplers.RandomSampler(seed=0),
    "tpe": lambda: optuna.samplers.TPESampler(seed=0, n_startup_trials=5),
}


def small_space(**changes: Any) -> dict[str, Any]:
    """A space dict using every kind of knob (208 architectures, counted in a test below)."""
    space = {
        "act_layers": ["relu", "hard_swish"],
        "stem": {"widths": [8, 16], "kernel_size": 3, "stride": 2},
        "stages": [
            {
                "blocks": [
                    "standard",
                    {"name": "separable", "kernel_sizes": [3, 5, 7]},
                    {"name": "inverted_residual", "expand_ratios": [2, 4], "se_ratios": [0, 0.25]},
                ],
                "depth": {"min": 1, "max": 2},
                "widths": [8],
                "kernel_sizes": [3, 5],
            },
            {"blocks": [{"name": "reversed", "mid_norm_acts": [True, False]}], "widths": [16], "strides": [2]},
        ],
        "head": {"widths": [0], "drop_rate": 0.1},
        "input_size": [16, 16],
    }
    return {**space, **changes}


def run_study(
    space: SearchSpace, sampler: str, n_trials: int = 30
) -> list[tuple[optuna.trial.FrozenTrial, ArchConfig]]:
    study = optuna.create_study(sampler=SAMPLERS[sampler](), storage=optuna.storages.InMemoryStorage())
    archs: dict[int, ArchConfig] = {}

    def objective(trial: optuna.Trial) -> float:
        archs[trial.number] = space.sample(trial)
        return float(archs[trial.number].params())

    study.optimize(objective, n_trials=n_trials)
    return [(t, archs[t.number]) for t in study.trials]


# -- sampling ---------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
@pytest.mark.parametrize("name", ["tiny", "mobile32", "small"])
def test_study_samples_valid_archs_in_space(name: str, sampler: str) -> None:
    space = SearchSpace.from_dict(small_space()) if name == "small" else SearchSpace.load(name)
    trials = run_study(space, sampler)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t, _ in trials)
    for trial, arch in trials:
        assert isinstance(arch, ArchConfig)
        assert arch in space
        assert set(trial.params) <= {k.name for k in space.knobs() if not k.fixed}


def test_parameter_names_are_namespaced_by_stage_and_block() -> None:
    space = SearchSpace.from_dict(small_space())
    names = {k.name for k in space.knobs() if not k.fixed}
    assert names == {
        "act_layer",
        "stem.out_chs",
        "s0.block",
        "s0.depth",
        "s0.kernel_size",
        "s0.separable.kernel_size",
        "s0.inverted_residual.expand_ratio",
        "s0.inverted_residual.se_ratio",
        "s1.reversed.mid_norm_act",
    }
    params = optuna.trial.FixedTrial(
        {"act_layer": "relu", "stem.out_chs": 8, "s0.block": "inverted_residual", "s0.depth": 2,
         "s0.inverted_residual.expand_ratio": 4.0, "s0.inverted_residual.se_ratio": 0.25,
         "s0.kernel_size": 5, "s1.reversed.mid_norm_act": False}
    )  # fmt: skip
    arch = space.sample(params)
    assert arch.stages[0].expand_ratio == 4.0 and arch.stages[0].se_ratio == 0.25 and arch.stages[0].depth == 2
    assert arch.stages[1].mid_norm_act is False and arch.stem.stride == 2 and arch.head.drop_rate == 0.1


def test_fixed_knobs_are_not_suggested() -> None:
    trials = run_study(SearchSpace.load("tiny"), "random", n_trials=10)
    suggested = set().union(*(t.params for t, _ in trials))
    assert suggested <= {"s0.block", "s0.out_chs", "s1.block", "s1.kernel_size", "s1.inverted_residual.expand_ratio"}
    assert "s1.inverted_residual.expand_ratio" in suggested and "stem.out_chs" not in suggested


def test_block_specific_knobs_stay_at_defaults_for_other_blocks() -> None:
    space = SearchSpace.from_dict(small_space())
    for arch in space.grid():
        stage = arch.stages[0]
        assert stage.expand_ratio == 1.0 or stage.block == "inverted_residual"
        assert stage.se_ratio == 0.0 or stage.block == "inverted_residual"


@pytest.mark.parametrize("name", ["tiny", "mobile32"])
def test_one_name_has_one_choice_list(name: str) -> None:
    """What keeps Optuna from a 'dynamic value space' error: a name never changes choices."""
    from blocknas.spaces.space import _stage_knobs

    space = SearchSpace.load(name)
    for i, stage in enumerate(space.stages):
        seen: dict[str, tuple[Any, ...]] = {}
        for block in stage.blocks:
            for knob in _stage_knobs(i, stage, block):
                assert seen.setdefault(knob.name, knob.choices) == knob.choices


# -- size and grid ----------------------------------------------------------------------


def test_size_matches_hand_count_and_grid() -> None:
    space = SearchSpace.from_dict(small_space())
    stage0 = 2 * (2 * 1 + 3 * 1 + 2 * 2 * 2)  # depth x (standard: k | separable: own k | IR: k, e, se)
    assert space.size() == 2 * 2 * stage0 * 2 == 208
    archs = list(space.grid())
    assert len(archs) == space.size()
    assert len({a.short_hash() for a in archs}) == len(archs)
    assert all(a in space for a in archs)


def test_tiny_size_by_hand() -> None:
    space = SearchSpace.load("tiny")
    assert space.size() == (2 * 2) * (2 + 2 * 2) == 24 == len({a.short_hash() for a in space.grid()})


def test_grid_refuses_large_spaces() -> None:
    space = SearchSpace.load("mobile32")
    with pytest.raises(ValueError, match=r"73,598,976 architectures, more than limit=10,000"):
        space.grid()


def test_contains_rejects_outside_archs() -> None:
    space = SearchSpace.load("tiny")
    arch = next(space.grid())
    assert arch in space
    assert arch.replace(num_classes=3) not in space
    assert arch.replace(stem={"out_chs": 12}) not in space
    assert "tiny" not in space


# -- loading, round trip, summaries ---------------------------------------------------


def test_load_by_name_and_path() -> None:
    assert {"tiny", "mobile32"} <= set(list_spaces())
    by_name = SearchSpace.load("tiny")
    assert by_name == SearchSpace.load(SHIPPED_DIR / "tiny.yaml") and by_name.name == "tiny"
    with pytest.raises(ConfigError, match=r"unknown search space 'nope'.*mobile32, tiny"):
        SearchSpace.load("nope")


def test_to_dict_round_trips_and_describe_names_knobs() -> None:
    space = SearchSpace.load("mobile32")
    assert SearchSpace.from_dict(space.to_dict()) == space
    text = space.describe()
    assert "73,598,976 architectures" in text and "s2.inverted_residual.expand_ratio" in text
    assert repr(space) == "SearchSpace(name='mobile32', stages=4, size=73598976)"


def test_block_uses_reads_the_cost_formulas() -> None:
    assert [b for b in list_blocks() if block_uses(b, "expand_ratio")] == ["inverted_residual"]
    assert [b for b in list_blocks() if block_uses(b, "mid_norm_act")] == ["reversed", "separable"]


@pytest.mark.parametrize("name", ["tiny", "mobile32"])
def test_shipped_space_archs_build_and_run(name: str) -> None:
    space = SearchSpace.load(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(3):
        arch = space.sample(study.ask())
        model = timm.create_model("blocknet", arch=arch).eval()
        with torch.no_grad():
            out = model(torch.randn(1, arch.in_chans, *arch.input_size))
        assert out.shape == (1, arch.num_classes)


# -- errors ------------------------------------------------------------------------------

STAGE = "stages:\n  - blocks: [standard, separable]\n    widths: [8]\n"
BAD_YAML = {
    "unknown key": (
        "stages:\n  - blocks: [standard]\n    widths: [8]\n    kernel_size: [3]\n",
        r"stages\[0\]\.kernel_size: unknown key 'kernel_size'; allowed keys: blocks, widths",
    ),
    "unknown block": (
        "stages:\n  - blocks: [standard, fancy]\n    widths: [8]\n",
        r"stages\[0\]\.blocks\[1\]: unknown block 'fancy'; registered blocks: inverted_residual, reversed, separable, standard",
    ),
    "even kernel": (STAGE + "    kernel_sizes: [3, 4]\n", r"stages\[0\]\.kernel_sizes\[1\]: 4 is not odd"),
    "even block kernel": (
        "stages:\n  - blocks: [{name: separable, kernel_sizes: [2]}]\n    widths: [8]\n",
        r"stages\[0\]\.blocks\[0\]\.kernel_sizes\[0\]: 2 is not odd",
    ),
    "min > max depth": (
        STAGE + "    depth: {min: 3, max: 1}\n",
        r"stages\[0\]\.depth: min 3 is greater than max 1",
    ),
    "zero depth": (STAGE + "    depth: 0\n", r"stages\[0\]\.depth\.min: 0 must be >= 1"),
    "empty widths": ("stages:\n  - blocks: [standard]\n    widths: []\n", r"stages\[0\]\.widths: no choices"),
    "empty blocks": (
        "stages:\n  - blocks: []\n    widths: [8]\n",
        r"stages\[0\]\.blocks: no choices; list at least one of",
    ),
    "no stages": ("stages: []\n", r": stages: no stages"),
    "wrong type": (
        STAGE.replace("[8]", "[8, wide]"),
        r"stages\[0\]\.widths\[1\]: expected an integer, got 'wide'",
    ),
    "scalar for list": (STAGE + "    strides: 2\n", r"stages\[0\]\.strides: expected a list, got 2"),
    "bad stride": (
        STAGE + "    strides: [1, 3]\n",
        r"stages\[0\]\.strides\[1\]: 3 is not allowed; stride must be 1 or 2",
    ),
    "se ratio": (STAGE + "    se_ratios: [0, 1.5]\n", r"stages\[0\]\.se_ratios\[1\]: 1.5 must be in \[0, 1\)"),
    "repeated choice": (STAGE + "    se_ratios: [0, 0.0]\n", r"stages\[0\]\.se_ratios\[1\]: 0.0 is listed twice"),
    "repeated block": (
        "stages:\n  - blocks: [standard, standard]\n    widths: [8]\n",
        r"blocks\[1\]: 'standard' is listed twice",
    ),
    "knob of another block": (
        "stages:\n  - blocks: [{name: standard, expand_ratios: [2]}]\n    widths: [8]\n",
        r"stages\[0\]\.blocks\[0\]\.expand_ratios: block 'standard' does not use expand_ratio; .*\(inverted_residual\)",
    ),
    "stage-level expand": (
        STAGE + "    expand_ratios: [2]\n",
        r"stages\[0\]\.expand_ratios: expand_ratios is block-specific; list it under the blocks that use it",
    ),
    "activation": (
        "act_layers: [relu, swishy]\n" + STAGE,
        r"act_layers\[1\]: unknown activation 'swishy'",
    ),
    "head width": ("head: {widths: [0, -4]}\n" + STAGE, r"head\.widths\[1\]: -4 must be >= 0"),
    "stem kernel": ("stem: {kernel_size: 2}\n" + STAGE, r"stem\.kernel_size: 2 is not odd"),
    "input size": ("input_size: [32]\n" + STAGE, r"input_size: expected a list of 2 items, got 1"),
    "missing widths": ("stages:\n  - blocks: [standard]\n", r"stages\[0\]: missing required key 'widths'"),
    "syntax error": ("stages:\n  - blocks: [standard\n    widths: [8]\n", r"YAML syntax error: line \d+, column \d+"),
}


@pytest.mark.parametrize("case", sorted(BAD_YAML))
def test_bad_yaml_names_file_and_key_path(case: str, tmp_path: Path) -> None:
    text, pattern = BAD_YAML[case]
    path = tmp_path / "x.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=pattern) as info:
        SearchSpace.load(path)
    assert str(info.value).startswith(f"{path}: ")


def test_a_large_plain_space_loads(tmp_path: Path) -> None:
    """1,000 stages written out, no anchor or alias: nothing for the alias-expansion bound to refuse."""
    stage = "  - {blocks: [standard, separable], widths: [8, 16], depth: {min: 1, max: 2}}\n"
    path = tmp_path / "big.yaml"
    path.write_text("stages:\n" + stage * 1000)
    space = SearchSpace.load(path)
    assert len(space.stages) == 1000 and space.size() == 8**1000


def test_depth_choices_are_a_range_never_a_list() -> None:
    """Counting or describing a space never materialises a depth range."""
    space = SearchSpace.from_dict(
        {"stages": [{"blocks": ["standard"], "widths": [8], "depth": {"min": 1, "max": 128}}]}
    )
    depth = next(k for k in space.knobs() if k.name == "s0.depth")
    assert isinstance(depth.choices, range) and space.size() == 128 and depth.describe() == "1..128"
    with pytest.raises(ConfigError, match=r"stages\[0\]\.depth\.max: 1000000000 must be >= 1 and <= 128"):
        SearchSpace.from_dict({"stages": [{"blocks": ["standard"], "widths": [8], "depth": {"min": 1, "max": 10**9}}]})
