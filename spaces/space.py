"""``SearchSpace``: a YAML list of choices → Optuna define-by-run sampling → ``ArchConfig``.

Every choice is a :class:`Knob` with an Optuna parameter name that encodes where it
lives: ``stem.out_chs``, ``s0.block``, ``s0.depth``, ``s0.kernel_size``,
``s0.inverted_residual.expand_ratio``, ``head.num_features``. A knob that exists only
for some blocks carries the block in its name, so one name always has one set of
choices, and Optuna never sees a parameter whose value space changes between trials.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from blocknas.blocks import ArchConfig, ConfigError, list_blocks, load_yaml, parse
from blocknas.blocks.schema import to_plain

from .choices import (
    BLOCK_KNOBS,
    BlockChoices,
    HeadChoices,
    StageChoices,
    StemChoices,
    check_choices,
    check_value,
    expand_shorthands,
)

if TYPE_CHECKING:
    from optuna.trial import BaseTrial

__all__ = ["SHIPPED_DIR", "Knob", "SearchSpace", "list_spaces"]

SHAPE_KEYS = ("in_chans", "num_classes", "input_size")
"""The networks' shape: the data's, unless a space pins it."""


class DataShape(Protocol):
    """What a space needs to know of a dataset (``blocknas.search.data.DataSplit`` is one)."""

    @property
    def num_classes(self) -> int: ...
    @property
    def in_chans(self) -> int: ...
    @property
    def input_size(self) -> tuple[int, int]: ...


SHIPPED_DIR = Path(__file__).resolve().parent
"""Where the shipped space files (``tiny.yaml``, ``mobile32.yaml``) live."""


@dataclass(frozen=True)
class Knob:
    """One decision of the space.

    Attributes:
        name: The Optuna parameter name (``s1.inverted_residual.expand_ratio``).
        field: The ``ArchConfig`` key path it sets (``stem.out_chs``); for stage knobs,
            the ``StageConfig`` key (``expand_ratio``).
        choices: The allowed values, in the order the YAML lists them (a ``range`` for a range knob).
        is_range: An integer range, suggested with ``suggest_int`` (depth).
    """

    name: str
    field: str
    choices: Sequence[Any]
    is_range: bool = False

    @property
    def fixed(self) -> bool:
        """A single choice: it is set, never suggested."""
        return len(self.choices) == 1

    def suggest(self, trial: BaseTrial, name: str | None = None) -> Any:
        """The trial's value for this knob; fixed knobs are not suggested.

        Args:
            trial: The trial to suggest with.
            name: The Optuna parameter name to use instead of :attr:`name` (a study whose
                choices for this knob grew suggests them under a new name, see ``sample``).
        """
        if self.fixed:
            return self.choices[0]
        if self.is_range:
            return trial.suggest_int(name or self.name, self.choices[0], self.choices[-1])
        return trial.suggest_categorical(name or self.name, self.choices)

    def describe(self) -> str:
        """The choices as text: ``3 | 5``, or ``1..3`` for a range."""
        if self.is_range and not self.fixed:
            return f"{self.choices[0]}..{self.choices[-1]}"
        return " | ".join(map(str, self.choices))


def _block_knob(index: int, stage: StageChoices) -> Knob:
    return Knob(f"s{index}.block", "block", tuple(b.name for b in stage.blocks))


def _stage_knobs(index: int, stage: StageChoices, block: BlockChoices) -> list[Knob]:
    """The knobs of stage ``index`` once ``block`` is chosen, in suggestion order."""
    prefix = f"s{index}"
    knobs = [
        Knob(f"{prefix}.depth", "depth", stage.depth.choices, is_range=True),
        Knob(f"{prefix}.out_chs", "out_chs", stage.widths),
        Knob(f"{prefix}.stride", "stride", stage.strides),
    ]
    for field in ("kernel_size", "se_ratio"):
        override = getattr(block, f"{field}s")
        if override is None:
            knobs.append(Knob(f"{prefix}.{field}", field, getattr(stage, f"{field}s")))
        else:
            knobs.append(Knob(f"{prefix}.{block.name}.{field}", field, override))
    for field in BLOCK_KNOBS:
        values = getattr(block, f"{field}s")
        if values is not None:
            knobs.append(Knob(f"{prefix}.{block.name}.{field}", field, values))
    return knobs


@dataclass(frozen=True)
class SearchSpace:
    """A space of :class:`ArchConfig` networks, read from YAML.

    The number of stages and the norm layer are fixed; everything listed as choices is
    searched. ``input_size``, ``in_chans`` and ``num_classes`` are the data's (a search fills
    them in with :meth:`for_data`) unless the space pins them; sampled without data, an unpinned
    one takes ``ArchConfig``'s default (32×32, 3 channels, 10 classes). See ``spaces/mobile32.yaml``
    for an annotated example.

    Attributes:
        stages: The stages' choices, in order; their number is fixed.
        stem: The stem's width choices.
        head: The head conv's width choices and drop rate.
        act_layers: Activation choices for the whole network.
        norm_layer: The norm layer, fixed.
        in_chans: Pinned input channels (null: the data's).
        num_classes: Pinned classes (null: the data's).
        input_size: Pinned ``[height, width]`` (null: the data's).
        name: The space's name (default: the file's name without ``.yaml``).
    """

    stages: tuple[StageChoices, ...]
    stem: StemChoices = dataclasses.field(default_factory=StemChoices)
    head: HeadChoices = dataclasses.field(default_factory=HeadChoices)
    act_layers: tuple[str, ...] = ("relu",)
    norm_layer: str = "batchnorm2d"
    in_chans: int | None = None
    num_classes: int | None = None
    input_size: tuple[int, int] | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if not self.stages:
            raise ConfigError("no stages; list at least one", path="stages")
        base = {"stages": [{"block": list_blocks()[0], "out_chs": 1}]}
        check_choices(ArchConfig, "act_layer", self.act_layers, "act_layers", base)
        for field in ("norm_layer", *SHAPE_KEYS):
            if getattr(self, field) is not None:
                check_value(ArchConfig, field, getattr(self, field), field, base)

    def for_data(self, data: DataShape) -> SearchSpace:
        """This space building networks for ``data``: its unpinned shape keys take the data's values.

        A pinned key keeps its value: the data was loaded at it (:func:`blocknas.search.data.splits.load_data_for`
        checks the two agree and names both when they do not).
        """
        size = self.input_size or data.input_size
        return dataclasses.replace(
            self,
            num_classes=self.num_classes or data.num_classes,
            in_chans=self.in_chans or data.in_chans,
            input_size=(int(size[0]), int(size[1])),
        )

    # -- construction -----------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | None = None) -> SearchSpace:
        """Parse and validate a plain mapping; errors name ``source`` and the key path.

        Args:
            data: The space, as a YAML file would hold it.
            source: The file it came from, for error messages.

        Returns:
            The validated space.
        """
        try:
            data = expand_shorthands(data)
        except ConfigError as exc:
            raise exc.within("", source) from None
        return parse(cls, data, source=source)

    @classmethod
    def from_yaml(cls, path: str | Path) -> SearchSpace:
        """Load a space file; its ``name`` defaults to the file's stem."""
        space = cls.from_dict(load_yaml(path), source=str(path))
        return space if space.name else dataclasses.replace(space, name=Path(path).stem)

    @classmethod
    def load(cls, space: str | Path) -> SearchSpace:
        """A shipped space by short name (``"tiny"``, ``"mobile32"``) or a YAML file path.

        Args:
            space: A name from :func:`list_spaces`, or a path to a space YAML file.

        Returns:
            The validated space.
        """
        path = Path(space)
        if path.suffix in (".yaml", ".yml") or path.is_file():
            return cls.from_yaml(path)
        shipped = SHIPPED_DIR / f"{space}.yaml"
        if not shipped.is_file():
            raise ConfigError(
                f"unknown search space {str(space)!r}: not a YAML file path, and not a shipped space "
                f"({', '.join(list_spaces())})"
            )
        return cls.from_yaml(shipped)

    def to_dict(self) -> dict[str, Any]:
        """Plain data that :meth:`from_dict` turns back into an equal space (for logging)."""
        return {"name": self.name, **to_plain(self), "stages": [stage.to_dict() for stage in self.stages]}

    # -- knobs --------------------------------------------------------------------------

    def global_knobs(self) -> list[Knob]:
        """Knobs outside the stages: activation, stem width, head width."""
        return [
            Knob("act_layer", "act_layer", self.act_layers),
            Knob("stem.out_chs", "stem.out_chs", self.stem.widths),
            Knob("head.num_features", "head.num_features", self.head.widths),
        ]

    def knobs(self) -> list[Knob]:
        """Every knob of the space, fixed ones included, each name once, in suggestion order."""
        found = {k.name: k for k in self.global_knobs()}
        for i, stage in enumerate(self.stages):
            found[f"s{i}.block"] = _block_knob(i, stage)
            for block in stage.blocks:
                found.update((k.name, k) for k in _stage_knobs(i, stage, block) if k.name not in found)
        return list(found.values())

    # -- sampling and enumeration -------------------------------------------------------

    def sample(self, trial: BaseTrial, *, param_names: Mapping[str, str] | None = None) -> ArchConfig:
        """Suggest an architecture with ``trial`` (define-by-run).

        Each stage's block is suggested first, then only the knobs that block has.
        Knobs with a single choice are set without a suggestion.

        Args:
            trial: An Optuna trial (or ``FixedTrial``).
            param_names: Optuna parameter names to use instead of knob names
                (``{"s1.block": "s1.block~1a2b3c4d"}``): Optuna refuses new choices under a
                name a study already used, so a study whose space grew renames those knobs.

        Returns:
            A validated architecture inside this space.
        """
        names = param_names or {}

        def suggest(knob: Knob) -> Any:
            return knob.suggest(trial, names.get(knob.name))

        glob = {k.name: suggest(k) for k in self.global_knobs()}
        stages = []
        for i, stage in enumerate(self.stages):
            name = suggest(_block_knob(i, stage))
            block = next(b for b in stage.blocks if b.name == name)
            stages.append({"block": name, **{k.field: suggest(k) for k in _stage_knobs(i, stage, block)}})
        return self._arch(glob, stages)

    def size(self) -> int:
        """The exact number of distinct architectures in the space.

        Block-specific knobs multiply only the count of their own block.
        """
        total = math.prod(len(k.choices) for k in self.global_knobs())
        for i, stage in enumerate(self.stages):
            total *= sum(math.prod(len(k.choices) for k in _stage_knobs(i, stage, b)) for b in stage.blocks)
        return total

    def grid(self, *, limit: int = 10_000) -> Iterator[ArchConfig]:
        """Every architecture of a small space, each once.

        Args:
            limit: Refuse spaces with more architectures than this.

        Returns:
            An iterator of architectures, ``size()`` of them.

        Raises:
            ValueError: The space holds more than ``limit`` architectures.
        """
        size = self.size()
        if size > limit:
            raise ValueError(
                f"search space {self.name or '<unnamed>'!r} has {size:,} architectures, more than "
                f"limit={limit:,}; sample it instead, or pass a larger limit"
            )
        return self._iter_grid()

    def _iter_grid(self) -> Iterator[ArchConfig]:
        knobs = self.global_knobs()
        stage_options = [list(self._stage_options(i, stage)) for i, stage in enumerate(self.stages)]
        for values in itertools.product(*(k.choices for k in knobs)):
            glob = {k.name: v for k, v in zip(knobs, values)}
            for stages in itertools.product(*stage_options):
                yield self._arch(glob, list(stages))

    @staticmethod
    def _stage_options(index: int, stage: StageChoices) -> Iterator[dict[str, Any]]:
        for block in stage.blocks:
            knobs = _stage_knobs(index, stage, block)
            for values in itertools.product(*(k.choices for k in knobs)):
                yield {"block": block.name, **{k.field: v for k, v in zip(knobs, values)}}

    def sampled(self, n: int = 200, *, seed: int = 0) -> list[ArchConfig]:
        """``n`` networks drawn at random (seeded), e.g. for the space's cost range: the extremes of a
        space of millions are not enumerable, a sample shows where most networks are.

        Unpinned shape keys take ``ArchConfig``'s defaults unless the space was made :meth:`for_data`.
        """
        import optuna

        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        return [self.sample(study.ask()) for _ in range(n)]

    def __contains__(self, arch: object) -> bool:
        """Whether ``arch`` is one of the space's architectures."""
        if not isinstance(arch, ArchConfig) or len(arch.stages) != len(self.stages):
            return False
        glob = {k.name: functools.reduce(getattr, k.field.split("."), arch) for k in self.global_knobs()}
        if any(glob[k.name] not in k.choices for k in self.global_knobs()):
            return False
        stages = []
        for i, (stage, config) in enumerate(zip(self.stages, arch.stages)):
            block = next((b for b in stage.blocks if b.name == config.block), None)
            if block is None:
                return False
            knobs = _stage_knobs(i, stage, block)
            if any(getattr(config, k.field) not in k.choices for k in knobs):
                return False
            stages.append({"block": block.name, **{k.field: getattr(config, k.field) for k in knobs}})
        return self._arch(glob, stages) == arch

    def _arch(self, glob: Mapping[str, Any], stages: list[dict[str, Any]]) -> ArchConfig:
        """Assemble the architecture from the chosen global and per-stage values."""
        return ArchConfig.from_dict(
            {
                "stem": {
                    "out_chs": glob["stem.out_chs"],
                    "kernel_size": self.stem.kernel_size,
                    "stride": self.stem.stride,
                },
                "stages": stages,
                "head": {"num_features": glob["head.num_features"], "drop_rate": self.head.drop_rate},
                "act_layer": glob["act_layer"],
                "norm_layer": self.norm_layer,
                **{k: getattr(self, k) for k in SHAPE_KEYS if getattr(self, k) is not None},
            }
        )

    # -- summaries ----------------------------------------------------------------------

    def describe(self) -> str:
        """A readable summary: the size, the fixed settings and every knob with its choices."""
        lines = [
            f"search space {self.name or '<unnamed>'}: {self.size():,} architectures, {len(self.stages)} stages, "
            f"{self._shape_text()}, {self.norm_layer}, "
            f"stem kernel {self.stem.kernel_size} stride {self.stem.stride}, head drop_rate {self.head.drop_rate}"
        ]
        knobs = self.knobs()
        width = max(len(k.name) for k in knobs)
        lines += [f"  {k.name:<{width}}  {k.describe()}{'' if k.fixed else '  *'}" for k in knobs]
        return "\n".join(lines) + "\n  (* searched; the others are fixed)"

    def _shape_text(self) -> str:
        """``input 3x32x32, 10 classes``, each unpinned part said to come from the data."""
        chans = "the data's channels" if self.in_chans is None else f"{self.in_chans} channel(s)"
        size = "the data's size" if self.input_size is None else "x".join(map(str, self.input_size))
        classes = "the data's classes" if self.num_classes is None else f"{self.num_classes} classes"
        return f"input {chans} at {size}, {classes}"

    def __repr__(self) -> str:
        return f"SearchSpace(name={self.name!r}, stages={len(self.stages)}, size={self.size()})"


def list_spaces() -> list[str]:
    """Short names of the spaces shipped with blocknas, for :meth:`SearchSpace.load`."""
    return sorted(p.stem for p in SHIPPED_DIR.glob("*.yaml"))
