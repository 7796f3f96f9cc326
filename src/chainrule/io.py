"""Model files: safetensors weights with a JSON description of the architecture. Never pickle.

A model file is one ``.safetensors`` file: the parameters by dotted name, and
in its header's metadata the architecture as JSON ({"type": "MLP", "config":
{...}}). Loading builds only module types registered in ``nn.MODULES`` from
plain numbers and strings, then checks every parameter's name and shape;
nothing in a file is ever executed. Files are written atomically (temporary
file, fsync, rename), so a crash leaves the previous file whole.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .backend import to_numpy
from .errors import ChainruleError, ModelFileError

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


def write_safetensors(path: str | os.PathLike, arrays: dict, metadata: dict) -> None:
    """Arrays (name -> array of any namespace) and string metadata into a safetensors file, atomically.

    Arrays on a device are copied to the host first.
    """
    from safetensors.numpy import save

    plain = {k: np.ascontiguousarray(to_numpy(v)) for k, v in arrays.items()}
    write_atomic(path, save(plain, metadata={k: str(v) for k, v in metadata.items()}))


def read_safetensors(path: str | os.PathLike) -> tuple:
    """(arrays, metadata) of a safetensors file; ModelFileError for anything missing or malformed."""
    from safetensors.numpy import load

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {str(path)!r} does not exist")
    raw = path.read_bytes()
    if len(raw) < 8:
        raise ModelFileError(f"model file {str(path)!r} is truncated: {len(raw)} bytes, not even a header length")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > len(raw) - 8:
        raise ModelFileError(f"model file {str(path)!r} is truncated or corrupt: header of {n} bytes in a file of {len(raw)}")
    try:
        header = json.loads(raw[8 : 8 + n].decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        metadata = header.get("__metadata__") or {}
        if not isinstance(metadata, dict):
            raise ValueError("metadata is not a JSON object")
        arrays = load(raw)
    except Exception as e:  # safetensors' own errors, bad UTF-8, bad JSON
        raise ModelFileError(f"model file {str(path)!r} is corrupt: {e}") from None
    return arrays, metadata


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


def build(desc: Any, source: str = "<architecture>") -> Any:
    """A module from :func:`describe`'s data; only registered types, only plain arguments."""
    from .nn.containers import Sequential
    from .nn.module import MODULES
    from .nn.residual import Residual

    if not isinstance(desc, dict) or not isinstance(desc.get("type"), str):
        raise ModelFileError(f"{source}: architecture entry must be an object with a 'type', got {str(desc)[:80]!r}")
    name = desc["type"]
    cls = MODULES.get(name)
    if cls is None:
        raise ModelFileError(f"{source}: unknown layer type {name!r}; known types: {', '.join(sorted(MODULES))}")
    config = desc.get("config", {})
    if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
        raise ModelFileError(f"{source}: config of {name} must be an object of named arguments")
    try:
        if cls is Sequential:
            layers = desc.get("layers")
            if not isinstance(layers, list):
                raise ModelFileError(f"{source}: Sequential needs a list of 'layers'")
            return Sequential(*[build(d, source) for d in layers])
        if cls is Residual:
            return Residual(build(desc.get("block"), source))
        return cls(**config)
    except ModelFileError:
        raise
    except Exception as e:
        raise ModelFileError(f"{source}: cannot build {name} from config {config}: {e}") from None


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
    """Read a model written by :func:`save`, in evaluation mode; ModelFileError names the file and the parameter at fault.

    The model comes back in evaluation mode (``model.eval()``) whatever mode it was saved in,
    ready to predict: batch normalization uses its running statistics and dropout is off.
    Call ``model.train()`` to train it further (``cr.fit`` does).

    Args:
        path: the model file.
        device: where the model goes after loading ("cpu" or "cuda"); on the CPU (NumPy) by default.

    Example:
        >>> model = cr.load("digits.safetensors", device="cuda")
    """
    arrays, meta = read_safetensors(path)
    model = model_from(arrays, meta, str(path)).eval()
    return model if device is None else model.to(device)


def model_from(arrays: dict, meta: dict, source: str, prefix: str = "") -> Any:
    if "architecture" not in meta:
        raise ModelFileError(f"model file {source!r} has no architecture description (not written by chainrule.save?)")
    try:
        desc = json.loads(meta["architecture"])
    except json.JSONDecodeError as e:
        raise ModelFileError(f"model file {source!r}: architecture is not valid JSON: {e}") from None
    model = build(desc, f"model file {source!r}")
    own = dict(model.named_state())  # parameters and buffers (running statistics)
    weights = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
    for name, p in own.items():
        if name not in weights:
            raise ModelFileError(f"model file {source!r} lacks parameter {name!r}")
        a = weights[name]
        if a.shape != p.data.shape:
            raise ModelFileError(f"model file {source!r}: parameter {name!r} has shape {a.shape}, the architecture needs {p.data.shape}")
        if a.dtype.kind != "f":
            raise ModelFileError(f"model file {source!r}: parameter {name!r} has dtype {a.dtype}, expected floating point")
        if not np.isfinite(a).all():
            raise ModelFileError(f"model file {source!r}: parameter {name!r} holds NaN or infinite values")
        p.data = np.array(a)
    extra = [k for k in weights if k not in own]
    if extra:
        raise ModelFileError(f"model file {source!r} has parameters the architecture does not: {extra[:5]}")
    return model
