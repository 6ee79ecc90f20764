"""The ``longvid`` command: ask, methods, info, demo. A thin layer over the Python API (``longvid.pipeline``).

    longvid ask talk.mp4 "What is on the slide?" --model /models/Qwen2.5-VL-7B-Instruct --method evs --keep 0.25
    longvid methods
    longvid info talk.mp4 --model /models/Qwen2.5-VL-7B-Instruct
    longvid demo
"""

from __future__ import annotations

import functools
import json
import os
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from longvid.engine.session import DEFAULT_CHUNK

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Video LLMs on long videos: frame selection, token reduction and KV compression.")
err = Console(stderr=True)
out = Console()


def fail(message: str) -> None:
    """A user error: one line on stderr, exit code 2."""
    err.print(f"error: {message}", highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(2)


def user_errors(command):
    """Bad input found deeper down (a missing video, an unsupported model) also ends as one line, exit 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (ValueError, FileNotFoundError) as e:
            fail(str(e))

    return wrapper


class RichProgress:
    """``progress(stage, done, total)`` callback drawing one rich bar per pipeline stage (on stderr)."""

    LABELS = {"decode": "decoding video", "vision": "encoding frames", "prefill": "prefilling",
              "generate": "generating"}

    def __init__(self, progress: Progress):
        self.progress, self.tasks = progress, {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(self.LABELS.get(stage, stage), total=total)
        self.progress.update(self.tasks[stage], completed=done, total=total)


def progress_bars() -> Progress:
    return Progress(TextColumn("{task.description:>16}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeElapsedColumn(), console=err, transient=True)


def check_choices(method: str, keep: Optional[float], budget: Optional[int], fps: Optional[float],
                  frames: Optional[int]) -> None:
    """Validate before anything slow happens; each failure is one line naming the valid choices."""
    from longvid.methods.registry import METHODS

    if method not in METHODS:
        fail(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
    if keep is not None and not 0 < keep <= 1:
        fail(f"--keep must be in (0, 1], got {keep}; e.g. --keep 0.25")
    if keep is not None and budget is not None:
        fail("pass --keep or --budget, not both")
    if budget is not None and budget < 1:
        fail(f"--budget must be a positive number of visual tokens, got {budget}")
    if fps is not None and frames is not None:
        fail("pass --fps or --frames, not both")
    if fps is not None and fps <= 0:
        fail(f"--fps must be > 0, got {fps}")
    if frames is not None and frames < 1:
        fail(f"--frames must be >= 1, got {frames}")


def parse_settings(settings: list[str]) -> dict:
    """``["layer=8", "faithful=true"]`` -> ``{"layer": 8, "faithful": True}`` (JSON values, else strings)."""
    out = {}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--set takes KEY=VALUE, got {item!r}; e.g. --set layer=8")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def quiet_transformers() -> None:
    """No weight-loading bars from transformers: our own bars show the stages."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def model_dir(model: Optional[str]) -> str:
    model = model or os.environ.get("LONGVID_MODEL")
    if not model:
        fail("no model: pass --model DIR (a local Qwen2-VL or Qwen2.5-VL checkpoint) or set LONGVID_MODEL")
    return model


@app.command()
@user_errors
def ask(
    video: str = typer.Argument(..., help="Video file (anything PyAV opens)."),
    question: str = typer.Argument(..., help="The question."),
    model: Optional[str] = typer.Option(None, help="Local checkpoint directory (default: $LONGVID_MODEL)."),
    method: str = typer.Option("full", help="Method name, see `longvid methods`."),
    keep: Optional[float] = typer.Option(None, help="Keep ratio of visual tokens, in (0, 1]."),
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
    check_choices(method, keep, budget, fps, frames)
    import longvid

    chosen = longvid.get_method(method, keep=keep, budget=budget, **parse_settings(settings))

    quiet_transformers()
    lm = longvid.load(model_dir(model), device=device, dtype=dtype, attn_implementation=attn,
                      min_pixels=min_pixels, max_pixels=max_pixels)
    with progress_bars() as bars:
        answer = lm.ask(video, question, method=chosen, fps=fps, frames=frames,
                        max_frames=max_frames, start=start, end=end, max_new_tokens=max_new_tokens,
                        chunk_size=chunk_size, progress=RichProgress(bars))
    if as_json:
        print(json.dumps(answer.to_dict()))
        return
    out.print(answer.text)
    err.print(stats_line(answer.to_dict()))


def stats_line(d: dict) -> str:
    s = d["seconds"]
    return (f"[dim]{d['method']}: retention {d['retention']:.3f} ({d['kept_tokens']}/{d['visual_tokens']} visual "
            f"tokens), {d['llm_tokens']} LLM tokens, KV {d['kv_bytes'] / 2**20:.1f} MiB; seconds: "
            + ", ".join(f"{k} {v:.2f}" for k, v in s.items()) + "[/dim]")


@app.command()
def methods(as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """List every method: its stage, defaults and paper."""
    from longvid.methods.registry import METHODS

    rows = [{"name": m.name, "stage": m.stage, "query_aware": m.query_aware, "defaults": m.defaults,
             "paper": m.paper} for m in METHODS.values()]
    if as_json:
        print(json.dumps(rows))
        return
    table = Table("method", "stage", "needs question", "defaults", "paper")
    table.columns[-1].overflow = "fold"
    for r in rows:
        table.add_row(r["name"], r["stage"], "yes" if r["query_aware"] else "no", r["defaults"], r["paper"])
    out.print(table)


@app.command()
@user_errors
def info(
    video: str = typer.Argument(..., help="Video file."),
    model: Optional[str] = typer.Option(None, help="Checkpoint directory for its frame geometry (no weights "
                                                   "are loaded); default: Qwen2-VL's."),
    fps: Optional[float] = typer.Option(None, help="Frames per second to sample (default 1)."),
    frames: Optional[int] = typer.Option(None, help="Number of frames to sample (instead of --fps)."),
    max_frames: Optional[int] = typer.Option(None, help="Cap on sampled frames."),
    max_pixels: Optional[int] = typer.Option(None, help="Max pixels per frame."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Duration, fps, codec, size and the planned visual-token count."""
    check_choices("full", None, None, fps, frames)
    from longvid.models import pixel_plan
    from longvid.pipeline import SamplingOptions, video_info

    model = model or os.environ.get("LONGVID_MODEL")
    d = video_info(video, pixel_plan(model, max_pixels=max_pixels), SamplingOptions(fps, frames, max_frames))
    if as_json:
        print(json.dumps(d))
        return
    table = Table("field", "value", show_header=False)
    for k, v in d.items():
        table.add_row(k, f"{v:.3f}" if isinstance(v, float) else str(v))
    out.print(table)


@app.command()
@user_errors
def demo(
    seconds: float = typer.Option(60.0, help="Length of the generated video (12 to 3600 s)."),
    seed: int = typer.Option(0, help="Which evaluation video to generate (seeds never used in training)."),
    out_dir: Optional[str] = typer.Option(None, "--out", help="Where to write the video and keep_map.png "
                                                              "(default: a cache dir)."),
    model: Optional[str] = typer.Option(None, help="Checkpoint directory (default: the bundled longvid-tiny)."),
):
    """Answer questions about a generated video with longvid-tiny, the trained model inside the package."""
    from longvid.demo import run_demo

    quiet_transformers()
    with progress_bars() as bars:
        run_demo(seconds=seconds, seed=seed, out_dir=out_dir, model=model, console=out, progress=RichProgress(bars))


eval_app = typer.Typer(no_args_is_help=True, help="Measure methods' accuracy and cost on a benchmark.")
app.add_typer(eval_app, name="eval")


def split_list(text: str, convert, flag: str) -> list:
    try:
        values = [convert(x) for x in text.split(",") if x.strip()]
    except ValueError:
        fail(f"{flag} {text!r} is not a comma-separated list of {convert.__name__} values; pass e.g. {flag} 0.5,0.25")
    if not values:
        fail(f"{flag} is empty; pass at least one value")
    return values


def method_settings(settings: list[str]) -> dict:
    """``["prunevid.layer=2"]`` -> ``{"prunevid": {"layer": 2}}``."""
    out = {}
    for item in settings:
        name, dot, rest = item.partition(".")
        if not dot or "=" not in rest:
            fail(f"--set takes METHOD.KEY=VALUE, got {item!r}; e.g. --set prunevid.layer=2")
        out.setdefault(name, {}).update(parse_settings([rest]))
    return out


@eval_app.command("synth")
@user_errors
def eval_synth(
    methods: str = typer.Option("full,uniform,random,evs", help="Comma-separated methods (`longvid methods`)."),
    keep: str = typer.Option("0.5,0.25,0.1", help="Comma-separated keep ratios for every method but full."),
    length: str = typer.Option("60", help="Comma-separated video lengths in seconds (30 to 1800)."),
    n: int = typer.Option(100, help="Questions per kind per length (6 kinds)."),
    seed: int = typer.Option(0, help="Picks the evaluation videos; any seed gives a fresh hold-out set."),
    fps: float = typer.Option(1.0, help="Frames per second sampled from each video."),
    model: Optional[str] = typer.Option(None, help="Checkpoint directory (default: the bundled longvid-tiny)."),
    blank: bool = typer.Option(False, help="Background-only videos (events removed): accuracy should be chance."),
    settings: list[str] = typer.Option([], "--set", help="METHOD.KEY=VALUE stage setting, repeatable (e.g. --set "
                                                         "prunevid.layer=2)."),
    out_dir: Optional[str] = typer.Option(None, "--out", help="Parent of the results folder (default ./longvid-eval)."),
):
    """Run the synthetic long-video QA suite through the whole pipeline; write samples, a table and a plot."""
    import sys

    from longvid.synth.evaluate import EvalSettings, run_eval

    settings = EvalSettings(methods=split_list(methods, str, "--methods"), keeps=split_list(keep, float, "--keep"),
                            lengths=split_list(length, float, "--length"), n=n, seed=seed, fps=fps, model=model,
                            blank=blank, out=out_dir, overrides=method_settings(settings))
    quiet_transformers()
    with progress_bars() as bars:
        task = bars.add_task("answering", total=None)
        folder = run_eval(settings, log=err.print, progress=lambda d, t: bars.update(task, completed=d, total=t),
                          command="longvid " + " ".join(sys.argv[1:]))
    out.print((folder / "table.md").read_text(), markup=False, highlight=False)
    out.print(f"results: {folder}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
