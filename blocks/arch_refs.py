"""Architecture references that are neither files nor registered names.

* ``runs:/<run_id>`` (or ``runs:/<run_id>/<artifact path>``): the ``arch.yaml`` artifact
  of an MLflow run (a search trial's child run or a training run), fetched from the
  current tracking URI (``MLFLOW_TRACKING_URI`` or ``mlflow.set_tracking_uri``).
* ``<study>/<name>``: an exported Pareto-front config,
  ``<root>/<study>/<name>.yaml`` with ``root`` = ``$BLOCKNAS_DISCOVERED`` or
  ``configs/discovered``; a unique prefix of the name is enough (``default/t0012``).

They live in ``blocks`` rather than ``search`` so that ``timm.create_model("blocknet",
arch="runs:/...")`` works after importing only :mod:`blocknas.blocks`; MLflow is imported
only when a ``runs:/`` reference is resolved.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from .arch import ArchConfig
from .schema import ConfigError

__all__ = [
    "ARCH_ARTIFACT",
    "DISCOVERED_ENV",
    "MLFLOW_PREFIX",
    "arch_from_discovered",
    "arch_from_mlflow_run",
    "discovered_root",
    "is_discovered_ref",
]

MLFLOW_PREFIX = "runs:/"
ARCH_ARTIFACT = "arch.yaml"
DISCOVERED_ENV = "BLOCKNAS_DISCOVERED"
_DISCOVERED_REF = re.compile(r"^[^/\\:]+/[^/\\:]+$")


def arch_from_mlflow_run(ref: str) -> ArchConfig:
    """The architecture logged by an MLflow run, from ``runs:/<run_id>[/<artifact path>]``.

    Raises:
        ConfigError: the run or its artifact cannot be found in the current tracking store.
    """
    run_id, _, artifact = ref.removeprefix(MLFLOW_PREFIX).strip("/").partition("/")
    if not run_id:
        raise ConfigError(f"{ref!r} names no run; expected runs:/<run_id> or runs:/<run_id>/<artifact path>")
    import mlflow

    uri = mlflow.get_tracking_uri()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=artifact or ARCH_ARTIFACT, dst_path=tmp
            )
        except Exception as exc:  # MLflow raises several types for a missing run or file
            raise ConfigError(
                f"cannot read {artifact or ARCH_ARTIFACT!r} of MLflow run {run_id!r} from tracking URI {uri!r}: "
                f"{type(exc).__name__}: {exc}. Point MLFLOW_TRACKING_URI at the store that holds the run "
                "(a search's default is sqlite:///runs/mlflow.db)"
            ) from None
        return ArchConfig.from_yaml(path)


def discovered_root() -> Path:
    """Folder holding ``<study>/<name>.yaml`` exports: ``$BLOCKNAS_DISCOVERED`` or ``configs/discovered``."""
    return Path(os.environ.get(DISCOVERED_ENV) or "configs/discovered")


def is_discovered_ref(text: str) -> bool:
    """Whether ``text`` has the ``<study>/<name>`` shape (one slash, no drive or scheme)."""
    return bool(_DISCOVERED_REF.match(text))


def arch_from_discovered(ref: str) -> ArchConfig:
    """The exported config ``<root>/<study>/<name>.yaml`` named by ``<study>/<name>``.

    Raises:
        ConfigError: no such study or name; the message lists what is available.
    """
    study, name = ref.split("/")
    root = discovered_root()
    folder = root / study
    if not folder.is_dir():
        studies = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise ConfigError(
            f"cannot resolve architecture {ref!r}: not a file, and no discovered study {study!r} under {root} "
            f"(studies there: {', '.join(studies) or 'none'}; set ${DISCOVERED_ENV} to use another folder)"
        )
    available = sorted(p.stem for p in folder.glob("*.yaml"))
    stem = name.removesuffix(".yaml")
    matches = [n for n in available if n == stem] or [n for n in available if n.startswith(stem)]
    if len(matches) != 1:
        why = "is ambiguous" if matches else "is not there"
        raise ConfigError(
            f"cannot resolve architecture {ref!r}: {stem!r} {why} in {folder} "
            f"(available: {', '.join(matches or available) or 'none'})"
        )
    return ArchConfig.from_yaml(folder / f"{matches[0]}.yaml")
