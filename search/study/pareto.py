"""The Pareto front of a study: which trials, as a table, a plot, and exported architecture files.

A trial's ``latency_ms`` is its latency objective: the measured p50, or in predicted mode
(``latency.mode: predicted``) the lookup table's prediction. ``latency_measured_ms`` is the
measured p50 either way, so the front also says what its networks measured.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import optuna
from optuna.trial import FrozenTrial, TrialState

from blocknas.blocks import ArchConfig
from blocknas.search.data import PREPROCESSING_KEY, Preprocessing
from blocknas.search.figures import pyplot, save_figure
from blocknas.search.files import atomic_write_text, file_lock
from blocknas.search.tracking import RUN_ID_ATTR

from .attrs import (
    ARCH_ATTR,
    BASELINE_ATTR,
    DUPLICATE_OF_ATTR,
    LATENCY_ATTR,
    LATENCY_MEASURED_ATTR,
    LATENCY_PREDICTED_ATTR,
    OVER_BUDGET_ATTR,
    PRUNED_ACCURACY_ATTR,
    SEARCH_DEFINITION_ATTR,
)

__all__ = [
    "FRONT_COLUMNS",
    "FrontColumn",
    "FrontRow",
    "draw_front",
    "export_front",
    "front_cells",
    "front_rows",
    "front_table",
    "front_trials",
    "latency_source",
    "plot_front",
    "unplaced_count",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrontRow:
    """One Pareto-optimal trial, as shown in tables and written next to its exported file."""

    trial: int
    name: str
    accuracy: float
    latency_ms: float  # the latency objective: measured, or predicted in predicted mode
    latency_measured_ms: float  # measured p50 (NaN for a trial that has none)
    params: int
    macs: int
    blocks: str
    run_id: str
    arch: ArchConfig

    def metrics(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "latency_ms": self.latency_ms,
            "latency_measured_ms": self.latency_measured_ms,
            "params": self.params,
            "macs": self.macs,
            "trial": self.trial,
            "mlflow_run_id": self.run_id,
        }


def front_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Feasible, complete, non-dominated trials (the best trial for a single objective).

    A duplicate (it took the recorded result of an earlier trial of the same architecture)
    is left out when its original is on the front with the same values.
    """
    if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        return []
    try:
        trials = study.best_trials if len(study.directions) > 1 else [study.best_trial]
    except ValueError:  # no feasible trial yet
        return []
    numbers = {t.number for t in trials}
    trials = [t for t in trials if t.user_attrs.get(DUPLICATE_OF_ATTR) not in numbers]
    return sorted(trials, key=lambda t: float(t.user_attrs.get(LATENCY_ATTR, 0.0)))


def front_rows(study: optuna.Study) -> list[FrontRow]:
    rows = []
    for trial in front_trials(study):
        arch = ArchConfig.from_dict(trial.user_attrs[ARCH_ATTR])
        cost = arch.cost()
        accuracy = trial.values[0]
        rows.append(
            FrontRow(
                trial=trial.number,
                name=f"t{trial.number:04d}_{arch.short_hash()}",
                accuracy=accuracy,
                latency_ms=float(trial.user_attrs.get(LATENCY_ATTR, float("nan"))),
                latency_measured_ms=float(trial.user_attrs.get(LATENCY_MEASURED_ATTR, float("nan"))),
                params=cost.params,
                macs=cost.macs,
                blocks=" / ".join(s.block for s in arch.stages),
                run_id=str(trial.user_attrs.get(RUN_ID_ATTR, "")),
                arch=arch,
            )
        )
    return rows


@dataclass(frozen=True)
class FrontColumn:
    """One column of a front table: its header, a row's cell text, and whether it holds numbers (right-aligned)."""

    header: str
    cell: Callable[[FrontRow], str]
    numeric: bool = True


FRONT_COLUMNS: dict[str, FrontColumn] = {
    "trial": FrontColumn("trial", lambda r: str(r.trial)),
    "name": FrontColumn("name", lambda r: r.name, numeric=False),
    "accuracy": FrontColumn("accuracy", lambda r: f"{r.accuracy:.4f}"),
    "latency": FrontColumn("latency ms", lambda r: f"{r.latency_ms:.3f}"),
    "measured": FrontColumn("measured ms", lambda r: f"{r.latency_measured_ms:.3f}"),
    "params": FrontColumn("params", lambda r: f"{r.params:,}"),
    "macs": FrontColumn("MACs", lambda r: f"{r.macs:,}"),
    "blocks": FrontColumn("blocks per stage", lambda r: r.blocks, numeric=False),
}
_TABLE_COLUMNS = tuple(FRONT_COLUMNS.values())  # front.md and pareto_front.md: every column


