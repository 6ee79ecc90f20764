"""``longvid demo``: the whole pipeline on a generated video with ``longvid-tiny``, the model bundled in the package.

longvid-tiny (longvid-tiny 2) is a Qwen2-VL (transformers' own class, 1.6 M parameters) trained from scratch on the
synthetic suite (`longvid.synth`, version 2), so its answers mean something: the demo writes a fresh evaluation video (seeds never used in
training), asks its questions with ``full`` and with reduction methods, prints each answer beside the truth with
retention and timings, and draws which visual tokens each method kept (``keep_map.png``).

    longvid demo --seconds 60 --seed 3
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.table import Table

METHODS = (("full", None), ("evs", 0.25), ("dpselect", 0.25), ("random", 0.25), ("uniform", 0.25))
"""Token-level methods only: their kept tokens can be drawn per frame (a KV press keeps different ones per head)."""


def check_demo(seconds: float = 60.0, seed: int = 0, out_dir: str | Path | None = None,
               model: str | None = None) -> Path:
    """Validate the demo's arguments and its output folder before anything is written; returns the folder.

    The folder is created if missing and must be writable; an existing file there is refused.
    """
    from longvid.errors import option
    from longvid.models import check_checkpoint, model_family, resolve_model
    from longvid.output import writable_folder
    from longvid.synth import EVAL_SEEDS, eval_seed, make_video_spec
    from longvid.video import cache_dir

    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < len(EVAL_SEEDS):
        raise ValueError(f"{option('seed', seed)} is invalid: it must be an int from 0 to {len(EVAL_SEEDS) - 1}")
    make_video_spec(eval_seed(seed), seconds=seconds)  # validates seconds with a clear error
    if model is not None:
        model_family(model)
        check_checkpoint(resolve_model(model))
    return writable_folder(Path(out_dir) if out_dir is not None else cache_dir() / "demo", option="out")


def run_demo(seconds: float = 60.0, seed: int = 0, out_dir: str | None = None, model: str | None = None,
             console=None, progress=None) -> Path:
    """Write a synthetic video, answer its questions with every method of METHODS, print a table, draw a keep map.

    Returns the folder holding ``demo.mp4`` and ``keep_map.png``. ``console`` is anything with a rich-style
    ``print``; ``progress`` is an optional ``(stage, done, total)`` callback. Before the methods run, one untimed
    question warms the model up, so the first method's TTFT is not the cost of a cold start.
    """
    from rich.console import Console

    import longvid
    from longvid.synth import eval_seed, make_questions, make_video_spec, write_video
    from longvid.eval.synth import parse_letter
    from longvid.video.options import SamplingOptions

    from longvid.eval.synth import model_suite
    from longvid.models import resolve_model

    console = console or Console()
    folder = check_demo(seconds, seed, out_dir, model)
    model = model or "longvid-tiny"
    spec = make_video_spec(eval_seed(seed), seconds=seconds, version=model_suite(resolve_model(model)))
    video = write_video(spec, folder / "demo.mp4")
    questions = make_questions(spec)
    events = ", ".join(f"{e.name} ({e.quadrant}, {e.start:.0f}-{e.end:.0f} s)" for e in spec.events)
    console.print(f"[bold]longvid demo[/bold]: {video} ({seconds:g} s, seed {spec.seed}): {events}")
    console.print(f"model: {model}")
    lm = longvid.load(model)
    frames = lm.read(video, SamplingOptions(fps=1.0), progress=progress)
    lm.session(frames.select(slice(0, 4)), method="full").ask(questions[0].text, max_new_tokens=1)  # warm-up
    answers, kept = {}, {}
    for name, keep in METHODS:
        session = lm.session(frames, method=name, keep=keep, progress=progress)
        answers[name] = [session.ask(q.text, max_new_tokens=2) for q in questions]
        kept[name] = session.encoded.tokens
    table = Table("kind", "question", "truth", *(name for name, _ in METHODS))
    for i, q in enumerate(questions):
        cells = []
        for name, _ in METHODS:
            letter = parse_letter(answers[name][i].text)
            mark = "[green]ok[/green]" if letter == q.answer else "[red]x[/red]"
            cells.append(f"{letter or '?'} {mark}")
        table.add_row(q.kind, q.question, f"{q.answer}. {q.answer_text}", *cells)
    console.print(table)
    stats = Table("method", "keep", "retention", "kept/visual", "LLM tokens", "KV KiB", "TTFT ms", "correct")
    for name, keep in METHODS:
        a = answers[name][0].stats
        right = sum(parse_letter(x.text) == q.answer for x, q in zip(answers[name], questions))
        stats.add_row(name, "-" if keep is None else f"{keep:g}", f"{a.retention:.3f}",
                      f"{a.kept_tokens}/{a.visual_tokens}", str(a.llm_tokens), f"{a.kv_bytes / 1024:.0f}",
                      f"{1000 * a.ttft:.1f}", f"{right}/{len(questions)}")
    console.print(stats)
    ad = lm.adapter
    height, width = ad.pixels.frame_size(*frames.frames.shape[1:3])
    grid = (height // (ad.patch_size * ad.merge), width // (ad.patch_size * ad.merge))
    png = draw_keep_map(frames, kept, folder / "keep_map.png", grid, ad.temporal_patch)
    console.print(f"Which tokens each method kept, over the sampled frames: {png}")
    console.print("Each method encodes the video once (a session) and answers every question from a copy of its "
                  "cache. `longvid eval synth` measures accuracy over hundreds of such questions.")
    return folder


def draw_keep_map(frames, kept: dict, path, grid: tuple[int, int], temporal_patch: int = 2,
                  thumb: int = 64):
    """PNG: one row per method, one column per temporal step (its first frame); dropped tokens are dimmed.

    ``kept`` maps a method name to its `VisualTokens` after reduction; a token is placed by its timestamp (the
    step it came from; token times count from the stream's start) and its row and column in the merged ``grid``
    (rows, cols) of tokens per step. ``path`` is a file path or a binary file object.
    """
    from PIL import Image, ImageDraw

    step_times = (np.asarray(frames.timestamps) - (frames.info.start_time or 0.0))[::temporal_patch]
    tiles = [np.asarray(Image.fromarray(image).resize((thumb, thumb), Image.BILINEAR))
             for image in frames.frames[::temporal_patch]]
    rows, cols = grid
    ys, xs = np.linspace(0, thumb, rows + 1).astype(int), np.linspace(0, thumb, cols + 1).astype(int)
    label = 90
    canvas = Image.new("RGB", (label + thumb * len(tiles), thumb * len(kept) + 18), "white")
    draw = ImageDraw.Draw(canvas)
    for col, t in enumerate(step_times):
        if col % 5 == 0:
            draw.text((label + col * thumb + 2, thumb * len(kept) + 4), f"{t:.0f}s", fill="black")
    for row, (name, tokens) in enumerate(kept.items()):
        keep = np.zeros((len(tiles), rows, cols), dtype=bool)
        steps = np.abs(np.asarray(tokens.time)[:, None] - step_times[None, :]).argmin(1)
        keep[steps, tokens.thw[:, 1].numpy(), tokens.thw[:, 2].numpy()] = True
        for col, tile in enumerate(tiles):
            tile = tile.copy()
            for r in range(rows):
                for c in range(cols):
                    if not keep[col, r, c]:
                        block = tile[ys[r]:ys[r + 1], xs[c]:xs[c + 1]]
                        block[:] = (block * 0.25 + 40).astype(np.uint8)
            canvas.paste(Image.fromarray(tile), (label + col * thumb, row * thumb))
        draw.text((4, row * thumb + thumb // 2 - 6), name, fill="black")
        draw.text((4, row * thumb + thumb // 2 + 6), f"{100 * keep.mean():.0f}% kept", fill="grey")
    canvas.save(path, format="PNG")
    return path
