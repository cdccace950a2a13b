"""The study report: a Markdown summary, a self-contained HTML page and PNG figures.

``write_report`` reads everything from the Optuna study and its MLflow runs (nothing is
re-run) and writes ``<runs_dir>/<study>/report/``:

* ``summary.md`` and ``report.html`` — the same document; the HTML inlines the figures;
* ``pareto_front.png`` (accuracy vs latency, front drawn, baselines and over-budget trials
  marked), ``blocks.png``, ``importances.png``, ``hypervolume.png`` (``history.png`` for a
  single-objective study) — for papers.

The files are also logged on the study's MLflow parent run under ``report/``. An ablation
study's own report (``report.md``, ``accuracy_vs_latency.png``, written by
``blocknas ablate`` into the same folder) is included as a section.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from blocknas.search.ablation.runner import ABLATION_KIND, LEVELS_PLOT_FILE, REPORT_FILE
from blocknas.search.latency.measure import LATENCY_P90_METRIC
from blocknas.search.markdown import md_code, md_link, md_text
from blocknas.search.study import LATENCY_ATTR, FrontRow, Validation, front_rows, front_trials, rung_table
from blocknas.search.study.device import device_text, study_device
from blocknas.search.study.pareto import (
    FRONT_COLUMNS,
    FrontColumn,
    front_table,
    latency_source,
    plot_front,
    unplaced_count,
)
from blocknas.search.tracking import KIND_TAG, PARENT_RUN_ATTR, StudyTracker, mask_url, resolve_tracking_uri
from blocknas.search.tracking.storage import load_study

from .answer import answer_figures, answer_section, warnings_section
from .data import (
    REFERENCE_LATENCY_FACTOR,
    BlockCount,
    Fingerprint,
    Hypervolume,
    Importances,
    block_frequency,
    fingerprints,
    hypervolume_history,
    objective_names,
    param_importances,
    state_counts,
)
from .html import markdown_to_html
from .plots import plot_best_history, plot_blocks, plot_hypervolume, plot_importances
from .proxies import proxy_section
from .validation import load_validations, validation_section

__all__ = ["DEFAULT_UI_BASE", "ReportResult", "report_study", "run_url", "write_report"]

log = logging.getLogger(__name__)

DEFAULT_UI_BASE = "http://127.0.0.1:5000"
HTML_NAME = "report.html"
MARKDOWN_NAME = "summary.md"


@dataclass(frozen=True)
class ReportResult:
    """What ``write_report`` wrote, and where it was logged."""

    folder: Path
    html: Path
    markdown: Path
    files: list[Path]
    parent_run_id: str | None


@dataclass(frozen=True)
class _Runs:
    """What the report needs from MLflow: the parent run and the trials' child runs (or nothing)."""

    experiment_id: str | None = None
    parent_id: str | None = None
    parent_params: Mapping[str, str] | None = None
    parent_tags: Mapping[str, str] | None = None
    children: Mapping[str, Any] | None = None  # run id -> mlflow Run
    validations: Sequence[tuple[str, Validation | None]] = ()  # ``blocknas validate``'s results, by run id


def run_url(ui_base: str, experiment_id: str, run_id: str) -> str:
    """The MLflow UI page of a run (in the UI's "Model training" view, not its GenAI one)."""
    return f"{ui_base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"


def report_study(
    study_name: str,
    *,
    storage_url: str,
    tracking_uri: str | None = None,
    runs_dir: str | Path = "runs",
    ui_base: str = DEFAULT_UI_BASE,
) -> ReportResult:
    """Write the report of the study ``study_name`` to ``<runs_dir>/<study>/report/``.

    Args:
        study_name: The Optuna study (and MLflow experiment) name.
        storage_url: The study storage (journal path, ``sqlite:///``, ``postgresql://``, ...).
        tracking_uri: MLflow tracking URI; default ``$MLFLOW_TRACKING_URI`` or the SQLite
            store under ``runs_dir``.
        runs_dir: Where the report folder goes.
        ui_base: The MLflow UI address the report links trials to.
    """
    study = load_study(study_name, storage_url)
    tracker = None
    if study.user_attrs.get(PARENT_RUN_ATTR):
        tracker = StudyTracker(resolve_tracking_uri(tracking_uri, runs_dir), study_name, runs_dir=runs_dir)
    else:
        log.warning(
            "study %s has no MLflow parent run: the report has no run links, settings or fingerprint", study_name
        )
    folder = Path(runs_dir) / study_name / "report"
    return write_report(study, folder, tracker=tracker, ui_base=ui_base, storage_url=storage_url)