def front_cells(rows: Iterable[FrontRow], columns: Sequence[FrontColumn]) -> list[list[str]]:
    """The body of a front table: per row, the text of each column."""
    return [[column.cell(row) for column in columns] for row in rows]


def front_table(rows: Iterable[FrontRow], columns: Sequence[FrontColumn] = _TABLE_COLUMNS) -> str:
    """The front as a Markdown table (default: every column of :data:`FRONT_COLUMNS`)."""
    lines = [
        "| " + " | ".join(column.header for column in columns) + " |",
        "|" + "".join("---:|" if column.numeric else "---|" for column in columns),
        *("| " + " | ".join(cells) + " |" for cells in front_cells(rows, columns)),
    ]
    return "\n".join(lines) + "\n"


def front_csv(rows: list[FrontRow]) -> str:
    """The front as CSV; ``latency_measured_ms`` comes last so earlier columns keep their positions."""
    out = io.StringIO()
    writer = csv.writer(out)
    header = ["trial", "name", "accuracy", "latency_ms", "params", "macs", "blocks", "mlflow_run_id"]
    writer.writerow([*header, "latency_measured_ms"])
    for r in rows:
        writer.writerow(
            [r.trial, r.name, r.accuracy, r.latency_ms, r.params, r.macs, r.blocks, r.run_id, r.latency_measured_ms]
        )
    return out.getvalue()


_EXPORT_MANIFEST = ".blocknas-export.json"  # the files an export wrote; only those are ever removed


def export_front(
    study: optuna.Study, export_dir: str | Path, *, preprocessing: Preprocessing | None = None
) -> list[Path]:
    """Write each front architecture to ``<export_dir>/<study>/<name>.yaml``.

    Its ``meta`` holds the study, the trial's metrics and the study's data config (``data``,
    as the study recorded it), so ``blocknas train`` trains it on the data it was found on;
    with ``preprocessing`` (the search's data: its mean/std, class names, input size) also
    ``meta["preprocessing"]``, so ``timm.create_model`` gives a truthful ``pretrained_cfg``.

    Files an earlier export wrote for trials no longer on the front are removed, so the
    export is the current front; any other file in the folder (a hand-tuned copy, notes) is
    left alone. What the export owns is listed in ``.blocknas-export.json`` there, which always
    covers every file it may have written, even after a kill mid-export. Each file is
    written under a temporary name and renamed, so a reader never sees a partial one.
    """
    folder = Path(export_dir) / study.study_name
    folder.mkdir(parents=True, exist_ok=True)
    rows = front_rows(study)
    data = study.user_attrs.get(SEARCH_DEFINITION_ATTR, {}).get("settings", {}).get("data")
    searched_on = {"data": data} if data else {}
    if preprocessing is not None:
        searched_on[PREPROCESSING_KEY] = preprocessing.to_dict()
    files = {
        f"{row.name}.yaml": row.arch.replace(meta={"study": study.study_name, **row.metrics(), **searched_on}).to_yaml()
        for row in rows
    }
    files |= {"front.md": front_table(rows), "front.csv": front_csv(rows)}
    with file_lock(folder / ".blocknas-export.lock"):  # workers finishing together export one at a time
        owned = _exported_files(folder)
        _record_exports(folder, owned | set(files))  # before writing, so a kill cannot orphan a file
        for name, text in files.items():
            atomic_write_text(folder / name, text)
        for stale in owned - set(files):
            (folder / stale).unlink(missing_ok=True)
        _record_exports(folder, set(files))
    return [folder / f"{row.name}.yaml" for row in rows]


def _exported_files(folder: Path) -> set[str]:
    """Names listed in the folder's export manifest (none without one)."""
    manifest = folder / _EXPORT_MANIFEST
    try:
        names = json.loads(manifest.read_text())["files"]
    except FileNotFoundError:
        return set()
    except (ValueError, KeyError, TypeError) as exc:
        names = exc
    if not isinstance(names, list):
        log.warning("ignoring unreadable %s (%s); no earlier export will be removed", manifest, names)
        return set()
    # a plain name in this folder only: a doctored manifest cannot point elsewhere
    return {n for n in names if isinstance(n, str) and n == Path(n).name and n not in ("", ".", "..")}


