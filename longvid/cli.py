"""The ``longvid`` command: ask, methods, info, demo, eval synth. A thin layer over the Python API.

    longvid ask talk.mp4 "What is on the slide?" --model /models/Qwen2.5-VL-7B-Instruct --method evs --keep 0.25
    longvid methods
    longvid info talk.mp4 --model /models/Qwen2.5-VL-7B-Instruct
    longvid demo

Start-up imports only typer and rich: torch, transformers and PyAV load inside the commands that need them, so
``longvid --help`` and ``longvid methods`` answer at once. Every bad input ends as one ``error: ...`` line on stderr
with exit code 2, worded in flags (``longvid.errors`` renders the library's messages for the CLI); Ctrl-C ends as
``interrupted``, exit code 130; warnings print as one ``warning: ...`` line.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.padding import Padding
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

try:  # newer typer carries its own copy of click, whose exceptions are not click's
    from typer._click import exceptions as click_errors
except ImportError:  # older typer runs on click itself
    from click import exceptions as click_errors

from longvid import __version__
from longvid.errors import Interface, interface

DEFAULT_CHUNK = 8192  # longvid.engine.session.DEFAULT_CHUNK, restated so the CLI does not import torch to start
ASK = Interface("cli", flags={"num_frames": "--frames", "attn_implementation": "--attn", "path": "--model",
                               "question": "QUESTION", "video": "VIDEO"},
                settings="--set {key}={value}")
EVAL = Interface("cli", flags=dict(ASK.flags, keeps="--keep", lengths="--length", methods="--methods", out="--out"),
                 settings="--set {method}.{key}={value}")

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


class OneLineErrors(TyperGroup):
    """Usage errors (a typo in a flag, a value of the wrong type) as one ``error:`` line with exit code 2, like the
    library's own errors, instead of click's usage block; Ctrl-C as one ``interrupted`` line with exit code 130."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            code = super().main(args, prog_name or "longvid", complete_var, standalone_mode=False, **extra)
        except click_errors.UsageError as e:
            command = e.ctx.command_path if e.ctx is not None else "longvid"
            err.print(f"error: {e.format_message()} (see `{command} --help`)", markup=False)
            code = 2
        except click_errors.ClickException as e:
            err.print(f"error: {e.format_message()}", markup=False)
            code = e.exit_code
        except (typer.Abort, KeyboardInterrupt):
            code = 130
        code = code if isinstance(code, int) else 0
        if code == 130:  # typer turns Ctrl-C inside a command into exit code 130
            err.print("interrupted", markup=False)
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(cls=OneLineErrors, add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Video LLMs on long videos: frame selection, token reduction and KV compression.")


@app.callback(invoke_without_command=True)
def root(ctx: typer.Context,
         version: bool = typer.Option(False, "--version", "-V", is_eager=True, help="Print the version and exit.")):
    if version:
        print(f"longvid {__version__}")
        raise typer.Exit()
    if ctx.invoked_subcommand is None:
        print(ctx.get_help())
        raise typer.Exit()


def fail(message: str) -> None:
    """A user error: one line on stderr, exit code 2."""
    err.print(f"error: {message}", markup=False)
    raise typer.Exit(2)


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    err.print(f"warning: {message}", markup=False)


@contextmanager
def deferred_interrupt():
    """Hold Ctrl-C until the block ends, then raise it: a KeyboardInterrupt raised inside torch's import aborts the
    process from C++ (pybind11 ``error_already_set`` -> ``std::terminate``, exit by SIGABRT) instead of unwinding."""
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def user_errors(words: Interface):
    """Run a command in the CLI's wording; bad input found deeper down (a missing video, an unsupported model, an
    unwritable folder) ends as one line with exit code 2, warnings as one line each. torch is imported first, with
    Ctrl-C held for the length of that import."""

    def decorate(command):
        @functools.wraps(command)
        def wrapper(*args, **kwargs):
            with deferred_interrupt():
                import torch  # noqa: F401
            with interface(words), warnings.catch_warnings():
                warnings.showwarning = _one_line_warning
                try:
                    return command(*args, **kwargs)
                except ValueError as e:  # the library's bad-input errors (VideoError is one)
                    fail(str(e))
                except BrokenPipeError:  # the reader went away (`longvid info v.mp4 | head -1`): typer exits quietly
                    raise
                except OSError as e:  # an unreadable input or unwritable output
                    where = f": {e.filename}" if e.filename else ""
                    fail(f"{e.strerror or e}{where}")

        return wrapper

    return decorate


class Bars:
    """Transient progress bars on stderr, one per pipeline stage, that never draw over output: `print` pauses them,
    so a table printed between stages is not partly erased by the next redraw. Off when stderr is not a terminal."""

    LABELS = {"decode": "decoding frames", "vision": "encoding frames", "prefill": "prefilling",
              "generate": "generating", "answering": "answering"}

    def __init__(self):
        self.progress, self.tasks = None, {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._stop()

    def __call__(self, stage: str, done: int, total: int | None, info: str = "") -> None:
        if self.progress is None:  # a fresh display each time: a restarted one erases by its old height
            self.progress = Progress(TextColumn("{task.description:>16}"), BarColumn(), TextColumn(
                "{task.completed}/{task.total}"), TimeElapsedColumn(), TextColumn("{task.fields[info]}"),
                console=err, transient=True, redirect_stdout=False, redirect_stderr=False,
                disable=not err.is_terminal)
            self.progress.start()
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(self.LABELS.get(stage, stage), total=total, info=info)
        self.progress.update(self.tasks[stage], completed=done, total=total, info=info)

    def _stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress, self.tasks = None, {}

    def print(self, *renderables, **kwargs) -> None:
        """Output (stdout), between stages."""
        self._stop()
        show(*renderables, **kwargs)

    def log(self, message: str) -> None:
        """A status line (stderr), between stages."""
        self._stop()
        err.print(message, markup=False)


def show(*renderables, console: Console | None = None, **kwargs) -> None:
    """Print to stdout; to a pipe or a file, tables keep one row per line (no 80-column wrap or cut)."""
    console = console or out
    width = None if console.is_terminal else 100_000
    console.print(*renderables, width=width, **kwargs)
    console.file.flush()


def check_sampling(fps, frames, max_frames, start, end):
    """The sampling options, checked before any file is opened (``SamplingOptions`` validates)."""
    from longvid.video.options import SamplingOptions

    return SamplingOptions(fps, frames, max_frames, start, end)


def parse_settings(settings: list[str], method: str) -> dict:
    """``["layer=8", "evs.seed=1"]`` -> ``{"layer": 8, "seed": 1}`` (JSON values, else strings). A ``METHOD.`` prefix
    must name the chosen ``--method``."""
    parsed = {}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--set takes KEY=VALUE, got {item!r}; e.g. --set layer=8")
        name, dot, rest = key.partition(".")
        if dot:
            if name != method:
                fail(f"--set {item} is a setting of method {name!r}, but --method is {method!r}; pass --method {name} "
                     f"or --set {rest}={value}")
            key = rest
        if key in ("keep", "budget", "name"):
            fail(f"--set {item}: {key} is not a setting; pass --{'method' if key == 'name' else key} {value}")
        try:
            parsed[key] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key] = value
    return parsed


def model_dir(model: Optional[str]) -> str:
    model = model or os.environ.get("LONGVID_MODEL")
    if not model:
        fail("no model: pass --model DIR (a local Qwen2-VL or Qwen2.5-VL checkpoint directory) or set LONGVID_MODEL; "
             "--model longvid-tiny is the bundled demo model, which only knows the synthetic videos of `longvid demo`")
    return model


@app.command()
@user_errors(ASK)
def ask(
    video: str = typer.Argument(..., help="Video file (anything PyAV opens)."),
    question: str = typer.Argument(..., help="The question."),
    model: Optional[str] = typer.Option(None, help="Local checkpoint directory, or longvid-tiny (default: "
                                                   "$LONGVID_MODEL)."),
    method: str = typer.Option("full", help="Method name, see `longvid methods`."),
    keep: Optional[float] = typer.Option(None, help="Keep ratio of visual tokens, in (0, 1] (default: the method's "
                                                    "operating point, see `longvid methods`)."),
    budget: Optional[int] = typer.Option(None, help="Visual-token budget (instead of --keep)."),
    fps: Optional[float] = typer.Option(None, help="Frames per second to sample (default 1)."),
    frames: Optional[int] = typer.Option(None, help="Number of frames to sample uniformly (instead of --fps)."),
    max_frames: Optional[int] = typer.Option(None, help="Cap on sampled frames."),
    start: Optional[float] = typer.Option(None, help="Start of the clip, seconds."),
    end: Optional[float] = typer.Option(None, help="End of the clip, seconds."),
    max_pixels: Optional[int] = typer.Option(None, help="Max pixels per frame after resizing."),
    min_pixels: Optional[int] = typer.Option(None, help="Min pixels per frame after resizing."),
    device: str = typer.Option("cpu", help="torch device, e.g. cuda."),
    dtype: str = typer.Option("auto", help="auto, float32, bfloat16 or float16."),
    attn: str = typer.Option("sdpa", help="Attention implementation: sdpa, eager, flash_attention_2."),
    max_new_tokens: int = typer.Option(128, help="Answer length cap."),
    chunk_size: int = typer.Option(DEFAULT_CHUNK, help="Prefill chunk, tokens (KV presses act between chunks)."),
    settings: list[str] = typer.Option([], "--set", help="Method setting KEY=VALUE, repeatable (e.g. --set layer=8)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
):
    """Answer a question about a video."""
    import longvid
    from longvid.engine.session import check_request
    from longvid.errors import check_positive
    from longvid.video.decode import check_path

    chosen = longvid.get_method(method, keep=keep, budget=budget, **parse_settings(settings, method))
    sampling = check_sampling(fps, frames, max_frames, start, end)
    check_positive("max_pixels", max_pixels, integer=True)
    check_positive("min_pixels", min_pixels, integer=True)
    check_request(question, max_new_tokens, chunk_size)
    check_path(video)
    model = model_dir(model)
    lm = longvid.load(model, device=device, dtype=dtype, attn_implementation=attn, min_pixels=min_pixels,
                      max_pixels=max_pixels)
    with Bars() as bars:
        answer = lm.ask(video, question, method=chosen, fps=sampling.fps, frames=sampling.frames,
                        max_frames=sampling.max_frames, start=sampling.start, end=sampling.end,
                        max_new_tokens=max_new_tokens, chunk_size=chunk_size, progress=bars)
    for note in answer.stats.notes:
        err.print(f"note: {note}", markup=False)
    if as_json:
        print(json.dumps(answer.to_dict()))
        return
    out.print(answer.text, markup=False)
    err.print(stats_line(answer.to_dict()), markup=False, style="dim")


def stats_line(d: dict) -> str:
    s = d["seconds"]
    frames = f"{d['frames_decoded']} frames" + (f" of {d['frames_planned']} planned" if d["truncated"] else "")
    return (f"{d['method']}: retention {d['retention']:.3f} ({d['kept_tokens']}/{d['visual_tokens']} visual tokens, "
            f"{frames}), {d['llm_tokens']} LLM tokens, KV {d['kv_bytes'] / 2**20:.1f} MiB; seconds: "
            + ", ".join(f"{k} {v:.2f}" for k, v in s.items()))


@app.command()
def methods(as_json: bool = typer.Option(False, "--json", help="Print one JSON list.")):
    """List every method: its stage, defaults (what a run without --keep/--budget does) and paper."""
    from longvid.methods.registry import METHODS

    rows = [{"name": m.name, "stage": m.stage, "query_aware": m.query_aware, "defaults": m.defaults,
             "paper": m.paper} for m in METHODS.values()]
    if as_json:
        print(json.dumps(rows))
        return
    if not sys.stdout.isatty():  # a pipe or a file: one row per line, never wrapped, never cut
        print("| method | stage | needs question | defaults | paper |\n|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['name']} | {r['stage']} | {'yes' if r['query_aware'] else 'no'} | {r['defaults']} | "
                  f"{r['paper']} |")
        return
    print_methods(rows, out)


def print_methods(rows: list[dict], console: Console) -> None:
    """The methods on a terminal: a table when it is wide enough for the names and URLs unwrapped beside the
    defaults, else one block per method; a name or a URL is never cut or wrapped, only the defaults wrap."""
    name_width = max(len(r["name"]) for r in rows)
    paper_width = max(len(r["paper"]) for r in rows)
    if console.width < name_width + paper_width + 100:  # too narrow for a table that wraps only the defaults
        for r in rows:
            console.print(Text(r["name"], style="bold") + f"  {r['stage']}"
                          + (", needs the question" if r["query_aware"] else ""), soft_wrap=True)
            console.print(f"  {r['paper']}", soft_wrap=True, markup=False)
            console.print(Padding(Text(r["defaults"]), (0, 0, 0, 2)))
        return
    table = Table("method", "stage", "question", "paper", "defaults (a run without --keep / --budget)")
    table.columns[0].no_wrap, table.columns[0].min_width = True, name_width
    table.columns[3].no_wrap, table.columns[3].min_width = True, paper_width
    table.columns[4].ratio, table.columns[4].overflow = 1, "fold"
    for r in rows:
        table.add_row(r["name"], r["stage"], "needed" if r["query_aware"] else "-", r["paper"], r["defaults"])
    console.print(table)


SERVE = Interface("cli", flags=dict(ASK.flags, max_waiting="--queue", max_upload_bytes="--max-upload-mb"),
                  settings="--set {key}={value}")


def parse_bytes(text: str, flag: str) -> int:
    """``4GiB``, ``512MiB``, ``512MB``, ``100000000``: bytes (binary and decimal units)."""
    import re

    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]i?B?|B)?\s*", text, flags=re.I)
    if not match:
        fail(f"{flag} {text} is not a size; pass e.g. 4GiB, 512MiB or a number of bytes")
    number, unit = float(match.group(1)), (match.group(2) or "B").upper()
    scale = {"B": 1, "K": 1e3, "KB": 1e3, "KIB": 2**10, "M": 1e6, "MB": 1e6, "MIB": 2**20, "G": 1e9, "GB": 1e9,
             "GIB": 2**30, "T": 1e12, "TB": 1e12, "TIB": 2**40}[unit]
    if number * scale < 1:
        fail(f"{flag} {text} is invalid: it must be a positive size")
    return int(number * scale)