def write_report(
    study: optuna.Study,
    folder: str | Path,
    *,
    tracker: StudyTracker | None = None,
    ui_base: str = DEFAULT_UI_BASE,
    storage_url: str | None = None,
) -> ReportResult:
    """Write the report of ``study`` into ``folder`` and log it on the MLflow parent run.

    Works for one or two objectives, for running studies, and for studies without a
    single complete trial (the report says so).

    Args:
        study: The study.
        folder: The report folder (created).
        tracker: The study's MLflow tracker; ``None`` leaves out what only MLflow knows
            (latency p90, run links, settings, device fingerprint).
        ui_base: The MLflow UI address for run links.
        storage_url: Shown (credentials masked) in the report header.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    runs = _fetch_runs(study, tracker)
    if _is_ablation(runs):
        _fetch_ablation_files(folder, tracker, runs.parent_id)
    sections, figures = _sections(study, folder, runs, ui_base, storage_url)
    sections = [mask_url(section) for section in sections]  # a URL in a param, link or error shown masked
    markdown = "\n".join(sections)
    md_path = folder / MARKDOWN_NAME
    md_path.write_text(markdown)
    html_path = folder / HTML_NAME
    images = {path.name: path for path in [*figures, folder / LEVELS_PLOT_FILE]}  # only what the report drew
    html_path.write_text(markdown_to_html(sections, title=f"blocknas report: {study.study_name}", images=images))
    files = [html_path, md_path, *figures]
    if tracker is not None and runs.parent_id:
        for path in files:
            tracker.log_file(runs.parent_id, path, "report")
    log.info("report of study %s written to %s", study.study_name, html_path)
    return ReportResult(folder, html_path, md_path, files, runs.parent_id)


def _is_ablation(runs: _Runs) -> bool:
    return (runs.parent_tags or {}).get(KIND_TAG) == ABLATION_KIND


def _fetch_runs(study: optuna.Study, tracker: StudyTracker | None) -> _Runs:
    parent_id = study.user_attrs.get(PARENT_RUN_ATTR)
    if tracker is None or not parent_id:
        return _Runs()
    parent = tracker.client.get_run(parent_id)
    children = {run.info.run_id: run for run in tracker.children(parent_id)}
    validations = load_validations(tracker, children.values())
    return _Runs(
        tracker.experiment_id, parent_id, dict(parent.data.params), dict(parent.data.tags), children, validations
    )


def _fetch_ablation_files(folder: Path, tracker: StudyTracker | None, parent_id: str | None) -> None:
    """Bring the ablation's own report files into ``folder`` from the parent run when not already there."""
    if tracker is None or parent_id is None:
        return
    for name in (REPORT_FILE, LEVELS_PLOT_FILE):
        if (folder / name).is_file():
            continue
        try:
            local = tracker.client.download_artifacts(parent_id, f"report/{name}", str(folder / ".download"))
        except Exception as exc:  # MLflow raises several kinds for a missing artifact
            log.warning("ablation report file %s not found on parent run %s: %s", name, parent_id, exc)
            continue
        shutil.move(local, folder / name)
    shutil.rmtree(folder / ".download", ignore_errors=True)


# -- the document ---------------------------------------------------------------------------


