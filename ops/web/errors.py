"""The one exception of the web side: an HTTP answer other than 200, with its sentence."""

from __future__ import annotations

from http import HTTPStatus


class HttpError(Exception):
    """An answer other than 200, with the sentence to show."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
