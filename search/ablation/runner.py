"""Run an ablation: every variant × seed as one cell of an Optuna grid study, then the report.

The study, its storage, the MLflow parent/child runs, the per-trial pipeline and the
study-wide trial loop are the search's own (:func:`open_study_for_run`, :class:`Objective`,
:func:`optimize_until_done`); an ablation only changes where each trial's architecture
and seed come from. The trial parameters ``variant`` and ``seed`` name the cell, and
Optuna's ``GridSampler`` hands each new trial a cell nobody has finished or started, so
a resumed ablation or an extra worker only fills the missing cells.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, Trial, TrialState

from blocknas.blocks import ArchConfig, ConfigError
from blocknas.blocks.schema import flatten
from blocknas.search.markdown import md_code, md_text
from blocknas.search.study import (
    DEFINITION_ATTR,
    LATENCY_MEASURED_ATTR,
    PLAN_ATTR,
    SEARCH_DEFINITION_ATTR,
    Objective,
    StudyConfig,
    optimize_until_done,
    retried_trials,
    trial_counts,
)
from blocknas.search.study.attrs import FIXED_PARAMS_ATTR
from blocknas.search.study.definition import RENAME, changed_definition, definition_changes
from blocknas.search.study.runner import end_parent, end_parent_after, storage_faults_named
from blocknas.search.study.start import open_study_for_run
from blocknas.search.study.tally import COUNTED_STATES, counts_toward_total, outcome
from blocknas.search.tracking import KIND_TAG, StudyTracker, mask_config, mask_url
from blocknas.search.tracking.claims import store_once

from .config import AblationConfig, build_variants, format_level
from .plan import PlannedVariant, make_plan, plan_from_json, plan_to_json
from .tables import (
    CellResult,
    LevelRow,
    cells_csv,
    factor_rows,
    factors_csv,
    plot_levels,
    report_markdown,
    variants_csv,
)

__all__ = [
    "ABLATION_KIND",
    "LEVELS_PLOT_FILE",
    "REPORT_FILE",
    "AblationObjective",
    "AblationResult",
    "collect_cells",
    "run_ablation",
]

log = logging.getLogger(__name__)

ABLATION_KIND = "ablation"  # the KIND_TAG of an ablation's MLflow parent run (the report tells it by this)
REPORT_FILE = "report.md"  # the ablation's report in its report folder (a study report of the ablation embeds it)
LEVELS_PLOT_FILE = "accuracy_vs_latency.png"  # the report's figure, beside it

VARIANT_PARAM = "variant"
SEED_PARAM = "seed"
DONE = tuple(state.name for state in COUNTED_STATES)  # cell states that need no (re)run: the trial counts
_PREFERENCE = (*DONE, "RUNNING", "WAITING")


@dataclass
class AblationObjective(Objective):
    """The search objective with the architecture and seed taken from the trial's cell."""

    variants: dict[str, PlannedVariant] = field(default_factory=dict)
    seeds: tuple[int, ...] = ()
    seed_param: str = SEED_PARAM  # the seed batch's parameter name (see :func:`seed_param`)

    def architecture(self, trial: Trial) -> ArchConfig:
        name = trial.suggest_categorical(VARIANT_PARAM, list(self.variants))
        trial.suggest_categorical(self.seed_param, list(self.seeds))
        return self.variants[str(name)].arch

    def seed_for(self, trial: Trial) -> int:
        """The cell's seed: the same initialisation and data order for every variant."""
        return int(trial.params[self.seed_param])

    def run_labels(self, trial: Trial, arch: ArchConfig) -> tuple[str, dict[str, str]]:
        _, tags = super().run_labels(trial, arch)
        variant, seed = self.variants[trial.params[VARIANT_PARAM]], trial.params[self.seed_param]
        tags.update({f"ablation.{k}": format_level(v) for k, v in variant.levels.items()})
        tags.update(
            {"ablation.variant": variant.name, "ablation.seed": str(seed), "ablation.is_base": str(variant.is_base)}
        )
        return f"{variant.name}|seed={seed}", tags


@dataclass(frozen=True)
class AblationResult:
    """What an ablation produced and where to look."""

    study: optuna.Study
    plan: list[PlannedVariant]
    cells: list[CellResult]
    tables: dict[str, list[LevelRow]]
    markdown: str
    files: list[Path]
    parent_run_id: str
    tracking_uri: str

    @property
    def complete(self) -> bool:
        return all(c.state in DONE for c in self.cells if c.state != "NOT_TRAINED")


