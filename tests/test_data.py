"""Datasets: digits, synthetic, image folders and CIFAR's on-disk format → normalized in-memory splits."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from blocknas.blocks import ConfigError, parse
from blocknas.search.data import DataConfig, DataError, DataSplit, clear_data_cache, load_data

DIGITS_PER_CLASS = (178, 182, 177, 183, 181, 182, 181, 179, 174, 180)


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_data_cache()
    yield
    clear_data_cache()


def _assert_normalized(split: DataSplit) -> None:
    per_channel = split.x_train.transpose(0, 1).flatten(1)
    assert torch.allclose(per_channel.mean(dim=1), torch.zeros(split.in_chans), atol=1e-4)
    assert torch.allclose(per_channel.std(dim=1, correction=0), torch.ones(split.in_chans), atol=1e-3)


@pytest.mark.parametrize("size", [16, 32])
@pytest.mark.parametrize("in_chans", [1, 3])
def test_digits_shapes_and_normalization(size: int, in_chans: int) -> None:
    split = load_data(DataConfig(), input_size=(size, size), in_chans=in_chans)
    assert split.x_train.shape == (1438, in_chans, size, size)
    assert split.x_val.shape == (359, in_chans, size, size)
    assert split.x_train.dtype == torch.float32 and split.y_train.dtype == torch.int64
    assert (split.num_classes, split.in_chans, split.name, split.input_size) == (10, in_chans, "digits", (size, size))
    assert len(split.mean) == len(split.std) == in_chans
    _assert_normalized(split)
    if in_chans == 3:  # grayscale replicated
        assert torch.equal(split.x_train[:, 0], split.x_train[:, 2])


def test_digits_split_is_stratified() -> None:
    split = load_data(DataConfig(val_fraction=0.2), input_size=(8, 8))
    val_counts = torch.bincount(split.y_val, minlength=10).tolist()
    train_counts = torch.bincount(split.y_train, minlength=10).tolist()
    for c, total in enumerate(DIGITS_PER_CLASS):
        assert val_counts[c] + train_counts[c] == total
        assert abs(val_counts[c] - 0.2 * total) <= 1, (c, val_counts[c], total)


def test_digits_deterministic_per_seed() -> None:
    first = load_data(DataConfig(seed=3), input_size=(16, 16))
    clear_data_cache()
    again = load_data(DataConfig(seed=3), input_size=(16, 16))
    other = load_data(DataConfig(seed=4), input_size=(16, 16))
    assert first is not again
    assert torch.equal(first.x_train, again.x_train) and torch.equal(first.y_val, again.y_val)
    assert not torch.equal(first.y_train, other.y_train)


def test_cache_returns_same_split() -> None:
    assert load_data(DataConfig(), input_size=(16, 16)) is load_data(DataConfig(), input_size=[16, 16])


def test_synthetic_deterministic_and_shaped() -> None:
    cfg = DataConfig(name="synthetic", num_samples=200, num_classes=4, seed=1)
    first = load_data(cfg, input_size=(12, 10), in_chans=3)
    clear_data_cache()
    again = load_data(cfg, input_size=(12, 10), in_chans=3)
    other = load_data(DataConfig(name="synthetic", num_samples=200, num_classes=4, seed=2), input_size=(12, 10))
    assert first.x_train.shape == (160, 3, 12, 10) and first.x_val.shape == (40, 3, 12, 10)
    assert first.num_classes == 4 and torch.bincount(first.y_val).tolist() == [10, 10, 10, 10]
    assert torch.equal(first.x_train, again.x_train) and torch.equal(first.y_train, again.y_train)
    assert not torch.equal(first.x_train, other.x_train)
    _assert_normalized(first)


def test_max_train_samples_subsamples_train_only() -> None:
    split = load_data(DataConfig(max_train_samples=100), input_size=(8, 8))
    assert len(split.y_train) == 100 and len(split.y_val) == 359
    assert torch.bincount(split.y_train, minlength=10).min() >= 9


# -- image folders ----------------------------------------------------------------------

COLORS = {"cat": (255, 0, 0), "dog": (0, 255, 0), "emu": (0, 0, 255)}


def _write_pngs(folder: Path, per_class: int, classes: tuple[str, ...] = tuple(COLORS)) -> None:
    for name in classes:
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.full((20, 30, 3), COLORS[name], dtype=np.uint8)
            pixels[0, 0] = (i, i, i)
            Image.fromarray(pixels).save(folder / name / f"{i}.png")


def test_imagefolder_with_train_and_val(tmp_path: Path) -> None:
    _write_pngs(tmp_path / "train", per_class=4)
    _write_pngs(tmp_path / "val", per_class=2, classes=("cat", "emu"))
    split = load_data(DataConfig(name="imagefolder", root=str(tmp_path)), input_size=(8, 12))
    assert split.x_train.shape == (12, 3, 8, 12) and split.x_val.shape == (4, 3, 8, 12)
    assert split.classes == ("cat", "dog", "emu") and split.num_classes == 3
    assert split.y_val.tolist() == [0, 0, 2, 2]
    red = split.x_train[split.y_train == 0][:, :, 4, 6]  # away from the marked corner pixel
    assert torch.all(red[:, 0] > red[:, 1])


def test_imagefolder_single_folder_split(tmp_path: Path) -> None:
    _write_pngs(tmp_path, per_class=5)
    split = load_data(
        DataConfig(name="imagefolder", root=str(tmp_path), val_fraction=0.2), input_size=(8, 8), in_chans=1
    )
    assert split.x_train.shape == (12, 1, 8, 8) and split.x_val.shape == (3, 1, 8, 8)
    assert torch.bincount(split.y_val).tolist() == [1, 1, 1]


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("missing", "does not exist"),
        ("empty", "no class subfolders"),
        ("empty_class", "no images in"),
        ("val_extra_class", "has classes not in"),
        ("val_without_train", "has val/ but no train/"),
    ],
)
def test_imagefolder_errors_name_the_path(tmp_path: Path, layout: str, message: str) -> None:
    root = tmp_path / "data"
    if layout != "missing":
        root.mkdir()
    if layout == "empty_class":
        _write_pngs(root, per_class=2)
        (root / "zebra").mkdir()
    if layout == "val_extra_class":
        _write_pngs(root / "train", per_class=2, classes=("cat",))
        _write_pngs(root / "val", per_class=2, classes=("cat", "dog"))
    if layout == "val_without_train":
        _write_pngs(root / "val", per_class=2)
    with pytest.raises(DataError, match=message) as info:
        load_data(DataConfig(name="imagefolder", root=str(root)), input_size=(8, 8))
    assert str(root) in str(info.value)


def test_imagefolder_bad_image(tmp_path: Path) -> None:
    _write_pngs(tmp_path, per_class=2)
    (tmp_path / "cat" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"cannot decode .*broken\.png"):
        load_data(DataConfig(name="imagefolder", root=str(tmp_path)), input_size=(8, 8))


# -- CIFAR ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_missing_files_says_where_and_how(tmp_path: Path, name: str) -> None:
    with pytest.raises(DataError) as info:
        load_data(DataConfig(name=name, root=str(tmp_path)), input_size=(32, 32))
    text = str(info.value)
    assert str(tmp_path) in text and "download: true" in text
    assert ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python") in text


def _write_fake_cifar10(root: Path, per_batch: int) -> None:
    """torchvision's layout: pickled dicts with uint8 N×3072 rows (R, G, B planes) and labels."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for b, name in enumerate(names):
        labels = [(b + i) % 10 for i in range(per_batch)]
        data = np.zeros((per_batch, 3, 32, 32), dtype=np.uint8)
        data[:, 0] = np.array(labels, dtype=np.uint8)[:, None, None] * 20  # red plane encodes the label
        data[:, 2, 0, 0] = 255
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data.reshape(per_batch, 3072), "labels": labels}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)


