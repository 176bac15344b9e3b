"""Weights files: the one reader and the one writer for every format cnndsl takes or makes.

Reads a state_dict, and the input preprocessing that came with it, from

- `.safetensors` (the format `cnndsl train --save` recommends: no code can hide in it),
- `.pt` / `.pth` (`torch.load(..., weights_only=True)`: no arbitrary pickles), a plain
  state_dict, a dict holding one under `model`, `state_dict` or `model_state_dict`, or the
  torch trainer's own `checkpoint.pt`,
- `.npz` (`allow_pickle=False`), `numpy.savez(path, **state_dict)` or the NumPy trainer's
  own `checkpoint.npz` (whose weights are stored as `model/<key>`),
- an in-memory mapping (NumPy arrays or torch tensors),

and writes one as `.safetensors`, `.pt` or `.npz`. Tensors come back as NumPy arrays;
bfloat16 and float8 tensors are converted exactly to float32, and what has no exact NumPy
form (sparse, quantized or complex tensors) is refused with a message that says how to
convert it. Damaged and foreign files are a CnnDslError with one clear line, never a
traceback.

Preprocessing. A model trained on standardised images must see standardised images, so
the per-channel mean and standard deviation travel with the weights as two extra entries,
`__preprocess__.mean` and `__preprocess__.std` (float32, one value per input channel, or
per feature for a flat input), in every format: the model computes on `(x - mean) / std`
where `x` is the input in the units of the training data as its source stores it (0..16
for `digits`, 0..255 for 8-bit images). No layer's key can collide with them: module paths
never start with `_` (see cnndsl.names).
"""

from __future__ import annotations

import json
import math
import os
import stat
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import CnnDslError, Diagnostic, needs_torch
from .files import Content, atomic_write
from .limits import MAX_WEIGHT_BYTES

if TYPE_CHECKING:
    from .network import Network

PREPROCESS_PREFIX = "__preprocess__."
MEAN_KEY = PREPROCESS_PREFIX + "mean"
STD_KEY = PREPROCESS_PREFIX + "std"

SUFFIX_FORMATS = {".safetensors": "safetensors", ".pt": "torch", ".pth": "torch", ".npz": "npz"}
"""File suffix -> format; `.safetensors` is the one `train --save` recommends."""
FORMATS = ("safetensors", "torch", "npz")

MAX_FILE_BYTES = 2 * MAX_WEIGHT_BYTES
"""Largest weights file read: the float32 weight limit, stored as float64."""

TORCH_CHECKPOINT = "cnndsl-train-torch"
NUMPY_CHECKPOINT = "cnndsl-train-numpy"
"""The `format` the trainer writes into its checkpoints (cnndsl.train.torch_engine, numpy_engine)."""
NUMPY_CHECKPOINT_META = "meta.json"
NUMPY_CHECKPOINT_PREFIX = "model/"


def weights_error(message: str, hint: str | None = None, where: str = "weights") -> CnnDslError:
    """An error about a weights file or mapping: one line and a hint, no source position."""
    return CnnDslError([Diagnostic("error", message, None, hint, (), where)])


# ---------------------------------------------------------------------------- preprocessing