def run_ablation(config: AblationConfig, *, progress: bool = True) -> AblationResult:
    """Run (or resume) the ablation until every variant × seed cell is finished, then write the report.

    The base architecture, the factors and levels, and the dataset are checked before
    anything is written. The report goes to ``<runs_dir>/<name>/report/`` and onto the
    MLflow parent run.

    A store that cannot be written or reached (a full disk, a forbidden folder, a lost database
    connection) raises :class:`~blocknas.search.tracking.faults.StorageFault`, one paragraph
    naming it, and ends the parent run FAILED saying why; the cell it cut short is retried by the next run.
    """
    with storage_faults_named(config):
        return _run_ablation(config, progress=progress)


def _run_ablation(config: AblationConfig, *, progress: bool) -> AblationResult:
    """:func:`run_ablation` without turning storage faults into one paragraph."""
    base = config.base_arch()
    build_variants(config, base)  # every factor and level checked before anything is written
    study_config = _study_config(config)
    run = open_study_for_run(study_config, networks=base, what="the base architecture", path="base")
    study = run.study
    seed_batches = _check_definition(study, run.storage, config, base)

    def set_up() -> None:
        if study.user_attrs.get(PLAN_ATTR) is None:
            _store_plan(study, config, base)

    tracker, parent = run.start_tracking(
        config,
        params=flatten(mask_config(config.to_dict())),
        config_file="ablation.yaml",
        tags={KIND_TAG: ABLATION_KIND},
        set_up=set_up,
    )
    plan = plan_from_json(study.user_attrs[PLAN_ATTR])
    trained = {v.name: v for v in plan if v.trained}
    deadline = None if config.timeout_s is None else time.monotonic() + config.timeout_s
    try:
        for batch, seeds in enumerate(seed_batches):  # the first run's seeds, then each resume's added ones
            name = seed_param(batch)
            # the grid is shuffled by its seed: every worker and resume must use the same one to agree on cell ids
            study.sampler = optuna.samplers.GridSampler({VARIANT_PARAM: list(trained), name: list(seeds)}, seed=0)
            objective = AblationObjective(
                study_config, None, run.data, tracker, parent, progress=progress, variants=trained, seeds=seeds,
                seed_param=name,
            )  # fmt: skip
            cells = {(variant, seed) for variant in trained for seed in seeds}
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            _run_cells(study, objective, cells, timeout_s=remaining, progress=progress)
    except BaseException as exc:  # a storage fault, an interrupt: the parent run ends saying why (the search's way)
        end_parent_after(exc, study, tracker, parent, len(trained) * sum(map(len, seed_batches)))
        raise
    timed_out = deadline is not None and time.monotonic() >= deadline
    return _finish(study, config, plan, tracker, parent, stopped_by="timeout" if timed_out else None)


def seed_param(batch: int) -> str:
    """The seed's parameter name in seed batch ``batch``: ``seed``, then ``seed.1``, ``seed.2``, ...

    Seeds added on a resume are a grid of their own. Optuna forbids a categorical parameter whose
    choices change within a study, so each batch names its seed parameter differently.
    """
    return SEED_PARAM if batch == 0 else f"{SEED_PARAM}.{batch}"


def _study_config(config: AblationConfig) -> StudyConfig:
    """The study settings an ablation shares with a search (two objectives, no pruning, no constraints)."""
    return StudyConfig(
        **config.stores(),
        data=config.data,
        train=config.train,
        latency=config.latency,
        objective="multi",
        pruner="none",
        sampler="random",
    )


