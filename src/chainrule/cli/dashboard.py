"""``chainrule dashboard``: the live playground in the browser, on the real framework and real data."""

from __future__ import annotations

import socket
import sys

import typer

from . import app


@app.command()
def dashboard(
    port: int = typer.Option(8765, "--port", min=0, max=65535, help="Port to listen on (0: any free port)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; 127.0.0.1 keeps it on this machine."),
) -> None:
    """Start the dashboard web app and print its address; Ctrl+C stops it and every run it trains.

    Choose a dataset and a network in the page, press Start, and watch the loss,
    the accuracy, each layer's gradient norm, the dead and saturated units and
    what the network has learned, live. Settings live in the page's address,
    so a view can be shared and reopened.
    """
    from . import fail  # defined after the command modules are imported

    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise fail(f"the dashboard needs starlette, uvicorn and plotly ({e}): pip install 'chainrule[dashboard]'")
    from ..dashboard.app import plotly_js, serve

    plotly_js()  # a missing plotly is reported now, not when the page loads

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise fail(f"--host {host!r} is not an address this machine can listen on ({e.strerror})")
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)  # from here on connections wait in the queue while the app starts
    except OSError as e:
        sock.close()
        raise fail(f"cannot listen on {host}:{port} ({e.strerror}); choose another port with --port")
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if family == socket.AF_INET6 else bound_host
    typer.echo(f"chainrule dashboard: http://{shown}:{bound_port}/  (Ctrl+C stops it)", nl=True)
    if bound_host not in ("127.0.0.1", "::1", "localhost"):
        typer.echo(f"warning: listening on {bound_host}, so other machines can reach this dashboard", err=True)
    sys.stdout.flush()
    serve(sock=sock)
