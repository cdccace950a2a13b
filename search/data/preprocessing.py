"""What a network trained on a dataset expects as input, recorded so a deployment needs nothing else.

Every dataset reaches a network the same way (:mod:`.splits`): pixels scaled to ``[0, 1]``,
resized (bilinear) to the input size, grayscale replicated to 3 channels or RGB turned into
luminance for 1, then standardized per channel with the *training split's own* mean and std.
:class:`Preprocessing` is that recipe with its numbers and the class names. It is stored in
``ArchConfig.meta["preprocessing"]`` (hence in ``arch.yaml``, the checkpoints, the discovered
configs and timm's ``pretrained_cfg``) and in an exported ONNX file's ``metadata_props``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from blocknas.blocks import ConfigError

from .splits import DataSplit

__all__ = ["PREPROCESSING_KEY", "Preprocessing"]

PREPROCESSING_KEY = "preprocessing"
"""The ``ArchConfig.meta`` key holding a :class:`Preprocessing` as a mapping."""


@dataclass(frozen=True)
class Preprocessing:
    """How to turn an image into the network's input, and its outputs into class names.

    Attributes:
        input_size: ``(channels, height, width)`` of one input.
        mean: Per-channel mean subtracted from pixels in ``[0, 1]``.
        std: Per-channel standard deviation divided by after the mean.
        classes: Class name of each output index.
        dataset: The dataset the statistics come from.
        interpolation: How images are resized to ``input_size``.
    """

    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...]
    dataset: str
    interpolation: str = "bilinear"

    @classmethod
    def of(cls, data: DataSplit) -> Preprocessing:
        """The recipe ``data`` was prepared with."""
        return cls((data.in_chans, *data.input_size), data.mean, data.std, data.classes, data.name)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, where: str = PREPROCESSING_KEY) -> Preprocessing:
        """Parse a stored record (``meta`` entry or metadata); ``where`` names it in errors."""
        try:
            c, h, w = (int(v) for v in values["input_size"])
            record = cls(
                input_size=(c, h, w),
                mean=tuple(float(v) for v in values["mean"]),
                std=tuple(float(v) for v in values["std"]),
                classes=tuple(str(v) for v in values["classes"]),
                dataset=str(values["dataset"]),
                interpolation=str(values.get("interpolation", "bilinear")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"not a preprocessing record ({type(exc).__name__}: {exc}); expected input_size [C, H, W], "
                "mean, std, classes and dataset",
                path=where,
            ) from None
        if not len(record.mean) == len(record.std) == c:
            raise ConfigError(f"mean and std need {c} values, one per input channel", path=where)
        return record

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> Preprocessing | None:
        """The record in an architecture's ``meta``, if it has one."""
        values = meta.get(PREPROCESSING_KEY)
        return None if values is None else cls.from_dict(values)

    @classmethod
    def from_metadata(cls, props: Mapping[str, str]) -> Preprocessing:
        """The record in an ONNX file's ``metadata_props`` (see :meth:`metadata`)."""
        return cls.from_dict({k: json.loads(v) for k, v in props.items() if k in cls.__dataclass_fields__})

    def to_dict(self) -> dict[str, Any]:
        """Plain values (lists for tuples), as stored in ``meta`` and YAML."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def metadata(self) -> dict[str, str]:
        """String key/value pairs for file metadata (ONNX ``metadata_props``): every value is JSON."""
        return {k: json.dumps(v) for k, v in self.to_dict().items()}
