"""LightningDataModules: in-memory toy sets, 8x8 digits, torchvision image sets, image folders."""

from datamodules.base import SampleRequests, ToyDataModule
from datamodules.images import (
    CelebADataModule,
    CIFAR10DataModule,
    DigitsDataModule,
    FashionMNISTDataModule,
    ImageDataModule,
    ImageFolderDataModule,
    MNISTDataModule,
    SVHNDataModule,
    TorchvisionDataModule,
)
from datamodules.toy import (
    CheckerboardDataModule,
    CirclesDataModule,
    EightGaussiansDataModule,
    GaussianMixture1DDataModule,
    MoonsDataModule,
    SwissRollDataModule,
    TwoModesDataModule,
)

__all__ = [
    "CelebADataModule",
    "CheckerboardDataModule",
    "CIFAR10DataModule",
    "CirclesDataModule",
    "DigitsDataModule",
    "EightGaussiansDataModule",
    "FashionMNISTDataModule",
    "GaussianMixture1DDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "MNISTDataModule",
    "MoonsDataModule",
    "SampleRequests",
    "SVHNDataModule",
    "SwissRollDataModule",
    "TorchvisionDataModule",
    "ToyDataModule",
    "TwoModesDataModule",
]
