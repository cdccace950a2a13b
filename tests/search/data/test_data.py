"""Datasets: digits, synthetic, idx (Fashion-MNIST), image folders and CIFAR's on-disk format → normalized splits."""

from __future__ import annotations

import dataclasses
import gzip
import os
import pickle
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from PIL import Image

from blocknas.blocks import ConfigError, parse
from blocknas.search.data import (
    IDX_DATASETS,
    DataConfig,
    DataError,
    DataSplit,
    clear_data_cache,
    fetch_dataset,
    load_data,
    read_data_section,
    read_idx,
    standard_places,
)
from blocknas.search.data import fetch as fetch_module

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


def test_max_val_samples_subsamples_val_only() -> None:
    full = load_data(DataConfig(), input_size=(8, 8))
    split = load_data(DataConfig(max_val_samples=50), input_size=(8, 8))
    assert len(split.y_train) == 1438 and torch.equal(split.y_train, full.y_train)
    assert len(split.y_val) == 50 and torch.bincount(split.y_val, minlength=10).min() >= 4


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
    _write_pngs(tmp_path / "val", per_class=2, classes=("cat", "dog", "emu"))
    split = load_data(DataConfig(name="imagefolder", root=str(tmp_path)), input_size=(8, 12))
    assert split.x_train.shape == (12, 3, 8, 12) and split.x_val.shape == (6, 3, 8, 12)
    assert split.classes == ("cat", "dog", "emu") and split.num_classes == 3
    assert split.y_val.tolist() == [0, 0, 1, 1, 2, 2]  # a val split missing a class: tests/search/test_safety.py
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

    _write_fake_cifar10(tmp_path, per_batch=10)  # every class in every batch: a split may not miss one
    # The fake files cannot match the real archive's MD5s; everything else is torchvision's loader.
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)
    split = load_data(DataConfig(name="cifar10", root=str(tmp_path)), input_size=(32, 32))
    assert split.x_train.shape == (50, 3, 32, 32) and split.x_val.shape == (10, 3, 32, 32)
    assert split.classes[:2] == ("class0", "class1") and split.num_classes == 10
    red = split.x_train[:, 0, 5, 5] * split.std[0] + split.mean[0]
    assert torch.allclose(red, split.y_train.float() * 20 / 255, atol=1e-5)
    blue = split.x_train[:, 2] * split.std[2] + split.mean[2]
    assert torch.allclose(blue[:, 0, 0], torch.ones(50), atol=1e-5) and blue[:, 1, 1].abs().max() < 1e-5
    clear_data_cache()
    small = load_data(DataConfig(name="cifar10", root=str(tmp_path)), input_size=(16, 16), in_chans=1)
    assert small.x_train.shape == (50, 1, 16, 16)


def test_cifar_corrupted_files(tmp_path: Path) -> None:
    _write_fake_cifar10(tmp_path, per_batch=2)
    with pytest.raises(DataError, match="incomplete or corrupted"):
        load_data(DataConfig(name="cifar10", root=str(tmp_path)), input_size=(32, 32))


# -- config -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "path", "message"),
    [
        ({"name": "emnist"}, "data.name", "is not one of"),
        ({"name": "imagefolder"}, "data.root", "needs a root"),
        ({"name": "cifar10"}, "data.root", "needs a root"),
        ({"val_fraction": 1.0}, "data.val_fraction", "strictly between 0 and 1"),
        ({"val_fraction": 0}, "data.val_fraction", "strictly between 0 and 1"),
        ({"download": True}, "data.download", "only to cifar"),
        ({"name": "synthetic", "num_samples": 5}, "data.num_samples", "too few"),
        ({"max_train_samples": 0}, "data.max_train_samples", ">= 1"),
        ({"max_val_samples": 0}, "data.max_val_samples", ">= 1"),
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


def test_download_allowed_for_idx_datasets() -> None:
    assert parse(DataConfig, {"name": "fashion_mnist", "download": True}).download
    assert DataConfig(name="kmnist").root is None  # idx datasets search the standard places


# -- idx: Fashion-MNIST, MNIST, KMNIST --------------------------------------------------

IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
DEBIAN = Path("/usr/share/datasets/fashion-mnist")


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_idx(path: Path, array: np.ndarray, *, gz: bool) -> Path:
    path = path.with_name(path.name + ".gz") if gz else path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(_idx_bytes(array)) if gz else _idx_bytes(array))
    return path


