"""Model files: safetensors weights with a JSON description of the architecture. Never pickle.

A model file is one ``.safetensors`` file: the parameters by dotted name, and
in its header's metadata the architecture as JSON ({"type": "MLP", "config":
{...}}), and each tensor's SHA-256 digest. Loading reads the header first and
compares the stored tensors' names, shapes and dtypes with those the
architecture declares (each layer type's ``state_shapes``) before it builds
anything, so a file cannot make it allocate more than the file holds; it then
builds only module types registered in ``nn.MODULES`` from plain numbers and
strings and reads each tensor, checking its digest. Nothing in a file is ever
executed. Files are written atomically (temporary file, fsync, rename), so a
crash leaves the previous file whole.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .backend import to_numpy
from .errors import ChainruleError, ModelFileError
from .validation import check_file, parse_json

FORMAT = "chainrule/1"


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync and rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes files private; model files are ordinary files
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


# Names of the dtypes a safetensors header may give, as NumPy dtypes (little-endian, as stored).
DTYPES = {
    "BOOL": "|b1", "U8": "|u1", "I8": "|i1", "U16": "<u2", "I16": "<i2", "U32": "<u4", "I32": "<i4",
    "U64": "<u8", "I64": "<i8", "F16": "<f2", "F32": "<f4", "F64": "<f8",
}
# Bounds on what a header may hold. chainrule's headers take kilobytes (a checkpoint's history
# and diagnostics, a few megabytes on long runs); anything beyond these is refused unread.
MAX_HEADER_BYTES = 64 << 20
MAX_NAME_CHARS = 1024
MAX_ARCHITECTURE_CHARS = 64 << 10  # a real architecture takes under 1 KiB; 64 KiB of it expand to under 8 MiB
# Metadata key of the tensors' SHA-256 digests (JSON: name -> hex digest).
DIGESTS = "sha256"


def digest(array: np.ndarray) -> str:
    """SHA-256 of an array's bytes as a safetensors file stores them (C order, little-endian), in hex."""
    a = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return hashlib.sha256(a.reshape(-1).view(np.uint8)).hexdigest()


def write_safetensors(path: str | os.PathLike, arrays: dict, metadata: dict) -> None:
    """Arrays (name -> array of any namespace) and string metadata into a safetensors file, atomically.

    Arrays on a device are copied to the host first. The metadata also records each
    array's SHA-256 digest, which :func:`read_header`'s reads check.
    """
    from safetensors.numpy import save

    plain = {k: np.ascontiguousarray(to_numpy(v)) for k, v in arrays.items()}
    meta = {k: str(v) for k, v in metadata.items()}
    meta[DIGESTS] = json.dumps({k: digest(a) for k, a in plain.items()}, sort_keys=True)
    write_atomic(path, save(plain, metadata=meta))


def _bad(path: Path, what: str) -> ModelFileError:
    return ModelFileError(f"model file {str(path)!r} {what}")


@dataclass(frozen=True)
class StoredTensor:
    """One stored tensor as its header describes it: dtype, shape and byte range in the data."""

    dtype: np.dtype
    shape: tuple
    start: int
    end: int


@dataclass
class SafetensorsFile:
    """A safetensors file whose header has been read and checked, its tensors not yet read.

    ``tensors`` maps names to :class:`StoredTensor` (dtype, shape, bytes); every byte range lies
    inside the file, so reading them all takes at most the file's size in memory.
    ``metadata`` is the header's string metadata (without the digests).
    """

    path: Path
    tensors: dict
    metadata: dict
    digests: dict | None
    data_start: int

    def read(self, names: Any = None, into: dict | None = None) -> dict:
        """name -> NumPy array for ``names`` (every tensor by default), each checked against its digest.

        ``into`` may give, by name, arrays of the tensor's shape and dtype to read into
        (a model's freshly built parameters), so the tensor takes no second copy in memory.
        """
        names = list(self.tensors) if names is None else list(names)
        out = {}
        with open(self.path, "rb") as f:
            for name in names:
                t = self.tensors[name]
                a = (into or {}).get(name)
                if not (type(a) is np.ndarray and a.dtype == t.dtype and a.shape == t.shape and a.flags.c_contiguous and a.flags.writeable):
                    a = np.empty(t.shape, dtype=t.dtype)
                if a.size:
                    f.seek(self.data_start + t.start)
                    if f.readinto(a.reshape(-1).view(np.uint8)) != t.end - t.start:
                        raise _bad(self.path, f"is truncated: tensor {name!r} ends past the end of the file")
                if self.digests is not None and digest(a) != self.digests[name]:
                    raise _bad(self.path, f"is corrupt: tensor {name!r} does not match its SHA-256 digest")
                out[name] = a.astype(a.dtype.newbyteorder("="), copy=False)
        return out


