"""Named architectures registered with timm: one per block family in one skeleton, and a mixed one.

All are sized for 32×32 inputs and 10 classes (stride 8 overall, 4×4 final maps).
"""

from __future__ import annotations

from typing import Any

__all__ = ["PRESETS", "family_preset"]


def family_preset(block: str, expand_ratio: float = 1.0) -> dict[str, Any]:
    """The shared skeleton with every stage using ``block``."""
    widths_depths_strides = ((24, 1, 2), (48, 2, 2), (96, 2, 2))
    return {
        "stem": {"out_chs": 16, "kernel_size": 3, "stride": 1},
        "stages": [
            {"block": block, "out_chs": w, "depth": d, "stride": s, "kernel_size": 3, "expand_ratio": expand_ratio}
            for w, d, s in widths_depths_strides
        ],
        "head": {"num_features": 0, "drop_rate": 0.0},
        "input_size": [32, 32],
        "num_classes": 10,
    }


PRESETS: dict[str, dict[str, Any]] = {
    "blocknet_standard": family_preset("standard"),
    "blocknet_separable": family_preset("separable"),
    "blocknet_reversed": family_preset("reversed"),
    "blocknet_inverted_residual": family_preset("inverted_residual", expand_ratio=4.0),
    "blocknet_mobile": {
        "stem": {"out_chs": 16, "kernel_size": 3, "stride": 1},
        "stages": [
            {"block": "separable", "out_chs": 16, "depth": 1, "stride": 1},
            {"block": "inverted_residual", "out_chs": 24, "depth": 2, "stride": 2, "expand_ratio": 4.0},
            {
                "block": "inverted_residual",
                "out_chs": 40,
                "depth": 2,
                "stride": 2,
                "kernel_size": 5,
                "expand_ratio": 4.0,
                "se_ratio": 0.25,
            },
            {
                "block": "inverted_residual",
                "out_chs": 80,
                "depth": 2,
                "stride": 2,
                "expand_ratio": 4.0,
                "se_ratio": 0.25,
            },
        ],
        "head": {"num_features": 256, "drop_rate": 0.1},
        "act_layer": "hard_swish",
        "input_size": [32, 32],
        "num_classes": 10,
    },
}
