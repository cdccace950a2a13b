"""What a search study *is*, stored on creation and compared on every resume.

A study is one experiment: its trials compare only if they were trained on the same data
with the same budget, measured against the same latency target and judged by the same
objective and constraints. Those settings, and the space's fixed shape, are stored as the
study user attribute :data:`~.attrs.SEARCH_DEFINITION_ATTR` by the first worker to open the
study, under a claim (first writer wins: :func:`~blocknas.search.tracking.claims.store_once`),
so a creator paused before storing its own cannot overwrite another's; a resume or another
worker that differs is refused (exit 2) before it trains anything, naming each key path with
its old and new value. How many trials, for how long, and where things are stored
are not part of it.

Growing the space is supported. Optuna refuses new choices under a parameter name a study
has used (``CategoricalDistribution does not support dynamic value space``), so a
categorical knob whose choices differ from the ones the study first saw is suggested under
a new name that carries a digest of its choices (``s1.block~1a2b3c4d``): every worker with
the same space derives the same name, and knobs that did not change keep theirs, so TPE
keeps learning from every earlier trial for those. The renamed knob starts from the
sampler's prior. Integer ranges (depth) keep their name: Optuna accepts a new range.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.storages import BaseStorage

from blocknas.blocks import ConfigError
from blocknas.blocks.schema import flatten
from blocknas.search.tracking import mask_url
from blocknas.search.tracking.claims import store_once
from blocknas.spaces import SearchSpace

from .attrs import DEFINITION_ATTR as ABLATION_DEFINITION_ATTR
from .attrs import SEARCH_DEFINITION_ATTR
from .config import StudyConfig

__all__ = [
    "OVERRIDE",
    "RENAME",
    "ChangedDefinition",
    "SettingChange",
    "changed_definition",
    "check_search_definition",
    "definition_changes",
    "definition_settings",
    "param_names_for",
    "search_definition",
]

log = logging.getLogger(__name__)

# Placeholders for the ways on that a front end words in its own terms (see :meth:`ChangedDefinition.worded`).
RENAME = "<rename>"  # how to give the study a new name
OVERRIDE = "<override>"  # how to continue the study anyway
_UNSET = "<unset>"
# training settings that change neither results nor their meaning (threads: only the last bits)
_NEUTRAL_TRAIN_KEYS = ("threads", "eval_batch_size")
# where latencies are measured, not what they mean: the device itself is checked by its fingerprint (.device)
_DEVICE_ADDRESS_KEYS = ("agent", "token_env", "agent_timeout_s", "table")
# data settings recorded elsewhere (the shape, as the space's) or changing no result (a bad file stops a run)
_NEUTRAL_DATA_KEYS = ("input_size", "in_chans", "on_bad_file")


def _json(value: Any) -> Any:
    """``value`` as a storage round trip returns it (tuples → lists), so stored and current compare."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def definition_settings(config: StudyConfig) -> dict[str, Any]:
    """The settings that give a trial's values their meaning: data, train, latency, objective, constraints."""
    plain = config.to_dict()
    train = {k: v for k, v in plain["train"].items() if k not in _NEUTRAL_TRAIN_KEYS}
    data = {k: v for k, v in plain["data"].items() if k not in _NEUTRAL_DATA_KEYS}
    latency = {k: v for k, v in plain["latency"].items() if k not in _DEVICE_ADDRESS_KEYS}
    settings = {key: plain[key] for key in ("objective", "constraints")}
    if plain["score"] != "accuracy":  # settings added later are stored only when set: older studies still match
        settings["score"] = plain["score"]
    if train.get("ema_decay") is None:
        train.pop("ema_decay", None)
    return _json({**settings, "data": data, "train": train, "latency": latency})


def search_definition(config: StudyConfig, space: SearchSpace) -> dict[str, Any]:
    """The study's definition: ``settings`` (data, train, latency, objective, constraints),
    the space's fixed ``shape`` (its input size, channels and classes as the data filled them in:
    ``space`` is resolved, :meth:`~blocknas.spaces.SearchSpace.for_data`) and each categorical knob's ``choices``."""
    settings = definition_settings(config)
    shape = {
        "in_chans": space.in_chans,
        "num_classes": space.num_classes,
        "input_size": list(space.input_size or ()),
        "stages": len(space.stages),
        "norm_layer": space.norm_layer,
        "stem": {"kernel_size": space.stem.kernel_size, "stride": space.stem.stride},
        "head": {"drop_rate": space.head.drop_rate},
    }
    choices = {k.name: list(k.choices) for k in space.knobs() if not k.is_range}
    return _json({"settings": settings, "shape": shape, "choices": choices})


@dataclass(frozen=True)
class SettingChange:
    """One key path whose value differs between a stored definition and this run's."""

    key: str
    old: Any = _UNSET  # _UNSET: only the other side has the key
    new: Any = _UNSET
    one_sided: bool = False  # only one side knows the setting: a newer or older blocknas added or removed it

    def __str__(self) -> str:
        return f"{self.key}: {self.old!r} -> {self.new!r}"