@dataclass(frozen=True)
class Preprocess:
    """Per-channel input standardisation: the model computes on `(x - mean) / std` (values rounded to float32)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        # Stored as float32 in every file: round here too, so that a checkpoint's JSON record, a
        # weights file and the trainer's own values are one and the same preprocessing.
        object.__setattr__(self, "mean", tuple(float(np.float32(v)) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(np.float32(v)) for v in self.std))
        if not self.mean or len(self.mean) != len(self.std):
            raise ValueError(f"mean and std need one value per channel each; got {len(self.mean)} and {len(self.std)}")
        if not all(math.isfinite(v) for v in (*self.mean, *self.std)):
            raise ValueError("mean and std must be finite numbers")
        if not all(v > 0 for v in self.std):
            raise ValueError("every std must be positive")

    @classmethod
    def from_arrays(cls, mean: Any, std: Any) -> Preprocess:
        """From two 1-D numeric arrays or lists (ValueError when they are not)."""
        arrays = [np.asarray(mean), np.asarray(std)]
        if any(a.ndim != 1 or a.dtype.kind not in "fiu" for a in arrays):
            raise ValueError("mean and std must be 1-D arrays of numbers")
        return cls(tuple(float(v) for v in arrays[0]), tuple(float(v) for v in arrays[1]))

    @classmethod
    def from_standardisation(cls, mean: list[float], std: list[float], input_scale: float) -> Preprocess:
        """The preprocessing in the source's units, from statistics of data that was first multiplied by `input_scale`.

        (x * s - m) / d == (x - m / s) / (d / s): the model then takes the images as stored.
        """
        return cls(tuple(m / input_scale for m in mean), tuple(d / input_scale for d in std))

    @property
    def channels(self) -> int:
        return len(self.mean)

    def arrays(self) -> dict[str, np.ndarray]:
        """The two entries stored beside the weights."""
        return {MEAN_KEY: np.asarray(self.mean, np.float32), STD_KEY: np.asarray(self.std, np.float32)}

    def broadcast(self, ndim: int, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
        """mean and std shaped to broadcast over a batch of `ndim` axes (channels or features on axis 1)."""
        shape = (1, -1) + (1,) * (ndim - 2)
        return np.asarray(self.mean, dtype).reshape(shape), np.asarray(self.std, dtype).reshape(shape)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """`(x - mean) / std` per channel, as a new array of x's dtype."""
        mean, std = self.broadcast(x.ndim, x.dtype)
        out = x - mean
        out /= std
        return out

    def to_json(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "std": list(self.std)}

    def check_for(self, network: Network, where: str) -> None:
        """Refuse preprocessing for another number of input channels (features, for a flat input)."""
        expected = tuple(network.input_shape)[0]
        if self.channels != expected:
            what = "channels" if network.input_shape.is_image else "features"
            raise weights_error(
                f"{where} normalises {self.channels} input {what}; network {network.name} takes {expected}",
                "were the weights trained for this network and input shape?",
                where,
            )


def preprocess_from_json(value: Any, where: str) -> Preprocess | None:
    """A checkpoint's `preprocess` record ({"mean": [...], "std": [...]}), or None when it has none."""
    if value is None:
        return None
    try:
        if not isinstance(value, Mapping):
            raise ValueError("not a record")
        return Preprocess.from_arrays(value["mean"], value["std"])
    except (KeyError, ValueError, TypeError) as err:
        raise weights_error(f"{where} holds a damaged input normalisation: {err}", where=where) from None


# ---------------------------------------------------------------------------- reading


@dataclass
class Weights:
    """A state_dict (NumPy arrays, keyed as the torch module's) and the input preprocessing that came with it."""

    state_dict: dict[str, np.ndarray]
    preprocess: Preprocess | None = None
    source: str = "<state_dict>"
    """Where the weights came from, for messages ("input normalised with ... from SOURCE")."""
    ordered: bool = True
    """Whether the keys come in the saving module's order (registration order); safetensors files store them sorted."""


WeightsSource = str | os.PathLike[str] | Mapping[str, Any] | Weights


def read_weights(source: WeightsSource) -> Weights:
    """The weights in `source` (a file of any supported format, a mapping, or Weights), or a CnnDslError."""
    if isinstance(source, Weights):
        return source
    if isinstance(source, Mapping):
        return _unwrap_state_dict(source, "<state_dict>")
    if not isinstance(source, (str, os.PathLike)):
        raise weights_error(
            f"weights must be a file path or a state_dict mapping; got {type(source).__name__}",
            "pass a path to .safetensors, .pt or .npz weights, or model.state_dict()",
        )
    path = Path(source)
    where = str(path)
    fmt = SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt is None and _looks_like_safetensors(path):
        fmt = "safetensors"  # what cnndsl writes where the suffix names no format
    if fmt is None:
        raise weights_error(
            f"unknown weights file type {path.suffix or '(no suffix)'} for {where}",
            "use .safetensors, .pt/.pth (PyTorch) or .npz (NumPy)",
            where,
        )
    _check_file(path)
    if fmt == "npz":
        return _read_npz(path)
    if fmt == "torch":
        return _read_torch(path)
    return _read_safetensors(path)


