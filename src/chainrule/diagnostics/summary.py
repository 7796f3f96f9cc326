"""The end-of-training health of each layer: as plain data, as text and as a rich Table."""

from __future__ import annotations

from typing import Any

from ..errors import ChainruleError

COLUMNS = ("layer", "name", "activation", "grad_norm", "update_ratio", "preact", "saturated", "dead", "status")
_HEADERS = ("Layer", "Module", "Activation", "Grad norm", "Update/weight", "Pre-act mean ± std", "Saturated", "Dead", "Status")
# shown before Status when a layer has batch normalization: its running variance, mean [min-max];
# a normalized layer's activation reads "BN + relu" (batch norm) or "LN + relu" (layer norm)
_BN_HEADER = "BN var"
_NORM_ABBREVIATION = {"batch": "BN", "layer": "LN"}


def as_data(source: Any) -> dict:
    """``Monitor.to_dict()`` from a Monitor, or the dict itself (as read back from metrics.json)."""
    if hasattr(source, "to_dict") and hasattr(source, "records"):
        return source.to_dict()
    if isinstance(source, dict) and "epochs" in source:
        return source
    if isinstance(source, list):
        return {"epochs": source, "initial": None, "warnings": []}
    raise ChainruleError(
        f"expected a diagnostics Monitor, its to_dict() or its list of records, got {type(source).__name__}"
    )


def health_summary(source: Any) -> dict:
    """Per-layer health at the end of training, as plain data.

    Args:
        source: a Monitor, or its ``to_dict()`` (for example from metrics.json).

    Returns:
        ``{"epoch": last epoch, "healthy": bool, "layers": [{"layer", "name", "activation",
        "norm", "grad_norm", "update_ratio", "preact_mean", "preact_std", "saturated_fraction",
        "dead_fraction", "bn_running_var", "bn_running_var_range", "status": ["ok"] or warning
        kinds}], "warnings": [messages]}``. In a normalized layer the pre-activation is the
        normalized value the activation receives.

    Example:
        >>> health_summary(monitor)["healthy"]
        True
    """
    data = as_data(source)
    epochs = data.get("epochs") or []
    warnings = data.get("warnings") or []
    if not epochs:
        return {"epoch": None, "healthy": not warnings, "layers": [], "warnings": [w["message"] for w in warnings]}
    last = epochs[-1]
    layers = []
    for row in last["layers"]:
        kinds = sorted({w["kind"].replace("_", " ") for w in warnings if row["layer"] in (w.get("layers") or [w.get("layer")])})
        layers.append(
            {
                "layer": row["layer"],
                "name": row["name"],
                "activation": row["activation"],
                "norm": row.get("norm"),
                "grad_norm": row.get("grad_norm"),
                "update_ratio": row.get("update_ratio"),
                "preact_mean": row.get("preact_mean"),
                "preact_std": row.get("preact_std"),
                "saturated_fraction": row.get("saturated_fraction"),
                "dead_fraction": row.get("dead_fraction"),
                "bn_running_var": row.get("bn_running_var"),
                "bn_running_var_range": row.get("bn_running_var_range"),
                "status": kinds or ["ok"],
            }
        )
    return {
        "epoch": last["epoch"],
        "healthy": not warnings,
        "layers": layers,
        "warnings": [w["message"] for w in warnings],
    }


def _with_bn(summary: dict) -> bool:
    return any(r["bn_running_var"] is not None for r in summary["layers"])


def _headers(summary: dict) -> list:
    h = list(_HEADERS)
    return h[:-1] + [_BN_HEADER] + h[-1:] if _with_bn(summary) else h


def _cells(row: dict, bn: bool = False) -> list:
    def sci(v: Any) -> str:
        return "-" if v is None else f"{v:.2e}"

    def pct(v: Any) -> str:
        return "-" if v is None else f"{100 * v:.0f}%"

    pre = "-"
    if row["preact_mean"] is not None:
        pre = f"{row['preact_mean']:+.2f} ± {row['preact_std']:.2f}"
    act = row["activation"] if not row["norm"] else f"{_NORM_ABBREVIATION[row['norm']]} + {row['activation']}"
    cells = [
        str(row["layer"]),
        row["name"],
        act,
        sci(row["grad_norm"]),
        sci(row["update_ratio"]),
        pre,
        pct(row["saturated_fraction"]),
        pct(row["dead_fraction"]),
    ]
    if bn:
        var, span = row["bn_running_var"], row["bn_running_var_range"]
        cells.append("-" if var is None else f"{var:.2f} [{span[0]:.2f}-{span[1]:.2f}]")
    return cells + [", ".join(row["status"])]


def health_text(source: Any) -> str:
    """The health summary as a plain-text table followed by the warnings, one per line.

    Example:
        >>> print(health_text(monitor))
    """
    s = health_summary(source)
    headers, bn = _headers(s), _with_bn(s)
    rows = [headers] + [_cells(r, bn) for r in s["layers"]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if s["epoch"] is not None:
        lines.insert(0, f"Layer health after epoch {s['epoch']}")
    lines += [f"warning: {m}" for m in s["warnings"]] or ["no problems found"]
    return "\n".join(lines)


def health_table(source: Any) -> Any:
    """A ``rich.table.Table`` of per-layer health at the end of training (rich is imported here).

    Rows whose layer has a warning are shown in yellow; the warnings
    themselves are in :func:`health_summary` (``"warnings"``).

    Example:
        >>> from rich.console import Console
        >>> Console().print(health_table(monitor))
    """
    from rich import box
    from rich.table import Table

    s = health_summary(source)
    title = "Layer health" + (f" after epoch {s['epoch']}" if s["epoch"] is not None else "")
    n = len(s["warnings"])
    table = Table(title=title, caption="no problems found" if not n else f"{n} warning{'s' * (n > 1)}")
    bn = _with_bn(s)
    table.box, table.padding, table.show_edge, table.collapse_padding = box.SIMPLE_HEAD, (0, 1), False, True
    for h in _headers(s):
        words = h in ("Module", "Activation", "Status")
        # numbers are never cut to "3.72e...": they keep their width, headers break between words,
        # and in a narrow terminal the words (Module, Activation, Status) wrap instead
        header = {"Activation": "Activ-\nation", "Saturated": "Satu-\nrated"}.get(h, h)
        header = header if words else header.replace(" ", "\n", 1).replace("/", "/\n")
        table.add_column(header, justify="left" if words else "right", no_wrap=not words,
                         min_width={"Activation": 7}.get(h, 6) if words else None, overflow="fold")
    for row in s["layers"]:
        ok = row["status"] == ["ok"]
        table.add_row(*_cells(row, bn), style=None if ok else "yellow")
    return table
