"""``longvid serve --replicas N --ray [ADDRESS|local]``: N copies of the server app behind Ray Serve.

Layout: one Ray Serve application ``longvid`` of N+1 deployments. ``replica0`` ... ``replica{N-1}`` each run the whole
`longvid.serve.app` FastAPI app (its model, device worker, queue, sessions, limits and errors, unchanged) in-process
through ASGI; ``router`` is the HTTP ingress, which forwards each request (method, path, headers, body) to one of
them and streams the reply back (server-sent events included).

Why N one-replica deployments rather than one deployment of N replicas: a session's KV cache lives in one replica's
memory, so every request for it must reach that replica, and Ray Serve routes a deployment's requests to any of its
replicas (its multiplexing affinity is best-effort). Here a replica names its sessions ``sess-r{i}-{incarnation}-...``
and the router sends ``/v1/sessions/{id}...`` to replica ``i``; stateless requests (chat completions, uploads, models,
the page) go to the replica with the fewest requests in flight. ``GET /v1/sessions`` lists every replica's.

A replica that dies fails only its own sessions: while Ray Serve restarts it the router answers their requests with
503 (``replica_unavailable``), and once it is back (a new incarnation, no caches) with 404 ``session_expired`` saying the
replica restarted; stateless requests go to the replicas that answer. Uploads land in one folder all replicas read
(``upload.json`` beside each file), so a file uploaded through one replica can be asked about through any; on a
multi-node cluster that folder (``--upload-dir``) and ``--media-dir`` must be on a shared filesystem.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
from dataclasses import replace

from longvid.cluster.connect import remote_value_error

SESSION = re.compile(r"^/v1/sessions/(sess-r(\d+)-([0-9a-f]{6})-[0-9a-f]+)(/|$)")
DOWN_SECONDS = 5.0  # a replica that failed a request is skipped this long for stateless requests


class Replica:
    """One server app (model, worker, sessions) answering forwarded HTTP requests (a Ray Serve deployment)."""

    def __init__(self, index: int, model: str, load: dict, config, threads: int | None, check):
        import torch

        import longvid
        from longvid.serve.app import create_app

        if threads:
            torch.set_num_threads(threads)
        self.index, self.incarnation = index, secrets.token_hex(3)
        lm = longvid.load(model, **load)
        check.check_model(lm.adapter)
        self.config = replace(config, session_prefix=f"sess-r{index}-{self.incarnation}-")
        self.app = create_app(lm, self.config)
        self.lifespan = None

    async def _start(self) -> None:
        if self.lifespan is None:
            self.lifespan = self.app.router.lifespan_context(self.app)
            await self.lifespan.__aenter__()

    async def forward(self, method: str, path: str, query: str, headers: list, body: bytes):
        """Yield ``{"status", "headers"}`` then the body's chunks, as the app sends them."""
        await self._start()
        m = SESSION.match(path)
        if m and int(m.group(2)) == self.index and m.group(3) != self.incarnation:
            yield _error(404, f"session {m.group(1)!r} is gone: the replica that held it (replica {self.index}) "
                              "restarted and its cache was lost; create a new session", "session_id", "session_expired")
            return
        sent, gone = asyncio.Event(), asyncio.Event()
        messages: asyncio.Queue = asyncio.Queue()
        first = True

        async def receive():
            nonlocal first
            if first:
                first = False
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            await messages.put(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
                 "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
                 "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
                 "client": ("ray-serve", 0), "server": ("ray-serve", 80)}
        app = asyncio.create_task(self.app(scope, receive, send))
        try:
            while True:
                get = asyncio.ensure_future(messages.get())
                await asyncio.wait({get, app}, return_when=asyncio.FIRST_COMPLETED)
                if not get.done():
                    get.cancel()
                    app.result()  # raises what the app raised
                    return
                message = get.result()
                if message["type"] == "http.response.start":
                    yield {"status": message["status"],
                           "headers": [(k.decode("latin-1"), v.decode("latin-1")) for k, v in message["headers"]]}
                elif message["type"] == "http.response.body":
                    if message.get("body"):
                        yield bytes(message["body"])
                    if not message.get("more_body"):
                        sent.set()
                        return
        finally:
            gone.set()  # the client left (or the reply is complete): the app's disconnect checks see it
            if not sent.is_set():  # the app cancels its job on the disconnect; stop it if it has not within 5 s
                asyncio.get_running_loop().call_later(5, app.cancel)


def _error(status: int, message: str, param: str | None, code: str) -> dict:
    """A complete reply in the server's error shape (OpenAI's), as `Replica.forward` yields one."""
    from longvid.serve.errors import error_body

    return {"status": status, "headers": [("content-type", "application/json")],
            "body": json.dumps(error_body(status, message, param, code)).encode()}


def _reply(head: dict, extra: dict | None = None):
    from starlette.responses import Response

    return Response(head["body"], head["status"], headers={**dict(head["headers"]), **(extra or {})})


