"""BlockNet through timm: the model surface timm's own tests check, export, and the block guide's example."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import timm
import torch
from timm.layers import DropPath
from timm.models import FeatureInfo, group_parameters, load_checkpoint
from torch import nn

from blocknas.blocks import DEFAULT_ARCH, ArchConfig, BlockNet, arch_of
from blocknas.blocks.presets import PRESETS
from blocknas.search.latency import table_parts

REPO_ROOT = Path(__file__).resolve().parents[2]
MODELS = [name for name in timm.list_models("blocknet*") if name != "blocknet"]
FEATURE_SIZE = (33, 40)  # not the default 32×32, odd and not square: exercises ceil(H / reduction)


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN statistics and affine terms, so eval-mode BN is not the identity; returns eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    return model.eval()


def create(name: str, seed: int = 0, **kwargs: object) -> nn.Module:
    torch.manual_seed(seed)
    return randomize(timm.create_model(name, **kwargs), seed)


def inputs(model: nn.Module, batch: int = 2, size: tuple[int, int] | None = None) -> torch.Tensor:
    channels, *default = model.pretrained_cfg["input_size"]
    return torch.randn(batch, channels, *(size or default), generator=torch.Generator().manual_seed(1))


def test_presets_are_listed() -> None:
    assert sorted(MODELS) == sorted(PRESETS)


def test_list_models_in_a_fresh_process() -> None:
    code = "import blocknas.blocks, timm; print(timm.list_models('blocknet*'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120).stdout
    assert out.strip() == str(sorted(["blocknet", *PRESETS]))


# -- create_model and its kwargs ------------------------------------------------------


def test_arch_as_path_dict_or_config_builds_the_same_network(tmp_path: Path) -> None:
    arch = ArchConfig.from_dict(PRESETS["blocknet_mobile"])
    path = tmp_path / "arch.yaml"
    arch.to_yaml(path)
    reference = create("blocknet", arch=arch)
    x = inputs(reference)
    for spec in (str(path), path, arch.to_dict(), "blocknet_mobile"):
        model = create("blocknet", arch=spec)
        assert model.arch == arch
        model.load_state_dict(reference.state_dict())
        torch.testing.assert_close(model(x), reference(x))


def test_blocknet_without_arch_builds_the_default() -> None:
    model = timm.create_model("blocknet")
    assert model.arch == DEFAULT_ARCH == ArchConfig.from_dict(PRESETS["blocknet_mobile"])
    reference = create("blocknet_mobile")
    model.load_state_dict(reference.state_dict())
    x = inputs(reference)
    torch.testing.assert_close(model.eval()(x), reference(x))
    assert model.pretrained_cfg["input_size"] == (DEFAULT_ARCH.in_chans, *DEFAULT_ARCH.input_size)
    assert model.pretrained_cfg["pool_size"] == DEFAULT_ARCH.block_specs()[-1].out_hw


@pytest.mark.parametrize("name", timm.list_models("blocknet*"))
def test_every_listed_model_builds_without_arguments(name: str) -> None:
    """timm's own tests/test_models.py creates every listed name with no arguments."""
    model = timm.create_model(name).eval()
    channels, *size = model.pretrained_cfg["input_size"]
    with torch.no_grad():
        out = model(torch.randn(2, channels, *size))
    assert out.shape == (2, model.pretrained_cfg["num_classes"])


def test_constructor_kwargs() -> None:
    model = timm.create_model(
        "blocknet", arch=PRESETS["blocknet_inverted_residual"], num_classes=3, in_chans=1,
        drop_rate=0.3, drop_path_rate=0.2, global_pool="max",
    )  # fmt: skip
    assert model.stem.conv.weight.shape[1] == 1
    assert (model.num_classes, model.get_classifier().out_features) == (3, 3)
    assert model.head.drop.p == 0.3
    assert model.head.global_pool.pool_type == "max"
    # Rates rise linearly over the 5 blocks; only the two blocks with a shortcut (48→48, 96→96) get DropPath.
    rates = [m.drop_prob for m in model.modules() if isinstance(m, DropPath)]
    assert rates == pytest.approx([0.1, 0.2])
    model.eval()
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 3)


