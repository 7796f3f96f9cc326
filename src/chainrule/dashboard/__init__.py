"""The live dashboard: train a real chainrule network on real data and watch it in the browser.

    chainrule dashboard            # then open http://127.0.0.1:8765/

or from Python:

    from chainrule.dashboard import serve
    serve(port=8765)

Pieces: :mod:`.settings` (what a run may be asked for, and the checks),
:mod:`.worker` (a training thread per browser tab, built on ``cr.fit`` and the
diagnostics' Monitor), :mod:`.views` (what the charts show), :mod:`.app` (the
Starlette app: page, commands, server-sent events) and ``static/`` (the page,
drawn with plotly.js from the installed plotly package).

Importing this package loads no web framework; :func:`create_app` and
:func:`serve` import Starlette and uvicorn when called.
"""

from __future__ import annotations

from typing import Any

from .settings import DEFAULTS, Settings, SettingsError, parse_settings


def create_app(*args: Any, **kwargs: Any) -> Any:
    """The dashboard's Starlette app (see :func:`chainrule.dashboard.app.create_app`)."""
    from .app import create_app as _create_app

    return _create_app(*args, **kwargs)


def serve(host: str = "127.0.0.1", port: int = 8765, **kwargs: Any) -> None:
    """Serve the dashboard on uvicorn until interrupted (see :func:`chainrule.dashboard.app.serve`)."""
    from .app import serve as _serve

    _serve(host, port, **kwargs)


__all__ = ["DEFAULTS", "Settings", "SettingsError", "create_app", "parse_settings", "serve"]
