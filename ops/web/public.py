"""Serving the published turnout feed (``kesp-ops publish``) read-only under ``/public/``.

Only flat files of the feed directory with plain names are served: no
directory listing, no path with ``/`` or ``..`` in it, nothing outside it.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from pathlib import Path

from ops.web.errors import HttpError

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,80}$")
_TYPES = {".html": "text/html; charset=utf-8", ".json": "application/json; charset=utf-8",
          ".csv": "text/csv; charset=utf-8", ".txt": "text/plain; charset=utf-8",
          ".py": "text/plain; charset=utf-8", ".css": "text/css; charset=utf-8"}


def public_file(directory: Path | None, path: str) -> tuple[bytes, str]:
    """(bytes, content type) of the feed file at URL ``path``, or an HTTP 404."""
    if directory is None:
        raise HttpError(HTTPStatus.NOT_FOUND, "no public feed is published by this ops")
    name = path.removeprefix("/public").lstrip("/") or "index.html"
    suffix = Path(name).suffix
    if not _NAME_RE.match(name) or suffix not in _TYPES:
        raise HttpError(HTTPStatus.NOT_FOUND, "no such file in the public feed")
    target = directory / name
    try:
        return target.read_bytes(), _TYPES[suffix]
    except (FileNotFoundError, IsADirectoryError):
        raise HttpError(HTTPStatus.NOT_FOUND,
                        "no such file in the public feed (not published yet?)") from None
