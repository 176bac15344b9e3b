"""Training data for `cnndsl train`: where it comes from, and whether it fits the network.

Every source ends as a `Dataset`: float32 NCHW arrays for train and test, integer labels
(one per image, or for segmentation one per pixel: N x H x W masks) and class names, held
in memory (the sources this trainer is for are small: digits, .npz files and image folders
of a few thousand images; a benchmark's synthetic data).
This module needs only NumPy; scikit-learn (digits) and Pillow (image folders) are
imported when those sources are used, so the NumPy backend trains without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..arrays import ArrayFileError, npz_names, read_npz
from ..errors import error
from ..shapes import Shape

TEST_FRACTION = 0.2
"""Share of each class held out for testing when a source has no test split of its own."""

SPLIT_SEED = 0
"""The train/test split is fixed, whatever --seed says, so that runs with different seeds
(and resumed runs) are scored on the same test images."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_SYNTHETIC_BYTES = 16 * 2**30
"""A `synthetic:N` request larger than this (float32) is refused before allocating it."""
MAX_DATA_BYTES = 16 * 2**30
"""Largest total of the arrays an .npz data file may hold (checked from their headers before reading)."""


@dataclass
class Dataset:
    """In-memory images (N, C, H, W) float32, standardised per channel with the training statistics."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    input_scale: float = 1.0
    """The factor the source's stored values were multiplied by before standardising (1/16 for
    digits' 0..16 grey levels, 1/255 for 8-bit images), so that the preprocessing saved with
    the weights takes images as the source stores them (cnndsl.weights.Preprocess)."""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def segmentation(self) -> bool:
        """Per-pixel labels (masks N x H x W) rather than one label per image."""
        return self.y_train.ndim == 3

    @property
    def mask_shape(self) -> tuple[int, ...]:
        """H x W of the masks; () for one label per image."""
        return tuple(self.y_train.shape[1:])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


def stratified_split(
    y: np.ndarray, test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices): each class keeps its share in both, as sklearn's stratify= does.

    A class with a single sample stays in the training set (it cannot be in both).
    """
    rng = np.random.default_rng(seed)
    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        n_test = int(round(len(members) * test_fraction)) if len(members) > 1 else 0
        n_test = min(n_test, len(members) - 1)
        test.append(members[:n_test])
        train.append(members[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def random_split(count: int, test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices) for samples without one class each (segmentation masks): a plain seeded split.

    At least one sample is held out when there are two or more, and at least one stays for training.
    """
    order = np.random.default_rng(seed).permutation(count)
    n_test = min(max(int(round(count * test_fraction)), 1 if count > 1 else 0), max(count - 1, 0))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def _standardise(dataset: Dataset) -> Dataset:
    """Per-channel zero mean and unit variance from the training images (applied to both splits)."""
    axes = (0, 2, 3) if dataset.x_train.ndim == 4 else (0,)
    mean = dataset.x_train.mean(axis=axes, dtype=np.float64)
    std = dataset.x_train.std(axis=axes, dtype=np.float64)
    std = np.where(std > 1e-8, std, 1.0)  # a constant channel stays constant instead of dividing by zero
    shape = (1, -1, 1, 1) if dataset.x_train.ndim == 4 else (1, -1)
    m = mean.reshape(shape).astype(np.float32)
    s = std.reshape(shape).astype(np.float32)
    dataset.x_train = np.ascontiguousarray((dataset.x_train - m) / s, dtype=np.float32)
    dataset.x_test = np.ascontiguousarray((dataset.x_test - m) / s, dtype=np.float32)
    dataset.mean = [float(v) for v in np.ravel(mean)]
    dataset.std = [float(v) for v in np.ravel(std)]
    return dataset


def _label_table(splits: list[Any], where: str, num_classes: int) -> tuple[list[np.ndarray], list[str]]:
    """Integer labels 0..K-1 for every split, from ONE table, and the class names.

    String labels are numbered in sorted order over all splits together (a test split with
    other classes than training must not be numbered with a table of its own). Integer
    labels are class indices; those beyond the network's `num_classes` outputs (when known,
    else above MAX_CLASSES) are refused before any class name is made.
    """
    arrays = [np.asarray(y) for y in splits]
    for y in arrays:
        if y.ndim != 1:
            raise error(f"labels `y` must be one label per sample (a 1-D array); got shape {y.shape}", where=where)
    if any(y.dtype.kind in "US" for y in arrays):
        if not all(y.dtype.kind in "US" or not y.size for y in arrays):
            raise error("labels must be all strings or all integers, in every split", where=where)
        names = sorted({str(v) for y in arrays for v in y.tolist()})
        index = {name: i for i, name in enumerate(names)}
        return [np.array([index[str(v)] for v in y.tolist()], dtype=np.int64) for y in arrays], names
    bound = num_classes if num_classes > 0 else MAX_CLASSES
    converted = []
    largest = -1
    for y in arrays:
        if y.dtype.kind == "f":
            if not np.all(np.isfinite(y)) or not np.all(np.equal(np.mod(y, 1), 0)):
                raise error(f"labels `y` must be integers (class indices) or strings; got dtype {y.dtype}", where=where)
        elif y.dtype.kind not in "iub":
            raise error(f"labels `y` must be integers (class indices) or strings; got dtype {y.dtype}", where=where)
        if y.size:
            low, high = y.min().item(), y.max().item()  # Python numbers: no wrap-around for uint64 or 1e30
            if low < 0:
                raise error(f"labels `y` must be class indices 0..K-1; the smallest is {low}", where=where)
            if high >= bound:
                outputs = f"the network outputs {num_classes} classes" if num_classes > 0 else f"at most {MAX_CLASSES:,} classes"
                raise error(
                    f"labels must be class indices below the number of classes; {where} has a label {high}",
                    f"{outputs}: labels are 0..{bound - 1}",
                    where,
                )
            largest = max(largest, int(high))
        converted.append(y.astype(np.int64))
    return converted, [str(i) for i in range(largest + 1)]


MAX_CLASSES = 1_000_000
"""Most classes integer labels may imply when the network's output count is not known."""

MASK_HINT = "save masks as integer class indices, one per pixel: numpy.savez(path, x=images, y=masks) with masks N x H x W"


def _mask_table(splits: list[np.ndarray], where: str, num_classes: int) -> tuple[list[np.ndarray], list[str]]:
    """Segmentation masks (N x H x W class indices) as int64 for every split, and the class names 0..K-1.

    K is the network's number of output channels when known (a class may be absent from
    every mask: background-only crops are common), else the largest index plus one.
    """
    converted = []
    largest = -1
    for y in splits:
        if y.ndim == 4 and y.shape[1] == 1:
            raise error(
                f"masks `y` must be N x H x W class indices; got {_shape_text(y.shape)} with a channel axis",
                "drop the channel axis: numpy.savez(path, x=x, y=y[:, 0])",
                where,
            )
        if y.ndim != 3:
            raise error(
                f"labels `y` must be one label per sample (N) or one per pixel (N x H x W masks); got shape {_shape_text(y.shape)}",
                "for one label per sample save y.reshape(-1)" if y.ndim == 2 and 1 in y.shape[1:] else MASK_HINT,
                where,
            )
        if y.dtype.kind == "f":
            if not np.all(np.isfinite(y)) or not np.all(np.equal(np.mod(y, 1), 0)):
                raise error(
                    f"masks `y` must be integer class indices; got dtype {y.dtype} with fractional or non-finite values",
                    MASK_HINT,
                    where,
                )
        elif y.dtype.kind not in "iub":
            raise error(f"masks `y` must be integer class indices; got dtype {y.dtype}", MASK_HINT, where)
        if y.size:
            low, high = y.min().item(), y.max().item()
            if low < 0:
                raise error(f"masks `y` must hold class indices 0..K-1; the smallest is {low}", MASK_HINT, where)
            bound = num_classes if num_classes > 0 else MAX_CLASSES
            if high >= bound:
                outputs = (
                    f"the network outputs {num_classes} channels (one score per class and pixel): classes are 0..{bound - 1}"
                    if num_classes > 0
                    else f"at most {MAX_CLASSES:,} classes"
                )
                raise error(
                    f"masks must hold class indices below the number of classes; {where} has a pixel of class {high}",
                    outputs,
                    where,
                )
            largest = max(largest, int(high))
        converted.append(y.astype(np.int64))
    classes = num_classes if num_classes > 0 else largest + 1
    return converted, [str(i) for i in range(classes)]


def _input_scale(x: np.ndarray) -> float:
    """The factor `_to_float` applies to stored values."""
    return 1 / 255 if x.dtype == np.uint8 else 1.0


def _to_float(x: np.ndarray) -> np.ndarray:
    """Images as float32; 8-bit images are scaled to 0..1 first."""
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    if x.dtype.kind not in "fiub":
        raise error(f"images `x` must be numbers; got dtype {x.dtype}", where="--data")
    return x.astype(np.float32)


def _layout(x: np.ndarray, expected: Shape, name: str) -> np.ndarray:
    """x as (N, *expected) when it is NCHW, NHWC or NHW of the right sizes; otherwise as NCHW, unchecked.

    The caller compares the result with the network and reports any difference; here we
    only pick the reading of the axes that fits, preferring NCHW when both do.
    """
    dims = tuple(expected)
    if x.ndim == 3:
        x = x[:, None]  # N x H x W: one channel
    if len(dims) == 1:  # a flat network input takes any sample of the right size, flattened
        if x.ndim >= 2 and int(np.prod(x.shape[1:])) == dims[0]:
            return x.reshape(len(x), dims[0])
        return x
    if x.ndim != 4:
        raise error(f"{name}: images `x` must be N x C x H x W or N x H x W x C; got {x.ndim} axes {x.shape}", where="--data")
    if x.shape[1:] == dims:
        return x
    if (x.shape[3], x.shape[1], x.shape[2]) == dims:
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    if x.shape[3] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):  # NHWC by the usual channel counts
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x


