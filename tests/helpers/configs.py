"""Small study, space and ablation configs that several test modules run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from blocknas.blocks import ArchConfig, parse
from blocknas.search.ablation import AblationConfig
from blocknas.search.study import StudyConfig

from ..conftest import quick_study


def tiny_config(**overrides: object) -> StudyConfig:
    """A four-trial random search on the tiny space over 16×16 digits, one epoch a trial."""
    data = {
        "name": "t",
        "space": "tiny",
        "data": {"name": "digits"},
        "train": {"epochs": 1, "batch_size": 128},
        "latency": {"time_cap_s": 0.1, "min_repeats": 5, "warmup": 2},
        "n_trials": 4,
        "sampler": "random",
    }
    data.update(overrides)
    return parse(StudyConfig, data)


def tiny_arch(path: Path, *blocks: str) -> str:
    """Write an architecture for the tiny space (16×16 grey digits, 10 classes), one stage per block."""
    stages = [{"block": block, "out_chs": 16, "stride": 2} for block in blocks]
    ArchConfig.from_dict({"stages": stages, "in_chans": 1, "input_size": [16, 16], "num_classes": 10}).to_yaml(path)
    return str(path)


def ablation(**overrides: Any) -> AblationConfig:
    """A 2-level × 2-seed ablation on 8×8 digits that trains in about a second per cell."""
    data: dict[str, Any] = {
        "name": "abl",
        "base": {
            "stem": {"out_chs": 8},
            "stages": [
                {"block": "standard", "out_chs": 16, "stride": 2},
                {"block": "standard", "out_chs": 24, "stride": 2},
            ],
            "input_size": [8, 8],
        },
        "factors": {"block": {"levels": ["standard", "separable"]}},
        "seeds": 2,
        "data": {"name": "digits"},
        "train": {"epochs": 1, "batch_size": 256},
        "latency": {"time_cap_s": 0.05, "min_repeats": 5, "warmup": 2},
        "match": "params",
    }
    data.update(overrides)
    return parse(AblationConfig, data)


# A one-stage space small enough that each knob can grow by one value (test_definition's resumes).
GROW_SPACE: dict[str, Any] = {
    "name": "grow",
    "in_chans": 1,
    "num_classes": 4,
    "input_size": [16, 16],
    "stem": {"widths": [8], "kernel_size": 3, "stride": 1},
    "stages": [
        {
            "blocks": ["standard", {"name": "inverted_residual", "expand_ratios": [2]}],
            "depth": {"min": 1, "max": 1},
            "widths": [8, 16],
            "strides": [2],
            "kernel_sizes": [3],
            "se_ratios": [0.0],
        }
    ],
    "head": {"widths": [0]},
}

# A two-trial study on GROW_SPACE (written as space.yaml beside it) over synthetic 4-class data.
GROW_CONFIG = quick_study(
    "grow", space="space.yaml", data={"name": "synthetic", "num_samples": 64, "num_classes": 4}, n_trials=2
)