def _looks_like_safetensors(path: Path) -> bool:
    """A regular file that starts as safetensors does: a little-endian header length that fits the file, then `{`."""
    try:
        if not path.is_file():
            return False
        with open(path, "rb") as handle:
            head = handle.read(9)
        size = path.stat().st_size
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= size - 8


def _check_file(path: Path) -> None:
    """A regular, readable file within MAX_FILE_BYTES (a FIFO or a device would block or never end)."""
    where = str(path)
    try:
        info = path.stat()
    except OSError as err:
        raise weights_error(f"cannot read weights from {where}: {err.strerror or err}", where=where) from None
    if not stat.S_ISREG(info.st_mode):
        raise weights_error(f"{where} is not a regular file", "give the path of a weights file", where)
    if info.st_size > MAX_FILE_BYTES:
        raise weights_error(
            f"{where} is {info.st_size / 2**30:,.1f} GiB; weights files are read up to {MAX_FILE_BYTES / 2**30:,.0f} GiB",
            where=where,
        )


def _from_mapping(mapping: Mapping[str, Any], where: str) -> Weights:
    """Split the preprocessing entries off a state_dict and convert every value to a NumPy array."""
    state: dict[str, np.ndarray] = {}
    extra: dict[str, np.ndarray] = {}
    for key, value in mapping.items():
        name = str(key)
        array = to_array(value, name, where)
        (extra if name.startswith(PREPROCESS_PREFIX) else state)[name] = array
    return Weights(state, _preprocess_entries(extra, where), where)


def _preprocess_entries(entries: dict[str, np.ndarray], where: str) -> Preprocess | None:
    if not entries:
        return None
    unknown = sorted(set(entries) - {MEAN_KEY, STD_KEY})
    if unknown:
        raise weights_error(
            f"{where} has unknown preprocessing entries: {', '.join(unknown)}", f"only {MEAN_KEY} and {STD_KEY}", where
        )
    if set(entries) != {MEAN_KEY, STD_KEY}:
        raise weights_error(
            f"{where} has {', '.join(entries)} without its partner", f"store both {MEAN_KEY} and {STD_KEY}", where
        )
    try:
        return Preprocess.from_arrays(entries[MEAN_KEY], entries[STD_KEY])
    except ValueError as err:
        raise weights_error(f"{where} holds a damaged input normalisation: {err}", where=where) from None


def to_array(value: Any, key: str, where: str = "weights") -> np.ndarray:
    """A state_dict value (NumPy array, torch tensor, number or nested list) as a NumPy array, converted exactly."""
    if type(value).__module__.startswith("torch") and hasattr(value, "layout"):
        return _tensor_to_array(value, key, where)
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as err:
        raise weights_error(f"weight {key} in {where} is not an array: {err}", where=where) from None
    if array.dtype.kind not in "fiub":
        raise weights_error(f"weight {key} in {where} has dtype {array.dtype}, not numbers", where=where)
    return array