def _check_definition(
    study: optuna.Study, storage: BaseStorage, config: AblationConfig, base: ArchConfig
) -> list[tuple[int, ...]]:
    """A resumed study must be the same ablation: same variants, same data, training and latency settings.

    It may add seeds to the same variants (``seeds: 12`` → ``seeds: 26``): the stored plan, with its
    matched widths, is kept, and only the new cells run. Returns the seed batches: the first run's
    seeds, then each growth's new ones. The first worker to get there stores its definition (a claim:
    first writer wins, see :func:`~blocknas.search.tracking.claims.store_once`), not necessarily the creator,
    which may be paused in between; every other compares its own with it before it trains.
    """
    current = config.definition(base)
    mine = {**current, "seed_batches": [list(config.seed_list)]}
    stored = store_once(study, storage, DEFINITION_ATTR, mine, unless=(SEARCH_DEFINITION_ATTR,))
    where = f"study {config.name!r} in {mask_url(config.storage_url)}"
    if not isinstance(stored, dict) or not {"cells", "variants", "seed_batches", "settings"} <= set(stored):
        raise ConfigError(f"{where} exists but is not an ablation; use another name", path="name", source=config.source)
    changes = definition_changes(stored["settings"], current["settings"])
    if changed := [c for c in changes if not c.one_sided]:
        ways_on = f"Restore those settings to resume it, or give the ablation a new name ({RENAME}) to start another"
        raise changed_definition(where, changed, ways_on, source=config.source)
    if one_sided := [c for c in changes if c.one_sided]:
        log.warning("settings known to only one blocknas version, defaults apply: %s", "; ".join(map(str, one_sided)))
    advice = "use another name to start a new ablation, or restore the original config to resume"
    batches = [tuple(b) for b in stored["seed_batches"]]
    if stored["cells"] == current["cells"]:
        return batches
    had = [s for b in batches for s in b]
    added = [s for s in config.seed_list if s not in had]
    if stored["variants"] != current["variants"] or not added or len(had) + len(added) != len(config.seed_list):
        raise ConfigError(
            f"{where} was started with other variants or seeds (base, factors, design or budget match changed, "
            f"or seeds removed: it has seeds {had}); adding seeds is allowed; {advice}",
            path="name",
            source=config.source,
        )
    log.info(
        "ablation %s: adding seeds %s to its %d; the variants and their matched widths are kept", config.name, added,
        len(had),
    )  # fmt: skip
    batches.append(tuple(added))
    study.set_user_attr(DEFINITION_ATTR, {**current, "seed_batches": [list(b) for b in batches]})
    return batches


def _store_plan(study: optuna.Study, config: AblationConfig, base: ArchConfig) -> None:
    """Make the budget-matched plan and store it, so every worker trains the same variants (a set-up step:
    the other workers wait for it, however long latency matching takes)."""
    matching = config.matching
    slow = matching is not None and matching.metric == "latency"
    plan = make_plan(config, base, latency_measure=_latency_measure(config) if slow else None)
    study.set_user_attr(PLAN_ATTR, plan_to_json(plan))


def _latency_measure(config: AblationConfig) -> Callable[[ArchConfig], float]:
    import timm

    from blocknas.search.latency import measure_latency

    def measure(arch: ArchConfig) -> float:
        model = timm.create_model("blocknet", arch=arch)
        return measure_latency(model, (arch.in_chans, *arch.input_size), config.latency).p50_ms

    return measure


def _cell(trial: FrozenTrial) -> tuple[str, int] | None:
    """The trial's ``(variant, seed)``; for a queued trial, the cell it is queued for."""
    params = trial.params or trial.system_attrs.get(FIXED_PARAMS_ATTR, {})
    seed = next((v for k, v in params.items() if k == SEED_PARAM or k.startswith(f"{SEED_PARAM}.")), None)
    if VARIANT_PARAM not in params or seed is None:
        return None
    return str(params[VARIANT_PARAM]), int(seed)


def _finished_cells(study: optuna.Study) -> set[tuple[str, int]]:
    """Cells whose trial counts toward the study's total (:mod:`blocknas.search.study.tally`): a retried trial
    (interrupted, or its worker died) or a surplus one does not finish its cell."""
    trials = study.get_trials(deepcopy=False)
    retried = retried_trials(trials)
    return {cell for t in trials if (cell := _cell(t)) and counts_toward_total(t, retried)}


def _run_cells(
    study: optuna.Study,
    objective: AblationObjective,
    cells: set[tuple[str, int]],
    *,
    timeout_s: float | None,
    progress: bool,
) -> None:
    """Run trials until every cell is finished (by any worker) or ``timeout_s`` passes.

    Normally one pass of :func:`optimize_until_done` does it; a cell run twice by racing
    workers counts toward the study total without filling a gap, so the total is
    recomputed until no cell is missing.
    """
    start = time.monotonic()
    while True:
        missing = len(cells - _finished_cells(study))
        done, _ = trial_counts(study)
        remaining = None if timeout_s is None else timeout_s - (time.monotonic() - start)
        if missing == 0 or (remaining is not None and remaining <= 0):
            return
        optimize_until_done(study, objective, n_trials=done + missing, timeout_s=remaining, progress=progress)
        if trial_counts(study)[0] == done:  # timed out without finishing anything
            return


