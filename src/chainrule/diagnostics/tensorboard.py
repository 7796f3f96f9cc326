"""Write the diagnostics in TensorBoard's format, through tensorboardX (an optional extra).

    pip install "chainrule[tensorboard]"      # tensorboardX, which needs protobuf

Scalars per layer and epoch go under ``diagnostics/<field>/layer<i>``; the
histograms a Monitor kept (``Monitor(histograms=True)``) under
``histograms/layer<i>/{weight,weight_grad,preactivation}``.
"""

from __future__ import annotations

import math
import os
from typing import Any

from ..errors import ChainruleError

SCALAR_FIELDS = (
    "grad_norm",
    "grad_norm_bias",
    "update_ratio",
    "update_ratio_max",
    "preact_mean",
    "preact_std",
    "mean_derivative",
    "saturated_fraction",
    "dead_fraction",
    "dead_fraction_epoch",
    "prelu_slope",
)


def _writer_class() -> Any:
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise ChainruleError(
            "writing TensorBoard files needs the tensorboardX package: pip install tensorboardX "
            "(or pip install 'chainrule[tensorboard]')"
        ) from None
    return SummaryWriter


def write_tensorboard(source: Any, logdir: str | os.PathLike, histories: Any = None) -> str:
    """Write per-layer, per-epoch diagnostics (and histograms, when kept) as TensorBoard event files.

    Args:
        source: a Monitor, its ``to_dict()`` or its list of per-epoch records.
        logdir: the folder TensorBoard reads (``tensorboard --logdir DIR``); created if missing.
        histories: optional ``{name: list of per-epoch numbers}`` written as scalars too,
            e.g. ``History.history`` for the loss and accuracy curves.

    Returns:
        The path of the event file written.

    Example:
        >>> write_tensorboard(monitor, "runs/tb", histories=hist.history)
    """
    from .summary import as_data

    SummaryWriter = _writer_class()
    data = as_data(source)
    os.makedirs(logdir, exist_ok=True)
    writer = SummaryWriter(logdir=str(logdir))
    try:
        for record in data["epochs"]:
            epoch = int(record["epoch"])
            if record.get("grad_norm_ratio") is not None:
                writer.add_scalar("diagnostics/grad_norm_ratio_first_to_last", record["grad_norm_ratio"], epoch)
            for row in record["layers"]:
                for name in SCALAR_FIELDS:
                    v = row.get(name)
                    if v is not None and math.isfinite(v):
                        writer.add_scalar(f"diagnostics/{name}/layer{row['layer']}", float(v), epoch)
        hists = getattr(source, "histograms", None) or []
        for record, hist in zip(data["epochs"], hists):
            for tag, h in hist.items():
                if h["num"]:
                    writer.add_histogram_raw(
                        f"histograms/{tag}",
                        min=h["min"],
                        max=h["max"],
                        num=h["num"],
                        sum=h["sum"],
                        sum_squares=h["sum_squares"],
                        bucket_limits=h["bucket_limits"],
                        bucket_counts=h["bucket_counts"],
                        global_step=int(record["epoch"]),
                    )
        for name, values in (histories or {}).items():
            for epoch, v in enumerate(values, start=1):
                if isinstance(v, (int, float)) and math.isfinite(v):
                    writer.add_scalar(f"training/{name}", float(v), epoch)
    finally:
        writer.close()
    events = [os.path.join(logdir, f) for f in os.listdir(logdir) if f.startswith("events.out.tfevents")]
    return max(events, key=os.path.getmtime) if events else str(logdir)
