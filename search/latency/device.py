"""The device a study's latencies come from: this machine, a latency agent, or a table calibrated on a device.

:func:`latency_device` is what a search checks before anything is written: an agent must
answer ``/health`` and measure the reference network within ``agent_timeout_s`` with the
token it is given; a table must exist and fit the latency target. Its answer names the
device in the study, the summary and the report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from .fingerprint import device_fingerprint
from .host import fingerprint_id
from .measure import check_agent
from .table import LatencyPredictor
from .target import LatencyTarget

__all__ = ["LatencyDevice", "latency_device"]


@dataclass(frozen=True)
class LatencyDevice:
    """Where a study's latencies come from.

    Attributes:
        source: ``local`` (measured on the machine running each trial), ``agent`` (measured
            on a latency agent) or ``table`` (predicted from a table calibrated on a device).
        fingerprint: The device's fingerprint (CPU, software, runtime settings).
        fingerprint_id: Its short id; every trial's ``latency_fingerprint_id`` should equal it.
        where: The agent's address or the table's path (empty for ``local``).
        reference_p50_ms: The reference network's latency measured while checking the agent.
        calibration: The table's calibration accuracy (:meth:`.LatencyPredictor.accuracy`).
    """

    source: Literal["local", "agent", "table"]
    fingerprint: dict[str, str] = field(repr=False)
    fingerprint_id: str
    where: str = ""
    reference_p50_ms: float | None = None
    calibration: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        """One line naming the device: CPU, fingerprint id and where the numbers come from."""
        via = {"local": "measured on this machine", "agent": f"measured by the agent at {self.where}"}
        source = via.get(self.source, f"predicted by the table {self.where}")
        return f"{self.fingerprint.get('cpu_model', 'unknown CPU')} (fingerprint {self.fingerprint_id}), {source}"

    def to_dict(self) -> dict[str, Any]:
        """Plain data (the study user attribute)."""
        return asdict(self)


def latency_device(target: LatencyTarget, input_shape: tuple[int, int, int] = (3, 32, 32)) -> LatencyDevice:
    """Check the device ``target`` measures on and name it; nothing is written.

    Args:
        target: The study's latency target.
        input_shape: ``(channels, height, width)`` of the reference network measured on an agent.

    Raises:
        AgentError: The agent is unreachable, too slow, refuses the token or answers wrongly.
        TableError: The table is missing, unreadable or was calibrated for other settings.
    """
    if target.table is not None:
        table = LatencyPredictor.open_table(target)
        return LatencyDevice("table", table.fingerprint, table.fingerprint_id, target.table, None, table.accuracy)
    if target.agent is not None:
        reference = check_agent(target, input_shape)
        fingerprint = reference.fingerprint
        return LatencyDevice("agent", fingerprint, reference.fingerprint_id, target.agent, reference.p50_ms)
    fingerprint = device_fingerprint(target)
    return LatencyDevice("local", fingerprint, fingerprint_id(fingerprint))
