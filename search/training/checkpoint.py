"""Checkpoints of full training: resumable training state and weights-only files.

Two kinds of file, both loaded with ``weights_only=True`` (no pickled code is ever run):

* **training state** (``last.pt``, ``best.pt``): ``torch.save`` of a dict of tensors and
  plain values (model, EMA, optimizer, scheduler, RNG states, epoch, history,
  architecture and config), written atomically so a kill never leaves half a file;
* **weights** (``best.safetensors``/``last.safetensors``, or ``.pth``): the inference
  weights alone, loadable by ``timm.create_model("blocknet", arch=..., checkpoint_path=...)``.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from blocknas.blocks import BlockNet
from blocknas.blocks.resolve import ArchLike
from blocknas.search.files import atomic_write

__all__ = [
    "STATE_FORMAT",
    "CheckpointError",
    "load_model",
    "load_training_state",
    "load_weights",
    "save_training_state",
    "save_weights",
]

STATE_FORMAT = "blocknas.train/1"
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt")


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, of the wrong kind, or does not fit the architecture."""


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        beside = (
            sorted(p.name for p in path.parent.glob("*") if p.suffix in WEIGHT_SUFFIXES) if path.parent.is_dir() else []
        )
        hint = f"; files there: {', '.join(beside)}" if beside else ""
        raise CheckpointError(f"{what} {path} does not exist{hint}")


def save_training_state(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Write a resumable training state (tensors and plain values only) atomically."""
    return atomic_write(Path(path), lambda tmp: torch.save({"format": STATE_FORMAT, **state}, tmp))


def load_training_state(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a training state written by :func:`save_training_state`.

    Raises:
        CheckpointError: missing file, not a torch file, or not a blocknas training state.
    """
    path = Path(path)
    _require_file(path, "training checkpoint")
    state = _torch_load(path, map_location)
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path} is not a blocknas training state (format {found!r}, expected {STATE_FORMAT!r})")
    return state


def _torch_load(path: Path, map_location: str | torch.device) -> Any:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"cannot read checkpoint {path}: it does not load with torch.load(weights_only=True), which accepts "
            "only tensors and plain values (a corrupt file, or a pickled model object)"
        ) from None
    except (RuntimeError, zipfile.BadZipFile, EOFError, ValueError, OSError) as exc:  # OSError: a truncated zip
        raise _unreadable(path, exc) from None


def _unreadable(path: Path, exc: Exception) -> CheckpointError:
    """What is wrong with a checkpoint that does not load, the file named."""
    what = "safetensors checkpoint" if path.suffix == ".safetensors" else "checkpoint"
    if isinstance(exc, PermissionError):
        return CheckpointError(f"cannot read {what} {path}: permission denied")
    detail = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else "no data where data should be"
    return CheckpointError(
        f"cannot read {what} {path}: the file ({path.stat().st_size:,} bytes) is truncated or corrupt "
        f"({type(exc).__name__}: {detail}); use an intact copy, or train again"
    )


def save_weights(
    path: str | Path, state_dict: Mapping[str, torch.Tensor], *, metadata: Mapping[str, str] | None = None
) -> Path:
    """Write inference weights: safetensors for ``.safetensors``, else ``torch.save`` of the state dict.

    ``metadata`` (e.g. :meth:`blocknas.search.data.Preprocessing.metadata`) goes into a
    safetensors file's header, where ``safe_open(path).metadata()`` reads it; a ``.pth`` has none.
    """
    path = Path(path)
    if path.suffix not in WEIGHT_SUFFIXES:
        raise CheckpointError(f"weights file {path} must end in one of {', '.join(WEIGHT_SUFFIXES)}")
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        header = {**(metadata or {}), "format": "pt"}
        return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))
    return atomic_write(path, lambda tmp: torch.save(tensors, tmp))


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a weights file, or the inference weights of a training state.

    A training state yields its EMA weights when it has them (what was validated and
    exported), like timm's ``load_checkpoint(use_ema=True)``.

    Raises:
        CheckpointError: missing, unreadable or not a state dict.
    """
    path = Path(path)
    _require_file(path, "checkpoint")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise _unreadable(path, exc) from None
    loaded = _torch_load(path, "cpu")
    if isinstance(loaded, dict) and loaded.get("format") == STATE_FORMAT:
        loaded = loaded.get("model_ema") or loaded.get("model")
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise CheckpointError(f"{path} holds no state dict (a mapping of parameter names to tensors)")
    return loaded


def load_model(arch: ArchLike, checkpoint: str | Path, **kwargs: Any) -> BlockNet:
    """``timm.create_model("blocknet", arch=arch, **kwargs)`` with the checkpoint's weights, in eval mode.

    The same weights as ``checkpoint_path=`` in timm, but every failure says which file and
    which keys: a missing file, a corrupt one, or weights of another architecture.

    Raises:
        CheckpointError: the checkpoint cannot be read or does not fit the architecture.
    """
    import timm

    state_dict = load_weights(checkpoint)
    model: BlockNet = timm.create_model("blocknet", arch=arch, **kwargs)
    mismatch = _mismatch(model.state_dict(), state_dict)
    if mismatch:
        name = arch if isinstance(arch, (str, Path)) else "the given architecture"
        raise CheckpointError(
            f"checkpoint {checkpoint} does not fit {name}: {mismatch}; train it or pass the arch.yaml it was trained with"
        )
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def _mismatch(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor], examples: int = 3) -> str:
    """Missing, unexpected and wrongly shaped keys, counted with a few examples; empty when they fit."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [
        f"{k}: {list(found[k].shape)} in the checkpoint, {list(v.shape)} in the model"
        for k, v in expected.items()
        if k in found and found[k].shape != v.shape
    ]
    parts = [
        f"{len(keys)} {what} (e.g. {', '.join(keys[:examples])})"
        for what, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes))
        if keys
    ]
    return "; ".join(parts)
