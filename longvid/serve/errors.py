"""HTTP errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}`` with a 4xx status, one line.

The library's own ``ValueError``s are worded for the interface in use; the server runs every request inside
``interface(HTTP)``, so they name JSON fields (``"keep": 1.5``) and become 400s here.
"""

from __future__ import annotations

from longvid.errors import Interface

HTTP = Interface("http", flags={"max_new_tokens": "max_tokens", "num_frames": "frames", "question": "messages",
                                "video": "video_url", "path": "model"})

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
          409: "invalid_request_error", 410: "not_found_error", 413: "invalid_request_error",
          422: "invalid_request_error", 429: "rate_limit_error", 503: "server_error"}


class HTTPError(Exception):
    """A request the server refuses: status, one-line message, the field it is about, a machine-readable code."""

    def __init__(self, status: int, message: str, param: str | None = None, *, code: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return error_body(self.status, self.message, self.param, self.code)


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    kind = _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
