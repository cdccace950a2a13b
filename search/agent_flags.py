"""The latency agent's command-line flags, importable without torch.

``blocknas latency-agent --help`` answers without importing the latency subsystem (whose
package imports torch), and the single-file agent carries this module beside its own code,
so the flags live in this standard-library-only leaf rather than in
:mod:`blocknas.search.latency.agent`, which re-exports them.
"""

from __future__ import annotations

import argparse

__all__ = ["DEFAULT_AGENT_PORT", "DEFAULT_MAX_MODEL_MIB", "add_agent_arguments"]

DEFAULT_AGENT_PORT = 8765
DEFAULT_MAX_MODEL_MIB = 64


def add_agent_arguments(parser: argparse.ArgumentParser) -> None:
    """The agent's flags (``blocknas latency-agent`` and the single-file script share them)."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_AGENT_PORT, help=f"port (default {DEFAULT_AGENT_PORT})")
    parser.add_argument(
        "--allow-remote", action="store_true", help="allow a non-loopback --host (requires --token-env)"
    )
    parser.add_argument("--token-env", help="environment variable holding the shared token every request must send")
    parser.add_argument(
        "--max-model-mib", type=int, default=DEFAULT_MAX_MODEL_MIB, help="largest model accepted, in MiB"
    )
