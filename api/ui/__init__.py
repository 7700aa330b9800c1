"""The web console at /ui: a static bundle (HTML, ES modules, CSS) shipped in the package and
served as files, no build step and no Node. The page calls the /v1 api with the bearer token
the user gives it; every response here carries a strict Content-Security-Policy (scripts and
styles from this origin only, nothing inline, no frames), so text from a model or a tool can
never run as code even if it reached the DOM as markup (it does not: the page sets text only).
"""

from __future__ import annotations

from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import RedirectResponse, Response

from api.problems import Problem

router = APIRouter(include_in_schema=False)

STATIC = resources.files(__package__) / "static"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _file(name: str) -> Response:
    """A file of the bundle by its name (no directories), with the console's headers."""
    suffix = name[name.rfind(".") :] if "." in name else ""
    media = MEDIA_TYPES.get(suffix)
    item = STATIC / name
    if media is None or "/" in name or name.startswith(".") or not item.is_file():
        raise Problem(404, "Not found", f"no file {name} in the console")
    return Response(item.read_bytes(), media_type=media, headers=HEADERS)


@router.get("/ui")
async def console_root() -> RedirectResponse:
    """The console lives at /ui/ (its modules are addressed relative to it)."""
    return RedirectResponse("ui/", status_code=308, headers=HEADERS)


@router.get("/ui/")
async def console_page() -> Response:
    """The console's page."""
    return _file("index.html")


@router.get("/ui/{name}")
async def console_file(name: Annotated[str, Path(max_length=100)]) -> Response:
    """A module, stylesheet or image of the console."""
    return _file(name)