def _write_idx_dataset(folder: Path, *, n_train: int = 40, n_val: int = 10, gz: bool = True) -> None:
    """The four files; each image's pixels are 20 × its label, so a reader's output is checkable."""
    for prefix, n in (("train", n_train), ("t10k", n_val)):
        labels = np.arange(n) % 10
        images = np.repeat(labels[:, None, None] * 20, 28 * 28).reshape(n, 28, 28)
        _write_idx(folder / f"{prefix}-images-idx3-ubyte", images, gz=gz)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, gz=gz)


@pytest.fixture
def no_standard_places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Standard places under tmp_path: $BLOCKNAS_DATA, $XDG_CACHE_HOME and a fake Debian folder."""
    places = {"env": tmp_path / "env", "cache": tmp_path / "xdg", "debian": tmp_path / "debian"}
    monkeypatch.setenv("BLOCKNAS_DATA", str(places["env"]))
    monkeypatch.setenv("XDG_CACHE_HOME", str(places["cache"]))
    fashion = dataclasses.replace(IDX_DATASETS["fashion_mnist"], system_places=(places["debian"],))
    monkeypatch.setitem(IDX_DATASETS, "fashion_mnist", fashion)
    return places


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_plain_and_gzipped(tmp_path: Path, gz: bool) -> None:
    images = np.arange(3 * 4 * 5).reshape(3, 4, 5) % 256
    path = _write_idx(tmp_path / "images-idx3-ubyte", images, gz=gz)
    assert np.array_equal(read_idx(path, ndim=3), images) and read_idx(path, ndim=3).dtype == np.uint8


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("labels_as_images", r"magic number 0x00000801, expected 0x00000803"),
        ("not_idx", r"magic number .* expected 0x00000803"),
        ("truncated", r"holds 59 data bytes but its header \(3, 4, 5\) needs 60"),
        ("short_header", r"truncated: 8 bytes, shorter than its 16-byte header"),
        ("truncated_gzip", r"cannot read"),
    ],
)
def test_read_idx_damaged_file(tmp_path: Path, damage: str, message: str) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    data = _idx_bytes(np.zeros((3, 4, 5)))
    if damage == "labels_as_images":
        data = _idx_bytes(np.zeros(3))
    if damage == "not_idx":
        data = b"<html>404</html>"
    if damage == "truncated":
        data = data[:-1]
    if damage == "short_header":
        data = data[:8]
    if damage == "truncated_gzip":
        data = gzip.compress(data)[:-10]
    path.write_bytes(data)
    with pytest.raises(DataError, match=message) as info:
        read_idx(path, ndim=3)
    assert str(path) in str(info.value)


def test_idx_label_count_must_match_image_count(tmp_path: Path) -> None:
    _write_idx_dataset(tmp_path)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(9), gz=True)
    with pytest.raises(DataError, match=r"10 t10k images but 9 t10k labels"):
        load_data(DataConfig(name="mnist", root=str(tmp_path)), input_size=(28, 28))


def test_idx_label_out_of_range(tmp_path: Path) -> None:
    _write_idx_dataset(tmp_path)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.full(40, 12), gz=True)
    with pytest.raises(DataError, match=r"has label 12, but kmnist has only 10 classes"):
        load_data(DataConfig(name="kmnist", root=str(tmp_path)), input_size=(28, 28))


@pytest.mark.parametrize("layout", ["flat", "flat_plain", "torchvision"])
@pytest.mark.parametrize("name", ["fashion_mnist", "mnist", "kmnist"])
def test_idx_layouts(tmp_path: Path, layout: str, name: str) -> None:
    folder = tmp_path / IDX_DATASETS[name].torchvision_name / "raw" if layout == "torchvision" else tmp_path
    _write_idx_dataset(folder, gz=layout != "flat_plain")
    split = load_data(DataConfig(name=name, root=str(tmp_path)), input_size=(28, 28), in_chans=1)
    assert split.x_train.shape == (40, 1, 28, 28) and split.x_val.shape == (10, 1, 28, 28)  # the official split
    assert split.classes == IDX_DATASETS[name].classes and split.num_classes == 10
    pixels = split.x_train[:, 0, 14, 14] * split.std[0] + split.mean[0]
    assert torch.allclose(pixels, split.y_train.float() * 20 / 255, atol=1e-5)


def test_idx_resized_replicated_and_subsampled(tmp_path: Path) -> None:
    _write_idx_dataset(tmp_path, n_train=100, n_val=40)
    cfg = DataConfig(name="fashion_mnist", root=str(tmp_path), max_train_samples=30, max_val_samples=20, seed=1)
    split = load_data(cfg, input_size=(32, 32), in_chans=3)
    assert split.x_train.shape == (30, 3, 32, 32) and split.x_val.shape == (20, 3, 32, 32)
    assert torch.bincount(split.y_train).tolist() == [3] * 10 and torch.bincount(split.y_val).tolist() == [2] * 10
    assert torch.equal(split.x_train[:, 0], split.x_train[:, 2])
    clear_data_cache()
    assert torch.equal(load_data(cfg, input_size=(32, 32), in_chans=3).x_train, split.x_train)  # seeded


def test_standard_places_order(no_standard_places: dict[str, Path], tmp_path: Path) -> None:
    env, cache, debian = no_standard_places["env"], no_standard_places["cache"], no_standard_places["debian"]
    expected = [env / "fashion_mnist", cache / "blocknas" / "fashion_mnist", debian]
    assert standard_places("fashion_mnist") == expected
    assert standard_places("mnist") == [env / "mnist", cache / "blocknas" / "mnist"]  # no distro package
    _write_idx_dataset(debian, n_train=10)
    _write_idx_dataset(cache / "blocknas" / "fashion_mnist" / "FashionMNIST" / "raw", n_train=20)
    _write_idx_dataset(env / "fashion_mnist", n_train=30)
    for place, n_train in ((env, 30), (cache, 20), (debian, 10)):
        assert len(load_data(DataConfig(name="fashion_mnist"), input_size=(28, 28)).y_train) == n_train
        clear_data_cache()
        for path in place.rglob("train-images*"):
            path.unlink()


def test_standard_places_default_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BLOCKNAS_DATA", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert standard_places("fashion_mnist") == [Path.home() / ".cache" / "blocknas" / "fashion_mnist", DEBIAN]


def test_missing_idx_dataset_names_every_place_and_both_fixes(no_standard_places: dict[str, Path]) -> None:
    with pytest.raises(DataError) as info:
        load_data(DataConfig(name="fashion_mnist"), input_size=(28, 28))
    text = str(info.value)
    for place in standard_places("fashion_mnist"):
        assert f"{place} and {place / 'FashionMNIST' / 'raw'}" in text
    assert "apt-get install dataset-fashion-mnist" in text and "download: true" in text
    assert "train-images-idx3-ubyte" in text and "$BLOCKNAS_DATA/fashion_mnist/" in text
    with pytest.raises(DataError) as info:
        load_data(DataConfig(name="mnist", root=str(no_standard_places["env"])), input_size=(28, 28))
    assert "apt-get" not in str(info.value) and str(no_standard_places["env"] / "MNIST" / "raw") in str(info.value)


class _FakeTorchvisionDownload:
    """Stands in for ``torchvision.datasets.FashionMNIST(root, download=True)``: writes torchvision's layout."""

    roots: ClassVar[list[str]] = []

    def __init__(self, root: str, download: bool) -> None:
        assert download
        type(self).roots.append(root)
        _write_idx_dataset(Path(root) / "FashionMNIST" / "raw", n_train=20)


