"""Per-block latency lookup table: predict a network's latency without building or timing it.

A network's latency is predicted as ``scale · raw + constant`` with

    raw = Σ_{stem, blocks} (part − overhead(part's output shape)) + head,

where each part is measured once as a tiny standalone model in the target's runtime.
A standalone part pays what the network pays only once per call: the runtime's call
overhead and materialising its output for the caller (an ONNX Runtime output is copied
into a NumPy array). ``overhead(shape)`` measures exactly that, as a one-op model (ReLU)
on a tensor of the part's output shape; the head, the network's last part, keeps its
overhead. ``scale`` and ``constant`` are fitted on whole networks measured end to end:
:meth:`LatencyPredictor.calibrate` measures a few on purpose, and a search in predicted
mode adds every candidate it measures anyway with :meth:`LatencyPredictor.add_calibration_point`.
Until ``min_calibration_points`` different networks are stored they stay 1 and 0 (a fit
through one or two noisy measurements would shift every prediction by their noise); after
that every new point refits them.

The table is a JSON file per device fingerprint under ``cache_dir``; every key also names
the runtime, threads, batch size, dtype and fingerprint id, so entries from different
machines or settings never mix. Writes merge with what is on disk and replace the file
atomically (temp file + ``os.replace``, under a lock file where ``fcntl`` exists), so
several workers can share one table and its calibration points.

With ``target.agent`` every entry and calibration network is measured on the latency agent
and the table is named by the agent's fingerprint. ``target.table`` names a table file
calibrated on a device (``blocknas latency calibrate``): its fingerprint and settings come
from the file, nothing is measured here, and a part missing from it is measured on the
agent if one is given, else it is a :class:`TableError`. The file also keeps the accuracy
its calibration reached on held-out networks (:meth:`LatencyPredictor.record_accuracy`).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from blocknas.blocks import ArchConfig, BlockNet, BlockSpec, ConfigError
from blocknas.blocks.layers import build_block, build_head, build_stem
from blocknas.search.files import file_lock
from blocknas.search.threads import pinned_threads, seeded_rng

from .fingerprint import device_fingerprint
from .host import fingerprint_id
from .measure import LatencyResult, agent_fingerprint, measure_latency, measure_runner
from .runtimes import create_runner
from .target import LatencyTarget

__all__ = [
    "ENTRY_MIN_TIME_S",
    "ENTRY_TIME_CAP_S",
    "MIN_CALIBRATION_POINTS",
    "TABLE_VERSION",
    "LatencyPredictor",
    "TableError",
    "TablePart",
    "overhead_part",
    "table_parts",
]

log = logging.getLogger(__name__)

TABLE_VERSION = 1
ENTRY_TIME_CAP_S = 0.5  # per table entry and round; entries are measured once and reused
ENTRY_MIN_TIME_S = 0.1
MIN_CALIBRATION_POINTS = 5  # networks measured end to end before the fitted correction is used


class TableError(ConfigError):
    """A lookup table that cannot be used: missing, unreadable, for other settings, or without a needed entry."""


@dataclass(frozen=True)
class TablePart:
    """One table entry an architecture needs: its key fields, input shape and how to build it."""

    fields: dict[str, Any]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    build: Callable[[], nn.Module]


def _part(
    arch: ArchConfig,
    kind: str,
    input_shape: tuple[int, ...],
    output_shape: tuple[int, ...],
    build: Callable[[], nn.Module],
    **fields: Any,
) -> TablePart:
    """A part of ``arch`` keyed by its kind, input channels and size, ``arch``'s activation and norm, and ``fields``."""
    key = dict(
        kind=kind,
        in_chs=input_shape[0],
        in_hw=list(input_shape[1:]),
        act_layer=arch.act_layer,
        norm_layer=arch.norm_layer,
        **fields,
    )
    return TablePart(key, input_shape, output_shape, build)


def _stem_part(arch: ArchConfig) -> TablePart:
    stem = arch.stem
    return _part(
        arch, "stem", (arch.in_chans, *arch.input_size), (stem.out_chs, *arch.stem_hw),
        lambda: build_stem(arch.in_chans, stem, act_layer=arch.act_layer, norm_layer=arch.norm_layer),
        out_chs=stem.out_chs, kernel_size=stem.kernel_size, stride=stem.stride,
    )  # fmt: skip


def _block_part(arch: ArchConfig, spec: BlockSpec) -> TablePart:
    k = spec.knobs
    return _part(
        arch, "block", (spec.in_chs, *spec.in_hw), (spec.out_chs, *spec.out_hw),
        lambda: build_block(spec, arch.act_layer, arch.norm_layer),
        block=spec.block, out_chs=spec.out_chs, kernel_size=k.kernel_size, stride=k.stride,
        expand_ratio=k.expand_ratio, se_ratio=k.se_ratio, mid_norm_act=k.mid_norm_act, skip=spec.skip,
    )  # fmt: skip