class Router:
    """The HTTP ingress: picks a replica per request and streams its reply back."""

    def __init__(self, *replicas):
        self.replicas = list(replicas)
        self.inflight = [0] * len(replicas)
        self.down_until = [0.0] * len(replicas)
        self.turn = 0

    def _pick(self) -> list[int]:
        """Replicas in the order to try a stateless request: those up first, fewest in flight, round-robin ties."""
        n, now = len(self.replicas), time.monotonic()
        self.turn = (self.turn + 1) % n
        order = sorted(range(n), key=lambda i: (self.down_until[i] > now, self.inflight[i], (i - self.turn) % n))
        return order

    async def __call__(self, request):
        from starlette.responses import StreamingResponse

        path, method = request.url.path, request.method
        body = await request.body()
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in ("host", "content-length",
                                                                                    "transfer-encoding")]
        if body or "content-length" in request.headers:
            headers.append(("content-length", str(len(body))))
        args = (method, path, request.url.query, headers, body)
        if path == "/v1/sessions" and method == "GET":
            return await self._all_sessions(args)
        m = SESSION.match(path)
        if m:
            index = int(m.group(2))
            if index >= len(self.replicas):
                return _reply(_error(404, f"no session {m.group(1)!r}", "session_id", "session_not_found"))
            candidates = [index]
        elif path.startswith("/v1/sessions/"):
            candidates = [0]  # not a replica's id: replica 0 answers "no session" in its own words
        else:
            candidates = self._pick()
        last = None
        for i in candidates:
            self.inflight[i] += 1
            try:
                stream = self.replicas[i].options(stream=True).forward.remote(*args)
                head = await stream.__anext__()
            except Exception as err:  # noqa: BLE001 - the replica died or is restarting
                self.inflight[i] -= 1
                self.down_until[i] = time.monotonic() + DOWN_SECONDS
                last = (i, err)
                continue
            head["headers"].append(("x-longvid-replica", str(i)))
            if "body" in head:  # a complete reply (the replica's own error)
                self.inflight[i] -= 1
                return _reply(head)

            async def chunks(i=i, stream=stream):
                try:
                    async for chunk in stream:
                        yield chunk
                finally:
                    self.inflight[i] -= 1

            return StreamingResponse(chunks(), status_code=head["status"], headers=_headers(head["headers"]))
        i, err = last
        what = (f"the replica holding session {m.group(1)!r} (replica {i}) is not answering (it stopped; Ray Serve "
                "restarts it, without the sessions it held); create a new session") if m else \
            f"no replica is answering ({type(err).__name__}); try again shortly"
        return _reply(_error(503, what, "session_id" if m else None, "replica_unavailable"), {"Retry-After": "5"})

    async def _all_sessions(self, args):
        """Every replica's sessions in one list; the memory counters summed."""
        from starlette.responses import JSONResponse

        merged = {"object": "list", "data": [], "used_bytes": 0, "memory_bytes": 0, "replicas": len(self.replicas)}
        for i, replica in enumerate(self.replicas):
            try:
                parts = [part async for part in replica.options(stream=True).forward.remote(*args)]
            except Exception:  # noqa: BLE001 - a dead replica has no sessions to list
                merged.setdefault("unavailable", []).append(i)
                continue
            if parts[0]["status"] != 200:
                return JSONResponse(json.loads(parts[0].get("body") or b"".join(parts[1:])), parts[0]["status"])
            got = json.loads(b"".join(parts[1:]))
            merged["data"] += got["data"]
            merged["used_bytes"] += got["used_bytes"]
            merged["memory_bytes"] += got["memory_bytes"]
            merged["idle_seconds"] = got["idle_seconds"]
        return JSONResponse(merged)


def _headers(pairs: list) -> dict:
    return {k: v for k, v in pairs if k.lower() not in ("content-length", "transfer-encoding")}


def deploy(replicas: int, host: str, port: int, model: str, load: dict, config, method, threads: int | None,
           gpus: bool) -> None:
    """On the Ray cluster this process joined (`connect`), start Ray Serve on ``host:port`` with the router and
    ``replicas`` replicas; returns once every replica has loaded its model (or raises a one-line ValueError: a
    replica's own, e.g. a method the model cannot run)."""
    from ray import serve

    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    options = dict(num_gpus=1, num_cpus=1) if gpus else dict(num_cpus=threads or 1)
    nodes = [serve.deployment(Replica, name=f"replica{i}", num_replicas=1, ray_actor_options=options,
                              max_ongoing_requests=config.max_waiting + 64, health_check_period_s=2,
                              health_check_timeout_s=30).bind(i, model, load, config, threads, method)
             for i in range(replicas)]
    router = serve.deployment(Router, name="router", num_replicas=1, ray_actor_options=dict(num_cpus=0),
                              max_ongoing_requests=4096).bind(*nodes)
    serve.start(http_options=dict(host=host, port=port), logging_config=dict(log_level="WARNING"))
    try:
        serve.run(router, name="longvid", route_prefix="/")
    except Exception as err:  # noqa: BLE001 - a replica failed to start: its own message
        raise ValueError(remote_value_error(err) or str(err).strip().splitlines()[-1]) from None
