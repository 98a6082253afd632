"""The web dashboard: the built single-page app (``web/dist``) served at ``/``.

Its files are public (they hold no data: every ``/api`` call the page makes carries the user's
token). A path that is not a file of the build is answered with ``index.html``, so the page's own
addresses (``/jobs/<id>``, say) load it; paths under ``/api`` never are. Hashed assets are cached
for good, ``index.html`` never, so a new build is picked up at the next load. Without a build, ``/``
says how to make one and the API works as ever.
"""

from __future__ import annotations

import gzip
import mimetypes
from collections import OrderedDict
from pathlib import Path
from typing import Final

from fastapi import HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketClose

# The repository's web/dist, when the gateway runs from the source tree (`make run`):
# services/gateway/src/vdo_gateway/dashboard.py -> the repository's root is four levels up.
SOURCE_BUILD: Final = Path(__file__).resolve().parents[4] / "web" / "dist"
ASSETS_DIR: Final = "assets"
IMMUTABLE: Final = "public, max-age=31536000, immutable"
# The page talks to its own origin only; styles are built into a file, scripts too.
PAGE_HEADERS: Final = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'self'"
    ),
}
NOT_BUILT: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>VDO: dashboard not built</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto;
padding: 0 1rem; line-height: 1.5; color: #111">
<h1>The dashboard is not built</h1>
<p>The API is running (<a href="/api/docs">/api/docs</a>), but the web dashboard has not been
built on this machine. <code>make run</code> builds it before it starts the stack; to build it by
hand, run <code>npm install &amp;&amp; npm run build</code> in <code>web/</code>, then reload this
page.</p>
<p>Looked for it in: <code>{where}</code> (set <code>VDO_DASHBOARD_DIR</code> to use another
place).</p>
</body></html>
"""


def dashboard_fallback(directory: Path | None, *, api_prefix: str) -> ASGIApp:
    """What answers a request no endpoint has a route for (the app's router's `default`): the
    dashboard's files from `directory` (the build's own, when None) for a GET or HEAD outside
    `api_prefix`, otherwise 404 (or 405 for another method). A path an endpoint has, with another
    method, never gets here: the router answers it 405 as ever."""
    root = (directory or SOURCE_BUILD).resolve()
    api = api_prefix.strip("/")

    async def fallback(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await WebSocketClose()(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        path = request.url.path.lstrip("/")
        if path == api or path.startswith(f"{api}/"):
            raise HTTPException(status_code=404, detail="Not Found")
        if request.method not in ("GET", "HEAD"):
            raise HTTPException(
                status_code=405, detail="Method Not Allowed", headers={"Allow": "GET, HEAD"}
            )
        gzip_ok = "gzip" in request.headers.get("accept-encoding", "").lower()
        await _page(root, path, gzip_ok)(scope, receive, send)

    return fallback


def _page(root: Path, path: str, gzip_ok: bool = False) -> Response:
    index = root / "index.html"
    if not index.is_file():
        html = NOT_BUILT.replace("{where}", _escape(str(root)))
        return HTMLResponse(html, status_code=503, headers={"Cache-Control": "no-cache"})
    file = _file_in(root, path)
    if file is None:
        file, media_type, headers = index, "text/html", PAGE_HEADERS
    elif path.startswith(f"{ASSETS_DIR}/"):
        media_type = None
        headers = {"Cache-Control": IMMUTABLE, "X-Content-Type-Options": "nosniff"}
    else:
        media_type, headers = None, PAGE_HEADERS
    if file.suffix in COMPRESSIBLE:
        headers = {**headers, "Vary": "Accept-Encoding"}
        if gzip_ok:
            compressed = _gzipped(file)
            if compressed is not None:
                return Response(
                    compressed,
                    media_type=media_type or _media_type(file),
                    headers={**headers, "Content-Encoding": "gzip"},
                )
    return FileResponse(file, media_type=media_type, headers=headers)


# Text the build holds (scripts, styles, the page, icons, maps), sent gzipped to a browser that
# takes it: about a third of the bytes. Each file is compressed once, then kept while it is the
# same file (its size and time), a few at a time.
COMPRESSIBLE: Final = frozenset({".js", ".mjs", ".css", ".html", ".svg", ".json", ".map", ".txt"})
GZIP_MIN_BYTES: Final = 1024
_GZIP_CACHE_FILES: Final = 64
_gzip_cache: OrderedDict[tuple[Path, int, int], bytes] = OrderedDict()


def _gzipped(file: Path) -> bytes | None:
    """`file` gzipped (from the cache when it has not changed); None when it is too small to
    be worth it or cannot be read."""
    try:
        info = file.stat()
    except OSError:
        return None
    if info.st_size < GZIP_MIN_BYTES:
        return None
    key = (file, info.st_size, info.st_mtime_ns)
    if key in _gzip_cache:
        _gzip_cache.move_to_end(key)
        return _gzip_cache[key]
    try:
        data = gzip.compress(file.read_bytes(), compresslevel=6, mtime=0)
    except OSError:
        return None
    _gzip_cache[key] = data
    while len(_gzip_cache) > _GZIP_CACHE_FILES:
        _gzip_cache.popitem(last=False)
    return data


def _media_type(file: Path) -> str:
    guessed, _ = mimetypes.guess_type(file.name)
    return guessed or "application/octet-stream"


def _file_in(root: Path, path: str) -> Path | None:
    """The build's file at `path`, or None when there is none (or the path leaves the build)."""
    if not path or "\x00" in path:
        return None
    candidate = (root / path).resolve()
    if not candidate.is_relative_to(root) or not candidate.is_file():
        return None
    return candidate


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