@pytest.mark.parametrize("name", [*MODELS, "odd"])
def test_latency_table_parts_are_the_networks_layers(name: str) -> None:
    """The table times the stem, blocks and head the network is made of, from the same builders."""
    odd = {"stages": [{"block": "standard", "out_chs": 8}], "head": {"num_features": 12, "drop_rate": 0.2}}
    arch = ArchConfig.from_dict(odd) if name == "odd" else arch_of(name)
    model = BlockNet(arch)
    layers = [
        model.stem,
        *(block for stage in model.stages for block in stage),
        nn.Sequential(model.conv_head, model.head),
    ]
    assert [repr(part.build()) for part in table_parts(arch)] == [repr(layer) for layer in layers]


def test_global_pool_changes_the_pooled_features() -> None:
    avg = create("blocknet_standard")
    mx = create("blocknet_standard", global_pool="max")
    mx.load_state_dict(avg.state_dict())
    x = inputs(avg)
    features = avg.forward_features(x)
    torch.testing.assert_close(avg.forward_head(features, pre_logits=True), features.mean((2, 3)))
    torch.testing.assert_close(mx.forward_head(features, pre_logits=True), features.amax((2, 3)))


# -- the timm model surface, over every preset ---------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_pretrained_cfg(name: str) -> None:
    model = create(name)
    cfg = model.pretrained_cfg
    arch = arch_of(name)
    assert cfg["input_size"] == (arch.in_chans, *arch.input_size)
    assert len(cfg["mean"]) == len(cfg["std"]) == arch.in_chans
    assert cfg["num_classes"] == arch.num_classes
    state_dict = model.state_dict()
    assert cfg["first_conv"] + ".weight" in state_dict
    assert cfg["classifier"] + ".weight" in state_dict
    assert state_dict[cfg["classifier"] + ".weight"].shape == (arch.num_classes, model.num_features)


@pytest.mark.parametrize("name", MODELS)
def test_default_cfg_and_reset_classifier(name: str) -> None:
    """timm's test_model_default_cfgs."""
    model = create(name)
    pool_size = model.pretrained_cfg["pool_size"]
    x = inputs(model)
    assert model.forward_features(x).shape == (2, model.num_features, *pool_size)
    assert model(x).shape == (2, model.num_classes)

    model.reset_classifier(0)
    assert isinstance(model.get_classifier(), nn.Identity)
    assert model(x).shape == (2, model.num_features)

    model.reset_classifier(0, "")
    assert model(x).shape == (2, model.num_features, *pool_size)


@pytest.mark.parametrize("name", MODELS)
def test_get_classifier_and_new_classes(name: str) -> None:
    model = create(name)
    fc = model.get_classifier()
    assert isinstance(fc, nn.Linear)
    assert (fc.in_features, fc.out_features) == (model.num_features, model.num_classes)
    model.reset_classifier(7)
    assert model.get_classifier().out_features == model.num_classes == 7
    assert model(inputs(model)).shape == (2, 7)


@pytest.mark.parametrize("name", MODELS)
def test_pre_logits(name: str) -> None:
    model = create(name)
    features = model.forward_features(inputs(model))
    assert model.forward_head(features, pre_logits=True).shape == (2, model.head_hidden_size)
    assert model.head_hidden_size == model.num_features == arch_of(name).num_features


@pytest.mark.parametrize("name", MODELS)
def test_backward_reaches_every_parameter(name: str) -> None:
    """timm's test_model_backward."""
    model = create(name, num_classes=42).train()
    out = model(inputs(model))
    assert out.shape == (2, 42)
    out.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