def _sections(
    study: optuna.Study, folder: Path, runs: _Runs, ui_base: str, storage_url: str | None
) -> tuple[list[str], list[Path]]:
    name = study.study_name
    trials = study.get_trials(deepcopy=False)
    front = front_trials(study)
    rows = front_rows(study)
    counts = block_frequency(trials, front)
    importances = param_importances(study)
    hv = hypervolume_history(study)
    shown = [imp for imp in importances if not imp.missing]
    figures = [plot_front(study, folder / "pareto_front.png")]  # drawn even empty: its axes say what will be there
    if counts:
        figures.append(plot_blocks(counts, folder / "blocks.png", f"{name}: blocks per stage"))
    if shown:
        figures.append(plot_importances(shown, folder / "importances.png", f"{name}: parameter importances"))
    figures += _progress_figures(study, hv, folder)
    figures += answer_figures(study, folder)
    sections = [
        _header(study, runs, ui_base, storage_url),
        *warnings_section(study, importances),
        _scatter_section(study),
        answer_section(study),
        *_rung_section(trials),
        _front_section(study, rows, runs, ui_base),
        _blocks_section(counts),
        _importance_section(importances),
        _progress_section(study, hv),
        proxy_section(trials),
        *validation_section(runs.validations),
    ]
    if _is_ablation(runs) and (folder / REPORT_FILE).is_file():
        sections.append(_ablation_section(folder))
    sections += [_settings_section(study, runs), _fingerprint_section(study, runs)]
    return sections, figures


def _header(study: optuna.Study, runs: _Runs, ui_base: str, storage_url: str | None) -> str:
    kind = "ablation" if _is_ablation(runs) else "search"
    objectives = ", ".join(f"{_text(n)} ({d.name.lower()})" for n, d in zip(objective_names(study), study.directions))
    states = state_counts(study)
    lines = [
        f"# Study report: {md_code(study.study_name)}\n",
        f"- kind: {kind}; objectives: {objectives}",
        f"- trials: {sum(states.values())} ({', '.join(f'{n} {k}' for k, n in states.items()) or 'none yet'})",
        f"- generated: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
    ]
    if storage_url:
        lines.append(f"- study storage: {md_code(mask_url(storage_url))}")
    if runs.parent_id and runs.experiment_id:
        link = md_link(f"study-{study.study_name}", run_url(ui_base, runs.experiment_id, runs.parent_id))
        lines.append(f"- MLflow parent run: {link}")
    if not states.get("complete"):
        lines.append(
            "\n> No complete trials yet: there is no front, no hypervolume and no importance to show. "
            "Run (or resume) the study and report again."
        )
    return "\n".join(lines) + "\n"


def _scatter_section(study: optuna.Study) -> str:
    trials = study.get_trials(deepcopy=False)
    failed = sum(t.state == TrialState.FAIL for t in trials)
    unplaced = unplaced_count(trials)
    note = f" {failed} failed trial(s) are not drawn." if failed else ""
    if unplaced:
        note += f" {unplaced} candidate(s) rejected on parameters or MACs have no latency: counted in the legend."
    source = latency_source(t for t in trials if LATENCY_ATTR in t.user_attrs)
    latency = {
        "predicted": "the lookup table's prediction (each trial's run logs the measured p50; `front.csv` has it)",
        "mixed": "predicted for some trials, the measured median (p50) for others",
    }.get(source, "the measured median (p50)")
    return (
        "## Accuracy vs latency\n\n"
        "![accuracy vs latency](pareto_front.png)\n\n"
        "Every complete trial (blue), the Pareto front (red), baselines (gold stars) and candidates over a "
        f"budget (grey ×: infeasible, never trained, drawn at accuracy 0).{note} Latency is {latency}.\n"
    )


def _rung_section(trials: Sequence[optuna.trial.FrozenTrial]) -> list[str]:
    """``pareto_asha``'s rungs: how many trials entered each and how many went on (none without rung records)."""
    rows = rung_table(trials)
    if not rows:
        return []
    lines = [
        "## Early stopping (pareto_asha)\n",
        "Trials ranked at each rung by non-dominated sorting on (accuracy at the rung, latency), the top 1/η "
        "going on; the stopped ones are the hollow triangles of the scatter, at the accuracy of their last rung. "
        "They are never on the front.\n",
        "| rung | epochs | entered | went on |",
        "|---:|---:|---:|---:|",
    ]
    for row in rows:
        epochs = ", ".join(map(str, row.epochs)) or "—"
        lines.append(f"| {row.rung} | {epochs} | {row.entered} | {row.went_on} |")
    return ["\n".join(lines) + "\n"]


