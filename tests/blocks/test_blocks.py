"""Block registry, block shapes and structure, and analytic cost formulas against measurement."""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from blocknas.blocks import (
    ArchConfig,
    BlockNet,
    ConfigError,
    ConvBlock,
    Cost,
    CostKnobs,
    UnknownBlockError,
    get_block,
    list_blocks,
    register_block,
    registry,
)
from blocknas.blocks.network_cost import block_cost
from blocknas.blocks.presets import PRESETS
from blocknas.blocks.registry import OPTIONAL_BLOCK_KEYWORDS

BUILTIN_BLOCKS = ("inverted_residual", "reversed", "separable", "standard")
TWO_CONV_BLOCKS = ("separable", "reversed")  # the blocks where mid_norm_act means something


class PlainBlock(nn.Module):
    """A user block with the uniform signature and no cost formula."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        *,
        stride: int = 1,
        kernel_size: int = 3,
        expand_ratio: float = 1.0,
        se_ratio: float = 0.0,
        mid_norm_act: bool = True,
        skip: bool | None = None,
        act_layer: str = "relu",
        norm_layer: str = "batchnorm2d",
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=kernel_size // 2, bias=True)
        self.bn = nn.BatchNorm2d(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


def build(name: str, in_chs: int, out_chs: int, **knobs: Any) -> nn.Module:
    return get_block(name)(in_chs, out_chs, **knobs).eval()


def measure(module: nn.Module, x: torch.Tensor) -> Cost:
    """Parameters and MACs (FLOPs / 2 as counted by torch) of one forward pass."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(x)
    return Cost(sum(p.numel() for p in module.parameters()), counter.get_total_flops() // 2)


# -- registry -------------------------------------------------------------------------


def test_builtin_blocks_are_registered() -> None:
    assert set(BUILTIN_BLOCKS) <= set(list_blocks())
    assert list_blocks() == sorted(list_blocks())


def test_unknown_block_error_lists_registered_names() -> None:
    with pytest.raises(UnknownBlockError) as info:
        get_block("no_such_block")
    message = str(info.value)
    assert "'no_such_block'" in message
    for name in BUILTIN_BLOCKS:
        assert name in message
    assert isinstance(info.value, KeyError)


@pytest.mark.usefixtures("isolated_registry")
def test_registering_a_name_twice_needs_override() -> None:
    register_block("twice")(PlainBlock)
    register_block("twice")(PlainBlock)  # the same class again is harmless

    class Other(PlainBlock):
        pass

    with pytest.raises(ValueError, match=r"'twice' is already registered.*override=True"):
        register_block("twice")(Other)
    assert get_block("twice") is PlainBlock
    register_block("twice", override=True)(Other)
    assert get_block("twice") is Other


@pytest.mark.usefixtures("isolated_registry")
def test_builtin_name_cannot_be_taken_silently() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_block("separable")(PlainBlock)
    assert get_block("separable").__name__ == "SeparableConv"


@pytest.mark.parametrize("name", ["", "my-block", "2conv"])
def test_block_name_must_be_an_identifier(name: str) -> None:
    with pytest.raises(ValueError, match="identifier"):
        register_block(name)(PlainBlock)


class DesignSignature(nn.Module):
    """Written to DESIGN.md's signature exactly: no ``mid_norm_act``, no ``skip`` (both optional)."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        *,
        stride: int = 1,
        kernel_size: int = 3,
        expand_ratio: float = 1.0,
        se_ratio: float = 0.0,
        act_layer: str = "relu",
        norm_layer: str = "batchnorm2d",
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class NoKernelSize(nn.Module):
    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        *,
        stride: int = 1,
        expand_ratio: float = 1.0,
        se_ratio: float = 0.0,
        act_layer: str = "relu",
        norm_layer: str = "batchnorm2d",
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()


class ExtraRequiredKeyword(PlainBlock):
    def __init__(self, in_chs: int, out_chs: int, *, groups: int, **kwargs: Any) -> None:
        super().__init__(in_chs, out_chs, **kwargs)


class NoInit(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@pytest.mark.usefixtures("isolated_registry")
@pytest.mark.parametrize(
    ("cls", "problem"),
    [
        (NoKernelSize, "lacks the keyword(s) kernel_size"),
        (ExtraRequiredKeyword, "missing a required argument: 'groups'"),
        (NoInit, "defines no __init__"),
    ],
)
def test_block_without_the_uniform_signature_is_rejected_at_registration(cls: type[nn.Module], problem: str) -> None:
    with pytest.raises(TypeError) as info:
        register_block("bad_block")(cls)
    message = str(info.value)
    assert f"block 'bad_block' ({__name__}.{cls.__qualname__})" in message
    assert problem in message
    assert registry._BLOCK_SIGNATURE in message and "optionally also mid_norm_act=True, skip=None" in message
    assert "bad_block" not in list_blocks()


@pytest.mark.usefixtures("isolated_registry")
def test_block_with_design_signature_builds_and_refuses_options_it_lacks() -> None:
    register_block("design_block")(DesignSignature)
    stage = {"block": "design_block", "out_chs": 8, "stride": 2}
    net = BlockNet(ArchConfig.from_dict({"stages": [stage]}))
    assert net(torch.randn(1, 3, 16, 16)).shape == (1, 10)
    for key, value in (("mid_norm_act", False), ("skip", True)):
        with pytest.raises(ConfigError, match=rf"stages\[0\]\.{key}: block 'design_block' .* takes no '{key}'"):
            BlockNet(ArchConfig.from_dict({"stages": [{**stage, key: value}]}))


@pytest.mark.parametrize("name", BUILTIN_BLOCKS)
def test_builtin_blocks_take_every_keyword_including_the_optional_ones(name: str) -> None:
    params = list(inspect.signature(get_block(name)).parameters.values())
    assert [p.name for p in params[:2]] == ["in_chs", "out_chs"]
    assert {p.name for p in params[2:]} == set(registry._BLOCK_KEYWORDS) | set(OPTIONAL_BLOCK_KEYWORDS)
    assert all(p.kind is p.KEYWORD_ONLY for p in params[2:])


@pytest.mark.usefixtures("isolated_registry")
def test_block_taking_kwargs_registers_and_gets_every_keyword() -> None:
    seen: list[dict[str, Any]] = []

    @register_block("kwargs_block")
    class KwargsBlock(nn.Module):
        def __init__(self, in_chs: int, out_chs: int, **kwargs: Any) -> None:
            super().__init__()
            seen.append(kwargs)
            self.conv = nn.Conv2d(in_chs, out_chs, 1, stride=kwargs["stride"])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x)

    BlockNet(ArchConfig.from_dict({"stages": [{"block": "kwargs_block", "out_chs": 8, "stride": 2}]}))
    assert len(seen) == 1 and set(seen[0]) == set(registry._BLOCK_KEYWORDS) | set(OPTIONAL_BLOCK_KEYWORDS)


# -- shapes ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [7, 8])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kernel_size", [3, 5, 7])
@pytest.mark.parametrize("name", BUILTIN_BLOCKS)
def test_block_output_shape(name: str, kernel_size: int, stride: int, size: int) -> None:
    block = build(name, 4, 8, stride=stride, kernel_size=kernel_size)
    out = block(torch.randn(2, 4, size, size + 1))
    assert out.shape == (2, 8, math.ceil(size / stride), math.ceil((size + 1) / stride))


def test_seed_example_shape() -> None:
    """The seed's example: a 16×16 map keeps its size through separable 3→16 (no padding bug)."""
    out = build("separable", 3, 16)(torch.randn(1, 3, 16, 16))
    assert out.shape == (1, 16, 16, 16)


def call_order(block: nn.Module, x: torch.Tensor) -> list[nn.Module]:
    """Modules in the order their forward ran, identities left out."""
    order: list[nn.Module] = []
    handles = [
        m.register_forward_pre_hook(lambda mod, _: order.append(mod))
        for m in block.modules()
        if m is not block and not isinstance(m, nn.Identity)
    ]
    try:
        block(x)
    finally:
        for handle in handles:
            handle.remove()
    return order


def is_norm_or_act(module: nn.Module) -> bool:
    return isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.ReLU, nn.Hardswish, nn.SiLU))


