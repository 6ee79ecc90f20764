"""``longvid serve``: an OpenAI-compatible video chat server with compressed-cache sessions (FastAPI + uvicorn).

    longvid serve --model longvid-tiny --media-dir ./videos          # http://127.0.0.1:8000
    from longvid.serve import ServerConfig, create_app                 # the ASGI app, for your own server

`app` has the routes, `requests` the request checks, `worker` the device queue, `sessions` the session store,
`media` the video sources; `static/index.html` is the web page at ``/``.
"""

from __future__ import annotations


def __getattr__(name: str):  # FastAPI is imported only when a server is built
    if name in ("ServerConfig", "create_app"):
        from longvid.serve import app

        return getattr(app, name)
    raise AttributeError(f"module 'longvid.serve' has no attribute {name!r}")


__all__ = ["ServerConfig", "create_app"]
