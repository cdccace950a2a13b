"""Terminal output of the commands: the Pareto front as a table and where to look next."""

from __future__ import annotations

import functools

from rich.console import Console
from rich.table import Table

from blocknas.search.study import FRONT_COLUMNS, SearchResult, StudyConfig, front_cells, latency_fingerprints
from blocknas.search.tracking import mask_url, runs_page_url

from .proxies import proxy_rich_table

__all__ = ["print_search_summary"]


def _mlflow_hint(uri: str, study_name: str) -> str:
    """Where the study's runs are seen: a tracking server is its own UI (the study's runs page);
    a local store needs ``mlflow ui`` started on it."""
    if uri.startswith(("http://", "https://")):
        page = runs_page_url(uri, uri, study_name) or uri
        return f"{mask_url(page)}   (the tracking server's UI: the study's runs)"
    return f"mlflow ui --backend-store-uri '{mask_url(uri)}' --host 127.0.0.1   (or: make dashboard)"


def print_search_summary(result: SearchResult, config: StudyConfig, console: Console | None = None) -> None:
    """Print the front (accuracy, latency, params, MACs, blocks) and the next commands to run."""
    console = console or Console()
    table = Table(title=f"Pareto front of {result.study.study_name} ({len(result.study.trials)} trials)")
    columns = [FRONT_COLUMNS[key] for key in ("trial", "accuracy", "latency", "params", "macs", "blocks")]
    for column in columns:
        table.add_column(column.header, justify="right" if column.numeric else "left")
    for cells in front_cells(result.front, columns):
        table.add_row(*cells)
    console.print(table)
    console.print(proxy_rich_table(result.study.trials))
    # soft_wrap: a command, path or URL is never broken across lines (copied from a narrow terminal or a log)
    print_line = functools.partial(console.print, soft_wrap=True)
    print_line(f"MLflow:    {_mlflow_hint(result.tracking_uri, config.name)}")
    print_line(f"Exported:  {result.export_folder}/ ({len(result.exported)} architectures, front.md, front.csv)")
    if result.exported:
        print_line(f'Reuse:     timm.create_model("blocknet", arch="{result.exported[0]}")')
    source = f"--config {config.source}" if config.source else f"--study-name {config.name}"
    print_line(
        f"Report:    blocknas report {source}   (HTML + Markdown + PNGs under {config.runs_dir}/{config.name}/report/)"
    )
    print_line(f"Resume:    the same command continues study {config.name!r} in {mask_url(config.storage_url)}")
    fingerprints = latency_fingerprints(result.study.trials)
    if len(fingerprints) > 1:
        counts = ", ".join(f"{fp} ({n} trials)" for fp, n in fingerprints.items())
        console.print(
            f"[bold red]Warning:[/] latencies were measured on {len(fingerprints)} different devices or latency "
            f"settings ({counts}); they are not comparable across fingerprints. The report's device section has details."
        )