def _front_section(study: optuna.Study, rows: Sequence[FrontRow], runs: _Runs, ui_base: str) -> str:
    title = (
        "## Pareto front\n" if len(study.directions) > 1 else "## Best trial\n\nA single objective: the best trial.\n"
    )
    if not rows:
        return title + "\nNo complete feasible trial yet.\n"
    trials = study.trials  # one fetch from the storage
    predicted = latency_source(trials[r.trial] for r in rows) != "measured"
    return title + front_table(rows, _front_columns(runs, ui_base, predicted=predicted))


def _front_columns(runs: _Runs, ui_base: str, *, predicted: bool) -> list[FrontColumn]:
    """The report's front columns: latencies measured (p50 and, from MLflow, p90) and a link to each run."""

    def p90(row: FrontRow) -> str:
        run = (runs.children or {}).get(row.run_id)
        return _num(run.data.metrics.get(LATENCY_P90_METRIC) if run is not None else None, ".4g")

    def link(row: FrontRow) -> str:
        if row.run_id not in (runs.children or {}) or not runs.experiment_id:
            return row.name
        return md_link(row.name, run_url(ui_base, runs.experiment_id, row.run_id))

    columns = [FRONT_COLUMNS["trial"], FRONT_COLUMNS["accuracy"]]
    if predicted:  # the objective is the table's prediction, shown beside the measurement
        columns.append(FrontColumn("predicted ms", lambda r: f"{r.latency_ms:.4g}"))
    return [
        *columns,
        FrontColumn("latency p50 ms", lambda r: _num(r.latency_measured_ms, ".4g")),
        FrontColumn("latency p90 ms", p90),
        FRONT_COLUMNS["params"],
        FRONT_COLUMNS["macs"],
        FRONT_COLUMNS["blocks"],
        FrontColumn("MLflow run", link, numeric=False),
    ]


def _blocks_section(counts: Sequence[BlockCount]) -> str:
    lines = ["## Blocks on the front vs all trials\n"]
    if not counts:
        return lines[0] + "\nNo trial has an architecture yet.\n"
    lines += [
        "![blocks per stage](blocks.png)\n",
        "How often each block type is the block of a stage: among the Pareto-optimal trials, and among all "
        "trials that sampled an architecture (complete, over budget or failed).\n",
        "| stage | block | on the front | among all trials |",
        "|---:|---|---:|---:|",
    ]
    for c in counts:
        lines.append(
            f"| {c.stage} | {_text(c.block)} | {c.front}/{c.front_total} ({c.front_share:.0%}) "
            f"| {c.all}/{c.all_total} ({c.all_share:.0%}) |"
        )
    return "\n".join(lines) + "\n"


def _importance_section(importances: Sequence[Importances]) -> str:
    lines = [
        "## Parameter importances\n",
        "Optuna's PED-ANOVA evaluator, one objective at a time, over complete trials whose parameters were sampled "
        "(baselines excluded). Conditional parameters (a block's own knobs) count too: a trial that did not sample "
        "one is in that parameter's inactive regime. Normalized to sum to 1 per objective.\n",
    ]
    lines += [f"- {_text(imp.objective)}: not computed, {_text(imp.missing)}" for imp in importances if imp.missing]
    shown = [imp for imp in importances if not imp.missing]
    if shown:
        params = sorted({p for imp in shown for p in imp.values}, key=lambda p: -max(i.values.get(p, 0) for i in shown))
        lines += [
            "\n![parameter importances](importances.png)\n",
            "| parameter | " + " | ".join(_text(imp.objective) for imp in shown) + " |",
            "|---|" + "---:|" * len(shown),
        ]
        lines += [
            f"| {_text(p)} | " + " | ".join(_num(imp.values.get(p), ".3f") for imp in shown) + " |" for p in params
        ]
    return "\n".join(lines) + "\n"


