"""The report's "Validation" section: what ``blocknas validate`` found, read from its MLflow runs."""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterable, Sequence
from typing import Any

from blocknas.search.markdown import md_text
from blocknas.search.study import Validation
from blocknas.search.study.validation import VALIDATE_KIND
from blocknas.search.tracking import KIND_TAG, StudyTracker

__all__ = ["load_validations", "validation_section"]

log = logging.getLogger(__name__)

RESULT_ARTIFACT = "validate.json"


def load_validations(tracker: StudyTracker, children: Iterable[Any]) -> list[tuple[str, Validation | None]]:
    """``(run id, result)`` of every validation run among a parent's ``children``, oldest first (``None``: unreadable)."""
    runs = sorted(
        (run for run in children if run.data.tags.get(KIND_TAG) == VALIDATE_KIND), key=lambda r: r.info.start_time
    )
    return [(run.info.run_id, _load(tracker, run.info.run_id)) for run in runs]


def validation_section(validations: Sequence[tuple[str, Validation | None]]) -> list[str]:
    """Markdown of the validations (none: no section)."""
    if not validations:
        return []
    parts = [
        "## Validation\n",
        "`blocknas validate` retrained the front and random other trials at a longer budget: how well the "
        "search's score ranks networks against that budget, and whether the front holds.\n",
    ]
    for run_id, validation in validations:
        parts.append(
            validation.markdown(level=3)
            if validation is not None
            else f"### Validation run {md_text(run_id)}\n\nIts {RESULT_ARTIFACT} is missing or unreadable.\n"
        )
    return ["\n".join(parts)]


def _load(tracker: StudyTracker, run_id: str) -> Validation | None:
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = tracker.client.download_artifacts(run_id, RESULT_ARTIFACT, folder)
            with open(path) as handle:
                return Validation.from_json(json.load(handle))
        except Exception as exc:  # MLflow raises several kinds for a missing artifact; any bad content too
            log.warning("validation run %s: no readable %s (%s)", run_id, RESULT_ARTIFACT, exc)
            return None
