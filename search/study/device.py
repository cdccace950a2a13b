"""The study remembers the device its latencies come from, and a resume on another device is refused.

A budget such as ``constraints: {latency_ms: 2}`` means something only on one device. The
first worker stores the :class:`~blocknas.search.latency.device.LatencyDevice` (fingerprint, the
agent's address or the table's path, the table's calibration accuracy) as the study user
attribute :data:`~.attrs.LATENCY_DEVICE_ATTR` and as ``latency.device*`` tags on the parent
run; the summary and the report name it. A worker or resume whose agent or table is another
device is refused (exit 2) unless the change is allowed (``allow_changed``). Local measurements are
recorded but not enforced: workers on several machines are allowed, and the report counts
the trials per fingerprint.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna

from blocknas.search.latency.device import LatencyDevice
from blocknas.search.tracking import StudyTracker, mask_url

from .attrs import LATENCY_DEVICE_ATTR
from .definition import OVERRIDE, ChangedDefinition

__all__ = ["check_device", "device_tags", "device_text", "record_device", "study_device"]


def study_device(study: optuna.Study) -> dict[str, Any] | None:
    """The device the study recorded (plain :meth:`LatencyDevice.to_dict`), if any."""
    return study.user_attrs.get(LATENCY_DEVICE_ATTR)


def check_device(study: optuna.Study, device: LatencyDevice, *, allow_changed: bool = False) -> None:
    """Refuse an agent or table that is another device than the one the study's latencies come from.

    Raises:
        ChangedDefinition: The fingerprints differ (nothing is written), unless ``allow_changed``.
    """
    stored = study_device(study)
    if stored is None or allow_changed or device.source == "local" or stored["fingerprint_id"] == device.fingerprint_id:
        return
    raise ChangedDefinition(
        f"study {study.study_name!r} measured its latencies on {stored['fingerprint'].get('cpu_model', '?')} "
        f"(fingerprint {stored['fingerprint_id']}, {stored['source']} {mask_url(stored.get('where', ''))}), but this "
        f"run's {device.source} is {device.name}: its latencies and budget would not compare. Point latency at that "
        f"device, use another study name, or pass {OVERRIDE}",
        path=f"latency.{device.source}",
    )


def device_tags(device: LatencyDevice) -> dict[str, str]:
    """MLflow tags naming the device on the parent run."""
    tags = {
        "latency.device": mask_url(device.name),
        "latency.device.source": device.source,
        "latency.device.fingerprint_id": device.fingerprint_id,
    }
    if device.calibration:
        for key in ("within_10pct", "kendall_tau", "n_held_out"):
            if key in device.calibration:
                tags[f"latency.device.calibration.{key}"] = str(device.calibration[key])
    return tags


def record_device(study: optuna.Study, tracker: StudyTracker, parent_run_id: str, device: LatencyDevice) -> None:
    """Store ``device`` on the study (unless it holds it already) and tag the parent run with it."""
    stored = study_device(study)
    if stored is None or (device.source != "local" and stored["fingerprint_id"] != device.fingerprint_id):
        study.set_user_attr(LATENCY_DEVICE_ATTR, device.to_dict())
    tracker.log(parent_run_id, tags=device_tags(device))


def device_text(stored: Mapping[str, Any], latency_budget_ms: float | None = None) -> str:
    """One line: the device (as :func:`study_device` stores it), a table's calibration accuracy, the budget on it."""
    device = LatencyDevice(**stored)
    text = mask_url(device.name)
    calibration = device.calibration or {}
    if {"within_10pct", "n_held_out", "kendall_tau"} <= set(calibration):
        text += (
            f"; the table predicted {calibration['within_10pct']:.0%} of {calibration['n_held_out']} held-out "
            f"networks within ±10 % (Kendall τ {calibration['kendall_tau']:.2f}) when it was calibrated"
        )
    if latency_budget_ms is not None:
        text += f"; budget latency_ms ≤ {latency_budget_ms:g} ms on this device"
    return text