def _tensor_to_array(tensor: Any, key: str, where: str) -> np.ndarray:
    """A torch tensor as a NumPy array: bfloat16/float8 become float32 (exactly); what NumPy cannot hold exactly is refused."""
    import torch

    if tensor.is_quantized:
        raise weights_error(
            f"weight {key} in {where} is a quantized tensor ({tensor.dtype}); cnndsl runs float weights",
            "save tensor.dequantize() instead (or the float model the quantized one came from)",
            where,
        )
    if tensor.layout != torch.strided:
        raise weights_error(
            f"weight {key} in {where} is a {str(tensor.layout).removeprefix('torch.')} tensor; cnndsl reads dense tensors",
            "save tensor.to_dense() instead",
            where,
        )
    if tensor.is_complex():
        raise weights_error(f"weight {key} in {where} is complex ({tensor.dtype}); layers take real weights", where=where)
    if tensor.device.type == "meta":
        raise weights_error(f"weight {key} in {where} is a meta tensor: it has no values", where=where)
    tensor = tensor.detach().cpu()
    if tensor.is_floating_point() and tensor.dtype not in (torch.float16, torch.float32, torch.float64):
        tensor = tensor.float()  # bfloat16 and the float8 formats: every value is exact in float32
    try:
        return tensor.numpy()
    except (TypeError, RuntimeError) as err:
        raise weights_error(
            f"weight {key} in {where} has dtype {tensor.dtype}, which NumPy cannot hold: {err}", where=where
        ) from None


def _read_torch(path: Path) -> Weights:
    where = str(path)
    try:
        import torch
    except ImportError:
        raise needs_torch(f"reading {where}", where, "save the weights as .safetensors or .npz") from None
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as err:
        raise weights_error(f"cannot read weights from {where}: {err.strerror or err}", where=where) from None
    except (
        Exception
    ) as err:  # torch raises many types (UnpicklingError, RuntimeError, EOFError, ...) for damaged or foreign files
        raise weights_error(f"{where} is not a readable PyTorch weights file: {_first_line(err)}", where=where) from None
    if not isinstance(loaded, Mapping):
        raise weights_error(f"{where} holds a {type(loaded).__name__}, not a state_dict", where=where)
    return _unwrap_state_dict(loaded, where)


def _unwrap_state_dict(loaded: Mapping[str, Any], where: str) -> Weights:
    """A state_dict, the torch trainer's checkpoint (weights under `model`, the normalisation under
    `preprocess`), or a dict holding a state_dict under `model`, `state_dict` or `model_state_dict`."""
    preprocess: Preprocess | None = None
    inner: Any = loaded
    if loaded.get("format") == TORCH_CHECKPOINT:
        preprocess = preprocess_from_json(loaded.get("preprocess"), where)
        inner = loaded.get("model")
    else:
        for key in ("model", "state_dict", "model_state_dict"):
            if isinstance(loaded.get(key), Mapping):
                inner = loaded[key]
                break
    if not isinstance(inner, Mapping):
        raise weights_error(f"{where} holds no state_dict under `model`", where=where)
    weights = _from_mapping(inner, where)
    weights.preprocess = weights.preprocess or preprocess
    return weights


def _read_npz(path: Path) -> Weights:
    """numpy.savez files (also the NumPy trainer's checkpoint), reading every member's header before its data."""
    where = str(path)
    damaged = (zipfile.BadZipFile, zlib.error, ValueError, EOFError, KeyError, NotImplementedError)
    if _is_npy(path):
        raise weights_error(
            f"{where} is a single .npy array, not an .npz of named weights",
            "save with NumpyModel.save, cnndsl.weights.write_weights or numpy.savez(path, **state_dict)",
            where,
        )
    arrays: dict[str, np.ndarray] = {}
    total = 0
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    raise weights_error(f"{where} holds {info.filename}, which is not a NumPy array", where=where)
                with archive.open(info) as member:
                    size = _npy_size(member, info, where)
                    total += size
                    if total > MAX_FILE_BYTES:
                        raise weights_error(f"{where} holds more than {MAX_FILE_BYTES / 2**30:,.0f} GiB of arrays", where=where)
                with archive.open(info) as member:
                    arrays[info.filename.removesuffix(".npy")] = np.lib.format.read_array(member, allow_pickle=False)
    except OSError as err:
        raise weights_error(f"cannot read weights from {where}: {err.strerror or err}", where=where) from None
    except damaged as err:
        raise weights_error(
            f"{where} is not a readable .npz weights file (damaged or truncated): {_first_line(err)}", where=where
        ) from None
    if NUMPY_CHECKPOINT_META in arrays:
        return _numpy_checkpoint(arrays, where)
    return _from_mapping(arrays, where)