@pytest.mark.parametrize("mid_norm_act", [True, False])
@pytest.mark.parametrize("name", TWO_CONV_BLOCKS)
def test_mid_norm_act_controls_what_runs_between_the_convs(name: str, mid_norm_act: bool) -> None:
    block = build(name, 4, 8, mid_norm_act=mid_norm_act)
    order = call_order(block, torch.randn(1, 4, 6, 6))
    conv_positions = [i for i, m in enumerate(order) if isinstance(m, nn.Conv2d)]
    assert len(conv_positions) == 2
    between = order[conv_positions[0] + 1 : conv_positions[1]]
    assert any(is_norm_or_act(m) for m in between) is mid_norm_act
    after = order[conv_positions[1] + 1 :]
    assert any(isinstance(m, nn.BatchNorm2d) for m in after)  # the final BN + act is always there
    assert sum(isinstance(m, nn.BatchNorm2d) for m in block.modules()) == (2 if mid_norm_act else 1)


@pytest.mark.parametrize("name", ["standard", "inverted_residual"])
def test_mid_norm_act_is_ignored_by_other_blocks(name: str) -> None:
    with_mid, without = build(name, 8, 8, mid_norm_act=True), build(name, 8, 8, mid_norm_act=False)
    assert [type(m) for m in with_mid.modules()] == [type(m) for m in without.modules()]


