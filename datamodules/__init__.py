"""In-memory LightningDataModules for toy generative-modelling experiments."""

from datamodules.base import SampleRequests, ToyDataModule
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
    "CheckerboardDataModule",
    "CirclesDataModule",
    "EightGaussiansDataModule",
    "GaussianMixture1DDataModule",
    "MoonsDataModule",
    "SampleRequests",
    "SwissRollDataModule",
    "ToyDataModule",
    "TwoModesDataModule",
]