def test_download_true_fetches_into_the_cache(
    no_standard_places: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", _FakeTorchvisionDownload)
    monkeypatch.setattr(_FakeTorchvisionDownload, "roots", [])
    split = load_data(DataConfig(name="fashion_mnist", download=True), input_size=(28, 28))
    cache = no_standard_places["cache"] / "blocknas" / "fashion_mnist"
    assert len(split.y_train) == 20 and _FakeTorchvisionDownload.roots == [str(cache)]
    clear_data_cache()
    load_data(DataConfig(name="fashion_mnist", download=True), input_size=(28, 28))
    assert len(_FakeTorchvisionDownload.roots) == 1  # found in the cache: not fetched twice


def test_download_failure_is_a_data_error(no_standard_places: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets

    def offline(root: str, download: bool) -> None:
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets, "KMNIST", offline)
    with pytest.raises(DataError, match=r"kmnist: download into .*xdg/blocknas/kmnist failed \(.*name resolution"):
        load_data(DataConfig(name="kmnist", download=True), input_size=(28, 28))


@pytest.mark.parametrize("apt", ["works", "fails", "unavailable"])
def test_fetch_dataset_prefers_apt_then_torchvision(
    no_standard_places: dict[str, Path], monkeypatch: pytest.MonkeyPatch, apt: str
) -> None:
    import torchvision.datasets

    def apt_install(package: str) -> None:
        assert package == "dataset-fashion-mnist"
        if apt == "fails":
            raise DataError("`apt-get install -y -q dataset-fashion-mnist` failed (exit 100): no network")
        _write_idx_dataset(no_standard_places["debian"])

    monkeypatch.setattr(fetch_module, "_can_apt", lambda: apt != "unavailable")
    monkeypatch.setattr(fetch_module, "_apt_install", apt_install)
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", _FakeTorchvisionDownload)
    message = fetch_dataset(DataConfig(name="fashion_mnist"))
    if apt == "works":
        assert "installed Debian's package dataset-fashion-mnist with apt-get" in message
    else:
        assert "downloaded with torchvision into" in message and "xdg/blocknas/fashion_mnist" in message
    assert "found at" in fetch_dataset(DataConfig(name="fashion_mnist"))
    assert fetch_dataset(DataConfig()) == "digits: built in, no files needed"


def test_read_data_section(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text("name: x\nspace: mobile32\ndata: {name: fashion_mnist, max_train_samples: 100}\n")
    assert read_data_section(path) == DataConfig(name="fashion_mnist", max_train_samples=100)
    path.write_text("data: {name: emnist}\n")
    with pytest.raises(ConfigError, match="is not one of") as info:
        read_data_section(path)
    assert info.value.path == "data.name"


def test_real_fashion_mnist_brief_training() -> None:
    """The Debian package's files, a 2,000-image subsample, one epoch of a small CNN: well above chance (0.63 seen)."""
    if not (DEBIAN / "train-images-idx3-ubyte.gz").is_file():
        message = f"Fashion-MNIST is not installed at {DEBIAN} (apt-get install dataset-fashion-mnist)"
        if os.environ.get("BLOCKNAS_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{message}, and BLOCKNAS_REQUIRE_SERVICES=1 requires it")
        pytest.skip(message)
    import timm

    from blocknas.search.training import TrainConfig, seed_everything, train_briefly

    cfg = DataConfig(name="fashion_mnist", root=str(DEBIAN), max_train_samples=2000)
    data = load_data(cfg, input_size=(28, 28), in_chans=1)
    assert len(data.y_train) == 2000 and len(data.y_val) == 10000
    seed_everything(0)
    arch = {
        "stem": {"out_chs": 16},
        "stages": [
            {"block": "standard", "out_chs": 32, "stride": 2},
            {"block": "standard", "out_chs": 64, "stride": 2},
        ],
        "in_chans": 1,
        "num_classes": 10,
        "input_size": [28, 28],
    }
    model = timm.create_model("blocknet", arch=arch)
    result = train_briefly(model, data, TrainConfig(epochs=1, batch_size=16, lr=1e-2), seed=0)
    assert result.val_accuracy > 0.5, result.val_accuracy  # chance is 0.1
