"""The zero-cost proxies' self-validation, for the report and the terminal summary."""

from __future__ import annotations

import math
from collections.abc import Sequence

from optuna.trial import FrozenTrial

from blocknas.search.markdown import md_code, md_text
from blocknas.search.study import proxy_correlations
from blocknas.search.study.screening import ProxyCorrelation, screen_counts

__all__ = ["PROXY_HEADERS", "proxy_cells", "proxy_section"]

PROXY_HEADERS = ("proxy", "n", "Kendall τ", "p (τ)", "Spearman ρ", "p (ρ)")
LONGER_TRAINING_NOTE = (
    "τ against longer-training accuracies is not available here: the fidelity benchmark's results hold no "
    "per-architecture proxies; `benchmarks/proxies.py` measures it (benchmarks/results/proxies.md)."
)


def _cells(row: ProxyCorrelation) -> list[str]:
    def num(value: float, fmt: str) -> str:
        return "—" if math.isnan(value) else format(value, fmt)

    name = f"{row.proxy} (baseline)" if row.baseline else row.proxy
    return [
        name,
        str(row.n),
        num(row.kendall_tau, "+.3f"),
        num(row.kendall_p, ".2g"),
        num(row.spearman_rho, "+.3f"),
        num(row.spearman_p, ".2g"),
    ]


def _rows(trials: Sequence[FrozenTrial]) -> list[ProxyCorrelation]:
    rows = proxy_correlations(trials)
    if not any(r.baseline for r in rows):  # #params is always shown: every complete trial has its count
        rows.insert(0, ProxyCorrelation("params", 0, math.nan, math.nan, math.nan, math.nan))
    return rows


def proxy_section(trials: Sequence[FrozenTrial]) -> str:
    """Markdown: each proxy's rank correlation with the brief accuracy of the complete trials, and screening."""
    rows = _rows(trials)
    lines = [
        "## Zero-cost proxies vs brief accuracy\n",
        "Rank correlation of each proxy (computed on the untrained network, one batch) with the brief-training "
        "accuracy, over the complete trials; `params` is the baseline a proxy has to beat. With screening on, the "
        "trained trials are the ones a proxy preferred, so these coefficients are measured on a selected sample.\n",
        "| " + " | ".join(PROXY_HEADERS) + " |",
        "|---|" + "---:|" * (len(PROXY_HEADERS) - 1),
    ]
    lines += ["| " + " | ".join(map(md_text, _cells(row))) + " |" for row in rows]
    counts = screen_counts(trials)
    if counts:
        total = ", ".join(
            f"{n} trials by {md_code(proxy)}, {pool} candidates screened, {pool - n} never trained"
            for proxy, (n, pool) in sorted(counts.items())
        )
        lines.append(f"\nScreening (experimental; each trial trained the best of its pool): {total}.")
    lines.append(f"\n{LONGER_TRAINING_NOTE}")
    return "\n".join(lines) + "\n"


def proxy_cells(trials: Sequence[FrozenTrial]) -> list[list[str]]:
    """The same correlations as table cells (columns :data:`PROXY_HEADERS`), for the terminal summary."""
    return [_cells(row) for row in _rows(trials)]
