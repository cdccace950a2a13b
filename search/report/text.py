"""Terminal output of the commands: the Pareto front as a table and where to look next.

Every command the summary prints runs as pasted: it names the study the run used (its config
file and whatever the run changed from it: study name, storage, tracking URI, runs folder), so
it finds that study and no other. A password in a URL is shown as ``***``: type it back in.

Everything printed passes through :func:`_plain` (rich ``Text``), never rich markup: brackets in a
study name, a path or an error message are printed as typed, not read as styles or links.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Collection, Iterable, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from blocknas.search.study import SearchResult, StudyConfig, load_study_config
from blocknas.search.study.config import default_storage_url
from blocknas.search.study.device import device_text, study_device
from blocknas.search.study.objective import latency_fingerprints
from blocknas.search.study.pareto import FRONT_COLUMNS, front_cells
from blocknas.search.tracking import mask_url, resolve_tracking_uri, runs_page_url

from .data import flat_scores
from .proxies import PROXY_HEADERS, proxy_cells

__all__ = ["print_search_summary", "study_flags"]


def _location(config: StudyConfig | None) -> dict[str, str]:
    """Where ``config`` puts its study (``{flag: value}``); without a config, where the defaults put one."""
    runs_dir = config.runs_dir if config else "runs"
    return {
        "--study-name": config.name if config else "",
        "--storage": config.storage_url if config else default_storage_url(runs_dir),
        "--tracking-uri": resolve_tracking_uri(config.tracking_uri if config else None, runs_dir),
        "--runs-dir": runs_dir,
    }


def study_flags(config: StudyConfig, *, n_trials: bool = False) -> list[str]:
    """The flags that lead a ``blocknas`` command to ``config``'s study: ``--config`` and each location
    the run changed from the file (all of them when the config was not read from a file).

    Args:
        config: The config the run used, command-line overrides applied.
        n_trials: Add ``--n-trials`` and ``--parallel`` too when the run changed them (to resume the same way).
    """
    try:
        file = load_study_config(config.source) if config.source else None
    except (OSError, ValueError):  # the file changed or went since the run: name everything
        file = None
    flags = ["--config", config.source] if file and config.source else []
    base = _location(file)
    for flag, value in _location(config).items():
        if value != base[flag]:
            flags += [flag, value]
    if n_trials and file and file.n_trials != config.n_trials:
        flags += ["--n-trials", str(config.n_trials)]
    if n_trials and file and file.parallel != config.parallel:
        flags += ["--parallel", str(config.parallel)]
    return flags


def _command(*words: str) -> str:
    """A shell command line, credentials masked."""
    return mask_url(shlex.join(words))


def _mlflow_hint(uri: str, study_name: str, flags: list[str]) -> str:
    """Where the study's runs are seen: a tracking server is its own UI (the study's runs page);
    a local store needs ``mlflow ui`` started on it."""
    if uri.startswith(("http://", "https://")):
        page = runs_page_url(uri, uri, study_name) or uri
        return f"{mask_url(page)}   # the tracking server's UI: the study's runs"
    return f"{_command('mlflow', 'ui', '--backend-store-uri', uri, '--host', '127.0.0.1')}   # or: " + _command(
        "blocknas", "dashboard", *flags
    )


def _reuse_hint(arch: str) -> str:
    """A Python one-liner that builds an exported architecture (importing ``blocknas.blocks`` registers ``blocknet``)."""
    code = f'import blocknas.blocks, timm; print(timm.create_model("blocknet", arch={json.dumps(arch)}))'
    return _command("python", "-c", code)


def _plain(text: str, style: str = "") -> Text:
    """``text`` as rich prints it: as typed, in ``style``; never parsed as markup."""
    return Text(text, style=style)


def _table(title: str, headers: Sequence[str], rows: Iterable[Sequence[str]], *, left: Collection[str]) -> Table:
    """A table of plain text; the columns headed in ``left`` are left-aligned, the others (numbers) right."""
    table = Table(title=_plain(title))
    for header in headers:
        table.add_column(_plain(header), justify="left" if header in left else "right")
    for cells in rows:
        table.add_row(*map(_plain, cells))
    return table


def _print_line(console: Console, label: str, text: str, style: str = "") -> None:
    """One line of the summary: ``label`` (in ``style``) and ``text``. Soft-wrapped: a command, path or URL
    is never broken across lines (copied from a narrow terminal or a log)."""
    console.print(Text.assemble(_plain(label, style), _plain(text)), soft_wrap=True)


def print_search_summary(result: SearchResult, config: StudyConfig, console: Console | None = None) -> None:
    """Print the front (accuracy, latency, params, MACs, blocks), warnings and the next commands to run."""
    console = console or Console()
    trials = result.study.trials
    columns = [FRONT_COLUMNS[key] for key in ("trial", "accuracy", "latency", "params", "macs", "blocks")]
    front = front_cells(result.front, columns)
    title = f"Pareto front of {result.study.study_name} ({len(trials)} trials)"
    left = {column.header for column in columns if not column.numeric}
    console.print(_table(title, [column.header for column in columns], front, left=left))
    title = "Zero-cost proxies vs brief accuracy (complete trials)"
    console.print(_table(title, PROXY_HEADERS, proxy_cells(trials), left={"proxy"}))
    flags = study_flags(config)
    _print_line(console, "MLflow:    ", _mlflow_hint(result.tracking_uri, config.name, flags))
    _print_line(
        console,
        "Exported:  ",
        f"{result.export_folder}/ ({len(result.exported)} architectures, front.md, front.csv)",
    )
    if result.exported:
        _print_line(console, "Reuse:     ", _reuse_hint(str(result.exported[0])))
    report_dir = f"{config.runs_dir}/{config.name}/report/"
    report = _command("blocknas", "report", *flags)
    _print_line(console, "Report:    ", f"{report}   # HTML + Markdown + PNGs under {report_dir}")
    resume = _command("blocknas", "search", *study_flags(config, n_trials=True))
    _print_line(console, "Resume:    ", f"{resume}   # continues study {config.name} in {mask_url(config.storage_url)}")
    if (device := study_device(result.study)) is not None:
        _print_line(console, "Latency:   ", device_text(device, config.constraints.latency_ms))
    for warning in _warnings(result):
        _print_line(console, "Warning: ", warning, "bold red")
    if result.ending:
        _print_line(console, "Stopped:   ", f"{result.ending} (the Resume command above)", "bold yellow")


def _warnings(result: SearchResult) -> list[str]:
    """Flat scores, and latencies measured under more than one fingerprint."""
    found = [text] if (text := flat_scores(result.study.get_trials(deepcopy=False))) else []
    fingerprints = latency_fingerprints(result.study.trials)
    if len(fingerprints) > 1:
        counts = ", ".join(f"{fp} ({n} trials)" for fp, n in fingerprints.items())
        found.append(
            f"latencies were measured on {len(fingerprints)} different devices or latency settings ({counts}); "
            "they are not comparable across fingerprints. The report's device section has details."
        )
    return found
