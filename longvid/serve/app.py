"""The HTTP API: OpenAI-compatible chat completions over videos, compressed-cache sessions, uploads, a web page.

Routes (JSON unless said otherwise; errors are OpenAI-style ``{"error": {...}}`` with a 4xx status):

- ``GET /v1/models``; ``GET /v1/methods`` (names, defaults, which need the question).
- ``POST /v1/chat/completions``: one user turn with one ``video_url`` part and its question; ``stream: true``
  answers as server-sent events; longvid's options as extra fields (`longvid.serve.requests`); the response has
  ``usage`` and a ``longvid`` object with the run's stats (and a kept-token map URL with ``"keep_map": true``).
- ``POST /v1/sessions`` (video + query-agnostic method: encode and prefill once), ``GET /v1/sessions``,
  ``GET`` / ``DELETE /v1/sessions/{id}``, ``POST /v1/sessions/{id}/messages`` (ask; streamed or not),
  ``POST /v1/sessions/{id}/frames`` (append a video segment).
- ``POST /v1/files`` (multipart upload, size-limited, checked to be a video), ``GET /v1/files``,
  ``DELETE /v1/files/{id}``; ``GET /v1/media`` (videos under ``--media-dir``).
- ``GET /v1/runs/{id}/keep_map.png``; ``GET /health``; ``GET /`` (the web page).

All model work runs on one worker thread in arrival order (`longvid.serve.worker`); handlers only parse, check and
wait. With an API key, every ``/v1`` route needs ``Authorization: Bearer KEY``.

    from longvid.serve.app import ServerConfig, create_app
    app = create_app(longvid.load("longvid-tiny"), ServerConfig(model_id="longvid-tiny"))
"""

from __future__ import annotations

import asyncio
import collections
import io
import json
import secrets
import sys
import tempfile
import threading
import time
import traceback
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from longvid.errors import interface
from longvid.serve.errors import HTTP, HTTPError, error_body
from longvid.serve.media import Media
from longvid.serve.requests import (Limits, RunOptions, body_object, chat_request, generation, optional_str,
                                    read_messages, run_options, video_field)
from longvid.serve.sessions import SessionGone, SessionStore
from longvid.serve.worker import DONE, Cancelled, DeviceWorker, Job, QueueFull

STATIC = Path(__file__).resolve().parent / "static"


@dataclass
class ServerConfig:
    """What ``longvid serve`` was started with."""

    model_id: str = "longvid"
    media_dir: Path | None = None
    upload_dir: Path | None = None
    api_key: str | None = None
    session_memory: int = 4 << 30
    session_idle: float = 1800.0
    max_waiting: int = 16
    max_upload_bytes: int = 512 << 20
    allow_remote_media: bool = False
    limits: Limits = field(default_factory=Limits)
    chunk_size: int = 8192
    keep_maps: int = 64
    default_run: RunOptions = field(default_factory=RunOptions)  # the method of requests that name none
    session_prefix: str = "sess-"  # a Ray Serve replica names its sessions so the router finds it
    shared_uploads: bool = False  # upload_dir is shared by several replicas


class TextStream:
    """Token ids in, text deltas out: holds back an unfinished UTF-8 character, trailing whitespace and a possible
    stop string's prefix, so the concatenated deltas equal the final answer; stops at a stop string."""

    def __init__(self, tokenizer, stop: tuple[str, ...], job: Job | None = None, emit=None):
        self.tokenizer, self.stop, self.job, self.emit = tokenizer, stop, job, emit
        self.ids: list[int] = []
        self.sent = ""
        self.text = ""
        self.stopped = False
        self.hold = max((len(s) for s in stop), default=1) - 1

    def __call__(self, token: int) -> bool:
        if self.job is not None:
            self.job.check()
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True).lstrip()
        if text.endswith("\ufffd"):  # a character split across tokens: wait for the rest
            return False
        cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.text, self.stopped = text[:cut].rstrip(), True
            self._send(self.text)
            return True
        self.text = text.rstrip()
        self._send(self.text[:max(len(self.sent), len(self.text) - self.hold)])
        return False

    def finish(self, answer_text: str) -> str:
        """The final answer (stop string removed); sends what was held back."""
        if not self.stopped:
            self.text = answer_text
        self._send(self.text)
        return self.text

    def _send(self, upto: str) -> None:
        if len(upto) > len(self.sent) and upto.startswith(self.sent):
            if self.emit is not None:
                self.emit(upto[len(self.sent):])
            self.sent = upto