def definition_changes(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[SettingChange]:
    """Every key path whose value differs between two definitions (nested plain data), in key order.

    A search compares its settings and space shape, an ablation its settings; both refuse a
    resume with :func:`changed_definition`. A key absent on one side shows ``<unset>`` there; it is
    :attr:`~SettingChange.one_sided` unless that side has a key above or below it.
    """
    old, new = flatten(stored), flatten(current)
    return [
        SettingChange(key, old.get(key, _UNSET), new.get(key, _UNSET), not (_knows(old, key) and _knows(new, key)))
        for key in sorted(set(old) | set(new))
        if old.get(key, _UNSET) != new.get(key, _UNSET)
    ]


def _knows(flat: Mapping[str, Any], key: str) -> bool:
    """Whether ``flat`` has ``key``, or a key above or below it (a value that became a mapping, or stopped being one)."""
    return any(k == key or k.startswith(f"{key}.") or key.startswith(f"{k}.") for k in flat)


class ChangedDefinition(ConfigError):
    """A study resumed with another definition than the one it stored.

    Its message names the ways on through the :data:`RENAME` and :data:`OVERRIDE` placeholders,
    in the library's terms by default (``name:``, ``allow_changed_definition=True``); a front end
    words them in its own with :meth:`worded` (the CLI: its flags).
    """

    def __init__(
        self,
        template: str,
        *,
        path: str = "",
        source: str | None = None,
        rename: str = "name:",
        override: str = "allow_changed_definition=True",
    ) -> None:
        self.template = template
        super().__init__(template.replace(RENAME, rename).replace(OVERRIDE, override), path=path, source=source)

    def worded(self, *, rename: str, override: str) -> ChangedDefinition:
        """The same error with the ways on in other words."""
        return ChangedDefinition(self.template, path=self.path, source=self.source, rename=rename, override=override)


def changed_definition(
    where: str, changes: Sequence[SettingChange], ways_on: str, *, source: str | None = None
) -> ChangedDefinition:
    """The one error for a resume whose definition changed: each key path with its old and new value, then
    ``ways_on`` (what the user may do; it may hold :data:`RENAME` and :data:`OVERRIDE`)."""
    return ChangedDefinition(
        f"{where} was defined with other settings, so its trials would not compare with new ones: "
        f"{'; '.join(map(str, changes))}. {ways_on}",
        source=source,
    )


def _compared(definition: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a search definition a resume must keep: its settings and its space's shape (as ``space``)."""
    return {"space": definition.get("shape", {}), **definition.get("settings", {})}


def _digest(choices: list[Any]) -> str:
    return hashlib.sha1(json.dumps(choices, default=str).encode()).hexdigest()[:8]


def param_names_for(
    space: SearchSpace, first_seen: Mapping[str, list[Any]], used: Mapping[str, list[Any]] | None = None
) -> dict[str, str]:
    """Parameter names for the knobs whose choices differ from the ones the study first saw.

    Args:
        space: The space being sampled now.
        first_seen: Each knob's choices as the study first recorded them.
        used: Choices of the plain-named parameters the study's trials hold (a study
            created before definitions were stored).

    Returns:
        ``{knob name: knob name~digest of its choices}`` for the knobs to rename.
    """
    names = {}
    for knob in space.knobs():
        if knob.is_range:
            continue
        current = _json(list(knob.choices))
        known = [c for c in (first_seen.get(knob.name), (used or {}).get(knob.name)) if c is not None]
        if any(c != current for c in known):
            names[knob.name] = f"{knob.name}~{_digest(current)}"
    return names


def _used_choices(study: optuna.Study) -> dict[str, list[Any]]:
    used: dict[str, list[Any]] = {}
    for trial in study.get_trials(deepcopy=False):
        for name, dist in trial.distributions.items():
            if isinstance(dist, CategoricalDistribution) and "~" not in name:
                used.setdefault(name, _json(list(dist.choices)))
    return used


def check_search_definition(
    storage: BaseStorage, study: optuna.Study, config: StudyConfig, space: SearchSpace, *, allow_changed: bool = False
) -> dict[str, str]:
    """Store the definition of a new study, or check this worker's against the stored one.

    The first worker to get there stores its definition, atomically
    (:func:`~blocknas.search.tracking.claims.store_once`): not necessarily the one that created the
    study, which may be paused between the two. Every other worker compares its own with it before
    it trains anything.

    Args:
        storage: The study's storage (the claim is made there).
        study: The study just created or loaded.
        config: The config being run.
        space: Its space.
        allow_changed: Continue a study whose settings changed: the change is logged and the
            stored settings become the current ones.

    Returns:
        The parameter names to sample with (:func:`param_names_for`).

    Raises:
        ChangedDefinition: The study was defined with other settings or another space shape.
        ConfigError: The study is an ablation.
    """
    current = search_definition(config, space)
    where = f"study {config.name!r} in {mask_url(config.storage_url)}"
    # a study made before definitions were stored is defined from now on, by the first worker to resume it
    stored = store_once(study, storage, SEARCH_DEFINITION_ATTR, current, unless=(ABLATION_DEFINITION_ATTR,))
    if stored is None:
        raise ConfigError(f"{where} is an ablation, not a search; use another name", path="name", source=config.source)
    changes = definition_changes(_compared(stored), _compared(current))
    if changes and not allow_changed:
        ways_on = (
            f"Restore those settings to resume it, give the study a new name ({RENAME}) to start another, "
            f"or pass {OVERRIDE} to continue it anyway"
        )
        raise changed_definition(where, changes, ways_on, source=config.source)
    first_seen = stored.get("choices", {})
    grown = {k: v for k, v in current["choices"].items() if k not in first_seen}
    if changes or grown:
        if changes:
            log.warning("%s continues with changed settings: %s", where, "; ".join(map(str, changes)))
        study.set_user_attr(SEARCH_DEFINITION_ATTR, {**current, "choices": {**grown, **first_seen}})
    names = param_names_for(space, first_seen, _used_choices(study))
    if names:
        log.info("%s: the space changed; knobs sampled under new names: %s", where, ", ".join(names.values()))
    return names
