"""The Pareto front of a study: which trials, as a table, a plot, and exported architecture files."""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from blocknas.blocks import ArchConfig

from .figures import pyplot, save_figure
from .objective import ARCH_ATTR, BASELINE_ATTR
from .tracking import RUN_ID_ATTR

__all__ = ["FrontRow", "export_front", "front_rows", "front_table", "plot_front"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrontRow:
    """One Pareto-optimal trial, as shown in tables and written next to its exported file."""

    trial: int
    name: str
    accuracy: float
    latency_ms: float
    params: int
    macs: int
    blocks: str
    run_id: str
    arch: ArchConfig

    def metrics(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "latency_ms": self.latency_ms,
            "params": self.params,
            "macs": self.macs,
            "trial": self.trial,
            "mlflow_run_id": self.run_id,
        }


def front_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Feasible, complete, non-dominated trials (the best trial for a single objective)."""
    if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        return []
    try:
        trials = study.best_trials if len(study.directions) > 1 else [study.best_trial]
    except ValueError:  # no feasible trial yet
        return []
    return sorted(trials, key=lambda t: float(t.user_attrs.get("latency_ms", 0.0)))


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
                latency_ms=float(trial.user_attrs.get("latency_ms", float("nan"))),
                params=cost.params,
                macs=cost.macs,
                blocks=" / ".join(s.block for s in arch.stages),
                run_id=str(trial.user_attrs.get(RUN_ID_ATTR, "")),
                arch=arch,
            )
        )
    return rows


def front_table(rows: list[FrontRow]) -> str:
    """The front as a Markdown table."""
    lines = [
        "| trial | name | accuracy | latency ms | params | MACs | blocks per stage |",
        "|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.trial} | {r.name} | {r.accuracy:.4f} | {r.latency_ms:.3f} | {r.params:,} | {r.macs:,} | {r.blocks} |"
        )
    return "\n".join(lines) + "\n"


def front_csv(rows: list[FrontRow]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["trial", "name", "accuracy", "latency_ms", "params", "macs", "blocks", "mlflow_run_id"])
    for r in rows:
        writer.writerow([r.trial, r.name, r.accuracy, r.latency_ms, r.params, r.macs, r.blocks, r.run_id])
    return out.getvalue()


def export_front(study: optuna.Study, export_dir: str | Path) -> list[Path]:
    """Write each front architecture to ``<export_dir>/<study>/<name>.yaml`` (metrics in ``meta``).

    Files of trials no longer on the front are removed, so the folder is the current front.
    """
    folder = Path(export_dir) / study.study_name
    folder.mkdir(parents=True, exist_ok=True)
    rows = front_rows(study)
    written = []
    for row in rows:
        path = folder / f"{row.name}.yaml"
        meta = {"study": study.study_name, **row.metrics()}
        row.arch.replace(meta=meta).to_yaml(path)
        written.append(path)
    for stale in set(folder.glob("t*.yaml")) - set(written):
        stale.unlink()
    (folder / "front.md").write_text(front_table(rows))
    (folder / "front.csv").write_text(front_csv(rows))
    return written


def plot_front(study: optuna.Study, path: str | Path) -> Path:
    """Accuracy vs latency of every complete trial, the front drawn, baselines marked, infeasible greyed."""
    plt = pyplot()

    trials = [t for t in study.get_trials(deepcopy=False) if "latency_ms" in t.user_attrs]
    front = {t.number for t in front_trials(study)}
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)

    def scatter(selected: list[FrozenTrial], **style: Any) -> None:
        if selected:
            ax.scatter([t.user_attrs["latency_ms"] for t in selected], [_accuracy(t) for t in selected], **style)

    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    over = [t for t in trials if "over_budget" in t.user_attrs]
    scatter([t for t in complete if t.number not in front], color="tab:blue", alpha=0.5, label="trials")
    scatter(over, color="lightgrey", marker="x", label="over budget (not trained)")
    on_front = sorted((t for t in complete if t.number in front), key=lambda t: t.user_attrs["latency_ms"])
    if on_front:
        ax.step(
            [t.user_attrs["latency_ms"] for t in on_front],
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
    ax.set_xlabel("latency p50 (ms)")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"{study.study_name}: accuracy vs latency")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path)


def _accuracy(trial: FrozenTrial) -> float:
    return trial.values[0] if trial.values else 0.0
