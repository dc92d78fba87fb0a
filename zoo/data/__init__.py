"""LightningDataModules for images and text, and the spec that tells models what data look like."""

from zoo.data.images import (
    CIFAR10DataModule,
    DigitsDataModule,
    FashionMNISTDataModule,
    ImageDataModule,
    ImageFolderDataModule,
    MNIST5kDataModule,
    MNISTDataModule,
)
from zoo.data.spec import DataSpec
from zoo.data.text import ShakespeareDataModule, TextDataModule, TextFileDataModule
from zoo.data.tokenizers import BPETokenizer, ByteTokenizer, CharTokenizer

__all__ = [
    "BPETokenizer",
    "ByteTokenizer",
    "CIFAR10DataModule",
    "CharTokenizer",
    "DataSpec",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "MNIST5kDataModule",
    "MNISTDataModule",
    "ShakespeareDataModule",
    "TextDataModule",
    "TextFileDataModule",
]