def _is_npy(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(6) == b"\x93NUMPY"


def _npy_size(member: Any, info: zipfile.ZipInfo, where: str) -> int:
    """The data bytes a member's header claims, refused when more than the member holds (a damaged or hostile header)."""
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
    else:
        raise ValueError(f"{info.filename}: unsupported .npy format version {version}")
    if dtype.hasobject:
        raise weights_error(f"{where}: {info.filename} holds Python objects, which are never unpickled", where=where)
    size = math.prod(shape) * dtype.itemsize
    if size > info.file_size:
        raise ValueError(f"{info.filename} claims {size:,} bytes of data but holds {info.file_size:,}")
    return size


def _numpy_checkpoint(arrays: dict[str, np.ndarray], where: str) -> Weights:
    """The weights (`model/<key>`) and preprocessing (in the JSON record) of a NumPy training checkpoint."""
    try:
        meta = json.loads(str(arrays[NUMPY_CHECKPOINT_META]))
    except ValueError as err:
        raise weights_error(f"{where} has a damaged {NUMPY_CHECKPOINT_META}: {err}", where=where) from None
    if not isinstance(meta, dict) or meta.get("format") != NUMPY_CHECKPOINT:
        raise weights_error(f"{where} has a {NUMPY_CHECKPOINT_META} but is not a cnndsl training checkpoint", where=where)
    model = {k.removeprefix(NUMPY_CHECKPOINT_PREFIX): v for k, v in arrays.items() if k.startswith(NUMPY_CHECKPOINT_PREFIX)}
    weights = _from_mapping(model, where)
    weights.preprocess = weights.preprocess or preprocess_from_json(meta.get("preprocess"), where)
    return weights


SAFETENSORS_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U64": np.uint64,
    "U32": np.uint32,
    "U16": np.uint16,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def _read_safetensors(path: Path) -> Weights:
    where = str(path)
    try:
        from safetensors import SafetensorError, deserialize
    except ImportError:
        raise weights_error(f"reading {where} needs the safetensors package", "pip install safetensors", where) from None
    try:
        data = path.read_bytes()
    except OSError as err:
        raise weights_error(f"cannot read weights from {where}: {err.strerror or err}", where=where) from None
    try:
        entries = deserialize(data)
    except (SafetensorError, ValueError, OverflowError) as err:
        raise weights_error(
            f"{where} is not a readable .safetensors file (damaged or truncated): {_first_line(err)}", where=where
        ) from None
    arrays = {name: _safetensors_array(name, entry, where) for name, entry in entries}
    weights = _from_mapping(arrays, where)
    weights.ordered = False
    return weights


def _safetensors_array(name: str, entry: Mapping[str, Any], where: str) -> np.ndarray:
    dtype_name = str(entry["dtype"]).upper()
    shape = tuple(int(d) for d in entry["shape"])
    raw = entry["data"]
    if dtype_name == "BF16":  # the upper half of a float32: exact
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    if dtype_name in FLOAT8_FORMATS:
        return float8_table(dtype_name)[np.frombuffer(raw, dtype=np.uint8)].reshape(shape)
    dtype = SAFETENSORS_DTYPES.get(dtype_name)
    if dtype is None:
        raise weights_error(
            f"weight {name} in {where} has dtype {dtype_name}, which cnndsl does not read",
            "save it as float32 (or float16/bfloat16)",
            where,
        )
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape).copy()


FLOAT8_FORMATS = {"F8_E4M3": (4, 3, 7), "F8_E5M2": (5, 2, 15)}
"""safetensors' float8 dtypes: (exponent bits, mantissa bits, bias)."""