def test_cifar10_reads_torchvision_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.cifar as tv_cifar

    _write_fake_cifar10(tmp_path, per_batch=6)
    # The fake files cannot match the real archive's MD5s; everything else is torchvision's loader.
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)
    split = load_data(DataConfig(name="cifar10", root=str(tmp_path)), input_size=(32, 32))
    assert split.x_train.shape == (30, 3, 32, 32) and split.x_val.shape == (6, 3, 32, 32)
    assert split.classes[:2] == ("class0", "class1") and split.num_classes == 10
    red = split.x_train[:, 0, 5, 5] * split.std[0] + split.mean[0]
    assert torch.allclose(red, split.y_train.float() * 20 / 255, atol=1e-5)
    blue = split.x_train[:, 2] * split.std[2] + split.mean[2]
    assert torch.allclose(blue[:, 0, 0], torch.ones(30), atol=1e-5) and blue[:, 1, 1].abs().max() < 1e-5
    clear_data_cache()
    small = load_data(DataConfig(name="cifar10", root=str(tmp_path)), input_size=(16, 16), in_chans=1)
    assert small.x_train.shape == (30, 1, 16, 16)


def test_cifar_corrupted_files(tmp_path: Path) -> None:
    _write_fake_cifar10(tmp_path, per_batch=2)
    with pytest.raises(DataError, match="incomplete or corrupted"):
        load_data(DataConfig(name="cifar10", root=str(tmp_path)), input_size=(32, 32))


# -- config -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "path", "message"),
    [
        ({"name": "mnist"}, "data.name", "is not one of"),
        ({"name": "imagefolder"}, "data.root", "needs a root"),
        ({"name": "cifar10"}, "data.root", "needs a root"),
        ({"val_fraction": 1.0}, "data.val_fraction", "strictly between 0 and 1"),
        ({"val_fraction": 0}, "data.val_fraction", "strictly between 0 and 1"),
        ({"download": True}, "data.download", "only to cifar"),
        ({"name": "synthetic", "num_samples": 5}, "data.num_samples", "too few"),
        ({"max_train_samples": 0}, "data.max_train_samples", ">= 1"),
    ],
)
def test_config_errors_name_the_key(data: dict, path: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse(DataConfig, data, path="data")
    assert info.value.path == path


def test_load_data_validates_configs_built_in_code() -> None:
    with pytest.raises(ConfigError, match="root"):
        load_data(DataConfig(name="imagefolder"), input_size=(8, 8))


def test_config_parses_from_yaml_data() -> None:
    cfg = parse(DataConfig, {"name": "cifar10", "root": "~/data", "download": True, "max_train_samples": 5000})
    assert cfg == DataConfig(name="cifar10", root="~/data", download=True, max_train_samples=5000)