def _head_part(arch: ArchConfig) -> TablePart:
    last_chs, last_hw = arch.stages[-1].out_chs, arch.block_specs()[-1].out_hw

    def build() -> nn.Module:
        head = build_head(last_chs, arch.head, arch.num_classes, act_layer=arch.act_layer, norm_layer=arch.norm_layer)
        return nn.Sequential(*head)

    return _part(
        arch, "head", (last_chs, *last_hw), (arch.num_classes or arch.num_features,), build,
        num_features=arch.head.num_features, num_classes=arch.num_classes,
    )  # fmt: skip


def overhead_part(shape: tuple[int, ...]) -> TablePart:
    """A one-op model on a tensor of ``shape``: per-call overhead plus handing back an output of that size."""
    return TablePart(dict(kind="overhead", shape=list(shape)), shape, shape, nn.ReLU)


def table_parts(arch: ArchConfig) -> list[TablePart]:
    """The parts whose latencies add up to ``arch``, in order: stem, every block, head."""
    return [_stem_part(arch), *(_block_part(arch, spec) for spec in arch.block_specs()), _head_part(arch)]


def _fit(points: Sequence[Sequence[float]]) -> tuple[float, float]:
    """``(scale, constant)`` minimising relative error of ``scale·raw + constant`` against measured.

    With fewer than three networks (or a non-positive slope) only the constant is fitted.
    """
    raw = np.array([p[0] for p in points])
    measured = np.array([p[1] for p in points])
    if len(points) >= 3 and np.ptp(raw) > 0:
        scale, constant = np.polyfit(raw, measured, 1, w=1 / measured)
        if scale > 0:
            return float(scale), float(constant)
    return 1.0, float(np.median(measured - raw))