def collect_cells(study: optuna.Study, plan: list[PlannedVariant], seeds: tuple[int, ...]) -> list[CellResult]:
    """One result per variant × seed; a cell run more than once keeps its first complete trial."""
    chosen: dict[tuple[str, int], FrozenTrial] = {}
    trials = study.get_trials(deepcopy=False)
    retried = retried_trials(trials)
    for trial in trials:
        cell = _cell(trial)
        if cell is None or outcome(trial, retried) in ("retried", "surplus"):  # its retry, or nothing, stands for it
            continue
        kept = chosen.get(cell)
        if kept is None or _PREFERENCE.index(trial.state.name) < _PREFERENCE.index(kept.state.name):
            chosen[cell] = trial
    out = []
    for variant in plan:
        for seed in seeds:
            found = chosen.get((variant.name, seed))
            if not variant.trained:
                out.append(CellResult(variant.name, seed, None, None, "NOT_TRAINED"))
            elif found is None:
                out.append(CellResult(variant.name, seed, None, None, "MISSING"))
            else:
                accuracy = found.values[0] if found.state == TrialState.COMPLETE else None
                latency = found.user_attrs.get(LATENCY_MEASURED_ATTR)
                out.append(CellResult(variant.name, seed, accuracy, latency, found.state.name, found.number))
    return out


def _finish(
    study: optuna.Study,
    config: AblationConfig,
    plan: list[PlannedVariant],
    tracker: StudyTracker,
    parent: str,
    *,
    stopped_by: str | None = None,
) -> AblationResult:
    cells = collect_cells(study, plan, config.seed_list)
    tables = {factor: factor_rows(config, plan, cells, factor) for factor in config.factors}
    markdown = report_markdown(config, tables, _notes(config, plan, cells))
    metric = config.matching.metric if config.matching else None
    folder = config.report_dir
    folder.mkdir(parents=True, exist_ok=True)
    texts = {
        REPORT_FILE: markdown,
        "factors.csv": factors_csv(tables, metric),
        "variants.csv": variants_csv(plan, cells, metric),
        "cells.csv": cells_csv(cells),
    }
    files = []
    for name, text in texts.items():
        (folder / name).write_text(mask_url(text))
        files.append(folder / name)
    files.append(plot_levels(tables, folder / LEVELS_PLOT_FILE, f"{config.name}: accuracy vs latency"))
    for path in files:
        tracker.log_file(parent, path, "report")
    finished = sum(c.state in DONE for c in cells)
    wanted = sum(c.state != "NOT_TRAINED" for c in cells)
    tracker.log(parent, metrics={"cells_done": finished, "cells_total": wanted})
    tracker.close_orphans(study)
    result = AblationResult(study, plan, cells, tables, markdown, files, parent, tracker.tracking_uri)
    if result.complete and trial_counts(study)[1] == 0:
        tracker.finish_parent(parent)
    elif not result.complete and stopped_by is not None:  # short of its cells: the parent says why, as a search's
        end_parent(study, tracker, parent, trial_counts(study)[0] + wanted - finished, stopped_by)
    return result


def _notes(config: AblationConfig, plan: list[PlannedVariant], cells: list[CellResult]) -> list[str]:
    """The report's preamble: what was held fixed, how budgets were matched, what is missing."""
    base = next(v for v in plan if v.is_base)
    t = config.train
    lat = config.latency
    notes = [
        f"Base variant {md_code(base.name)} (arch {base.arch.short_hash()}); design: {config.design}; "
        f"seeds: {', '.join(map(str, config.seed_list))} (same initialisation and data order for every variant). "
        f"Data: {md_text(config.data.name)}, input {base.arch.input_size[0]}×{base.arch.input_size[1]}; training: "
        f"{t.epochs} epochs, batch {t.batch_size}, {t.optimizer} lr {t.lr}. Latency: {lat.runtime}, batch {lat.batch_size}, "
        f"threads {lat.threads}, median of repeated runs."
    ]
    matching = config.matching
    if matching is not None:
        unmatched = [v for v in plan if v.match is not None and not v.match.matched]
        notes.append(
            f"Budget: every variant's widths (stem, stages, head; one multiplier, multiples of 8) were scaled until "
            f"its {matching.metric} came within ±{matching.tolerance:.0%} of the base variant's."
            + (
                f" Not matched: {', '.join(md_code(v.name) for v in unmatched)} "
                f"({'trained at the closest width and flagged' if config.on_unmatched == 'train' else 'not trained'})."
                if unmatched
                else " Every variant matched."
            )
        )
    failed = [c for c in cells if c.state in ("FAIL", "PRUNED")]
    missing = [c for c in cells if c.state not in (*DONE, "NOT_TRAINED")]
    if failed:
        notes.append(f"Failed cells (excluded): {', '.join(f'{md_code(c.variant)} seed {c.seed}' for c in failed)}.")
    if missing:
        notes.append(
            f"Incomplete: {len(missing)} cell(s) not finished (not run, interrupted or still running); rerun the same command to finish."
        )
    return notes
