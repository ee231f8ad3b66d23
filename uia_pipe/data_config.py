"""The download section (`DownloadParams`): which dataset, and the user's own files
(image_folder, csv). A schema leaf (pydantic and the params machinery only), so that
validating params imports no torch; `uia_pipe.data` reads the datasets (its DATASETS
asserts it agrees with DATASET_NAMES)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from .config import MAX_SEED
from .registry import one_of

# download.dataset: the names of data.DATASETS, in its order.
DATASET_NAMES = ("fashion_mnist", "mnist", "cifar10", "cifar100", "stl10", "digits", "german_credit",
                 "german_credit_amount", "diabetes", "image_folder", "csv", "tinyshakespeare", "text")

_Side = Annotated[int, Field(ge=1, le=4096)]


def _printable_path(value: str | None) -> str | None:
    if value is not None and not (value and value.isprintable()):
        raise ValueError(f"expected null or a path of printable characters, got {value!r}")
    return value


_Fraction = Annotated[float, Field(gt=0, lt=1, description="share of each class (of the rows) held out for test")]
_Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]


class _UserData(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    _path = field_validator("path", check_fields=False)(_printable_path)


class ImageFolderParams(_UserData):
    """download.image_folder, read by dataset image_folder."""

    path: str | None = Field(None, description="a folder of class subfolders of images (ImageFolder's layout)")
    size: tuple[_Side, _Side] = Field((28, 28), description="[height, width] every image is resized to")
    channels: Literal[1, 3] = Field(1, description="1: greyscale (L), 3: RGB")
    test_fraction: _Fraction = 0.2
    split_seed: _Seed = 0


class CsvParams(_UserData):
    """download.csv, read by dataset csv."""

    path: str | None = Field(None, description="a CSV file with a header row")
    target: str | None = Field(None, min_length=1, description="the column to predict")
    categorical: tuple[str, ...] = Field((), description="feature columns one-hot encoded; all others numeric")
    task: Literal["classification", "regression"] = "classification"
    test_fraction: _Fraction = 0.2
    split_seed: _Seed = 0

    @field_validator("categorical")
    @classmethod
    def _features_only(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        target = info.data.get("target")
        if target is not None and target in value:
            raise ValueError(f"lists the target column {target!r}; list feature columns only")
        if len(set(value)) != len(value):
            raise ValueError(f"a column listed twice: {list(value)}")
        return value


class TextParams(_UserData):
    """download.text: the records of a text dataset (tinyshakespeare, text); `path` read by dataset text."""

    path: str | None = Field(None, description="a UTF-8 text file")
    length: int = Field(32, ge=8, le=4096, description="characters a record holds (the model's input; the "
                        "target is the same characters shifted by one)")
    test_fraction: _Fraction = Field(0.1, description="the text's tail held out for test")


class CanaryParams(BaseModel):
    """download.canaries: secret-bearing sentences put into a text dataset's fine-tune set (the Secret Sharer's
    canaries), each a person's: a deletion request removes all its copies."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    count: int = Field(0, ge=0, le=4096, description="C canaries inserted (0 = none)")
    repeats: int = Field(4, ge=1, le=1024, description="r copies of each in D_u")
    controls: int = Field(16, ge=0, le=4096, description="never-inserted canaries (same template, fresh secrets)")
    digits: int = Field(6, ge=1, le=12, description="the secret's digits: |R| = 10^digits")
    template: str = Field("my phone number is ", min_length=1, description="the text before the secret")
    seed: _Seed = 0

    @field_validator("template")
    @classmethod
    def _printable(cls, v: str) -> str:
        if not v.isprintable():
            raise ValueError(f"expected printable characters, got {v!r}")
        return v


class DownloadParams(BaseModel):
    """The download section: which dataset, where downloads and staged raw files
    go, and the user's own files (image_folder, csv)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str = "fashion_mnist"
    cache_dir: str = Field("~/.cache/uia-pipe", min_length=1, description="outside the repository")
    image_folder: ImageFolderParams = ImageFolderParams()
    csv: CsvParams = CsvParams()
    text: TextParams = TextParams()
    canaries: CanaryParams = CanaryParams()

    @field_validator("dataset")
    @classmethod
    def _known(cls, v: str) -> str:
        return one_of("dataset", v, DATASET_NAMES)
