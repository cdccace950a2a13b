"""Zero-cost proxies: one-batch scores of an untrained network that may rank candidates before training.

Every proxy has one signature, ``(model, batch) -> float``, and is registered by name with
:func:`register_proxy`, like the blocks. Higher means "predicted better" for every proxy.
:func:`score_proxies` runs each on its own deep copy of the model inside a seeded RNG block,
so the network that is trained afterwards is untouched (weights, buffers, RNG stream) and a
rerun gives the same score. Whether a proxy ranks *this* study's candidates well is measured
on the study itself (``blocknas.search.study.proxy_correlations``).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from blocknas.search.data import DataSplit
from blocknas.search.threads import seeded_rng

__all__ = [
    "DEFAULT_PROXIES",
    "PROXY_BATCH_SIZE",
    "Proxy",
    "ProxyScore",
    "UnknownProxyError",
    "check_proxy_names",
    "get_proxy",
    "list_proxies",
    "proxy_batch",
    "register_proxy",
    "score_proxies",
]

Proxy = Callable[[nn.Module, tuple[Tensor, Tensor]], float]

_PROXIES: dict[str, Proxy] = {}

# All six: each is one forward (naswot), one forward+backward (synflow at one image, grad_norm, snip) or two
# half-batch ones (zico) of the untrained net; benchmarks/proxies.py measures their cost per network.
DEFAULT_PROXIES = ("params", "synflow", "naswot", "grad_norm", "snip", "zico")
PROXY_BATCH_SIZE = 32
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU, nn.GELU, nn.LeakyReLU)


class UnknownProxyError(KeyError):
    """Raised when a proxy name is not registered; the message lists the registered names."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0])


def register_proxy(name: str, *, override: bool = False) -> Callable[[Proxy], Proxy]:
    """Register a zero-cost proxy ``(model, batch) -> float`` under ``name`` (higher = predicted better).

    Args:
        name: The name used in the study config's ``proxies:`` and ``screen.proxy``.
        override: Replace an existing registration instead of raising.
    """

    def decorator(fn: Proxy) -> Proxy:
        if not isinstance(name, str) or not name.isidentifier() or name == "auto":
            raise ValueError(f"proxy name must be an identifier other than 'auto', got {name!r}")
        if name in _PROXIES and not override and _PROXIES[name] is not fn:
            raise ValueError(f"proxy {name!r} is already registered; pass register_proxy(name, override=True)")
        _PROXIES[name] = fn
        return fn

    return decorator


def get_proxy(name: str) -> Proxy:
    """The proxy registered as ``name``; :class:`UnknownProxyError` lists the registered ones."""
    try:
        return _PROXIES[name]
    except KeyError:
        raise UnknownProxyError(f"unknown proxy {name!r}; registered: {', '.join(list_proxies())}") from None


def list_proxies() -> list[str]:
    return sorted(_PROXIES)


@dataclass(frozen=True)
class ProxyScore:
    """A proxy's value on one network and what it cost (wall milliseconds, copy included)."""

    value: float
    ms: float