@app.command()
@user_errors(SERVE)
def serve(
    model: Optional[str] = typer.Option(None, help="Local checkpoint directory, or longvid-tiny (default: "
                                                   "$LONGVID_MODEL)."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (loopback by default; 0.0.0.0 for every interface)."),
    port: int = typer.Option(8000, help="TCP port (0: any free port)."),
    media_dir: Optional[Path] = typer.Option(None, help="Directory whose videos requests may name (file:// URLs or "
                                                        "relative paths); nothing outside it is read."),
    api_key: Optional[str] = typer.Option(None, envvar="LONGVID_API_KEY", help="Require 'Authorization: Bearer KEY' "
                                                                               "on /v1 (default: $LONGVID_API_KEY)."),
    session_memory: str = typer.Option("4GiB", help="Memory for sessions (KV caches and encoded videos); least "
                                                    "recently used sessions are evicted beyond it."),
    session_idle: float = typer.Option(1800, help="Seconds without a request after which a session is dropped."),
    queue: int = typer.Option(16, help="Requests that may wait for the device; more get 429 with Retry-After."),
    max_upload_mb: float = typer.Option(512, help="Largest upload (POST /v1/files, data: URLs), MiB."),
    max_frames: int = typer.Option(512, help="Most frames sampled per request (a longer video is sampled more "
                                             "sparsely)."),
    max_tokens: int = typer.Option(1024, help="Largest max_tokens a request may ask for."),
    max_question_chars: int = typer.Option(8000, help="Longest question, characters."),
    allow_remote_media: bool = typer.Option(False, help="Fetch http(s):// video URLs (off: only media-dir files, "
                                                        "uploads and data: URLs)."),
    method: str = typer.Option("full", help="Method of requests that name none (clients that cannot send "
                                            "longvid's fields, e.g. lmms-eval)."),
    keep: Optional[float] = typer.Option(None, help="Keep ratio of --method (a request's own keep overrides it)."),
    budget: Optional[int] = typer.Option(None, help="Visual-token budget of --method (instead of --keep)."),
    settings: list[str] = typer.Option([], "--set", help="Setting KEY=VALUE of --method, repeatable."),
    device: str = typer.Option("cpu", help="torch device, e.g. cuda."),
    dtype: str = typer.Option("auto", help="auto, float32, bfloat16 or float16."),
    attn: str = typer.Option("sdpa", help="Attention implementation: sdpa, eager, flash_attention_2."),
    max_pixels: Optional[int] = typer.Option(None, help="Max pixels per frame after resizing."),
    min_pixels: Optional[int] = typer.Option(None, help="Min pixels per frame after resizing."),
    chunk_size: int = typer.Option(DEFAULT_CHUNK, help="Prefill chunk, tokens (KV presses act between chunks)."),
    replicas: int = typer.Option(1, help="With --ray: copies of the server (one model each) behind Ray Serve."),
    ray: Optional[str] = typer.Option(None, "--ray", help="Serve through Ray Serve: local (a private cluster), auto "
                                      "(the one `ray start` runs), HOST:PORT, or bare --ray (join a running one, "
                                      "else local)."),
    upload_dir: Optional[Path] = typer.Option(None, help="With --ray: the folder uploads go to, read by every "
                                                         "replica (a shared filesystem across nodes; default: a "
                                                         "temporary folder on this machine)."),
):
    """Serve the model over HTTP: OpenAI-compatible chat completions with video_url parts, sessions, a web page."""
    import socket

    from longvid.errors import check_positive

    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        fail("longvid serve needs FastAPI and uvicorn: pip install 'longvid[serve]'")
    for name, value in (("session_idle", session_idle), ("max_upload_mb", max_upload_mb)):
        check_positive(name, value)
    for name, value in (("queue", queue), ("max_frames", max_frames), ("max_tokens", max_tokens),
                        ("max_question_chars", max_question_chars), ("chunk_size", chunk_size)):
        check_positive(name, value, integer=True, allow_none=False)
    if not 0 <= port <= 65535:
        fail(f"--port {port} is invalid: it must be 0 to 65535")
    if media_dir is not None and not media_dir.is_dir():
        fail(f"--media-dir {media_dir} is not a directory")
    if replicas < 1:
        fail(f"--replicas {replicas} is invalid: pass 1 or more")
    if ray is None and (replicas > 1 or upload_dir is not None):
        fail(f"--replicas {replicas} needs --ray (e.g. --ray local)" if replicas > 1 else
             "--upload-dir needs --ray (a single server keeps its uploads in a temporary folder)")
    memory = parse_bytes(session_memory, "--session-memory")
    import longvid
    from longvid.serve.requests import Limits, RunOptions

    default_run = RunOptions(method, keep, budget, parse_settings(settings, method))
    chosen = default_run.build_method()  # a bad --method / --keep / --set is one line before the model loads
    probe = socket.socket()
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        port = probe.getsockname()[1]
    except OSError as bind_error:
        fail(f"cannot listen on {host}:{port}: {bind_error.strerror or bind_error}; pass another --port or --host")
    finally:
        probe.close()
    from longvid.serve.app import ServerConfig, create_app

    served = "longvid-tiny" if model_dir(model) == "longvid-tiny" else Path(model_dir(model)).name
    config = ServerConfig(model_id=served, media_dir=media_dir, api_key=api_key, session_memory=memory,
                          session_idle=session_idle, max_waiting=queue, max_upload_bytes=int(max_upload_mb * 2**20),
                          allow_remote_media=allow_remote_media, chunk_size=chunk_size,
                          limits=Limits(max_frames, max_tokens, max_question_chars), default_run=default_run)
    load = dict(device=device, dtype=dtype, attn_implementation=attn, min_pixels=min_pixels, max_pixels=max_pixels)
    if ray is not None:  # replicas may start in another directory, and share one upload folder
        from dataclasses import replace

        config = replace(config, media_dir=media_dir and media_dir.resolve(), shared_uploads=True)
        serve_on_ray(ray, replicas, host, port, model_dir(model), load, config, chosen, upload_dir)
        return
    lm = longvid.load(model_dir(model), **load)
    chosen.check_model(lm.adapter)
    app_ = create_app(lm, config)
    warn_if_open(host, api_key)
    err.print(f"serving {served} on http://{host}:{port} (Ctrl-C stops)" + ("" if method == "full" else
              f"; requests that name no method use {method}"), markup=False)
    class GracefulServer(uvicorn.Server):
        """SIGTERM / Ctrl-C stop the server gracefully and the process exits 0 (uvicorn would re-raise the signal
        after its graceful shutdown, ending the process by that signal)."""

        def handle_exit(self, sig, frame):
            super().handle_exit(sig, frame)
            getattr(self, "_captured_signals", []).clear()

    server = GracefulServer(uvicorn.Config(app_, host=host, port=port, log_level="warning", access_log=False,
                                           timeout_graceful_shutdown=30, lifespan="on"))
    server.run()
    err.print("stopped", markup=False)


def warn_if_open(host: str, api_key: Optional[str]) -> None:
    if api_key is None and host not in ("127.0.0.1", "localhost", "::1"):
        err.print(f"warning: listening on {host} without --api-key: anyone who can reach this port can use the "
                  "model and read the videos under --media-dir", markup=False)


def serve_on_ray(address: str, replicas: int, host: str, port: int, model: str, load: dict, config, method,
                 upload_dir: Optional[Path]) -> None:
    """``longvid serve --replicas N --ray``: the app on N Ray Serve replicas behind a router (`longvid.cluster.serve`)
    until SIGTERM / Ctrl-C."""
    import shutil
    import tempfile
    import threading
    from dataclasses import replace

    from longvid.cluster.serve import deploy

    if model != "longvid-tiny" and Path(model).exists():
        model = str(Path(model).resolve())  # replicas may start in another directory
    temporary = upload_dir is None
    folder = Path(tempfile.mkdtemp(prefix="longvid-uploads-")) if temporary else upload_dir.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    ray_module = None
    try:
        gpus = str(load["device"]).startswith("cuda")
        with err.status(f"starting {replicas} replicas on Ray"):
            from longvid.cluster.connect import connect

            ray_module = connect(address)
            cpus = int(ray_module.cluster_resources().get("CPU", 1))
            have = int(ray_module.cluster_resources().get("GPU", 0)) if gpus else cpus
            if replicas > have:
                fail(f"--replicas {replicas} is more than the cluster's {have} {'GPUs' if gpus else 'CPUs'} (one "
                     f"each); pass --replicas {have} or fewer")
            if gpus:
                load = dict(load, device="cuda")  # Ray shows each replica its own GPU as cuda:0
            deploy(replicas, host, port, model, load, replace(config, upload_dir=folder), method,
                   None if gpus else max(1, cpus // replicas), gpus)
        for sig in (signal.SIGINT, signal.SIGTERM):  # after Ray's own handlers are installed
            signal.signal(sig, lambda *_: stop.set())
        warn_if_open(host, config.api_key)
        err.print(f"serving {config.model_id} on http://{host}:{port} with {replicas} replicas on Ray Serve (Ctrl-C "
                  "stops)", markup=False)
        while not stop.wait(0.5):
            pass
    except ImportError:
        fail("--ray needs Ray Serve, which is not installed: pip install 'longvid[ray]'")
    finally:
        if ray_module is not None:
            try:
                from ray import serve

                if address == "local":
                    serve.shutdown()
                else:  # a shared cluster keeps its other Serve applications
                    serve.delete("longvid")
            except Exception:  # noqa: BLE001 - stopping: nothing more to do
                pass
            finally:
                ray_module.shutdown()
        if temporary:
            shutil.rmtree(folder, ignore_errors=True)
    err.print("stopped", markup=False)


BENCH = Interface("cli", flags=dict(ASK.flags, keeps="--keep", methods="--methods", tokens="--tokens"),
                  settings="--set {key}={value}")


@app.command()
@user_errors(BENCH)
def bench(
    model: Optional[str] = typer.Option(None, help="Checkpoint directory or longvid-tiny (or use --config)."),
    config: Optional[Path] = typer.Option(None, help="A model config JSON (e.g. a real-size one) built with random "
                                                     "weights: speed and memory do not depend on weight values."),
    layers: Optional[int] = typer.Option(None, help="With --config: LLM layers (fewer to fit a CPU)."),
    vision_layers: Optional[int] = typer.Option(None, help="With --config: vision encoder layers."),
    tokens: str = typer.Option("1024,4096", help="Comma-separated visual-token counts."),
    methods: str = typer.Option("full,evs,knorm", help="Comma-separated methods (full always runs)."),
    keep: str = typer.Option("0.25", help="Comma-separated keep ratios for every method but full; 'default' runs "
                                          "each preset at its own operating point (`longvid methods`)."),
    runs: int = typer.Option(3, help="Timed runs per case (medians are reported)."),
    warmup: int = typer.Option(1, help="Untimed runs first."),
    new_tokens: int = typer.Option(16, help="Tokens generated per run (for the per-token time)."),
    device: str = typer.Option("cpu", help="torch device, e.g. cuda."),
    dtype: str = typer.Option("auto", help="auto, float32, bfloat16 or float16."),
    attn: str = typer.Option("sdpa", help="Attention implementation: sdpa, eager, flash_attention_2."),
    chunk_size: int = typer.Option(DEFAULT_CHUNK, help="Prefill chunk, tokens."),
    max_pixels: Optional[int] = typer.Option(None, help="Max pixels per frame after resizing (default: the "
                                                        "model's processor)."),
    min_pixels: Optional[int] = typer.Option(None, help="Min pixels per frame after resizing."),
    vs_generate: bool = typer.Option(False, help="Also time transformers' own generate on full's prompt (TTFT "
                                                 "ratio, longvid's preprocessing subtracted)."),
    out_dir: Optional[str] = typer.Option(None, "--out", help="Folder for table.md, results.json and the plots "
                                                              "(default ./longvid-bench)."),
):
    """Time decode, vision, reduction, prefill and decoding, and measure peak memory and KV bytes, per method at
    given visual-token counts; a table, plots and a JSON last line."""
    import platform

    from longvid.bench import BenchPlan, plot, random_model, run_bench, table
    from longvid.output import writable_folder

    plan = BenchPlan(tokens=split_list(tokens, int, "--tokens"), methods=split_list(methods, str, "--methods"),
                     keeps=[None if k == "default" else float(k)
                            for k in split_list(keep, keep_value, "--keep", "ratios (or default)")],
                     runs=runs, warmup=warmup, new_tokens=new_tokens,
                     chunk_size=chunk_size, vs_generate=vs_generate)
    if (model is None) == (config is None):
        fail("pass one of --model DIR (or longvid-tiny) and --config FILE")
    if config is None and (layers is not None or vision_layers is not None):
        fail("--layers and --vision-layers apply to --config models only")
    if config is not None:
        from longvid.bench import read_config

        read_config(config)  # a bad config is one line before anything is written
    from longvid.errors import check_positive

    for name, value in (("min_pixels", min_pixels), ("max_pixels", max_pixels)):
        check_positive(name, value, integer=True)  # before the output folder is made
    folder = writable_folder(Path(out_dir or "longvid-bench"), option="out")
    import longvid

    if config is not None:
        lm = random_model(config, device=device, dtype=dtype, attn=attn, layers=layers, vision_layers=vision_layers,
                          min_pixels=min_pixels, max_pixels=max_pixels)
    else:
        lm = longvid.load(model_dir(model), device=device, dtype=dtype, attn_implementation=attn,
                          min_pixels=min_pixels, max_pixels=max_pixels)
    for name, value in plan.cases():
        longvid.get_method(name, keep=value).check_model(lm.adapter)
    result = run_bench(lm, plan, folder=folder, log=lambda m: err.print(m, markup=False))
    result.update(model=str(config or model), layers=layers, vision_layers=vision_layers, runs=runs, warmup=warmup,
                  command="longvid " + " ".join(sys.argv[1:]), machine=platform.machine(), cpus=os.cpu_count())
    text = table(result)
    (folder / "table.md").write_text(f"Command: `{result['command']}`\n\n" + text)
    (folder / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, folder)
    print(text, end="")
    print(json.dumps(result))


@app.command()
@user_errors(ASK)
def info(
    video: str = typer.Argument(..., help="Video file."),
    model: Optional[str] = typer.Option(None, help="Checkpoint directory (or longvid-tiny) for its frame geometry "
                                                   "(no weights are loaded); default: Qwen2-VL's."),
    fps: Optional[float] = typer.Option(None, help="Frames per second to sample (default 1)."),
    frames: Optional[int] = typer.Option(None, help="Number of frames to sample (instead of --fps)."),
    max_frames: Optional[int] = typer.Option(None, help="Cap on sampled frames."),
    start: Optional[float] = typer.Option(None, help="Start of the clip, seconds."),
    end: Optional[float] = typer.Option(None, help="End of the clip, seconds."),
    max_pixels: Optional[int] = typer.Option(None, help="Max pixels per frame."),
    min_pixels: Optional[int] = typer.Option(None, help="Min pixels per frame."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Duration, fps, codec, size, rotation and the planned visual-token count (what `ask` would decode)."""
    from longvid.models import pixel_plan
    from longvid.pipeline import video_info

    sampling = check_sampling(fps, frames, max_frames, start, end)
    model = model or os.environ.get("LONGVID_MODEL")
    d = video_info(video, pixel_plan(model, min_pixels=min_pixels, max_pixels=max_pixels), sampling)
    if as_json:
        print(json.dumps(d))
        return
    table = Table("field", "value", show_header=False)
    for k, v in d.items():
        table.add_row(k, f"{v:.3f}" if isinstance(v, float) else str(v))
    show(table)


@app.command()
@user_errors(ASK)
def demo(
    seconds: float = typer.Option(60.0, help="Length of the generated video (12 to 3600 s)."),
    seed: int = typer.Option(0, help="Which evaluation video to generate (seeds never used in training)."),
    out_dir: Optional[str] = typer.Option(None, "--out", help="Folder for the video and keep_map.png (default: a "
                                                              "cache dir); created if missing, never a file."),
    model: Optional[str] = typer.Option(None, help="Checkpoint directory (default: the bundled longvid-tiny)."),
):
    """Answer questions about a generated video with longvid-tiny, the trained model inside the package."""
    from longvid.demo import run_demo

    with Bars() as bars:  # run_demo checks every argument, the model and --out before it writes anything
        run_demo(seconds=seconds, seed=seed, out_dir=out_dir, model=model, console=bars, progress=bars)


def command_group(name: str, help: str) -> typer.Typer:
    """``longvid NAME SUBCOMMAND``: a group whose bare name prints its help."""
    group = typer.Typer(cls=OneLineErrors, help=help, context_settings={"help_option_names": ["-h", "--help"]})
    app.add_typer(group, name=name)

    @group.callback(invoke_without_command=True)
    def root(ctx: typer.Context):
        if ctx.invoked_subcommand is None:
            print(ctx.get_help())
            raise typer.Exit()

    return group


eval_app = command_group("eval", "Measure methods' accuracy and cost on a benchmark.")
TRAIN = Interface("cli", flags=dict(ASK.flags, lengths="--lengths", out="--out", data="--data"))
train_app = command_group("train", "Train the learned methods' parts on a frozen model.")


@train_app.command("citr")
@user_errors(TRAIN)
def train_citr(
    out_dir: str = typer.Option(..., "--out", help="Folder for the heads, checkpoint.pt and citr_card.json (the same "
                                                   "command continues an interrupted run)."),
    model: Optional[str] = typer.Option(None, help="Checkpoint directory (default: the bundled longvid-tiny)."),
    data: str = typer.Option("synth", help="synth (the synthetic suite's training seeds) or a JSONL file of "
                                           "{video, question, answer} lines."),
    steps: int = typer.Option(2000, help="Optimiser steps (one example each)."),
    lr: float = typer.Option(5e-4, help="Peak learning rate (AdamW; warm-up over the first eighth, then linear "
                                        "decay)."),
    hidden: int = typer.Option(1024, help="Width of each layer's retaining head (1024 for 7B models)."),
    seed: int = typer.Option(0, help="Seeds the heads' initialisation and the order of the examples."),
    lengths: str = typer.Option("30,60", help="MIN,MAX seconds of the synthetic videos."),
    fps: float = typer.Option(1.0, help="Frames per second sampled from each video."),
    held_out: int = typer.Option(24, help="Held-out examples (evaluation seeds, or the data's first lines)."),
    eval_every: int = typer.Option(250, help="Steps between held-out evaluations."),
    checkpoint_every: int = typer.Option(100, help="Steps between checkpoints."),
    labels: str = typer.Option("answer", help="Where the labels come from: answer (the paper's: the answer's "
                                              "attention onto each visual token) or prompt (the question's, after "
                                              "the video: for models that read the evidence at the question)."),
    loss: str = typer.Option("smoothl1", help="smoothl1 (the paper's: the labels' values) or kl (the labels' "
                                              "softmax over the visual tokens: weights the tokens attended most)."),
    device: str = typer.Option("cpu", help="torch device, e.g. cuda."),
    dtype: str = typer.Option("auto", help="auto, float32, bfloat16 or float16."),
):
    """Train CITR's retaining heads (one small MLP per layer) to predict the answer's attention to each visual token
    from the token's own q, k and v; the base model stays frozen."""
    from longvid.train.citr import CITRRecipe, Trainer

    recipe = CITRRecipe(steps=steps, lr=lr, hidden=hidden, seed=seed, lengths=min_max(lengths, "--lengths", "30,60"),
                        fps=fps, held_out=held_out, eval_every=eval_every, checkpoint_every=checkpoint_every,
                        labels=labels, loss=loss)
    import longvid

    from longvid.train.common import local_device

    lm = longvid.load(model_dir(model) if model else "longvid-tiny", device=local_device(device), dtype=dtype)
    with Bars() as bars:
        trainer = Trainer(lm, out_dir, recipe, data=data, log=bars.log,
                          progress=lambda done, total, info: bars("training", done, total, info=info))
        folder = trainer.run(command="longvid " + " ".join(sys.argv[1:]))
    print(f"heads: {folder}")


@train_app.command("qtsplus")
@user_errors(TRAIN)
def train_qtsplus(
    out_dir: str = typer.Option(..., "--out", help="Folder for the modules, checkpoint.pt and qtsplus_card.json (the "
                                                   "same command continues an interrupted run)."),
    model: Optional[str] = typer.Option(None, help="Checkpoint directory (default: the bundled longvid-tiny)."),
    data: str = typer.Option("synth", help="synth (the synthetic suite's training seeds) or a JSONL file of "
                                           "{video, question, answer} lines."),
    steps: int = typer.Option(2000, help="Optimiser steps (each accumulates --accumulate examples)."),
    lr: float = typer.Option(1e-6, help="Peak learning rate (AdamW, 1 % warm-up, cosine); the released script's "
                                        "1e-6 suits modules initialised from a large LLM, fresh tiny ones need ~1e-3."),
    accumulate: int = typer.Option(2, help="Examples per optimiser step."),
    lambda_t: float = typer.Option(0.1, help="Weight of (rho M)^2 / n_max^2 (FLOPs)."),
    lambda_m: float = typer.Option(0.17, help="Weight of rho M / n_max (KV memory)."),
    lambda_s: float = typer.Option(0.05, help="Weight of (rho - mean rho)^2 (smoothness)."),
    tau: float = typer.Option(0.5, help="Temperature of the soft threshold and the Gumbel gate."),
    n_max: int = typer.Option(512, help="Most tokens kept at inference (and the losses' scale)."),
    rho: str = typer.Option("0.05,0.5", help="MIN,MAX of the predicted retention."),
    scoring_layers: int = typer.Option(1, help="Scoring cross-attention blocks."),
    reencode_layers: int = typer.Option(2, help="Re-encoder blocks (0: none)."),
    init_from_llm: bool = typer.Option(False, help="Initialise the blocks' attention from the LLM's layers (the "
                                                   "released code never does in a fresh run)."),
    init: Optional[str] = typer.Option(None, help="Start from these trained modules (a finished run's --out): a "
                                                  "second phase, e.g. --gate expected after the released gate."),
    fresh_budget: bool = typer.Option(False, help="Re-initialise the budget head of the --init modules (seeded)."),
    budget_only: bool = typer.Option(False, help="Train the budget head alone (scoring and re-encoder frozen)."),
    positions: str = typer.Option("kept", help="kept (each kept token keeps its position) or faithful (1-D)."),
    gate: str = typer.Option("faithful", help="faithful (the released gate: unit Gumbel noise, ~40 % kept whatever "
                                              "rho) or expected (rho M kept on average; with --tau 0.001 it "
                                              "trains better on longvid-tiny 2)."),
    seed: int = typer.Option(0, help="Seeds the modules' initialisation (with --init: the re-drawn budget "
                                       "head), the examples and the Gumbel noise."),
    lengths: str = typer.Option("30,60", help="MIN,MAX seconds of the synthetic videos."),
    fps: float = typer.Option(1.0, help="Frames per second sampled from each video."),
    held_out: int = typer.Option(24, help="Held-out examples (evaluation seeds, or the data's first lines)."),
    eval_every: int = typer.Option(250, help="Steps between held-out evaluations."),
    checkpoint_every: int = typer.Option(50, help="Steps between checkpoints."),
    device: str = typer.Option("cpu", help="torch device, e.g. cuda."),
    dtype: str = typer.Option("auto", help="auto, float32, bfloat16 or float16."),
):
    """Train QTSplus's selector (scoring, budget head, re-encoder) on a frozen model, through the LM loss on the
    answer plus its FLOPs, memory and smoothness terms."""
    from longvid.train.qtsplus import QTSRecipe, QTSTrainer

    rho_min, rho_max = min_max(rho, "--rho", "0.05,0.5", unit="")
    recipe = QTSRecipe(steps=steps, lr=lr, accumulate=accumulate, lambda_t=lambda_t, lambda_m=lambda_m,
                       lambda_s=lambda_s, tau=tau, n_max=n_max, rho_min=rho_min, rho_max=rho_max,
                       scoring_layers=scoring_layers, reencode_layers=reencode_layers, init_from_llm=init_from_llm,
                       init=init, fresh_budget=fresh_budget, budget_only=budget_only, positions=positions, gate=gate,
                       seed=seed, lengths=min_max(lengths, "--lengths", "30,60"), fps=fps, held_out=held_out,
                       eval_every=eval_every, checkpoint_every=checkpoint_every)
    import longvid

    from longvid.train.common import local_device

    lm = longvid.load(model_dir(model) if model else "longvid-tiny", device=local_device(device), dtype=dtype)
    with Bars() as bars:
        trainer = QTSTrainer(lm, out_dir, recipe, data=data, log=bars.log,
                             progress=lambda done, total, info: bars("training", done, total, info=info))
        folder = trainer.run(command="longvid " + " ".join(sys.argv[1:]))
    print(f"modules: {folder}")


@train_app.command("tiny")
@user_errors(TRAIN)
def train_tiny(
    out_dir: str = typer.Option(..., "--out", help="Folder for checkpoint.pt and model/ (the same command continues "
                                                   "an interrupted run)."),
    steps: int = typer.Option(8000, help="Optimiser steps (the schedule's length)."),
    stop_after: Optional[int] = typer.Option(None, help="End at this step; the schedule still follows --steps."),
    videos_per_step: int = typer.Option(4, help="Videos per step (every question of each)."),
    lr: float = typer.Option(2e-3, help="Peak learning rate (AdamW; warm-up, then cosine to a tenth)."),
    warmup: int = typer.Option(100, help="Warm-up steps."),
    start_lengths: str = typer.Option("12,60", help="MIN,MAX seconds of the first step's videos."),
    lengths: str = typer.Option("60,600", help="MIN,MAX seconds the curriculum ends at."),
    ramp: int = typer.Option(4000, help="Steps over which --start-lengths grows into --lengths (0: no curriculum)."),
    aux_weight: float = typer.Option(1.0, help="Weight of the probe losses (0: answer and text only)."),
    event_weight: float = typer.Option(1.0, help="Weight of the probe on the object tokens alone."),
    seed: int = typer.Option(0, help="Seeds the initialisation and the training videos."),
    kinds: str = typer.Option(",".join(("color", "shape", "where", "when", "count", "order", "after")),
                              help="Question kinds (a kind listed twice weighs twice)."),
    validate_every: int = typer.Option(100, help="Steps between held-out validations (and model/ saves)."),
    checkpoint_every: int = typer.Option(20, help="Steps between checkpoints."),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads."),
    device: str = typer.Option("cpu", help="torch device, e.g. cuda (a run can continue on another device)."),
):
    """Train longvid-tiny 2 from scratch on suite v2 (no attention supervision); resumable."""
    from longvid.train.tiny import Recipe, Trainer

    recipe = Recipe(steps, videos_per_step, lr, warmup, min_max(start_lengths, "--start-lengths", "12,60"),
                    min_max(lengths, "--lengths", "60,600"), ramp, aux_weight, event_weight, seed,
                    validate_every=validate_every, checkpoint_every=checkpoint_every, threads=threads,
                    kinds=kinds.split(","))
    with Bars() as bars:
        trainer = Trainer(out_dir, recipe, log=bars.log, device=device)
        trainer.run(stop_after, lambda done, total, info: bars("training", done, total, info=info))
    print(f"model: {Path(out_dir) / 'model'}")


def min_max(text: str, flag: str, example: str, unit: str = " seconds") -> tuple[float, float]:
    """``MIN,MAX`` of a flag as two floats, or one line naming the flag and an example."""
    values = split_list(text, float, flag)
    if len(values) != 2:
        fail(f"{flag} {text} is invalid: pass MIN,MAX{unit}, e.g. {flag} {example}")
    return tuple(values)


def split_list(text: str, convert, flag: str, kind: str | None = None) -> list:
    try:
        values = [convert(x) for x in text.split(",") if x.strip()]
    except ValueError:
        fail(f"{flag} {text!r} is not a comma-separated list of {kind or convert.__name__ + ' values'}; pass e.g. "
             f"{flag} 0.5,0.25")
    if not values:
        fail(f"{flag} is empty; pass at least one value")
    return values


def method_settings(settings: list[str]) -> dict:
    """``["prunevid.layer=2"]`` -> ``{"prunevid": {"layer": 2}}``."""
    parsed = {}
    for item in settings:
        name, dot, rest = item.partition(".")
        if not dot or "=" not in rest:
            fail(f"--set takes METHOD.KEY=VALUE, got {item!r}; e.g. --set prunevid.layer=2")
        parsed.setdefault(name, {}).update(parse_settings([rest], name))
    return parsed


def keep_value(text: str) -> str:
    """A keep ratio or the word ``default`` (checked as a float unless it is ``default``)."""
    return text if text.strip() == "default" else str(float(text))


def parse_shard(text: Optional[str]) -> Optional[tuple[int, int]]:
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m or not int(m.group(1)) < int(m.group(2)):
        fail(f"--shard {text} is invalid: pass I/N with 0 <= I < N, e.g. --shard 0/4")
    return int(m.group(1)), int(m.group(2))


def eval_benchmark(name: str):
    """The ``longvid eval NAME`` command of one benchmark reader."""

    @user_errors(EVAL)
    def command(
        data: Path = typer.Option(..., help="Folder the benchmark was downloaded into (its released layout)."),
        model: Optional[str] = typer.Option(None, help="Checkpoint directory (default: the bundled longvid-tiny)."),
        methods: str = typer.Option("full", help="Comma-separated methods (`longvid methods`); full and the "
                                                 "equal-budget controls uniform and random are always added."),
        keep: str = typer.Option("0.5,0.25", help="Comma-separated keep ratios for every method but full."),
        fps: Optional[float] = typer.Option(None, help="Frames per second sampled from each video (default 1)."),
        frames: Optional[int] = typer.Option(None, help="Frames sampled uniformly from each video (instead of --fps)."),
        max_frames: Optional[int] = typer.Option(None, help="Cap on sampled frames per video."),
        limit: Optional[int] = typer.Option(None, help="Evaluate the first N questions (whole videos)."),
        shard: Optional[str] = typer.Option(None, help="I/N: every N-th video from the I-th (into its own folder)."),
        skip_missing: bool = typer.Option(False, help="Leave out questions whose video file is missing."),
        max_new_tokens: int = typer.Option(16, help="Answer length cap."),
        settings: list[str] = typer.Option([], "--set", help="METHOD.KEY=VALUE stage setting, repeatable."),
        out_dir: Optional[str] = typer.Option(None, "--out", help="Parent of the results folder (default "
                                                                  "./longvid-eval)."),
        device: str = typer.Option("auto", help="torch device: auto (cuda where there is a GPU), cpu, cuda."),
        dtype: str = typer.Option("auto", help="auto, float32, bfloat16 or float16."),
        ray: Optional[str] = typer.Option(None, "--ray", help="Spread the videos over Ray actors: local (a private "
                                          "cluster), auto (the one `ray start` runs), HOST:PORT, or bare --ray "
                                          "(join a running one, else local)."),
        actors: Optional[int] = typer.Option(None, help="With --ray: actors, one model each (default: one per GPU, "
                                                        "else 1)."),
    ):
        from longvid.eval.runner import BenchSettings, prepare_bench, run_bench

        chosen = BenchSettings(name=name, data=str(data.resolve()), methods=split_list(methods, str, "--methods"),
                               keeps=split_list(keep, float, "--keep"), fps=fps, frames=frames,
                               max_frames=max_frames, model=model, limit=limit, shard=parse_shard(shard),
                               skip_missing=skip_missing, max_new_tokens=max_new_tokens, out=out_dir,
                               overrides=method_settings(settings))
        command_line = "longvid " + " ".join(sys.argv[1:])
        if ray is None:
            if actors is not None:
                fail(f"--actors {actors} needs --ray (e.g. --ray local)")
            prepared = prepare_bench(chosen, device=auto_device(device), dtype=dtype, command=command_line,
                                     log=lambda m: err.print(m))
            with Bars() as bars:
                folder = run_bench(prepared, log=bars.log, progress=lambda d, t: bars("answering", d, t))
        else:
            folder = eval_on_ray(chosen, ray, actors, device, dtype, command_line)
        print((folder / "table.md").read_text(), end="")
        print(f"results: {folder}")

    command.__doc__ = EVAL_HELP[name] + (
        "\n\nEach video is decoded once; query-agnostic methods answer all of its questions from one encode. Writes "
        "samples.jsonl, table.md (accuracy +- SE clustered by video, paired delta vs full with a 95% interval, per "
        "category), summary.json and a plot; the same command continues an interrupted run.")
    return command


def auto_device(device: str) -> str:
    """``auto``: cuda when torch sees a GPU, else cpu."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def eval_on_ray(chosen, address: str, actors: Optional[int], device: str, dtype: str, command_line: str) -> Path:
    """``longvid eval NAME --ray``: the units over a pool of Ray actors (`longvid.cluster.eval`)."""
    from longvid.cluster.eval import Sweep
    from longvid.eval.common import tiny_model_path
    from longvid.eval.runner import prepare_bench

    if actors is not None and actors < 1:
        fail(f"--actors {actors} is invalid: pass a positive number of actors, e.g. --actors 2")
    model = str(Path(chosen.model).resolve()) if chosen.model and Path(chosen.model).exists() else \
        chosen.model or str(tiny_model_path())
    sweeps = []

    def start_and_check(settings) -> str:  # after the benchmark is read, before anything is written
        with err.status("starting Ray actors"):
            try:
                sweeps.append(Sweep(address, actors, model, device, dtype, log=lambda m: err.print(m, markup=False)))
            except BaseException:
                import ray as ray_module  # connected, then refused (no GPU, too many actors): leave the cluster

                if ray_module.is_initialized():
                    ray_module.shutdown()
                raise
            return sweeps[0].check(settings)

    try:
        prepared = prepare_bench(chosen, checker=start_and_check, command=command_line, log=lambda m: err.print(m))
        with Bars() as bars:
            def progress(units, total_units, running, retried, answered, total):
                bars("units", units, total_units, info=f"{running} running, {retried} retried")
                bars("answering", answered, total)

            stats = sweeps[0].run(prepared, progress=progress)
        err.print(stats.line(), markup=False)
        return prepared.folder
    finally:
        if sweeps:
            sweeps[0].close()


EVAL_HELP = {  # the layouts each reader takes: longvid/eval/readers.py
    "videomme": "Video-MME: videomme/test-*.parquet and data/{videoID}.mp4.",
    "mlvu": "MLVU dev: json/{1_plotQA,...}.json and video/{task}/..., or the hub's mlvu/test-*.parquet.",
    "longvideobench": "LongVideoBench validation: lvb_val.json (or validation-*.parquet) and videos/.",
    "egoschema": "EgoSchema subset: questions.json + subset_answers.json (or Subset/test-*.parquet) and videos/.",
    "nextqa": "NExT-QA multiple choice (val): val.csv and NExTVideo/ (flat, or through map_vid_vidorID.json).",
    "lvbench": "LVBench: video_info.meta.jsonl (or data/train-*.parquet) and {key}.mp4 videos.",
}
for _name in EVAL_HELP:
    eval_app.command(_name)(eval_benchmark(_name))


@eval_app.command("synth")
@user_errors(EVAL)
def eval_synth(
    methods: str = typer.Option("full,uniform,random,evs", help="Comma-separated methods (`longvid methods`)."),
    keep: str = typer.Option("0.5,0.25,0.1", help="Comma-separated keep ratios for every method but full."),
    length: str = typer.Option("60", help="Comma-separated video lengths in seconds (30 to 1800)."),
    n: int = typer.Option(100, help="Questions per kind per length (7 kinds in suite v2, 6 in v1)."),
    seed: int = typer.Option(0, help="Picks the evaluation videos; any seed gives a fresh hold-out set."),
    fps: float = typer.Option(1.0, help="Frames per second sampled from each video."),
    model: Optional[str] = typer.Option(None, help="Checkpoint directory (default: the bundled longvid-tiny)."),
    blank: bool = typer.Option(False, help="Background-only videos (events removed): accuracy should be chance."),
    settings: list[str] = typer.Option([], "--set", help="METHOD.KEY=VALUE stage setting, repeatable (e.g. --set "
                                                         "prunevid.layer=2)."),
    out_dir: Optional[str] = typer.Option(None, "--out", help="Parent of the results folder (default ./longvid-eval)."),
    suite: Optional[int] = typer.Option(None, help="Suite version, 1 or 2 (default: the one the model was trained "
                                                   "on, from its longvid.json)."),
):
    """Run the synthetic long-video QA suite through the whole pipeline; write samples, a table and a plot.

    The results folder is named from the settings; running the same command again continues an interrupted run
    where it stopped (never a duplicated row) or, when it is complete, prints its table.
    """
    from longvid.eval.synth import EvalSettings, prepare_eval, run_eval

    settings = EvalSettings(methods=split_list(methods, str, "--methods"), keeps=split_list(keep, float, "--keep"),
                            lengths=split_list(length, float, "--length"), n=n, seed=seed, fps=fps, model=model,
                            blank=blank, out=out_dir, overrides=method_settings(settings), suite=suite)
    prepared = prepare_eval(settings, command="longvid " + " ".join(sys.argv[1:]), log=lambda m: err.print(m))
    with Bars() as bars:
        folder = run_eval(prepared, log=bars.log, progress=lambda d, t: bars("answering", d, t))
    print((folder / "table.md").read_text(), end="")
    print(f"results: {folder}")

