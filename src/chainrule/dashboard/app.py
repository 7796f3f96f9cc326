"""The dashboard's web app (Starlette): the page, its assets, the commands and the event stream.

Routes:

==================================  =================================================================
GET  /                              the page
GET  /static/{file}                 its script and icon
GET  /vendor/plotly.min.js          plotly.js, served from the installed plotly package (no CDN)
GET  /api/options                   choices, limits and defaults of every setting
GET  /api/settings?{query}          the query's settings, checked and completed (400 with a message)
POST /api/sessions/{sid}/start      body: JSON settings; starts or resumes the tab's run
POST /api/sessions/{sid}/step       body: JSON settings; one step, then paused
POST /api/sessions/{sid}/pause
POST /api/sessions/{sid}/reset      stops the run and forgets it
POST /api/sessions/{sid}/close      the tab is closing (sent with navigator.sendBeacon)
GET  /api/sessions/{sid}/state      the latest setup and snapshot, as JSON
GET  /api/sessions/{sid}/events     server-sent events: setup, snapshot and reset messages;
                                    ``?limit=N`` ends the stream after N messages
GET  /api/sessions/{sid}/graph      the run's computation graph now, gradients on its edges
GET  /vendor/compgraph.js           the graph drawing script (chainrule.compgraph's static/graph.js)
==================================  =================================================================

Errors come back as ``{"error": "..."}`` with 400 (bad settings or request,
malformed JSON, a run larger than the server's memory budget), 404, 405, 413
(a body over MAX_BODY_BYTES) or 429 (too many runs or tabs, or no memory left
for the run while other tabs hold theirs); the page shows the message.
Only Start and Step create a tab's session: reading the state or the events
of one that does not exist answers as for an idle tab and creates nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..errors import ChainruleError
from ..validation import parse_json
from . import graph_view
from .settings import SettingsError, options, parse_settings
from .worker import Session, SessionManager, TooBusy

log = logging.getLogger("chainrule.dashboard")
STATIC = Path(__file__).parent / "static"
SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
POLL_SECONDS = 0.03  # how often an event stream looks for a new snapshot
KEEPALIVE_SECONDS = 15.0
IDLE_SECONDS = 60.0  # a session nobody watches or commands for this long is closed
REAP_EVERY = 5.0
MAX_BODY_BYTES = 64 * 1024  # a Start's settings take about 250 bytes


def plotly_js() -> Path:
    """The plotly.min.js that ships inside the plotly Python package."""
    try:
        import plotly
    except ImportError:
        raise ChainruleError("the dashboard draws its charts with plotly.js from the plotly package: pip install 'chainrule[dashboard]'") from None
    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise ChainruleError(f"plotly.min.js not found in the installed plotly package (looked for {path})")
    return path


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(manager: SessionManager | None = None, idle_seconds: float = IDLE_SECONDS) -> Starlette:
    """The dashboard as an ASGI app; its runs stop when the app shuts down.

    Args:
        manager: holds the sessions and runs (a fresh :class:`SessionManager` by default).
        idle_seconds: close a tab's session after this long with no event stream open and no command.

    Example:
        >>> import uvicorn
        >>> uvicorn.run(create_app(), host="127.0.0.1", port=8765)
    """
    manager = manager or SessionManager()
    plotly_path = plotly_js()

    def session_id(request: Request) -> str:
        sid = request.path_params["sid"]
        if not SESSION_ID.match(sid):
            raise HTTPException(400, f"session id must be 8 to 64 letters, digits, '-' or '_', got {sid[:80]!r}")
        return sid

    async def settings_body(request: Request) -> Any:
        raw = await read_body(request)
        if not raw.strip():
            return parse_settings({})
        values = parse_json(raw, "the request body (a JSON object of settings)", SettingsError, max_depth=2)
        if not isinstance(values, dict):
            raise SettingsError(f"the request body must be a JSON object of settings, got a JSON {type(values).__name__}")
        return parse_settings(values)

    async def read_body(request: Request) -> bytes:
        """The request's body, refused with 413 past MAX_BODY_BYTES before more of it is read."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise HTTPException(413, f"the request body takes {declared} bytes; at most {MAX_BODY_BYTES} are accepted")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                raise HTTPException(413, f"the request body takes more than the {MAX_BODY_BYTES} bytes accepted")
        return bytes(body)

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def plotly(request: Request) -> Response:
        return FileResponse(plotly_path, media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})

    async def api_options(request: Request) -> Response:
        return JSONResponse(options())

    async def api_settings(request: Request) -> Response:
        s = parse_settings(dict(request.query_params))
        return JSONResponse({"settings": s.to_dict(), "query": s.to_query()})

    async def start(request: Request) -> Response:
        sid = session_id(request)
        settings = await settings_body(request)
        return JSONResponse(await run_in_threadpool(manager.start, sid, settings))

    async def step(request: Request) -> Response:
        sid = session_id(request)
        settings = await settings_body(request)
        return JSONResponse(await run_in_threadpool(manager.start, sid, settings, 1))

    async def pause(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(manager.pause, session_id(request)))

    async def reset(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(manager.reset, session_id(request)))

    async def close(request: Request) -> Response:
        await run_in_threadpool(manager.close, session_id(request))
        return JSONResponse({"closed": True})

    async def state(request: Request) -> Response:
        sid = session_id(request)
        s = manager.find(sid)  # reading a session never creates one
        if s is None:
            return JSONResponse({**manager.status(sid), "setup": None, "snapshot": None})
        messages, _ = s.poll(None)
        parsed = [json.loads(m) for m in messages]
        setup = next((m for m in parsed if m["type"] == "setup"), None)
        snapshot = next((m for m in parsed if m["type"] == "snapshot"), None)
        return JSONResponse({**s.status(), "setup": setup, "snapshot": snapshot})

    async def live_graph(request: Request) -> Response:
        s = manager.find(session_id(request))  # reading a session never creates one
        run = None if s is None else s.run
        if run is None:
            raise HTTPException(404, "this tab has no run yet: press Start or Step to see the network's graph")
        return JSONResponse(await run_in_threadpool(graph_view.live_graph, run))

    async def compgraph_js(request: Request) -> Response:
        return FileResponse(graph_view.SCRIPT, media_type="text/javascript", headers={"Cache-Control": "no-cache"})

    async def events(request: Request) -> Response:
        sid = session_id(request)
        text = request.query_params.get("limit", "0")
        if not (text.isascii() and text.isdigit() and len(text) < 10):
            raise HTTPException(400, f"limit must be a whole number of messages, got {text[:40]!r}")
        limit = int(text)

        async def stream():
            # the tab's session, watched while it exists: until a Start creates it the page hears "reset"
            watched, cursor, sent, quiet_since = None, None, 0, time.monotonic()
            try:
                yield "retry: 1000\n\n"
                while not manager.closed:
                    s = manager.find(sid)
                    if s is not watched:
                        if watched is not None:
                            watched.consumers -= 1
                        if s is not None:
                            s.consumers += 1
                        watched = s
                    if s is not None:
                        messages, cursor = s.poll(cursor)
                    else:
                        messages = [Session.RESET] if cursor is None or cursor[0] is not None else []
                        cursor = (None, -1)
                    for m in messages:
                        yield f"data: {m}\n\n"
                        sent += 1
                        if limit and sent >= limit:
                            return
                    now = time.monotonic()
                    if messages:
                        quiet_since = now
                    elif now - quiet_since > KEEPALIVE_SECONDS:
                        yield ": keep-alive\n\n"
                        quiet_since = now
                    await asyncio.sleep(POLL_SECONDS)
            finally:
                if watched is not None:
                    watched.consumers -= 1
                    watched.last_seen = time.monotonic()

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    async def settings_error(request: Request, exc: Exception) -> Response:
        return _error(400, str(exc))

    async def too_busy(request: Request, exc: Exception) -> Response:
        return _error(429, str(exc))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        detail = exc.detail
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"not found: {request.url.path}"
        return _error(exc.status_code, str(detail))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        async def reaper():
            while True:
                await asyncio.sleep(REAP_EVERY)
                await run_in_threadpool(manager.reap, idle_seconds)

        task = asyncio.create_task(reaper())
        try:
            yield
        finally:
            task.cancel()
            await run_in_threadpool(manager.shutdown)

    sid = "/api/sessions/{sid}"
    routes = [
        Route("/", index),
        Route("/vendor/plotly.min.js", plotly),
        Route("/api/options", api_options),
        Route("/api/settings", api_settings),
        Route(f"{sid}/start", start, methods=["POST"]),
        Route(f"{sid}/step", step, methods=["POST"]),
        Route(f"{sid}/pause", pause, methods=["POST"]),
        Route(f"{sid}/reset", reset, methods=["POST"]),
        Route(f"{sid}/close", close, methods=["POST"]),
        Route(f"{sid}/state", state),
        Route(f"{sid}/events", events),
        Route(f"{sid}/graph", live_graph),
        Route("/vendor/compgraph.js", compgraph_js),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("dashboard request %s failed", request.url.path, exc_info=exc)
        return _error(500, f"the server failed on this request: {type(exc).__name__}: {str(exc)[:200]}")

    handlers = {
        SettingsError: settings_error, TooBusy: too_busy, ChainruleError: settings_error, HTTPException: http_error,
        Exception: server_error,
    }
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    app.state.manager = manager
    return app


def serve(host: str = "127.0.0.1", port: int = 8765, sock: Any = None, manager: SessionManager | None = None) -> None:
    """Run the dashboard on uvicorn until Ctrl+C (or SIGTERM); then stop every run and return.

    Args:
        host, port: where to listen (ignored when ``sock`` is given).
        sock: an already bound socket (the command line binds first, to report a busy port clearly).
        manager: the sessions (a fresh one by default).
    """
    import uvicorn

    manager = manager or SessionManager()
    app = create_app(manager)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            manager.stop_all()  # ends the event streams too, so uvicorn need not wait for them
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=3, lifespan="on")
    server = Server(config)
    try:
        server.run(sockets=[sock] if sock is not None else None)
    except KeyboardInterrupt:
        pass  # uvicorn re-raises Ctrl+C after its graceful shutdown: that is how we are meant to stop
    finally:
        manager.shutdown()
