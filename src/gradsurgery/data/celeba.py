"""CelebA's 40 binary attributes as 40 tasks (shared input), from the user's files.

Files under ``root`` (``root/celeba`` is also tried), as distributed by Liu et al. (ICCV 2015):

* ``list_attr_celeba.txt`` — line 1: the number of images; line 2: the attribute names separated
  by spaces; then one line per image: ``000001.jpg`` followed by one value per attribute, ``1``
  (present) or ``-1`` (absent), separated by one or more spaces;
* ``list_eval_partition.txt`` — one line per image: ``000001.jpg 0`` (0 train, 1 val, 2 test:
  162,770 / 19,867 / 19,962 images);
* ``img_align_celeba/*.jpg`` — the aligned and cropped 178×218 (W×H) JPEGs.

Targets: float32 1. (attribute present) or 0. (absent), ready for ``binary_cross_entropy_with_logits``.
Inputs: ``(3, H, W)`` float32 in [0, 1]; ``size`` resizes with PIL's bilinear filter (Sener &
Koltun 2018 used 64×64). ``attributes`` selects a subset of the tasks (default: all 40, in file
order). Images are read lazily (each ``__getitem__`` opens one JPEG); the text files are parsed and
validated at construction.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from gradsurgery.data.base import MultiTaskDataset, Transform
from gradsurgery.data.errors import DatasetFormatError, DatasetNotFoundError
from gradsurgery.data.spec import BenchmarkSpec, binary_task

__all__ = [
    "CELEBA_ATTRIBUTES",
    "CelebA",
    "celeba_spec",
    "read_attributes",
    "read_partition",
]

Split = Literal["train", "val", "test"]
_SPLITS = {"train": 0, "val": 1, "test": 2}

CELEBA_ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows",
    "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup",
    "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard",
    "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks", "Sideburns",
    "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)  # fmt: skip
"""The 40 attributes of ``list_attr_celeba.txt``, in file order."""


def celeba_spec(
    attributes: Sequence[str] = CELEBA_ATTRIBUTES, size: tuple[int, int] = (218, 178)
) -> BenchmarkSpec:
    return BenchmarkSpec(
        "celeba",
        tuple(binary_task(a) for a in attributes),
        "shared",
        (3, *size),
        "CelebA (Liu et al. 2015): one binary task per face attribute (Sener & Koltun 2018).",
    )


def _lines(path: Path, what: str) -> list[str]:
    if not path.is_file():
        raise DatasetNotFoundError(f"CelebA: {what} {path} not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DatasetFormatError(f"{path}: not a text file ({e})") from e
    return [line for line in text.splitlines() if line.strip()]


def read_attributes(path: str | Path) -> tuple[list[str], list[str], np.ndarray]:
    """Parse ``list_attr_celeba.txt``: ``(image names, attribute names, (N, K) int8 in {-1, 1})``."""
    path = Path(path)
    lines = _lines(path, "attribute file")
    expected = "line 1: the image count; line 2: the attribute names; then '<name>.jpg' + ±1 values"
    if len(lines) < 2:
        raise DatasetFormatError(f"{path}: too short; expected {expected}")
    try:
        count = int(lines[0].strip())
    except ValueError:
        raise DatasetFormatError(
            f"{path}: line 1 should be the number of images, got {lines[0][:60]!r}; "
            f"expected {expected}"
        ) from None
    names = lines[1].split()
    if len(set(names)) != len(names) or not names:
        raise DatasetFormatError(f"{path}: line 2 should list distinct attribute names")
    rows = lines[2:]
    if len(rows) != count:
        raise DatasetFormatError(f"{path}: line 1 announces {count} images, {len(rows)} follow")
    k = len(names)
    images: list[str] = []
    rests: list[str] = []
    for line in rows:
        head, _, rest = line.strip().partition(" ")
        images.append(head)
        rests.append(rest)
    text = " ".join(rests)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = np.fromstring(text, dtype=np.int64, sep=" ")  # fast path
    except (AttributeError, ValueError):  # a NumPy without text-mode fromstring
        values = np.array([int(v) if v in ("1", "-1") else 0 for v in text.split()], np.int64)
    if values.size != count * k or not np.isin(values, (-1, 1)).all():
        for i, (head, rest) in enumerate(zip(images, rests, strict=True)):  # find the culprit
            fields = rest.split()
            if len(fields) != k or any(f not in ("1", "-1") for f in fields):
                raise DatasetFormatError(
                    f"{path}: line {i + 3} ({head!r}) should hold {k} values, each 1 or -1; "
                    f"got {len(fields)} values: {' '.join(fields[:8])}..."
                )
        raise DatasetFormatError(f"{path}: could not parse the attribute values")
    if len(set(images)) != len(images):
        raise DatasetFormatError(f"{path}: some image names appear twice")
    return images, names, values.reshape(count, k).astype(np.int8)


def read_partition(path: str | Path) -> dict[str, int]:
    """Parse ``list_eval_partition.txt``: image name → 0 (train), 1 (val) or 2 (test)."""
    path = Path(path)
    out: dict[str, int] = {}
    for i, line in enumerate(_lines(path, "partition file")):
        fields = line.split()
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise DatasetFormatError(
                f"{path}: line {i + 1} should be '<image name> <0|1|2>', got {line[:60]!r}"
            )
        out[fields[0]] = int(fields[1])
    return out


class CelebA(MultiTaskDataset):
    """CelebA attributes. Item: ``(image (3, H, W) float32, {attribute: float32 0./1.})``.

    Args:
        root: folder holding the two text files and ``img_align_celeba/``.
        split: ``"train"``, ``"val"`` or ``"test"`` (``list_eval_partition.txt``).
        attributes: the tasks (default all 40, file order).
        size: ``(H, W)`` or a side; resize with bilinear filtering. None keeps 218×178.
        transform: applied to the float image.
    """

    def __init__(
        self,
        root: str | Path,
        split: Split = "train",
        *,
        attributes: Sequence[str] | None = None,
        size: int | tuple[int, int] | None = None,
        transform: Transform | None = None,
    ) -> None:
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {tuple(_SPLITS)}, got {split!r}")
        root = Path(root).expanduser()
        if not (root / "list_attr_celeba.txt").is_file() and (root / "celeba").is_dir():
            root = root / "celeba"
        images, names, values = read_attributes(root / "list_attr_celeba.txt")
        partition = read_partition(root / "list_eval_partition.txt")
        missing = [im for im in images if im not in partition]
        if missing:
            raise DatasetFormatError(
                f"{root / 'list_eval_partition.txt'}: no split for {len(missing)} images of the "
                f"attribute file, e.g. {missing[:3]}"
            )
        chosen = list(names) if attributes is None else list(attributes)
        unknown = [a for a in chosen if a not in names]
        if unknown:
            raise ValueError(f"unknown CelebA attributes {unknown}; the file has {names}")
        cols = [names.index(a) for a in chosen]
        keep = np.array([partition[im] == _SPLITS[split] for im in images], dtype=bool)
        self.image_dir = root / "img_align_celeba"
        if not self.image_dir.is_dir():
            raise DatasetNotFoundError(f"CelebA: image folder {self.image_dir} not found")
        self.files = [im for im, k in zip(images, keep, strict=True) if k]
        if self.files and not (self.image_dir / self.files[0]).is_file():
            raise DatasetNotFoundError(f"CelebA: image {self.image_dir / self.files[0]} not found")
        self.labels = torch.from_numpy((values[keep][:, cols] > 0).astype(np.float32))
        self.size = (size, size) if isinstance(size, int) else size
        self.transform = transform
        shape = self.size or (self._first_image_size() if self.files else (218, 178))
        self.spec = celeba_spec(tuple(chosen), shape)

    def _first_image_size(self) -> tuple[int, int]:
        from PIL import Image, UnidentifiedImageError

        path = self.image_dir / self.files[0]
        try:
            with Image.open(path) as im:  # reads the header only
                width, height = im.size
        except (UnidentifiedImageError, OSError) as e:
            raise DatasetFormatError(f"{path}: not a readable JPEG image ({e})") from e
        return height, width

    def __len__(self) -> int:
        return len(self.files)

    def load_image(self, index: int) -> Tensor:
        """One image as ``(3, H, W)`` float32 in [0, 1] (resized, before ``transform``)."""
        from PIL import Image, UnidentifiedImageError

        path = self.image_dir / self.files[index]
        try:
            with Image.open(path) as raw:
                im = raw.convert("RGB")
                if self.size is not None:
                    im = im.resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR)
                arr = np.asarray(im, dtype=np.uint8)
        except FileNotFoundError as e:
            raise DatasetNotFoundError(f"CelebA: image {path} not found") from e
        except (UnidentifiedImageError, OSError) as e:
            raise DatasetFormatError(f"{path}: not a readable JPEG image ({e})") from e
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).to(torch.float32) / 255.0

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        x = self.load_image(index)
        if self.transform is not None:
            x = self.transform(x)
        row = self.labels[index]
        return x, {name: row[j] for j, name in enumerate(self.spec.task_names)}