@pytest.mark.parametrize("name", MODELS)
def test_features_only(name: str) -> None:
    arch = arch_of(name)
    out_indices = (1, len(arch.stages) - 1)
    model = create(name, features_only=True, out_indices=out_indices)
    expected_chs = [arch.stages[i].out_chs for i in out_indices]
    expected_red = [arch.reductions()[i] for i in out_indices]
    assert model.feature_info.channels() == expected_chs
    assert model.feature_info.reduction() == expected_red
    feats = model(inputs(model, size=FEATURE_SIZE))
    assert [f.shape for f in feats] == [
        (2, c, math.ceil(FEATURE_SIZE[0] / r), math.ceil(FEATURE_SIZE[1] / r))
        for c, r in zip(expected_chs, expected_red)
    ]


@pytest.mark.parametrize("name", MODELS)
def test_features_only_defaults_to_every_stage(name: str) -> None:
    model = create(name, features_only=True)
    assert model.feature_info.channels() == [s.out_chs for s in arch_of(name).stages]
    assert len(model(inputs(model))) == len(arch_of(name).stages)


@pytest.mark.parametrize("name", MODELS)
def test_forward_intermediates(name: str) -> None:
    """timm's test_model_forward_intermediates, with exact spatial sizes."""
    model = create(name)
    feature_info = FeatureInfo(model.feature_info, range(len(model.feature_info)))
    x = inputs(model, size=FEATURE_SIZE)
    final, feats = model.forward_intermediates(x)
    assert len(feats) == len(feature_info)
    for chs, red, feat in zip(feature_info.channels(), feature_info.reduction(), feats):
        assert feat.shape == (2, chs, math.ceil(FEATURE_SIZE[0] / red), math.ceil(FEATURE_SIZE[1] / red))
        assert not torch.isnan(feat).any()
    torch.testing.assert_close(final, model.forward_features(x))
    torch.testing.assert_close(model.forward_head(final), model(x))

    only = model.forward_intermediates(x, intermediates_only=True)
    assert len(only) == len(feats)
    for a, b in zip(only, feats):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", MODELS)
def test_forward_intermediates_indices(name: str) -> None:
    model = create(name)
    x = inputs(model)
    _, every = model.forward_intermediates(x)
    last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
    for a, b in zip(last_two, every[-2:], strict=True):
        torch.testing.assert_close(a, b)
    first = model.forward_intermediates(x, indices=[0, -1], intermediates_only=True)
    for a, b in zip(first, [every[0], every[-1]], strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="out of range"):
        model.forward_intermediates(x, indices=[len(every)])


@pytest.mark.parametrize("name", MODELS)
def test_prune_intermediate_layers(name: str) -> None:
    model = create(name)
    x = inputs(model)
    _, every = model.forward_intermediates(x)
    kept = model.prune_intermediate_layers([0, 1])
    assert kept == [0, 1]
    assert len(model.stages) == 2
    final, feats = model.forward_intermediates(x, indices=[0, 1])
    torch.testing.assert_close(feats[1], every[1])
    torch.testing.assert_close(final, every[1])


@pytest.mark.parametrize("name", MODELS)
def test_grad_checkpointing(name: str) -> None:
    """Same outputs and gradients with checkpointing, and the stages really are run again in backward."""
    model = create(name).train()
    x = inputs(model)

    def run() -> tuple[torch.Tensor, list[torch.Tensor], int]:
        calls = []
        # A pre-hook: non-reentrant checkpointing stops the recomputation early, before forward hooks run.
        handle = model.stages[0].register_forward_pre_hook(lambda *_: calls.append(1))
        model.zero_grad()
        torch.manual_seed(0)  # the same dropout mask in both runs
        out = model(x)
        out.sum().backward()
        handle.remove()
        return out.detach(), [p.grad.clone() for p in model.parameters()], len(calls)

    plain_out, plain_grads, plain_calls = run()
    model.set_grad_checkpointing(True)
    ckpt_out, ckpt_grads, ckpt_calls = run()
    torch.testing.assert_close(ckpt_out, plain_out)
    for a, b in zip(ckpt_grads, plain_grads, strict=True):
        torch.testing.assert_close(a, b)
    assert (plain_calls, ckpt_calls) == (1, 2)