def float8_table(dtype_name: str) -> np.ndarray:
    """Every one of the 256 float8 codes as float32 (exact): E4M3 has no infinities and NaN at S.1111.111; E5M2 is IEEE-like."""
    exponent_bits, mantissa_bits, bias = FLOAT8_FORMATS[dtype_name]
    codes = np.arange(256)
    sign = np.where(codes & 0x80, -1.0, 1.0)
    exponent = (codes >> mantissa_bits) & ((1 << exponent_bits) - 1)
    mantissa = codes & ((1 << mantissa_bits) - 1)
    fraction = mantissa / (1 << mantissa_bits)
    values = np.where(exponent == 0, fraction * 2.0 ** (1 - bias), (1 + fraction) * 2.0 ** (exponent - bias))
    values = sign * values
    top = (1 << exponent_bits) - 1
    if dtype_name == "F8_E5M2":
        values = np.where((exponent == top) & (mantissa == 0), sign * np.inf, values)
        values = np.where((exponent == top) & (mantissa != 0), np.nan, values)
    else:
        values = np.where((exponent == top) & (mantissa == (1 << mantissa_bits) - 1), np.nan, values)
    return values.astype(np.float32)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# ---------------------------------------------------------------------------- writing


def format_for(path: str | os.PathLike[str], default: str | None = None) -> str:
    """The format a path's suffix names; `default` for other suffixes (None: refuse them)."""
    fmt = SUFFIX_FORMATS.get(Path(path).suffix.lower(), default)
    if fmt is None:
        raise weights_error(
            f"cannot tell the weights format of {path} from its suffix",
            "end it with .safetensors (recommended), .pt or .npz",
            str(path),
        )
    return fmt


def write_weights(
    path: str | os.PathLike[str], state_dict: Mapping[str, Any], preprocess: Preprocess | None = None, fmt: str | None = None
) -> None:
    """Write a state_dict (and the preprocessing, if any) atomically; `fmt` defaults to the suffix's format."""
    where = str(path)
    content = weights_content(state_dict, preprocess, fmt or format_for(path), where)
    try:
        atomic_write(os.fspath(path), content)
    except OSError as err:
        raise weights_error(f"cannot write {where}: {err.strerror or err}", where=where) from None


def weights_content(state_dict: Mapping[str, Any], preprocess: Preprocess | None, fmt: str, where: str) -> Content:
    """A weights file's content in `fmt`, for cnndsl.files' writers (a command writes all its outputs together)."""
    if fmt not in FORMATS:
        raise weights_error(f"unknown weights format {fmt!r}", f"choose one of {', '.join(FORMATS)}", where)
    # np.asarray(order="C"), not np.ascontiguousarray: that one makes 0-d arrays (num_batches_tracked) 1-d.
    arrays = {str(key): np.asarray(to_array(value, str(key), where), order="C") for key, value in state_dict.items()}
    if preprocess is not None:
        arrays.update(preprocess.arrays())
    if fmt == "safetensors":
        return _safetensors_bytes(arrays, where)
    if fmt == "npz":
        named: dict[str, Any] = arrays  # Any: numpy's stubs read `**named` as possibly savez's allow_pickle
        return lambda handle: np.savez(handle, **named)
    torch = _torch_for_writing(where)
    return lambda handle: torch.save({k: torch.from_numpy(v) for k, v in arrays.items()}, handle)


def _safetensors_bytes(arrays: dict[str, np.ndarray], where: str) -> bytes:
    try:
        from safetensors.numpy import save
    except ImportError:
        raise weights_error(
            f"writing {where} needs the safetensors package", "pip install safetensors, or write .npz", where
        ) from None
    return save(arrays, metadata={"format": "cnndsl-weights"})


def _torch_for_writing(where: str) -> Any:
    try:
        import torch
    except ImportError:
        raise needs_torch(f"writing {where}", where, "write .safetensors or .npz") from None
    return torch
