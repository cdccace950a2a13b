"""From an image folder to a deployed ONNX model: a found architecture trained on the search's own data,
exported with its preprocessing, and run by the "Deploy with ONNX Runtime" example of
docs/guides/train-export.md at batch 8."""

from __future__ import annotations

import json
import re
import runpy
from dataclasses import asdict
from pathlib import Path

import numpy as np
import onnx
import pytest
import timm
import torch
from PIL import Image
from safetensors import safe_open

from blocknas.blocks import ArchConfig
from blocknas.search.cli import main
from blocknas.search.data import DataConfig, Preprocessing, load_data
from blocknas.search.training import load_model, load_training_state
from tests.conftest import REPO_ROOT

CLASSES = ("disc", "ring", "stripes")
SIZE = 48
ARCH = {
    "stem": {"out_chs": 8, "stride": 2},
    "stages": [{"block": "separable", "out_chs": 16, "stride": 2}],
    "input_size": [SIZE, SIZE],
    "num_classes": len(CLASSES),
}


def _image(kind: str, i: int) -> Image.Image:
    """A 48×48 picture of ``kind``: RGB for even ``i``, grayscale for odd, with some noise."""
    yy, xx = np.mgrid[:SIZE, :SIZE] - SIZE / 2
    r = np.hypot(yy, xx)
    shape = {"disc": r < 12, "ring": (r > 10) & (r < 18), "stripes": (xx.astype(int) // 6) % 2 == 0}[kind]
    noise = np.random.default_rng(i).integers(0, 60, (SIZE, SIZE, 3))
    pixels = (np.where(shape[..., None], (220, 160 + 10 * i % 60, 40), (30, 30, 90)) + noise).clip(0, 255)
    image = Image.fromarray(pixels.astype(np.uint8))
    return image if i % 2 == 0 else image.convert("L")


def _write_folder(root: Path, per_class: dict[str, int]) -> None:
    for split, count in per_class.items():
        for kind in CLASSES:
            (root / split / kind).mkdir(parents=True)
            for i in range(count):
                _image(kind, i).save(root / split / kind / f"{i:02d}.png")


DEPLOY_GUIDE = REPO_ROOT / "docs" / "guides" / "train-export.md"


def guide_deploy_example() -> str:
    """The Python block under the deploy guide's "Deploy with ONNX Runtime" heading, as written there."""
    guide = DEPLOY_GUIDE.read_text()
    section = guide.split("## Deploy with ONNX Runtime", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f'{DEPLOY_GUIDE.name}\'s "Deploy with ONNX Runtime" section has no ```python block'
    return match.group(1)


def test_found_network_trains_on_its_data_exports_and_runs_in_onnxruntime_at_batch_8(
    in_tmp_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = in_tmp_dir / "shapes"
    _write_folder(folder, {"train": 12, "val": 4})
    searched = DataConfig(name="imagefolder", root=str(folder), max_train_samples=30)
    # a discovered config as a search exports it: the study's data in meta
    arch = ArchConfig.from_dict(ARCH).replace(meta={"study": "shapes", "trial": 3, "data": asdict(searched)})
    name = f"t0003_{arch.short_hash()}"
    (in_tmp_dir / "discovered" / "shapes").mkdir(parents=True)
    arch.to_yaml(in_tmp_dir / "discovered" / "shapes" / f"{name}.yaml")
    monkeypatch.setenv("BLOCKNAS_DISCOVERED", str(in_tmp_dir / "discovered"))

    # train: a unique prefix names the trial, the data is the study's (all of it), the folder the full name
    assert main(["train", "--from", "shapes/t0003", "--epochs", "1", "--no-tracking", "--no-progress"]) == 0
    out = in_tmp_dir / "runs" / "train" / name
    trained = ArchConfig.from_yaml(out / "arch.yaml")
    assert trained.meta["data"]["root"] == str(folder) and trained.meta["data"]["max_train_samples"] is None
    data = load_data(DataConfig(name="imagefolder", root=str(folder)), input_size=(SIZE, SIZE))
    assert len(data.y_train) == 36
    expected = Preprocessing.of(data)
    assert expected.classes == CLASSES and expected.input_size == (3, SIZE, SIZE)

    # the preprocessing travels with every artifact
    assert Preprocessing.from_meta(trained.meta) == expected
    assert Preprocessing.from_meta(load_training_state(out / "best.pt")["arch"]["meta"]) == expected
    with safe_open(str(out / "best.safetensors"), "pt") as weights:
        assert Preprocessing.from_metadata(weights.metadata()) == expected
    cfg = timm.create_model("blocknet", arch=str(out / "arch.yaml")).pretrained_cfg
    assert (cfg["mean"], cfg["std"], cfg["label_names"]) == (expected.mean, expected.std, CLASSES)

    assert main(["export", "--checkpoint", str(out / "best.safetensors"), "--formats", "onnx"]) == 0
    onnx_path = out / "export" / "model.onnx"
    assert Preprocessing.from_meta(ArchConfig.from_yaml(out / "export" / "arch.yaml").meta) == expected
    graph = onnx.load(onnx_path).graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # a named, dynamic batch axis
    capsys.readouterr()

    # the guide's example, verbatim, on 8 validation images
    script = in_tmp_dir / "deploy.py"
    script.write_text(guide_deploy_example())
    images = [p for kind in CLASSES for p in sorted((folder / "val" / kind).iterdir())][:8]  # the order load_data reads
    monkeypatch.setattr("sys.argv", [str(script), str(onnx_path), *map(str, images)])
    run = runpy.run_path(str(script), run_name="__main__")
    batch, logits = run["batch"], run["logits"]
    assert batch.shape == (8, 3, SIZE, SIZE)
    np.testing.assert_allclose(batch, data.x_val[:8].numpy(), atol=1e-5)  # the stored normalization is training's
    with torch.inference_mode():
        torch_logits = load_model(out / "arch.yaml", out / "best.safetensors")(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(logits, torch_logits, atol=1e-4, rtol=0)
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 8 and all(line.split()[-1] in CLASSES for line in printed)


def test_preprocessing_metadata_round_trips_as_json() -> None:
    """What the deploy guide promises a deployer: every metadata value parses as JSON."""
    data = load_data(DataConfig(name="synthetic", num_samples=64, num_classes=4), input_size=(8, 8), in_chans=1)
    record = Preprocessing.of(data)
    assert {k: json.loads(v) for k, v in record.metadata().items()} == record.to_dict()
    assert Preprocessing.from_metadata({**record.metadata(), "other": "not json"}) == record