def _record_exports(folder: Path, names: set[str]) -> None:
    text = json.dumps({"written_by": "blocknas export_front", "files": sorted(names)}, indent=1) + "\n"
    atomic_write_text(folder / _EXPORT_MANIFEST, text)


def unplaced_count(trials: Iterable[FrozenTrial]) -> int:
    """How many over-budget candidates were rejected before any latency existed (on parameters or MACs)."""
    return sum(OVER_BUDGET_ATTR in t.user_attrs and LATENCY_ATTR not in t.user_attrs for t in trials)


def latency_source(trials: Iterable[FrozenTrial]) -> Literal["predicted", "measured", "mixed", "none"]:
    """Where the ``latency_ms`` of ``trials`` came from: the lookup table, a measurement, both or neither."""
    sources = {"predicted" if LATENCY_PREDICTED_ATTR in t.user_attrs else "measured" for t in trials}
    if len(sources) > 1:
        return "mixed"
    return "none" if not sources else "predicted" if "predicted" in sources else "measured"


LATENCY_AXIS = {
    "predicted": "predicted latency (ms, lookup table)",
    "measured": "measured latency p50 (ms)",
    "mixed": "latency (ms): predicted for some trials, measured p50 for others",
    "none": "latency p50 (ms)",
}


def plot_front(study: optuna.Study, path: str | Path) -> Path:
    """Accuracy vs latency of every complete trial, the front drawn, baselines marked, infeasible greyed,
    trials stopped early by ``pareto_asha`` at their rung accuracy."""
    fig, ax = pyplot().subplots(figsize=(6, 4), dpi=120)
    draw_front(study, ax)
    return save_figure(fig, path)


def draw_front(study: optuna.Study, ax: Any) -> None:
    """Draw :func:`plot_front`'s scatter on the matplotlib axes ``ax``.

    Over-budget trials are grey crosses at accuracy 0 and their latency (predicted or
    measured); those rejected before any latency existed (on parameters or MACs) cannot be
    placed on the x-axis, so the legend counts them.
    """
    every = study.get_trials(deepcopy=False)
    trials = [t for t in every if LATENCY_ATTR in t.user_attrs]
    front = {t.number for t in front_trials(study)}

    def scatter(selected: list[FrozenTrial], **style: Any) -> None:
        if selected:
            ax.scatter([t.user_attrs[LATENCY_ATTR] for t in selected], [_accuracy(t) for t in selected], **style)

    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    over = [t for t in trials if OVER_BUDGET_ATTR in t.user_attrs]
    n_unplaced = unplaced_count(every)
    scatter([t for t in complete if t.number not in front], color="tab:blue", alpha=0.5, label="trials")
    _draw_stopped_early(ax, trials)
    if over or n_unplaced:  # drawn even empty, for the legend's count
        label = "over budget (not trained)"
        if n_unplaced:
            label += f"; {n_unplaced} more without latency, not drawn"
        ax.scatter(
            [t.user_attrs[LATENCY_ATTR] for t in over], [0.0] * len(over), color="lightgrey", marker="x", label=label
        )
    on_front = sorted((t for t in complete if t.number in front), key=lambda t: t.user_attrs[LATENCY_ATTR])
    if on_front:
        ax.step(
            [t.user_attrs[LATENCY_ATTR] for t in on_front],
            [_accuracy(t) for t in on_front],
            where="post",
            color="tab:red",
            label="Pareto front",
        )
        scatter(on_front, color="tab:red", zorder=3)
    scatter(
        [t for t in complete if BASELINE_ATTR in t.user_attrs],
        marker="*",
        s=160,
        color="gold",
        edgecolor="black",
        zorder=4,
        label="baselines",
    )
    ax.set_xlabel(LATENCY_AXIS[latency_source(trials)])
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"{study.study_name}: accuracy vs latency")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=8)


def _draw_stopped_early(ax: Any, trials: list[FrozenTrial]) -> None:
    """Trials ``pareto_asha`` stopped: hollow triangles at their latency and the accuracy at the rung they stopped."""
    stopped = [t for t in trials if PRUNED_ACCURACY_ATTR in t.user_attrs]
    if stopped:
        ax.scatter(
            [t.user_attrs[LATENCY_ATTR] for t in stopped],
            [t.user_attrs[PRUNED_ACCURACY_ATTR] for t in stopped],
            marker="v",
            facecolors="none",
            edgecolors="tab:purple",
            label="stopped early (accuracy at its rung)",
        )


def _accuracy(trial: FrozenTrial) -> float:
    return trial.values[0] if trial.values else 0.0