def read_header(path: str | os.PathLike) -> SafetensorsFile:
    """The checked header of a safetensors file; ModelFileError naming the file and the field at fault.

    Reads only the header (at most MAX_HEADER_BYTES): every tensor's dtype, shape and
    byte range is checked against the file's size, so no later read can ask for more.
    """
    path = Path(path)
    check_file(path, "model file", ModelFileError)
    size = path.stat().st_size
    label = f"model file {str(path)!r}"
    bad = functools.partial(_bad, path)

    if size < 8:
        raise bad(f"is truncated: {size} bytes, not even a header length")
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > size - 8:
            raise bad(f"is truncated or corrupt: header of {n} bytes in a file of {size}")
        if n > MAX_HEADER_BYTES:
            raise bad(f"is corrupt: header of {n} bytes, more than the {MAX_HEADER_BYTES} bytes a model file's header may take")
        raw = f.read(n)
    header = parse_json(raw, f"{label}: header", ModelFileError)
    if not isinstance(header, dict):
        raise bad(f"is corrupt: header is a JSON {type(header).__name__}, expected an object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise bad("is corrupt: header field __metadata__ is not an object of strings")
    data_size, tensors = size - 8 - n, {}
    for name, entry in header.items():
        if len(name) > MAX_NAME_CHARS:
            raise bad(f"is corrupt: a tensor name of {len(name)} characters (at most {MAX_NAME_CHARS})")
        if not isinstance(entry, dict) or not isinstance(entry.get("dtype"), str) or entry["dtype"] not in DTYPES:
            got = entry.get("dtype") if isinstance(entry, dict) else entry
            raise bad(f"is corrupt: tensor {name!r} has dtype {str(got)[:40]!r}, expected one of {', '.join(DTYPES)}")
        shape, offsets = entry.get("shape"), entry.get("data_offsets")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise bad(f"is corrupt: tensor {name!r} has shape {str(shape)[:40]}, expected a list of sizes")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
            raise bad(f"is corrupt: tensor {name!r} has data_offsets {str(offsets)[:40]}, expected [start, end]")
        dtype, (start, end) = np.dtype(DTYPES[entry["dtype"]]), offsets
        if not 0 <= start <= end <= data_size or end - start != math.prod(shape) * dtype.itemsize:
            raise bad(
                f"is truncated or corrupt: tensor {name!r} of shape {tuple(shape)} ({entry['dtype']}) "
                f"claims bytes {start} to {end} of {data_size}"
            )
        tensors[name] = StoredTensor(dtype, tuple(shape), start, end)
    position = 0
    for name, t in sorted(tensors.items(), key=lambda kv: (kv[1].start, kv[1].end)):
        if t.start != position:
            raise bad(f"is corrupt: tensor {name!r} starts at byte {t.start} of the data, expected {position}")
        position = t.end
    if position != data_size:
        raise bad(f"is corrupt: its tensors take {position} bytes of data, the file holds {data_size}")
    digests = None
    if DIGESTS in metadata:  # files written before digests were recorded are checked without them
        digests = parse_json(metadata.pop(DIGESTS), f"{label}: metadata field {DIGESTS}", ModelFileError)
        if not isinstance(digests, dict) or set(digests) != set(tensors) or not all(isinstance(v, str) for v in digests.values()):
            raise bad(f"is corrupt: metadata field {DIGESTS} does not list one digest per tensor")
    return SafetensorsFile(path, tensors, metadata, digests, 8 + n)


def read_safetensors(path: str | os.PathLike) -> tuple:
    """(arrays, metadata) of a safetensors file; ModelFileError for anything missing, malformed or
    not matching its digests. Memory: the file's size, plus the header."""
    file = read_header(path)
    return file.read(), file.metadata


# ---- architecture as JSON ------------------------------------------------------


def describe(module: Any) -> dict:
    """The architecture of ``module`` as plain JSON-ready data."""
    from .nn.containers import Sequential
    from .nn.module import MODULES
    from .nn.residual import Residual

    cls = type(module)
    if MODULES.get(cls.__name__) is not cls:
        raise ChainruleError(
            f"{cls.__name__} is not a registered module type, so it cannot be described in a model file; "
            "decorate it with @nn.register_module and give it get_config()"
        )
    desc = {"type": cls.__name__, "config": module.get_config()}
    if cls is Sequential:
        desc["layers"] = [describe(m) for m in module]
    elif cls is Residual:
        desc["block"] = describe(module.block)
    return desc


def _entry(desc: Any, source: str) -> tuple:
    """(class, complete constructor config) of one architecture entry: registered types only."""
    from .nn.containers import Sequential
    from .nn.module import MODULES, full_config
    from .nn.residual import Residual

    if not isinstance(desc, dict) or not isinstance(desc.get("type"), str):
        raise ModelFileError(f"{source}: architecture entry must be an object with a 'type', got {str(desc)[:80]!r}")
    name = desc["type"]
    cls = MODULES.get(name)
    if cls is None:
        raise ModelFileError(f"{source}: unknown layer type {name[:80]!r}; known types: {', '.join(sorted(MODULES))}")
    config = desc.get("config", {})
    if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
        raise ModelFileError(f"{source}: config of {name} must be an object of named arguments")
    if cls is Sequential and not isinstance(desc.get("layers"), list):
        raise ModelFileError(f"{source}: Sequential needs a list of 'layers'")
    if cls is Residual:  # its one argument, the block, is the entry's "block", not a config value
        if not isinstance(desc.get("block"), dict) or config:
            raise ModelFileError(f"{source}: Residual needs a 'block' and an empty config")
        return cls, {}
    try:
        return cls, full_config(cls, config)
    except TypeError as e:
        raise ModelFileError(f"{source}: config of {name}: {e}") from None


def state_shapes(desc: Any, source: str = "<architecture>") -> dict:
    """name -> shape of every array a module built from :func:`describe`'s data holds, from the
    description alone (each layer type's ``state_shapes``): nothing is built or allocated."""
    from .nn.containers import Sequential
    from .nn.residual import Residual

    cls, config = _entry(desc, source)
    if cls is Sequential:
        shapes = {}
        for i, layer in enumerate(desc["layers"]):
            shapes.update({f"{i}.{k}": v for k, v in state_shapes(layer, source).items()})
        return shapes
    if cls is Residual:
        return {f"block.{k}": v for k, v in state_shapes(desc["block"], source).items()}
    try:
        shapes = cls.state_shapes(config)
    except Exception as e:  # a config of the wrong types: "sizes": "abc", "in_features": [1]
        raise ModelFileError(f"{source}: cannot work out the shapes of {cls.__name__} from config {str(config)[:200]}: {e}") from None
    return {k: tuple(v) for k, v in shapes.items()}


def build(desc: Any, source: str = "<architecture>") -> Any:
    """A module from :func:`describe`'s data; only registered types, only plain arguments."""
    from .nn.containers import Sequential
    from .nn.residual import Residual

    cls, config = _entry(desc, source)
    name = cls.__name__
    try:
        if cls is Sequential:
            return Sequential(*[build(d, source) for d in desc["layers"]])
        if cls is Residual:
            return Residual(build(desc["block"], source))
        return cls(**config)
    except ModelFileError:
        raise
    except Exception as e:
        raise ModelFileError(f"{source}: cannot build {name} from config {str(desc.get('config'))[:200]}: {e}") from None


def save(model: Any, path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Write ``model`` to ``path``: safetensors weights plus the architecture as JSON.

    A model on a GPU (or any device) is written from host copies of its weights.

    Example:
        >>> cr.save(model, "digits.safetensors")
        >>> same = cr.load("digits.safetensors")
    """
    path = Path(path)
    meta = {"format": FORMAT, "architecture": json.dumps(describe(model))}
    if metadata:
        meta["user"] = json.dumps(metadata)
    write_safetensors(path, dict(model.state_dict()), meta)
    return path


def load(path: str | os.PathLike, device: str | None = None) -> Any:
    """Read a model written by :func:`save`, in evaluation mode; ModelFileError names the file and the field at fault.

    The header is read first: the stored tensors' names, shapes and dtypes must be those
    the architecture declares before any module is built, so memory stays within the
    file's size plus a small constant. Each tensor must match its SHA-256 digest.

    The model comes back in evaluation mode (``model.eval()``) whatever mode it was saved in,
    ready to predict: batch normalization uses its running statistics and dropout is off.
    Call ``model.train()`` to train it further (``cr.fit`` does).

    Args:
        path: the model file.
        device: where the model goes after loading ("cpu" or "cuda"); on the CPU (NumPy) by default.

    Example:
        >>> model = cr.load("digits.safetensors", device="cuda")
    """
    model = model_from(read_header(path), str(path)).eval()
    return model if device is None else model.to(device)


def model_from(file: SafetensorsFile, source: str, prefix: str = "") -> Any:
    """The model whose architecture ``file``'s metadata describes, with the tensors under ``prefix``.

    Order: parse the architecture; compare its declared shapes with the header; only
    then build the model and read the tensors (digests and finite values checked).
    """
    from .nn.init import skip_random_init

    meta = file.metadata
    label = f"model file {source!r}"
    text = meta.get("architecture")
    if text is None:
        raise ModelFileError(f"{label} has no architecture description (not written by chainrule.save?)")
    if len(text) > MAX_ARCHITECTURE_CHARS:
        raise ModelFileError(f"{label}: metadata field architecture takes {len(text)} characters, at most {MAX_ARCHITECTURE_CHARS}")
    desc = parse_json(text, f"{label}: metadata field architecture", ModelFileError)
    expected = state_shapes(desc, label)
    stored = {k[len(prefix) :]: t for k, t in file.tensors.items() if k.startswith(prefix)}
    for name, shape in expected.items():
        if name not in stored:
            raise ModelFileError(f"{label} lacks parameter {name!r}")
        t = stored[name]
        if t.shape != shape:
            raise ModelFileError(f"{label}: parameter {name!r} has shape {t.shape}, the architecture needs {shape}")
        if t.dtype.kind != "f":
            raise ModelFileError(f"{label}: parameter {name!r} has dtype {t.dtype.name}, expected floating point")
    extra = [k for k in stored if k not in expected]
    if extra:
        raise ModelFileError(f"{label} has parameters the architecture does not: {extra[:5]}")
    with skip_random_init():  # the file's values replace the weights: drawing them would be wasted
        model = build(desc, label)
    own = dict(model.named_state())  # parameters and buffers (running statistics)
    if set(own) != set(expected):
        raise ChainruleError(f"{type(model).__name__}.state_shapes declares {sorted(expected)}, but the module holds {sorted(own)}")
    arrays = file.read((prefix + name for name in own), into={prefix + name: p.data for name, p in own.items()})
    for name, p in own.items():
        a = arrays[prefix + name]
        if not np.isfinite(a).all():
            raise ModelFileError(f"{label}: parameter {name!r} holds NaN or infinite values")
        p.data = a
    return model