def load_digits_source() -> Dataset:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 0..16 grey levels): no download."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise error("the digits source needs scikit-learn", "pip install 'cnndsl[train]' (or scikit-learn)", "--data") from None
    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None]  # N x 1 x 8 x 8
    y = bunch.target.astype(np.int64)
    train, test = stratified_split(y)
    names = [str(int(v)) for v in bunch.target_names]
    return Dataset("digits", x[train], y[train], x[test], y[test], names, input_scale=1 / 16)


def load_npz_source(path: Path, expected: Shape, num_classes: int = 0) -> Dataset:
    """`x` and `y` (and, if present, `x_test` and `y_test`); otherwise a stratified split.

    The arrays' headers are checked before anything is read (sizes against the file and
    MAX_DATA_BYTES), and labels against the network's `num_classes` outputs (0: unknown).
    """
    where = str(path)
    try:
        names = npz_names(path)
        missing = [k for k in ("x", "y") if k not in names]
        if missing:
            raise error(
                f"{path} has no array{'s' if len(missing) > 1 else ''} {', '.join(f'`{k}`' for k in missing)}"
                f" (it has: {', '.join(names) or 'nothing'})",
                "save with numpy.savez(path, x=images, y=labels)",
                where,
            )
        arrays = read_npz(path, MAX_DATA_BYTES, ("x", "y", "x_test", "y_test"))
    except OSError as err:
        raise error(f"cannot read {path}: {err.strerror or err}", where=where) from None
    except ArrayFileError as err:
        raise error(str(err), "save with numpy.savez(path, x=images, y=labels)", where) from None
    if arrays["x"].ndim == 0 or not len(arrays["x"]):
        raise error(f"{path} has no samples (`x` is {_shape_text(arrays['x'].shape) or 'a scalar'})", where=where)
    x = _layout(_to_float(arrays["x"]), expected, where)
    has_test = "x_test" in arrays and "y_test" in arrays
    splits = [arrays["y"], arrays["y_test"]] if has_test else [arrays["y"]]
    masks = [y.ndim > 1 for y in splits]
    if any(masks) and not all(masks):
        raise error(f"{path}: `y` and `y_test` must both be labels (one per sample) or both masks (N x H x W)", where=where)
    labels, names = _mask_table(splits, where, num_classes) if all(masks) else _label_table(splits, where, num_classes)
    y = labels[0]
    if len(x) != len(y):
        raise error(f"{path}: `x` has {len(x)} samples but `y` has {len(y)} labels", where=where)
    if has_test:
        x_test = _layout(_to_float(arrays["x_test"]), expected, where)
        y_test = labels[1]
        if len(x_test) != len(y_test):
            raise error(f"{path}: `x_test` has {len(x_test)} samples but `y_test` has {len(y_test)}", where=where)
        if x_test.shape[1:] != x.shape[1:]:
            raise error(
                f"{path}: test images are {_shape_text(x_test.shape[1:])}, training images {_shape_text(x.shape[1:])}",
                where=where,
            )
        if y_test.shape[1:] != y.shape[1:]:
            raise error(
                f"{path}: test masks are {_shape_text(y_test.shape[1:])}, training masks {_shape_text(y.shape[1:])}",
                where=where,
            )
        return Dataset(path.name, x, y, x_test, y_test, names, input_scale=_input_scale(arrays["x"]))
    # A mask has no single class to stratify by.
    train, test = random_split(len(y)) if y.ndim > 1 else stratified_split(y)
    return Dataset(path.name, x[train], y[train], x[test], y[test], names, input_scale=_input_scale(arrays["x"]))


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _read_images(root: Path, classes: list[str], expected: Shape) -> tuple[np.ndarray, np.ndarray]:
    try:
        from PIL import Image
    except ImportError:
        raise error(
            "image folders need Pillow to read PNG and JPEG files", "pip install pillow (or 'cnndsl[train]')", str(root)
        ) from None
    channels, height, width = expected
    mode = {1: "L", 3: "RGB"}.get(channels)
    if mode is None:
        raise error(
            f"images are read as grey (1 channel) or RGB (3 channels); the network expects {channels} channels",
            "change the network's `input` line to 1xHxW or 3xHxW",
            str(root),
        )
    images: list[np.ndarray] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            continue
        for file in _image_files(folder):
            try:
                with Image.open(file) as image:
                    picture = image.convert(mode).resize((width, height), Image.Resampling.BILINEAR)
            except (OSError, ValueError, Image.DecompressionBombError) as err:
                raise error(f"cannot read image {file}: {err}", where=str(file)) from None
            array = np.asarray(picture, dtype=np.uint8)
            images.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
            labels.append(label)
    if not images:
        return np.zeros((0, channels, height, width), np.float32), np.zeros(0, np.int64)
    return np.stack(images).astype(np.float32) / 255.0, np.array(labels, dtype=np.int64)


