"""``longvid demo``: the whole pipeline on a generated video with a tiny model built into the package.

The model is the real Qwen2-VL class at a tiny size with RANDOM weights (no trained tiny model exists yet), so its
answers are meaningless; the demo shows the pipeline end to end and what each method keeps and costs.

    longvid demo --seconds 20
"""

from __future__ import annotations

import os
from pathlib import Path

from rich.table import Table

QUESTIONS = ("What colour is the moving square?", "Where is the square at the end?")
METHODS = (("full", None), ("uniform", 0.25), ("random", 0.25), ("evs", 0.25), ("knorm", 0.25))


def cache_dir() -> Path:
    return Path(os.environ.get("LONGVID_CACHE_DIR", Path.home() / ".cache" / "longvid"))


def demo_model() -> Path:
    """The tiny random-weight checkpoint, written once under the cache dir (deterministic: seed 0)."""
    from longvid.tiny import save_tiny_model

    path = cache_dir() / "tiny-random-qwen2vl"
    if not (path / "model.safetensors").is_file():
        save_tiny_model(path, "qwen2_vl", seed=0, hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2)
    return path


def run_demo(seconds: float = 20.0, out_dir: str | None = None, console=None, progress=None):
    """Generate a video, answer QUESTIONS with each of METHODS, and print answers, retention and timings.

    ``progress`` is an optional ``(stage, done, total)`` callback.
    """
    from rich.console import Console

    console = console or Console()
    import longvid
    from longvid.video import write_test_video

    if seconds <= 0:
        raise ValueError(f"--seconds must be > 0, got {seconds}")
    folder = Path(out_dir) if out_dir else cache_dir() / "demo"
    folder.mkdir(parents=True, exist_ok=True)
    video = write_test_video(folder / "demo.mp4", seconds=seconds, fps=8, width=224, height=168)
    console.print(f"[bold]longvid demo[/bold]: {video} ({seconds:g} s), model {demo_model()}")
    console.print("[yellow]The built-in tiny model has RANDOM weights: its answers are meaningless. The demo shows "
                  "the pipeline and what each method keeps and costs.[/yellow]")
    lm = longvid.load(demo_model(), min_pixels=112 * 112, max_pixels=224 * 168)
    for i, q in enumerate(QUESTIONS, 1):
        console.print(f"Q{i}: {q}")
    table = Table("method", "keep", "retention", "kept/visual", "LLM tok", "KV KiB", "prefill s",
                  *(f"Q{i} answer" for i in range(1, len(QUESTIONS) + 1)))
    table.columns[0].no_wrap = True
    for name, keep in METHODS:
        session = lm.session(video, method=name, keep=keep, fps=2.0, chunk_size=256, progress=progress)
        answers = [session.ask(q, max_new_tokens=8).to_dict() for q in QUESTIONS]
        a = answers[0]
        table.add_row(name, "-" if keep is None else f"{keep:g}", f"{a['retention']:.3f}",
                      f"{a['kept_tokens']}/{a['visual_tokens']}", str(a["llm_tokens"]), f"{a['kv_bytes'] / 1024:.0f}",
                      f"{a['seconds']['prefill']:.2f}", *(repr(x["answer"][:8]) for x in answers))
    console.print(table)
    console.print("Each method encodes the video once (a session) and answers both questions from a copy of its "
                  "cache; `longvid methods` lists the methods.")
