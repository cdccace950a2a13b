"""timm registration: the ``blocknet`` entry point, named presets and :func:`register_arch`.

timm has no plugin discovery, so importing :mod:`blocknas.blocks` runs this module and
makes ``timm.create_model("blocknet", arch=...)`` and ``timm.list_models("blocknet*")`` work.
Every listed name builds without arguments, as timm's own model tests expect: ``blocknet``
alone builds :data:`DEFAULT_ARCH`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from timm.models import build_model_with_cfg, is_model, register_model

from .arch import ArchConfig
from .blocknet import BlockNet
from .named_archs import add_named_arch
from .presets import PRESETS
from .resolve import ArchLike, resolve_arch

__all__ = ["DEFAULT_ARCH", "blocknet", "create_blocknet", "register_arch", "register_arch_dir"]

UNTRAINED_MEAN_STD = 0.5
"""timm's neutral mean and std, stated for an architecture that records no training data's own."""

# timm's register_model reads pretrained cfgs from this module-level dict by entry-point name.
default_cfgs: dict[str, dict[str, Any]] = {}

# What timm.create_model("blocknet") builds: the mixed preset (a separable stage, then
# inverted residuals with squeeze-excite), a copy kept apart from the registered name so
# that overwriting "blocknet_mobile" does not change it.
DEFAULT_ARCH = ArchConfig.from_dict(PRESETS["blocknet_mobile"], source="preset blocknet_mobile")


def _pool_size(arch: ArchConfig) -> tuple[int, int]:
    """Spatial size of ``forward_features`` at the config's input size (timm's ``pool_size``)."""
    return arch.block_specs()[-1].out_hw


def _input_cfg(arch: ArchConfig) -> dict[str, Any]:
    """The pretrained cfg keys that describe the input and the outputs' names.

    A network blocknas trained is fed its data standardized with the data's own per-channel
    mean and std, recorded with the class names in ``meta["preprocessing"]``
    (:class:`blocknas.search.data.Preprocessing`): they are the cfg's ``mean``, ``std`` and
    ``label_names``. Without that record timm's neutral 0.5 stands in and there are no names.
    """
    record = arch.meta.get("preprocessing") or {}
    neutral = (UNTRAINED_MEAN_STD,) * arch.in_chans
    cfg: dict[str, Any] = dict(
        input_size=(arch.in_chans, *arch.input_size),
        pool_size=_pool_size(arch),
        mean=tuple(record.get("mean", neutral)),
        std=tuple(record.get("std", neutral)),
    )
    if len(record.get("classes", ())) == arch.num_classes > 0:
        cfg["label_names"] = tuple(record["classes"])
    return cfg


def _cfg(arch: ArchConfig, **overrides: Any) -> dict[str, Any]:
    """A pretrained cfg (no weights) describing the network's input and head."""
    return dict(
        url="",
        num_classes=arch.num_classes,
        crop_pct=1.0,
        interpolation="bilinear",
        **_input_cfg(arch),
        first_conv="stem.conv",
        classifier="head.fc",
        license="apache-2.0",
        **overrides,
    )


def create_blocknet(variant: str, arch: ArchLike, pretrained: bool = False, **kwargs: Any) -> BlockNet:
    """Build a :class:`BlockNet` through ``timm.models.build_model_with_cfg``.

    ``features_only=True`` / ``out_indices`` give a feature extractor over the stages.
    """
    config = resolve_arch(arch)
    overlay = dict(num_classes=config.num_classes, **_input_cfg(config))
    overlay.update(kwargs.pop("pretrained_cfg_overlay", None) or {})
    return build_model_with_cfg(
        BlockNet,
        variant,
        pretrained,
        arch=config,
        pretrained_cfg_overlay=overlay,
        feature_cfg=dict(flatten_sequential=True, out_indices=tuple(range(len(config.stages)))),
        **kwargs,
    )


default_cfgs["blocknet"] = _cfg(DEFAULT_ARCH)  # before @register_model, which reads it


@register_model
def blocknet(pretrained: bool = False, arch: ArchLike | None = None, **kwargs: Any) -> BlockNet:
    """BlockNet from any architecture: a YAML path, dict, ArchConfig, registered name or ``runs:/`` URI.

    Without ``arch``, :data:`DEFAULT_ARCH`: the ``blocknet_mobile`` preset (32×32 inputs, 10
    classes), so ``timm.create_model("blocknet")`` builds like every other timm model name.
    """
    return create_blocknet("blocknet", DEFAULT_ARCH if arch is None else arch, pretrained=pretrained, **kwargs)


def register_arch(name: str, arch: ArchLike, *, overwrite: bool = False) -> Callable[..., BlockNet]:
    """Register ``arch`` as a timm model: ``timm.create_model(name)`` builds it.

    Args:
        name: timm model name (a Python identifier, e.g. ``blocknet_found_a1``).
        arch: Anything :func:`resolve_arch` accepts.
        overwrite: Replace an existing model of that name instead of raising.

    Returns:
        The registered entry-point function.
    """
    if not name.isidentifier():
        raise ValueError(f"model name must be a Python identifier, got {name!r}")
    if is_model(name) and not overwrite:
        raise ValueError(f"a timm model named {name!r} already exists; pass overwrite=True to replace it")
    config = resolve_arch(arch)

    def entry(pretrained: bool = False, **kwargs: Any) -> BlockNet:
        return create_blocknet(name, config, pretrained=pretrained, **kwargs)

    entry.__name__ = entry.__qualname__ = name
    entry.__module__ = __name__
    entry.__doc__ = f"BlockNet {config.short_hash()} ({', '.join(s.block for s in config.stages)})"
    default_cfgs[name] = _cfg(config)
    add_named_arch(name, config)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Overwriting")  # overwrite=True was asked for
        return register_model(entry)


def register_arch_dir(folder: str | Path, *, prefix: str = "", overwrite: bool = False) -> list[str]:
    """Register every ``*.yaml`` architecture in ``folder`` under ``prefix + file stem``."""
    names = []
    for path in sorted(Path(folder).glob("*.yaml")):
        name = prefix + path.stem.replace("-", "_")
        register_arch(name, path, overwrite=overwrite)
        names.append(name)
    return names


def _register_presets(presets: Mapping[str, Mapping[str, Any]]) -> None:
    for name, data in presets.items():
        register_arch(name, ArchConfig.from_dict(data, source=f"preset {name}"), overwrite=True)


_register_presets(PRESETS)