@pytest.mark.parametrize("name", MODELS)
def test_group_matcher(name: str) -> None:
    model = create(name)
    arch = arch_of(name)
    names = [n for n, _ in model.named_parameters()]
    for coarse, expected_groups in ((True, len(arch.stages) + 2), (False, len(arch.block_specs()) + 2)):
        groups = group_parameters(model, model.group_matcher(coarse=coarse))
        assert len(groups) == expected_groups
        grouped = [n for g in groups.values() for n in g]
        assert sorted(grouped) == sorted(names)  # every parameter in exactly one group
        assert all(n.startswith("stem.") for n in groups[0])
        assert {n for n in names if n.startswith("head.")} <= set(groups[max(groups)])
        assert grouped == names  # groups follow network depth (what layer-wise LR decay needs)


@pytest.mark.parametrize("name", MODELS)
def test_load_checkpoint(name: str, tmp_path: Path) -> None:
    trained = create(name, seed=0)
    path = tmp_path / "model.pth"
    torch.save(trained.state_dict(), path)
    fresh = create(name, seed=1)
    x = inputs(trained)
    assert not torch.allclose(fresh(x), trained(x))
    load_checkpoint(fresh, str(path))
    torch.testing.assert_close(fresh.eval()(x), trained(x), rtol=0, atol=0)


# -- export ---------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("name", MODELS)
def test_torchscript_trace(name: str) -> None:
    model = create(name)
    x = inputs(model)
    traced = torch.jit.trace(model, x)
    other = inputs(model, batch=1)
    torch.testing.assert_close(traced(other), model(other))


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("name", MODELS)
def test_onnx_export_matches_onnxruntime(name: str, tmp_path: Path) -> None:
    model = create(name)
    x = inputs(model)
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(
        model, (x,), str(path), dynamo=False, input_names=["x"], output_names=["logits"],
        dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
    )  # fmt: skip
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    other = inputs(model, batch=3)
    (logits,) = session.run(None, {"x": other.numpy()})
    expected = model(other).detach().numpy()
    assert expected.std() > 1e-3  # a meaningful comparison, not zeros against zeros
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-4)


# -- the block guide's example (docs/guides/blocks.md) ---------------------------------

BLOCK_GUIDE = REPO_ROOT / "docs" / "guides" / "blocks.md"


def guide_example(heading: str = "## Add your own block") -> str:
    """The first ```python block after ``heading`` in the block guide."""
    text = BLOCK_GUIDE.read_text()
    assert heading in text, f"{BLOCK_GUIDE.name} has no {heading!r} section"
    match = re.search(r"```python\n(.*?)```", text.split(heading, 1)[1], re.DOTALL)
    assert match, f"no python code block after {heading!r} in {BLOCK_GUIDE.name}"
    return match.group(1)


@pytest.mark.usefixtures("isolated_registry")
def test_guide_example_runs() -> None:
    code = compile(guide_example(), str(BLOCK_GUIDE), "exec")
    for _ in range(2):  # override=True makes running it twice in one process fine
        namespace: dict[str, object] = {"__name__": "guide_example"}
        exec(code, namespace)
    model = namespace["model"]
    assert isinstance(model, BlockNet)
    user_blocks = tuple(
        v
        for v in namespace.values()
        if isinstance(v, type) and issubclass(v, nn.Module) and v.__module__ == "guide_example"
    )
    assert user_blocks, "the guide's example defines no block"
    assert any(isinstance(m, user_blocks) for m in model.modules()), "the guide's example does not use its block"