class LatencyPredictor:
    """Predicts network latency from a per-block table of measured standalone parts.

    Args:
        target: The latency target; table entries are measured with its runtime, threads,
            batch and dtype, in-process, without reference interleaving, with a time cap of
            at most ``ENTRY_TIME_CAP_S`` and a minimum time of at most ``ENTRY_MIN_TIME_S``, twice
            (the lower median is kept).
        cache_dir: Folder of the JSON tables (one file per device fingerprint).
        min_calibration_points: Different networks measured end to end before predictions
            use the fitted correction; raw sums until then.
    """

    def __init__(
        self,
        target: LatencyTarget,
        *,
        cache_dir: str | Path = "runs/latency_table",
        min_calibration_points: int = MIN_CALIBRATION_POINTS,
    ) -> None:
        if min_calibration_points < 1:
            raise ValueError(f"min_calibration_points must be >= 1, got {min_calibration_points}")
        self.target = target
        self.min_calibration_points = min_calibration_points
        self.entry_target = target.replace(
            isolate=False,
            reference=False,
            time_cap_s=min(target.time_cap_s, ENTRY_TIME_CAP_S),
            min_time_s=min(target.min_time_s, ENTRY_MIN_TIME_S),
        )
        if target.table is not None:  # a device's table: its fingerprint is the file's
            self.path = Path(target.table)
            stored = _load_table(self.path)
            self.fingerprint, self.fingerprint_id = dict(stored["fingerprint"]), str(stored["fingerprint_id"])
        else:
            self.fingerprint = agent_fingerprint(target) if target.agent else device_fingerprint(target)
            self.fingerprint_id = fingerprint_id(self.fingerprint)
            self.path = Path(cache_dir) / f"{self.fingerprint_id}.json"
        self.n_measurements = 0  # table entries this instance measured (reuse check)
        common = dict(
            runtime=target.runtime,
            threads=target.threads,
            inter_op_threads=target.inter_op_threads,
            batch_size=target.batch_size,
            dtype=target.dtype,
            fingerprint_id=self.fingerprint_id,
        )
        self._common = common
        self._calibration_key = json.dumps(common, sort_keys=True)
        self._entries: dict[str, dict[str, Any]] = {}
        self._points: dict[str, list[float]] = {}
        self._accuracy: dict[str, dict[str, Any]] = {}
        self._calibration = (1.0, 0.0)
        self._merge(self._read())
        if target.table is not None:
            self._check_table()

    @classmethod
    def open_table(cls, target: LatencyTarget) -> LatencyPredictor:
        """The table ``target.table`` names, checked against ``target`` (and its agent, if any).

        Raises:
            TableError: Missing, unreadable, calibrated for other runtime settings, or for
                another device than ``target.agent``.
        """
        return cls(target)

    def _check_table(self) -> None:
        """A device table must hold a calibration for this target's settings, and fit its agent."""
        if self._calibration_key not in self._read().get("calibration", {}):
            raise TableError(
                f"latency.table {self.path} was calibrated for other settings than this latency target's "
                f"({', '.join(f'{k}={v}' for k, v in self._common.items() if k != 'fingerprint_id')}); calibrate it "
                "with these settings (blocknas latency calibrate --config <this study>)"
            )
        if self.target.agent is not None:
            agent_id = fingerprint_id(agent_fingerprint(self.target))
            if agent_id != self.fingerprint_id:
                raise TableError(
                    f"latency.table {self.path} is for device {self.fingerprint_id}, but the agent at "
                    f"{self.target.agent} is device {agent_id}: calibrate a table for it"
                )

    # -- public API -------------------------------------------------------------------

    def key(self, part: TablePart) -> str:
        """The table key of a part: its own fields plus runtime, threads, batch, dtype and fingerprint id."""
        return json.dumps({**part.fields, **self._common}, sort_keys=True, separators=(",", ":"))

    def predict(self, arch: ArchConfig) -> float:
        """Predicted latency of ``arch`` in ms; measures and stores any table entries still missing."""
        return self.corrected(self.raw_sum(arch))  # raw sum first: storing entries merges others' points

    def corrected(self, raw_ms: float) -> float:
        """A raw sum with the current fitted correction applied (unchanged until :attr:`calibrated`)."""
        scale, constant = self.calibration
        return scale * raw_ms + constant

    def raw_sum(self, arch: ArchConfig) -> float:
        """Uncalibrated prediction in ms: Σ (part − overhead) over stem and blocks, plus the head."""
        parts = table_parts(arch)
        overheads = [overhead_part(p.output_shape) for p in parts[:-1]]
        keys = [self.key(p) for p in parts]
        overhead_keys = [self.key(p) for p in overheads]
        missing = {k: p for p, k in zip([*parts, *overheads], [*keys, *overhead_keys]) if k not in self._entries}
        if missing:
            self._fill(list(missing.values()))
        total = self._entries[keys[-1]]["p50_ms"]
        for key, overhead_key in zip(keys, overhead_keys):
            total += self._entries[key]["p50_ms"] - self._entries[overhead_key]["p50_ms"]
        return total

    def calibrate(self, archs: Sequence[ArchConfig]) -> None:
        """Measure whole networks and fit ``scale`` and ``constant``; stored with the table.

        Points accumulate across calls and processes sharing the table, so calibrating
        again on more networks refines the fit; it is used from ``min_calibration_points``
        networks on. Use networks that are not the ones being evaluated when judging the
        predictor.
        """
        target = self.target.replace(reference=False)
        for arch in archs:
            raw = self.raw_sum(arch)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = BlockNet(arch)
            measured = measure_latency(model, (arch.in_chans, *arch.input_size), target).p50_ms
            self._points[arch.short_hash()] = [raw, measured]
        self._save()
        scale, constant = self.calibration
        log.info(
            "latency predictor: %d calibration networks (%d needed), scale %.3f, constant %.4f ms",
            len(self._points),
            self.min_calibration_points,
            scale,
            constant,
        )

    def add_calibration_point(self, arch: ArchConfig, measured_ms: float) -> None:
        """Store a whole-network measurement of ``arch`` (p50, ms, same target) and refit.

        A search in predicted mode measures every candidate it does not reject, so each one
        calibrates the predictions of the candidates after it, in this worker and in every
        other worker sharing the table. A network already stored keeps its first point.
        """
        raw = self.raw_sum(arch)  # may store new entries, which replaces self._points with the merged points
        self._points.setdefault(arch.short_hash(), [raw, float(measured_ms)])
        self._save()

    @property
    def offline(self) -> bool:
        """A device's table without an agent: it only predicts, nothing is measured here."""
        return self.target.table is not None and self.target.agent is None

    @property
    def accuracy(self) -> dict[str, Any] | None:
        """How well the table predicted held-out networks when it was calibrated (see :mod:`.calibrate`)."""
        return self._accuracy.get(self._calibration_key)

    def record_accuracy(self, accuracy: dict[str, Any]) -> None:
        """Store the calibration's accuracy on held-out networks with the table."""
        self._accuracy[self._calibration_key] = accuracy
        self._save()

    @property
    def calibration(self) -> tuple[float, float]:
        """``(scale, constant_ms)`` of the fitted correction; ``(1, 0)`` until :attr:`calibrated`."""
        return self._calibration

    @property
    def calibrated(self) -> bool:
        """Whether predictions use the fitted correction (enough networks are stored)."""
        return len(self._points) >= self.min_calibration_points

    @property
    def n_calibration_points(self) -> int:
        """Different networks measured end to end and stored with the table (all workers)."""
        return len(self._points)

    def __len__(self) -> int:
        return len(self._entries)

    # -- measuring --------------------------------------------------------------------

    def _fill(self, parts: Sequence[TablePart]) -> None:
        """Measure ``parts`` in two rounds (forward, then backward) and keep each part's lower median.

        An entry is reused by every later prediction, so one measurement taken during a burst
        of load from other processes would bias all of them; load only ever adds time.
        """
        if self.offline:
            raise TableError(
                f"latency.table {self.path} has no entry for {_describe(parts[0])}"
                f"{f' and {len(parts) - 1} more parts' if len(parts) > 1 else ''}: the networks it was calibrated "
                "on did not use them. Calibrate with more networks of this space "
                "(blocknas latency calibrate --space ... --networks N), or add latency.agent to measure them there"
            )
        target = self.entry_target
        with pinned_threads(target.threads, target.inter_op_threads):
            measures: list[Callable[[], LatencyResult]] = []
            for part in parts:
                with seeded_rng(0):
                    module = part.build()
                if target.agent is None:
                    runner = create_runner(module, part.input_shape, target)
                    measures.append(functools.partial(measure_runner, runner, target))
                else:  # exported here, measured on the device
                    shape = cast(tuple[int, int, int], part.input_shape)
                    measures.append(functools.partial(measure_latency, module, shape, target))
            first = [measure() for measure in measures]
            second = [measure() for measure in reversed(measures)][::-1]
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        for part, a, b in zip(parts, first, second):
            best = min(a, b, key=lambda r: r.p50_ms)
            if best.fingerprint_id != self.fingerprint_id:
                log.warning(
                    "table entry measured with fingerprint %s, stored under %s (runtime settings differed: %s)",
                    best.fingerprint_id,
                    self.fingerprint_id,
                    best.fingerprint.get("onnx_exporter"),
                )
            self._entries[self.key(part)] = {
                "p50_ms": best.p50_ms,
                "p50_runs_ms": [a.p50_ms, b.p50_ms],
                "p90_ms": best.p90_ms,
                "ci_rel": best.ci_rel if np.isfinite(best.ci_rel) else None,
                "n_samples": best.n_samples,
                "measured_at": now,
            }
        self.n_measurements += len(parts)
        self._save()

    # -- persistence ------------------------------------------------------------------

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("ignoring unreadable latency table %s (%s); it will be rewritten", self.path, exc)
            return {}
        if data.get("version") != TABLE_VERSION or data.get("fingerprint_id") != self.fingerprint_id:
            log.warning("ignoring latency table %s: version or fingerprint does not match", self.path)
            return {}
        return data

    def _merge(self, data: dict[str, Any]) -> None:
        """Take entries, calibration points and accuracies from disk; what was measured first wins."""
        self._entries = {**self._entries, **data.get("entries", {})}
        self._accuracy = {**data.get("accuracy", {}), **self._accuracy}
        points = data.get("calibration", {}).get(self._calibration_key, {}).get("points", {})
        self._points = {**self._points, **points}
        self._calibration = _fit(list(self._points.values())) if self.calibrated else (1.0, 0.0)

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(self.path.with_suffix(".lock")):
            self._merge(self._read())
            scale, constant = self.calibration
            data = {
                "version": TABLE_VERSION,
                "fingerprint_id": self.fingerprint_id,
                "fingerprint": self.fingerprint,
                "entries": dict(sorted(self._entries.items())),
                "calibration": {
                    self._calibration_key: {"scale": scale, "constant_ms": constant, "points": self._points}
                }
                if self._points
                else {},
                "accuracy": self._accuracy,
            }
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.stem}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "w") as handle:
                    json.dump(data, handle, indent=1)
                os.replace(tmp, self.path)
            except BaseException:
                os.unlink(tmp)
                raise


def _describe(part: TablePart) -> str:
    fields = part.fields
    return f"{fields['kind']} {fields.get('block', '')} {part.input_shape} -> {part.output_shape}".replace("  ", " ")


def _load_table(path: Path) -> dict[str, Any]:
    """A device table's JSON, checked to be one.

    Raises:
        TableError: Missing, unreadable, or not a lookup table of this version.
    """
    if not path.is_file():
        raise TableError(
            f"latency.table: no table file {path}; calibrate one with blocknas latency calibrate --agent URL --out DIR"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TableError(f"latency.table {path} is not readable JSON ({exc})") from None
    if (
        not isinstance(data, dict)
        or data.get("version") != TABLE_VERSION
        or not isinstance(data.get("fingerprint"), dict)
    ):
        raise TableError(f"latency.table {path} is not a blocknas lookup table of version {TABLE_VERSION}")
    return data