def _progress_figures(study: optuna.Study, hv: Hypervolume | None, folder: Path) -> list[Path]:
    if hv is not None:
        return (
            [plot_hypervolume(hv, folder / "hypervolume.png", f"{study.study_name}: hypervolume")] if hv.trials else []
        )
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return []
    numbers, values = [t.number for t in complete], [t.values[0] for t in complete]
    return [plot_best_history(numbers, values, folder / "history.png", f"{study.study_name}: best so far")]


def _progress_section(study: optuna.Study, hv: Hypervolume | None) -> str:
    if hv is None:
        text = "## Optimization history\n\nHypervolume needs two objectives; this study has one, so the history shows each "
        if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            return text + "complete trial's accuracy: there is none yet.\n"
        return text + "complete trial's accuracy and the best so far.\n\n![best so far](history.png)\n"
    ref_acc, ref_lat = hv.reference
    text = (
        "## Hypervolume\n\n"
        f"Area of the (accuracy, latency) plane dominated by the front of the complete feasible trials so far, bounded "
        f"by the reference point **accuracy {ref_acc:g}, latency {ref_lat:.4g} ms** ({REFERENCE_LATENCY_FACTOR:g} × "
        "the slowest complete feasible trial, so that every such trial counts). Units: accuracy × ms.\n\n"
    )
    if not hv.trials:
        return text + "No complete feasible trial yet.\n"
    return text + (
        f"Final hypervolume: **{hv.final:.4g}** after {len(hv.trials)} trial(s), {hv.normalized:.1%} of the box "
        f"between the reference point and (accuracy 1, 0 ms).\n\n![hypervolume](hypervolume.png)\n"
    )


def _ablation_section(folder: Path) -> str:
    """The ablation's own report, headings moved one level down, with its figure."""
    text = (folder / REPORT_FILE).read_text()
    demoted = re.sub(r"^(#{1,5}) ", r"#\1 ", text, flags=re.MULTILINE)
    figure = (
        f"\n![ablation: accuracy vs latency]({LEVELS_PLOT_FILE})\n" if (folder / LEVELS_PLOT_FILE).is_file() else ""
    )
    return demoted.rstrip() + "\n" + figure


def _settings_section(study: optuna.Study, runs: _Runs) -> str:
    lines = ["## Study settings\n"]
    if not runs.parent_params:
        lines.append(
            f"Directions: {', '.join(d.name.lower() for d in study.directions)}. (No MLflow parent run: the "
            "settings logged there are not available.)"
        )
        return "\n".join(lines) + "\n"
    lines += ["As logged on the MLflow parent run.\n", "| setting | value |", "|---|---|"]
    lines += [f"| {_text(k)} | {_text(v)} |" for k, v in sorted(runs.parent_params.items())]
    return "\n".join(lines) + "\n"


def _fingerprint_section(study: optuna.Study, runs: _Runs) -> str:
    found: list[Fingerprint] = fingerprints(run.data.tags for run in (runs.children or {}).values())
    lines = ["## Device fingerprint\n"]
    if (device := study_device(study)) is not None:
        lines.append(f"Latencies of this study: {_text(device_text(device))}.\n")
    if not found:
        return "\n".join(lines) + "\nNo trial run recorded a latency fingerprint.\n"
    if len(found) > 1:
        lines.append(
            f"> Latencies were measured on {len(found)} different fingerprints: only numbers with the same "
            "fingerprint are comparable.\n"
        )
    for fp in found:
        lines += [f"Fingerprint {md_code(mask_url(fp.id))} ({fp.runs} trial run(s)):\n", "| key | value |", "|---|---|"]
        lines += [f"| {_text(k)} | {_text(v)} |" for k, v in fp.values.items()]
        lines.append("")
    return "\n".join(lines)


def _num(value: float | None, fmt: str) -> str:
    return "—" if value is None or math.isnan(value) else format(value, fmt)


def _text(value: Any) -> str:
    """A value from the study or MLflow as Markdown text: credentials masked, markup shown as characters."""
    return md_text(mask_url(str(value)))