def load_image_folder(root: Path, expected: Shape) -> Dataset:
    """`root/class/*.png|jpg` (split per class), or `root/train/class/...` with `root/test|val/class/...`."""
    where = str(root)
    if len(tuple(expected)) != 3:
        raise error(f"image folders need a network with an image input (CxHxW); it takes {expected}", where=where)
    subdirs = {p.name.lower(): p for p in _class_dirs(root)}
    test_dir = subdirs.get("test") or subdirs.get("val")
    if "train" in subdirs and test_dir is not None and set(subdirs) <= {"train", "test", "val"}:
        classes = sorted({p.name for p in _class_dirs(subdirs["train"])} | {p.name for p in _class_dirs(test_dir)})
        if not classes:
            raise error(f"{root}/train has no class folders", "lay images out as train/CLASS/*.png", where)
        x, y = _read_images(subdirs["train"], classes, expected)
        x_test, y_test = _read_images(test_dir, classes, expected)
        if not len(x) or not len(x_test):
            raise error(f"no .png or .jpg images under {root}/train or {test_dir}", where=where)
        return Dataset(root.name, x, y, x_test, y_test, classes, input_scale=1 / 255)
    classes = [p.name for p in _class_dirs(root)]
    if not classes:
        raise error(f"{root} has no class folders", "lay images out as ROOT/CLASS_NAME/*.png (or .jpg)", where)
    x, y = _read_images(root, classes, expected)
    if not len(x):
        raise error(f"no .png or .jpg images in the class folders of {root}", where=where)
    train, test = stratified_split(y)
    return Dataset(root.name, x[train], y[train], x[test], y[test], classes, input_scale=1 / 255)