def expected_skip(name: str, skip: bool | None, stride: int, in_chs: int, out_chs: int) -> bool:
    wanted = (name == "inverted_residual") if skip is None else skip
    return wanted and stride == 1 and in_chs == out_chs


def zero_parameters(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


@pytest.mark.parametrize(("stride", "in_chs", "out_chs"), [(1, 8, 8), (2, 8, 8), (1, 8, 16)])
@pytest.mark.parametrize("skip", [None, True, False])
@pytest.mark.parametrize("name", BUILTIN_BLOCKS)
def test_skip_shortcut(name: str, skip: bool | None, stride: int, in_chs: int, out_chs: int) -> None:
    """With every weight zero the residual branch outputs 0, so the output is x exactly when there is a shortcut."""
    block = zero_parameters(build(name, in_chs, out_chs, stride=stride, skip=skip))
    has_skip = expected_skip(name, skip, stride, in_chs, out_chs)
    assert block.has_skip is has_skip
    x = torch.randn(1, in_chs, 6, 6)
    out = block(x)
    if has_skip:
        torch.testing.assert_close(out, x)
    else:
        assert not out.any()


@pytest.mark.parametrize("name", BUILTIN_BLOCKS)
def test_drop_path_only_on_a_shortcut(name: str) -> None:
    with_skip = build(name, 8, 8, skip=True, drop_path_rate=0.2)
    without = build(name, 8, 16, skip=True, drop_path_rate=0.2)
    assert type(with_skip.drop_path).__name__ == "DropPath"
    assert with_skip.drop_path.drop_prob == 0.2
    assert isinstance(without.drop_path, nn.Identity)


def test_inverted_residual_expansion_width() -> None:
    block = build("inverted_residual", 8, 8, expand_ratio=4.0)
    assert block.conv_dw.weight.shape == (32, 1, 3, 3)
    not_expanding = build("inverted_residual", 8, 8, expand_ratio=1.0)
    assert isinstance(not_expanding.conv_pw, nn.Identity)


# -- cost formulas --------------------------------------------------------------------


def cost_cases() -> Iterator[tuple[str, int, int, float, float, bool]]:
    for name, k, s, e, se in itertools.product(BUILTIN_BLOCKS, (3, 5, 7), (1, 2), (1.0, 4.0), (0.0, 0.25)):
        for mid in (True, False) if name in TWO_CONV_BLOCKS else (True,):
            yield name, k, s, e, se, mid


@pytest.mark.parametrize(
    ("name", "kernel_size", "stride", "expand_ratio", "se_ratio", "mid_norm_act"), list(cost_cases())
)
def test_block_cost_formula(
    name: str, kernel_size: int, stride: int, expand_ratio: float, se_ratio: float, mid_norm_act: bool
) -> None:
    knobs = CostKnobs(
        stride=stride, kernel_size=kernel_size, expand_ratio=expand_ratio, se_ratio=se_ratio, mid_norm_act=mid_norm_act
    )
    in_hw = (7, 8)  # odd and even, and not square, so H and W cannot be swapped unnoticed
    block = build(name, 8, 16, **vars(knobs))
    predicted = get_block(name).cost(8, 16, in_hw, knobs)
    assert predicted == measure(block, torch.randn(1, 8, *in_hw))


@pytest.mark.parametrize("name", BUILTIN_BLOCKS)
def test_cost_with_uneven_widths(name: str) -> None:
    """Widths that are not multiples of 8 exercise make_divisible in the expansion and SE widths."""
    knobs = CostKnobs(stride=2, kernel_size=5, expand_ratio=3.0, se_ratio=0.25)
    block = build(name, 6, 10, **vars(knobs))
    assert get_block(name).cost(6, 10, (9, 9), knobs) == measure(block, torch.randn(1, 6, 9, 9))


def network_cases() -> dict[str, dict[str, Any]]:
    odd = {
        "stem": {"out_chs": 12, "kernel_size": 5, "stride": 2},
        "stages": [
            {"block": "reversed", "out_chs": 20, "depth": 2, "stride": 2, "kernel_size": 7, "mid_norm_act": False},
            {"block": "standard", "out_chs": 20, "depth": 1, "se_ratio": 0.25, "skip": True},
        ],
        "head": {"num_features": 40},
        "in_chans": 1,
        "num_classes": 0,
        "input_size": [29, 35],
    }
    return {**PRESETS, "odd_sizes_no_classifier": odd}


@pytest.mark.parametrize("case", sorted(network_cases()))
def test_arch_cost_matches_built_network(case: str) -> None:
    arch = ArchConfig.from_dict(network_cases()[case])
    model = BlockNet(arch).eval()
    assert arch.cost() == measure(model, torch.randn(1, arch.in_chans, *arch.input_size))
    assert arch.measured_cost() == arch.cost()  # the meta-device count agrees with the formulas
    assert (arch.params(), arch.macs()) == (arch.cost().params, arch.cost().macs)


@pytest.mark.usefixtures("isolated_registry")
def test_user_block_without_formula_falls_back_to_measurement() -> None:
    register_block("plain_user_block")(PlainBlock)
    arch = ArchConfig.from_dict(
        {"stages": [{"block": "separable", "out_chs": 16}, {"block": "plain_user_block", "out_chs": 24, "stride": 2}]}
    )
    assert block_cost(arch.block_specs()[1]) is None
    measured = measure(BlockNet(arch).eval(), torch.randn(1, 3, *arch.input_size))
    assert arch.measured_cost() == measured
    assert arch.cost() == measured


@pytest.mark.usefixtures("isolated_registry")
def test_conv_block_subclass_without_formula_falls_back() -> None:
    @register_block("no_formula")
    class NoFormula(ConvBlock, PlainBlock):
        pass

    arch = ArchConfig.from_dict({"stages": [{"block": "no_formula", "out_chs": 8}]})
    assert block_cost(arch.block_specs()[0]) is None
    assert arch.cost() == measure(BlockNet(arch).eval(), torch.randn(1, 3, 32, 32))