class Server:
    """The state of one server process: the model, its worker, sessions, uploads, recent kept-token maps."""

    def __init__(self, lm, config: ServerConfig):
        self.lm, self.config = lm, config
        self.worker = DeviceWorker(config.max_waiting)
        self.sessions = SessionStore(config.session_memory, config.session_idle, prefix=config.session_prefix)
        upload_dir = config.upload_dir or Path(tempfile.mkdtemp(prefix="longvid-uploads-"))
        self.media = Media(config.media_dir, upload_dir, config.max_upload_bytes, config.allow_remote_media,
                           remove_at_close=config.upload_dir is None,  # a folder the caller chose is kept
                           shared=config.shared_uploads)
        self.maps: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self.maps_lock = threading.Lock()
        self.started = int(time.time())

    # ----- model work (worker thread) --------------------------------------------------------------------------
    def progress(self, job: Job):
        def check(stage, done, total):
            job.check()
        return check

    def read(self, job: Job, video, sampling):
        """Decoded frames at the model's size, and the seconds it took."""
        t0 = time.perf_counter()
        frames = self.lm.read(video, sampling, self.progress(job))
        return frames, time.perf_counter() - t0

    def ask_once(self, job: Job, chat, method, video, sampling) -> dict:
        lm = self.lm
        with interface(HTTP):
            frames, seconds = self.read(job, video, sampling)
            encoded = lm.encode(frames, method, question=chat.question, system=chat.system,
                                progress=self.progress(job))
            encoded.seconds["decode"] = seconds
            stream = TextStream(lm.adapter.tokenizer, chat.gen.stop, job, job.emit)
            answer = lm.answer(encoded, chat.question, method, max_new_tokens=chat.gen.max_tokens,
                               sampling=chat.gen.sampling(), chunk_size=self.config.chunk_size,
                               progress=self.progress(job), stream=stream)
        result = self.result(job, answer, stream, chat.gen.max_tokens)
        if chat.keep_map:
            result["longvid"]["keep_map"] = self.keep_map(frames, method.name, encoded)
        return result

    def result(self, job: Job, answer, stream: TextStream, max_tokens: int) -> dict:
        text = stream.finish(answer.text)
        n = len(answer.token_ids)
        finish = "length" if n >= max_tokens and not stream.stopped else "stop"
        stats = answer.to_dict()
        stats.pop("answer")
        stats["queue_seconds"] = round(job.started - job.submitted, 4)  # waiting for the device before the run
        usage = {"prompt_tokens": answer.stats.llm_tokens, "completion_tokens": n,
                 "total_tokens": answer.stats.llm_tokens + n}
        return {"text": text, "finish_reason": finish, "usage": usage, "longvid": stats}

    def keep_map(self, frames, name: str, encoded) -> str:
        """Draw which visual tokens the pre-LLM stages kept, over the sampled frames; the URL that serves it."""
        from longvid.demo import draw_keep_map

        png = io.BytesIO()
        draw_keep_map(frames, {name: encoded.tokens}, png, tuple(encoded.tokens.grid_thw[1:]),
                      self.lm.adapter.temporal_patch)
        run = "run-" + secrets.token_hex(8)
        with self.maps_lock:
            self.maps[run] = png.getvalue()
            while len(self.maps) > self.config.keep_maps:
                self.maps.popitem(last=False)
        return f"/v1/runs/{run}/keep_map.png"

    def create_session(self, job: Job, run: RunOptions, method, video, sampling, system, name: str) -> dict:
        from longvid.engine.session import VideoSession

        lm = self.lm
        with interface(HTTP):
            frames, seconds = self.read(job, video, sampling)
            encoded = lm.encode(frames, method, system=system, progress=self.progress(job))
            encoded.seconds["decode"] = seconds
            session = VideoSession(lm.adapter, encoded, method, chunk_size=self.config.chunk_size,
                                   progress=self.progress(job))
            entry = self.sessions.add(session, run.method, name)
        return entry.describe()

    def session_message(self, job: Job, session_id: str, question: str, gen) -> dict:
        entry = self.sessions.get(session_id)
        session = entry.session
        session.progress = self.progress(job)
        stream = TextStream(self.lm.adapter.tokenizer, gen.stop, job, job.emit)
        with interface(HTTP):
            answer = session.ask(question, max_new_tokens=gen.max_tokens, sampling=gen.sampling(), stream=stream)
        entry.questions += 1
        return self.result(job, answer, stream, gen.max_tokens)

    def session_frames(self, job: Job, session_id: str, video, sampling) -> dict:
        entry = self.sessions.get(session_id)
        session = entry.session
        session.progress = self.progress(job)
        with interface(HTTP):
            frames = self.lm.read(video, sampling, self.progress(job))
            try:
                session.extend(frames)
            except BaseException:
                if session.broken:  # stopped mid-prefill (the client went away): its cache is incomplete
                    self.sessions.drop(session_id, "dropped: an append of frames was interrupted before it finished")
                raise
        self.sessions.update(entry)
        return entry.describe()