def proxy_batch(data: DataSplit, *, size: int = PROXY_BATCH_SIZE, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A seeded random batch of ``size`` training images and labels (the same for every trial of a study)."""
    generator = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(data.y_train), generator=generator)[:size]
    return data.x_train[index], data.y_train[index]


def score_proxies(
    model: nn.Module, batch: tuple[Tensor, Tensor], names: Iterable[str], *, seed: int = 0
) -> dict[str, ProxyScore]:
    """Score ``model`` with each named proxy, each on its own deep copy under ``seeded_rng(seed)``.

    The model itself, its gradients and the caller's RNG stream are left exactly as they were.
    """
    scores = {}
    for name in names:
        proxy = get_proxy(name)
        start = time.perf_counter()
        with seeded_rng(seed):
            value = float(proxy(copy.deepcopy(model), batch))
        scores[name] = ProxyScore(value, (time.perf_counter() - start) * 1000.0)
    return scores


def _weights(model: nn.Module) -> list[Tensor]:
    """The conv and linear weights, the tensors the gradient proxies sum over."""
    return [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _saliency(weights: list[Tensor]) -> float:
    """``Σ_W Σ |W ⊙ ∂/∂W|`` over the weights that have a gradient."""
    return sum(float((w * w.grad).abs().sum().detach()) for w in weights if w.grad is not None)


def _loss_backward(model: nn.Module, x: Tensor, y: Tensor) -> None:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()


@register_proxy("params")
def params_proxy(model: nn.Module, batch: tuple[Tensor, Tensor]) -> float:
    """Trainable parameter count, the baseline every proxy must beat: ``Σ_θ numel(θ)``."""
    return float(sum(p.numel() for p in model.parameters() if p.requires_grad))


@register_proxy("synflow")
def synflow(model: nn.Module, batch: tuple[Tensor, Tensor]) -> float:
    """SynFlow (Tanaka et al., NeurIPS 2020; as a NAS proxy: Abdelfattah et al., ICLR 2021).

    With every parameter replaced by its absolute value and BatchNorm in eval mode,
    ``R = 1ᵀ f(1)`` for an all-ones input of one image; score ``Σ_W Σ |W ⊙ ∂R/∂W|`` over
    conv/linear weights. Data-independent; run in float64 so deep nets do not overflow.
    """
    model.double().eval()
    with torch.no_grad():
        for p in model.state_dict().values():
            p.abs_()
    ones = torch.ones((1, *batch[0].shape[1:]), dtype=torch.float64)
    model.zero_grad(set_to_none=True)
    model(ones).sum().backward()
    return _saliency(_weights(model))


@register_proxy("naswot")
def naswot(model: nn.Module, batch: tuple[Tensor, Tensor]) -> float:
    """NASWOT (Mellor et al., ICML 2021, "Neural Architecture Search without Training").

    Each image's binary activation code ``c`` (which units of every activation layer are
    active, ``pre-activation > 0``); kernel ``K_ij = Σ_layers c_i·c_j + (1−c_i)·(1−c_j)``
    (units where images i and j agree); score ``log|det K|``. BatchNorm in train mode.
    """
    x = batch[0]
    kernel = torch.zeros((len(x), len(x)), dtype=torch.float64)

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        codes = (inputs[0].detach().reshape(len(x), -1) > 0).double()
        kernel.add_(codes @ codes.T + (1.0 - codes) @ (1.0 - codes).T)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _ACTIVATIONS)]
    model.train()
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    return float(torch.linalg.slogdet(kernel).logabsdet)


@register_proxy("grad_norm")
def grad_norm(model: nn.Module, batch: tuple[Tensor, Tensor]) -> float:
    """Gradient norm (Abdelfattah et al., ICLR 2021, "Zero-Cost Proxies for Lightweight NAS").

    ``Σ_W ‖∂L/∂W‖₂`` over conv/linear weights, ``L`` the mean cross-entropy of the batch,
    BatchNorm in train mode.
    """
    model.train()
    _loss_backward(model, *batch)
    return sum(float(w.grad.norm()) for w in _weights(model) if w.grad is not None)


@register_proxy("snip")
def snip(model: nn.Module, batch: tuple[Tensor, Tensor]) -> float:
    """SNIP saliency (Lee et al., ICLR 2019; as a NAS proxy: Abdelfattah et al., ICLR 2021).

    ``Σ_W Σ |W ⊙ ∂L/∂W|`` over conv/linear weights, ``L`` the mean cross-entropy of the
    batch, BatchNorm in train mode.
    """
    model.train()
    _loss_backward(model, *batch)
    return _saliency(_weights(model))


@register_proxy("zico")
def zico(model: nn.Module, batch: tuple[Tensor, Tensor]) -> float:
    """ZiCo (Li et al., ICLR 2023, "ZiCo: Zero-shot NAS via Inverse Coefficient of Variation on Gradients").

    The batch is split into two halves; ``g_b`` the cross-entropy gradient of half ``b``.
    Per conv/linear weight tensor ``W``: ``log Σ_{θ∈W, σ_θ>0} mean_b|g_θ| / σ_b(g_θ)`` (σ the
    population standard deviation over the halves); score the sum over layers with a
    positive inner sum. BatchNorm in train mode.
    """
    x, y = batch
    half = len(x) // 2
    if half < 1:
        raise ValueError("zico needs a batch of at least two images")
    model.train()
    weights = _weights(model)
    grads: list[list[Tensor]] = [[] for _ in weights]
    for part in (slice(0, half), slice(half, 2 * half)):
        _loss_backward(model, x[part], y[part])
        for i, w in enumerate(weights):
            if w.grad is not None:
                grads[i].append(w.grad.detach().clone())
    score = 0.0
    for g in grads:
        if len(g) < 2:
            continue
        stacked = torch.stack(g).double()
        std = stacked.std(dim=0, unbiased=False)
        mask = std > 0
        total = float((stacked.abs().mean(dim=0)[mask] / std[mask]).sum())
        if total > 0:
            score += math.log(total)
    return score


def check_proxy_names(names: Sequence[str]) -> None:
    """Raise :class:`UnknownProxyError` for the first name that is not registered."""
    for name in names:
        get_proxy(name)