def synthetic_source(spec: str, expected: Shape, num_classes: int, seed: int) -> Dataset:
    """`synthetic[:N]`: N random images of the network's input shape, one noisy template per class.

    For benchmarks: no files, any shape. The templates make the task learnable, so the
    loss falls and accuracy rises as it would on real data.
    """
    count = _synthetic_count(spec, "synthetic", 2048)
    if num_classes < 1:
        raise error("synthetic data needs a network with a flat output (one score per class)", where="--data")
    dims = tuple(expected)
    n_test = min(max(count // 5, 1), 1024)
    size = (count + n_test) * int(np.prod(dims)) * 4
    if size > MAX_SYNTHETIC_BYTES:
        raise error(
            f"synthetic:{count} would need {size / 2**30:.1f} GiB; the limit is {MAX_SYNTHETIC_BYTES / 2**30:.0f} GiB",
            where="--data",
        )
    rng = np.random.default_rng(seed)
    templates = rng.standard_normal((num_classes, *dims), dtype=np.float32)

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, num_classes, n)
        x = rng.standard_normal((n, *dims), dtype=np.float32)
        x *= 2.0  # noise twice the template's scale: learnable, not trivial
        x += templates[y]
        return x, y.astype(np.int64)

    x, y = make(count)
    x_test, y_test = make(n_test)
    return Dataset(f"synthetic:{count}", x, y, x_test, y_test, [str(i) for i in range(num_classes)])


SEGMENTATION_SHAPES = 3
"""Most shapes (rectangles and discs) drawn on one `synthetic-seg` image."""
SEGMENTATION_NOISE = 0.8
"""Standard deviation of the pixel noise of `synthetic-seg`, against class colours about 1 apart: a pixel alone is
often ambiguous, its neighbourhood is not, so a small convolutional network learns it in a few epochs."""


def _synthetic_count(spec: str, name: str, default: int) -> int:
    _, _, count_text = spec.partition(":")
    try:
        count = int(count_text) if count_text else default
    except ValueError:
        raise error(f"{name} takes a sample count: {name}:N; got {spec!r}", where="--data") from None
    if count < 2:
        raise error(f"{name} needs at least 2 samples; got {count}", where="--data")
    return count


def _pixel_centres(size: int) -> np.ndarray:
    """The centres of `size` pixels along an axis, in unit coordinates (0..1)."""
    return (np.arange(size, dtype=np.float32) + 0.5) / size


def synthetic_segmentation_source(spec: str, expected: Shape, output_shape: tuple[int, ...], seed: int) -> Dataset:
    """`synthetic-seg[:N]`: N noisy images of rectangles and discs, each class in its own colour, and their masks.

    Class 0 is the background. The shapes are drawn in unit coordinates and rasterised twice,
    at the input's H x W for the image and at the output's for the mask, so a network whose
    output is smaller than its input (pooling) gets masks of its own size, aligned with the image.
    """
    count = _synthetic_count(spec, "synthetic-seg", 1024)
    dims = tuple(expected)
    if len(dims) != 3:
        raise error(
            f"synthetic-seg needs a network with an image input (C x H x W); it takes {_shape_text(dims)}", where="--data"
        )
    if len(output_shape) != 3:
        raise error(
            "synthetic-seg makes per-pixel labels: it needs a network that outputs C x H x W (one score per class and pixel);"
            f" this one outputs {_shape_text(output_shape)}",
            "end the network with Conv(classes, 1) and keep the spatial axes (no flatten); for one label per image use synthetic:N",
            "--data",
        )
    classes, out_h, out_w = output_shape
    if classes < 2:
        raise error(
            f"synthetic-seg needs at least 2 classes (background and a shape); the network outputs {classes} channel",
            where="--data",
        )
    channels, height, width = dims
    n_test = min(max(count // 5, 1), 1024)
    size = (count + n_test) * (channels * height * width * 4 + out_h * out_w * 8)
    if size > MAX_SYNTHETIC_BYTES:
        raise error(
            f"synthetic-seg:{count} would need {size / 2**30:.1f} GiB; the limit is {MAX_SYNTHETIC_BYTES / 2**30:.0f} GiB",
            where="--data",
        )
    rng = np.random.default_rng(seed)
    # Evenly spaced brightness (the background darkest) keeps every two classes apart in any channel count;
    # with several channels each class also gets a tint of its own.
    colours = np.repeat(np.linspace(0.0, 2.0, classes, dtype=np.float32)[:, None], channels, axis=1)
    if channels > 1:
        colours[1:] += 0.5 * rng.standard_normal((classes - 1, channels), dtype=np.float32)
    grids = {
        "image": (_pixel_centres(height)[:, None], _pixel_centres(width)[None, :]),
        "mask": (_pixel_centres(out_h)[:, None], _pixel_centres(out_w)[None, :]),
    }

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        maps = {"image": np.zeros((n, height, width), np.int64), "mask": np.zeros((n, out_h, out_w), np.int64)}
        for slot in range(SEGMENTATION_SHAPES):
            drawn = np.ones(n, bool) if slot == 0 else rng.random(n) < 0.5  # 1 to 3 shapes, later ones on top
            label = rng.integers(1, classes, n)
            disc = rng.random(n) < 0.5
            cy, cx = rng.uniform(0.15, 0.85, (2, n)).astype(np.float32)
            ry, rx = rng.uniform(0.1, 0.3, (2, n)).astype(np.float32)
            for name, (ys, xs) in grids.items():
                dy = (ys[None] - cy[:, None, None]) / ry[:, None, None]
                dx = (xs[None] - cx[:, None, None]) / rx[:, None, None]
                inside = np.where(disc[:, None, None], dy**2 + dx**2 <= 1, (np.abs(dy) <= 1) & (np.abs(dx) <= 1))
                inside &= drawn[:, None, None]
                maps[name] = np.where(inside, label[:, None, None], maps[name])
        x = colours[maps["image"]].transpose(0, 3, 1, 2)  # N x H x W x C -> N x C x H x W
        x += SEGMENTATION_NOISE * rng.standard_normal(x.shape, dtype=np.float32)
        return np.ascontiguousarray(x), maps["mask"]

    x, y = make(count)
    x_test, y_test = make(n_test)
    return Dataset(f"synthetic-seg:{count}", x, y, x_test, y_test, [str(i) for i in range(classes)])


def load_source(
    spec: str, expected: Shape, num_classes: int, seed: int = 0, output_shape: tuple[int, ...] | None = None
) -> Dataset:
    """The data named by `--data`: `digits`, `synthetic[:N]`, `synthetic-seg[:N]`, a `.npz` file or an image folder.

    `expected` (the network's input shape) orients .npz arrays and sizes folder images;
    `num_classes` (the network's outputs, or output channels for per-pixel classes; 0 when
    unknown) bounds the labels; `seed` is used only by the synthetic sources, and
    `output_shape` (the network's, per sample) by `synthetic-seg` and to point `synthetic`
    away from a per-pixel network. The result is standardised; call `check_fit` to compare
    it with the network.
    """
    if spec == "digits":
        dataset = load_digits_source()
    elif spec == "synthetic-seg" or spec.startswith("synthetic-seg:"):
        if output_shape is None:
            raise error("synthetic-seg needs the network's output shape (one score per class and pixel)", where="--data")
        dataset = synthetic_segmentation_source(spec, expected, output_shape, seed)
    elif spec == "synthetic" or spec.startswith("synthetic:"):
        if output_shape is not None and len(output_shape) == 3:
            raise error(
                f"synthetic makes one label per image, but the network outputs {_shape_text(output_shape)} per image",
                "for per-pixel classes use --data synthetic-seg[:N]",
                "--data",
            )
        dataset = synthetic_source(spec, expected, num_classes, seed)
    else:
        path = Path(spec)
        if path.is_dir():
            dataset = load_image_folder(path, expected)
        elif path.suffix.lower() == ".npz":
            if not path.exists():
                raise error(f"no such file: {path}", where=spec)
            dataset = load_npz_source(path, expected, num_classes)
        elif not path.exists():
            raise error(
                f"unknown data source {spec!r}",
                "give `digits`, `synthetic:N`, `synthetic-seg:N`, a PATH.npz file (arrays x and y) or an image folder ROOT/CLASS/*.png",
                "--data",
            )
        else:
            raise error(f"{spec} is neither an .npz file nor a folder of class folders", where=spec)
    if not len(dataset.x_train):
        raise error(f"{spec} has no training samples", where=spec)
    _refuse_non_finite(dataset, spec)
    return _standardise(dataset)


def _refuse_non_finite(dataset: Dataset, source: str) -> None:
    """NaN or infinite pixels make every loss NaN: refuse them before training, saying where they are."""
    for split, x in (("training", dataset.x_train), ("test", dataset.x_test)):
        finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1) if len(x) else np.ones(0, bool)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            raise error(
                f"{source}: {len(bad):,} {split} image{'s hold' if len(bad) > 1 else ' holds'} NaN or infinite values"
                f" (the first is sample {int(bad[0])} of the {split} split)",
                "remove or repair those samples; training on them makes every loss NaN",
                source,
            )


def check_fit(dataset: Dataset, input_shape: Shape, output_shape: Shape, parameters: dict[str, Any], source: str) -> None:
    """Refuse data that does not fit the network, saying what differs and how to fix it."""
    expected = tuple(input_shape)
    got = dataset.sample_shape
    name = "digits" if source == "digits" else source
    if got != expected:
        dims = _shape_text(got)
        raise error(
            f"the network expects {_shape_text(expected)}, {name} {'are' if name == 'digits' else 'is'} {dims}",
            f"add `--input {dims}` or change the `input` line",
            source,
        )
    if dataset.segmentation:
        _check_mask_fit(dataset, tuple(output_shape), parameters, name, source)
        return
    if len(tuple(output_shape)) != 1:
        per_pixel = (
            " (or, for per-pixel classes, give masks: `y` of N x H x W class indices)" if len(tuple(output_shape)) == 3 else ""
        )
        raise error(
            f"training needs one score per class, but the network outputs {_shape_text(tuple(output_shape))} per sample",
            f"end the network with flatten and FC(classes){per_pixel}",
            source,
        )
    outputs = tuple(output_shape)[0]
    classes = dataset.num_classes
    if outputs != classes:
        how = (
            f"add `--set num_classes={classes}` or change the last FC"
            if "num_classes" in parameters
            else f"make the last layer FC({classes})"
        )
        raise error(f"the network outputs {outputs} classes, {name} has {classes}", how, source)


def _check_mask_fit(dataset: Dataset, output: tuple[int, ...], parameters: dict[str, Any], name: str, source: str) -> None:
    """Masks N x H x W against a network output of classes x H x W per image."""
    masks = _shape_text(dataset.mask_shape)
    if len(output) != 3:
        raise error(
            f"{name} has per-pixel masks ({masks}), but the network outputs {_shape_text(output)} per sample,"
            " not one score per class and pixel (classes x H x W)",
            "end the network with Conv(classes, 1) and no flatten or FC, so that its output keeps a map",
            source,
        )
    channels, spatial = output[0], output[1:]
    if spatial != dataset.mask_shape:
        raise error(
            f"the network outputs {_shape_text(output)} ({_shape_text(spatial)} per class), but the masks of {name} are {masks}",
            "give masks of the network's output size, or keep the size in the network (Conv with pad=kernel//2, fewer Pool"
            " or strides)",
            source,
        )
    classes = dataset.num_classes
    if channels != classes:
        how = (
            f"add `--set num_classes={classes}` or change the last Conv"
            if "num_classes" in parameters
            else f"make the last layer Conv({classes}, 1)"
        )
        raise error(f"the network outputs {channels} channels (one per class), {name} has {classes} classes", how, source)