def create_app(lm, config: ServerConfig):
    """The FastAPI application serving ``lm`` (a `longvid.LongVid`)."""
    server = Server(lm, config)

    @asynccontextmanager
    async def lifespan(app):
        server.worker.start()
        sweeper = asyncio.create_task(sweep(server))
        try:
            yield
        finally:
            sweeper.cancel()
            await asyncio.to_thread(server.worker.stop)
            server.sessions.clear()
            server.media.close()

    app = FastAPI(title="longvid", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.server = server
    app.state.max_body = config.max_upload_bytes * 4 // 3 + (1 << 20)  # room for a data: URL of the largest upload

    # ----- errors ------------------------------------------------------------------------------------------------
    @app.exception_handler(HTTPError)
    async def http_error(request, err: HTTPError):
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, err):
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ())[1:]) or None
        return JSONResponse(error_body(400, f"{where or 'request'}: {first.get('msg', 'invalid')}", where), 400)

    @app.exception_handler(StarletteHTTPException)
    async def starlette_error(request, err):
        message = {404: f"no route {request.method} {request.url.path}", 405: f"{request.method} is not allowed on "
                   f"{request.url.path}"}.get(err.status_code, str(err.detail))
        return JSONResponse(error_body(err.status_code, message), err.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request, err):
        traceback.print_exception(err, file=sys.stderr)
        return JSONResponse(error_body(500, server.media.public(f"internal error: {type(err).__name__}: {err}")), 500)

    if config.api_key:
        app.add_middleware(APIKey, key=config.api_key)

    # ----- small routes ------------------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/health")
    async def health():
        w = server.worker
        return {"status": "ok", "model": config.model_id, "queue": w.waiting, "busy": w.running is not None,
                "completed": w.completed, "cancelled": w.cancelled, "sessions": len(server.sessions.entries)}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": config.model_id, "object": "model", "created": server.started,
                                            "owned_by": "longvid", "family": lm.adapter.family}]}

    @app.get("/v1/methods")
    async def methods():
        from longvid.methods.registry import METHODS

        return {"object": "list", "data": [
            {"id": name, "stage": spec.stage, "defaults": spec.defaults, "paper": spec.paper,
             "needs_question": spec.query_aware, "sessions": not spec.query_aware,
             "default": name == config.default_run.method,
             "runs_on_this_model": _runs(name, lm)} for name, spec in METHODS.items()]}

    @app.get("/v1/media")
    async def media():
        return {"object": "list", "data": await asyncio.to_thread(server.media.list_media)}

    @app.get("/v1/runs/{run_id}/keep_map.png")
    async def keep_map(run_id: str):
        with server.maps_lock:
            png = server.maps.get(run_id)
        if png is None:
            raise HTTPError(404, f"no kept-token map for run {run_id!r} (only the last {config.keep_maps} are kept)",
                            code="run_not_found")
        return Response(png, media_type="image/png")

    # ----- uploads -----------------------------------------------------------------------------------------------
    @app.post("/v1/files")
    async def upload(request: Request):
        length = request.headers.get("content-length")
        if length is None:
            raise HTTPError(411, "send the upload with a Content-Length (a multipart/form-data body with a 'file' "
                                 "field)", "file")
        if int(length) > config.max_upload_bytes + (1 << 20):
            raise server.media.too_big("file")
        try:
            form = await request.form(max_files=1, max_fields=4)
        except Exception as err:  # a malformed multipart body
            raise HTTPError(400, f"the upload is not a multipart/form-data body with a 'file' field: {err}",
                            "file") from None
        try:
            file = form.get("file")
            if file is None or isinstance(file, str):
                raise HTTPError(400, "the upload has no 'file' field (multipart/form-data)", "file")
            file_id, path = server.media.new_upload_path(file.filename or "video")
            size = await asyncio.to_thread(_copy_upload, file.file, path, config.max_upload_bytes)
        finally:
            await form.close()  # the spooled temporary file
        if size is None:
            import shutil

            shutil.rmtree(path.parent, ignore_errors=True)
            raise server.media.too_big("file")
        stored = await asyncio.to_thread(server.media.add_upload, file_id, path, file.filename or path.name, size,
                                         "file")
        return stored.describe()

    @app.get("/v1/files")
    async def list_files():
        return {"object": "list", "data": server.media.list_uploads()}

    @app.get("/v1/files/{file_id}")
    async def get_file(file_id: str):
        return server.media.upload(file_id).describe()

    @app.delete("/v1/files/{file_id}")
    async def delete_file(file_id: str):
        server.media.delete(file_id)
        return {"id": file_id, "object": "file", "deleted": True}

    # ----- chat completions -------------------------------------------------------------------------------------
    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await json_body(request)
        with interface(HTTP):
            chat = chat_request(body, config.limits, config.default_run)
            check_model_name(chat.model)
            method, sampling = checked_run(chat.run, chat.question, chat.gen.max_tokens)
        video = await asyncio.to_thread(checked_video, chat.video_url, "messages.video_url", sampling)
        work = lambda job: server.ask_once(job, chat, method, video, sampling)  # noqa: E731
        completion_id = "chatcmpl-" + secrets.token_hex(12)
        if chat.gen.stream:
            return StreamingResponse(stream_events(submit(work, video, events=True), completion_id, chat.gen),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        result = await wait(submit(work, video), request)
        return completion(completion_id, result)

    # ----- sessions -----------------------------------------------------------------------------------------------
    @app.post("/v1/sessions")
    async def create_session(request: Request):
        body = body_object(await json_body(request))
        with interface(HTTP):
            check_model_name(optional_str(body, "model"))
            run = run_options(body, config.default_run)
            method, sampling = checked_run(run, None, 1)
            if method.query_aware:
                from longvid.methods.registry import query_agnostic_methods

                named = (f'"method": {run.method!r}' if "method" in body else
                         f"this server's default method {run.method!r} (--method)")
                raise HTTPError(400, f"{named} needs the question during prefill, so a session (which "
                                     'encodes before any question) cannot use it; pass "method": one of '
                                     f"{', '.join(query_agnostic_methods())}, or ask it through /v1/chat/completions",
                                "method")
            system = optional_str(body, "system")
            if system is not None and len(system) > config.limits.max_question_chars:
                raise HTTPError(400, f'"system" has {len(system)} characters, more than this server takes '
                                     f"({config.limits.max_question_chars}, --max-question-chars); shorten it",
                                "system")
        url = video_field(body)
        video = await asyncio.to_thread(checked_video, url, "video_url", sampling)
        shown = url if not url.startswith("data:") else f"a data: URL ({len(url)} characters)"
        work = lambda job: server.create_session(job, run, method, video, sampling, system, shown)  # noqa: E731
        return await wait(submit(work, video), request)

    @app.get("/v1/sessions")
    async def list_sessions():
        s = server.sessions
        return {"object": "list", "data": s.list(), "used_bytes": s.used_bytes, "memory_bytes": s.memory_bytes,
                "idle_seconds": s.idle_seconds}

    @app.get("/v1/sessions/{session_id}")
    async def get_session(session_id: str):
        return find_session(session_id).describe()

    @app.delete("/v1/sessions/{session_id}")
    async def delete_session(session_id: str):
        try:
            server.sessions.delete(session_id)
        except SessionGone as gone:
            raise session_gone(gone) from None
        return {"id": session_id, "object": "session", "deleted": True}

    @app.post("/v1/sessions/{session_id}/messages")
    async def session_messages(session_id: str, request: Request):
        body = body_object(await json_body(request))
        find_session(session_id)
        with interface(HTTP):
            _, question, system = read_messages(body.get("messages"), config.limits, video_required=False)
            if system is not None:
                raise HTTPError(400, '"messages": a session\'s system prompt is set when it is created ("system")',
                                "messages")
            gen = generation(body, config.limits)
        work = lambda job: server.session_message(job, session_id, question, gen)  # noqa: E731
        completion_id = "chatcmpl-" + secrets.token_hex(12)
        if gen.stream:
            return StreamingResponse(stream_events(submit(work, None, events=True), completion_id, gen),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        return completion(completion_id, await wait(submit(work, None), request))

    @app.post("/v1/sessions/{session_id}/frames")
    async def session_frames(session_id: str, request: Request):
        body = body_object(await json_body(request))
        find_session(session_id)
        with interface(HTTP):
            sampling = run_sampling(body)
        video = await asyncio.to_thread(checked_video, video_field(body), "video_url", sampling)
        work = lambda job: server.session_frames(job, session_id, video, sampling)  # noqa: E731
        return await wait(submit(work, video), request)

    # ----- helpers (closures over server and config) -------------------------------------------------------------
    def check_model_name(name: str | None) -> None:
        if name is not None and name != config.model_id:
            raise HTTPError(404, f'"model": {name!r} is not served here; this server serves {config.model_id!r} '
                                 "(GET /v1/models)", "model", code="model_not_found")

    def checked_run(run: RunOptions, question, max_tokens: int):
        from longvid.engine.session import check_request

        try:
            method = run.build_method()
            lm.check(method, question=question, max_new_tokens=max_tokens, chunk_size=config.chunk_size)
            sampling = run.sampling(config.limits)
        except ValueError as err:
            raise HTTPError(400, str(err), _param(str(err))) from None
        check_request(question, max_tokens)
        return method, sampling

    def run_sampling(body: dict):
        run = run_options(body | {"method": "full"})
        try:
            return run.sampling(config.limits)
        except ValueError as err:
            raise HTTPError(400, str(err), _param(str(err))) from None

    def checked_video(url: str, param: str, sampling) -> Path:
        """The local file, probed and its sampling planned (a bad video is a 400 before anything is queued)."""
        path = server.media.resolve(url, param)
        with interface(HTTP):
            try:
                lm.info(path, sampling)
            except ValueError as err:
                server.media.release(path)
                raise HTTPError(400, f'"{param}": {server.media.public(str(err))}', param,
                                code="invalid_video") from None
        return path

    def find_session(session_id: str):
        try:
            return server.sessions.get(session_id)
        except SessionGone as gone:
            raise session_gone(gone) from None

    def submit(work, video: Path | None, events: bool = False) -> Job:
        """Queue ``work``; ``video`` (a data: URL's or a download's temporary file) is removed once the job ended."""
        job = Job(work, asyncio.get_running_loop(), events=events)
        try:
            server.worker.submit(job)
        except QueueFull as full:
            server.media.release(video)
            raise HTTPError(429, str(full), code="queue_full", headers={"Retry-After": str(full.retry_after)}) \
                from None
        job.future.add_done_callback(lambda _: server.media.release(video))
        return job

    async def wait(job: Job, request):
        """The job's result; a client that goes away cancels it."""
        try:
            while True:
                done, _ = await asyncio.wait({job.future}, timeout=0.25)
                if done:
                    break
                if await request.is_disconnected():
                    job.cancel()
                    raise HTTPError(499, "the client closed the request")
            return job.future.result()
        except asyncio.CancelledError:
            job.cancel()
            raise
        except Exception as err:
            raise as_http(err, server.media.public) from None

    async def stream_events(job: Job, completion_id: str, gen):
        created = int(time.time())

        def chunk(delta: dict, finish=None, **extra) -> str:
            body = {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                    "model": config.model_id, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return f"data: {json.dumps(body | extra)}\n\n"

        try:
            yield chunk({"role": "assistant", "content": ""})
            while (item := await job.events.get()) is not DONE:
                yield chunk({"content": item})
            try:
                result = await job.future
            except Exception as err:
                http = as_http(err, server.media.public)
                yield f"data: {json.dumps(http.body())}\n\n"
                yield "data: [DONE]\n\n"
                return
            yield chunk({}, result["finish_reason"], longvid=result["longvid"])
            if gen.include_usage:
                yield (f"data: {json.dumps({'id': completion_id, 'object': 'chat.completion.chunk', 'created': created, 'model': config.model_id, 'choices': [], 'usage': result['usage']})}"
                       "\n\n")
            yield "data: [DONE]\n\n"
        finally:
            if not job.future.done():
                job.cancel()  # the client went away mid-stream: the worker stops at its next token

    def completion(completion_id: str, result: dict) -> dict:
        return {"id": completion_id, "object": "chat.completion", "created": int(time.time()),
                "model": config.model_id,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": result["text"]},
                             "finish_reason": result["finish_reason"]}],
                "usage": result["usage"], "longvid": result["longvid"]}

    return app


class APIKey:
    """Require ``Authorization: Bearer KEY`` on ``/v1/*``. A plain ASGI middleware: Starlette's ``BaseHTTPMiddleware``
    (``@app.middleware``) hides the client's disconnect from the handlers, and a client that goes away must cancel
    its work."""

    def __init__(self, app, key: str):
        self.app, self.expected = app, f"Bearer {key}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            header = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
            if not secrets.compare_digest(header, self.expected):
                message = ("missing API key: send Authorization: Bearer KEY" if not header else
                           "wrong API key in the Authorization header")
                await JSONResponse(error_body(401, message, code="invalid_api_key"), 401)(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def json_body(request) -> object:
    """The parsed JSON body: at most ``request.app.state.max_body`` bytes (413 beyond), parsed off the event loop
    when large; strings with unpaired UTF-16 surrogates (``"\\ud800"``, valid JSON, not text) are refused."""
    limit = request.app.state.max_body
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPError(413, f"the request body is larger than this server reads ({limit / 2**20:.0f} MiB); upload "
                             "large videos with POST /v1/files and name them by file id")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPError(413, f"the request body is larger than this server reads ({limit / 2**20:.0f} MiB); "
                                 "upload large videos with POST /v1/files and name them by file id")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        raise HTTPError(400, "the request body is empty: send a JSON object")
    return await asyncio.to_thread(_parse_json, raw) if len(raw) > 1 << 20 else _parse_json(raw)


def _parse_json(raw: bytes) -> object:
    try:
        body = json.loads(raw)
        json.dumps(body, ensure_ascii=False).encode("utf-8")  # raises on an unpaired surrogate
        return body
    except UnicodeEncodeError:
        raise HTTPError(400, "the request body holds an unpaired UTF-16 surrogate escape (e.g. \\ud800), which is "
                             "not text; send valid Unicode") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        where = f" (line {err.lineno}, column {err.colno}: {err.msg})" if isinstance(err, json.JSONDecodeError) else ""
        raise HTTPError(400, f"the request body is not valid JSON{where}") from None


def as_http(err: BaseException, public=lambda text: text) -> HTTPError:
    """A job's failure as the response it deserves: bad input 400, a gone session 404, a gone client 499.
    ``public`` words a library message for the client (the server's folders not shown)."""
    if isinstance(err, HTTPError):
        return err
    if isinstance(err, SessionGone):
        return session_gone(err)
    if isinstance(err, Cancelled):
        return HTTPError(499, "the request was cancelled (the client went away, or the server is stopping)")
    if isinstance(err, ValueError):  # the library's one-line bad-input errors, worded in JSON fields
        text = public(str(err).strip().splitlines()[0]) if str(err).strip() else type(err).__name__
        return HTTPError(400, text, _param(text))
    traceback.print_exception(err, file=sys.stderr)  # a bug, not bad input
    return HTTPError(500, public(f"internal error: {type(err).__name__}: {err}"))


def session_gone(gone: SessionGone) -> HTTPError:
    if gone.reason == "unknown":
        return HTTPError(404, f"no session {gone.session_id!r}", "session_id", code="session_not_found")
    return HTTPError(404, f"session {gone.session_id!r} is gone: {gone.reason}", "session_id",
                     code="session_expired")


def _param(message: str) -> str | None:
    """The JSON field a library message names first (``"keep": 1.5 ...`` -> ``keep``)."""
    if message.startswith('"'):
        return message[1:].split('"', 1)[0] or None
    return None


def _copy_upload(source, path: Path, limit: int) -> int | None:
    """Copy an upload to ``path`` in chunks; None (and nothing kept) past ``limit`` bytes."""
    size = 0
    with open(path, "wb") as out:
        while chunk := source.read(1 << 20):
            size += len(chunk)
            if size > limit:
                return None
            out.write(chunk)
    return size


def _runs(name: str, lm) -> bool:
    from longvid.methods.registry import get_method

    try:
        get_method(name).check_model(lm.adapter)
        return True
    except ValueError:
        return False


async def sweep(server: Server) -> None:
    """Expire idle sessions in the background."""
    period = max(1.0, min(30.0, server.sessions.idle_seconds / 4))
    while True:
        await asyncio.sleep(period)
        server.sessions.sweep()
