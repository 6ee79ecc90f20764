"""``longvid eval NAME --data DIR``: methods' accuracy and cost on a benchmark read from local files.

Each video is decoded once (``--fps`` / ``--frames``, capped by ``--max-frames``); every (method, keep) then answers
all of the video's questions: query-agnostic methods from one encode (a session), query-aware ones one pass per
question. ``full`` always runs (every other method is compared with it question by question), and so do the
equal-budget controls ``uniform`` and ``random`` at every keep. Results go to a folder named from the settings::

    samples.jsonl               one row per (question, method, keep), written a video-and-method unit at a time
    table.md                    accuracy +- SE clustered by video, paired delta vs full [95% CI], retention, LLM
                                tokens, TTFT, peak memory, KV; per category; the runner's own overhead
    summary.json                the same numbers
    accuracy_vs_retention.png   accuracy against realised retention, one line per method
    config.json                 the settings, the command, versions

Running the same command again continues an interrupted run after its last complete unit (never a duplicated
row), or prints the table of a finished one. ``--shard I/N`` evaluates every N-th video (from the I-th) into its own
folder; ``--limit N`` the first N questions (whole videos).

    longvid eval videomme --data /data/Video-MME --model /models/Qwen2.5-VL-7B-Instruct --frames 64 \\
        --methods evs,knorm --keep 0.5,0.25
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from longvid.errors import check_positive, option
from longvid.eval.common import load_done
from longvid.eval.letters import extract_letter
from longvid.eval.readers import Benchmark, Question, read_benchmark
from longvid.eval.stats import clustered_se, paired_delta

CONTROLS = ("uniform", "random")  # the equal-budget controls, always beside the methods


@dataclass
class BenchSettings:
    """What ``longvid eval NAME`` runs."""

    name: str
    data: str
    methods: list[str] = field(default_factory=lambda: ["full"])
    keeps: list[float] = field(default_factory=lambda: [0.5, 0.25])
    fps: float | None = None
    frames: int | None = None
    max_frames: int | None = None
    model: str | None = None
    limit: int | None = None
    shard: tuple[int, int] | None = None
    skip_missing: bool = False
    max_new_tokens: int = 16
    out: str | None = None
    overrides: dict = field(default_factory=dict)

    def __post_init__(self):
        from longvid.methods.registry import check_keep_ratios, check_method_names

        check_method_names(self.methods)
        stray = [m for m in self.overrides if m not in self.all_methods()]
        if stray:
            raise ValueError(f"settings name methods that are not run: {', '.join(stray)}")
        check_keep_ratios(self.keeps)
        if self.fps is not None and self.frames is not None:
            raise ValueError(f"{option('fps', self.fps)} and {option('frames', self.frames)} both set the sampling; "
                             "pass one")
        check_positive("fps", self.fps)
        for name in ("frames", "max_frames", "limit", "max_new_tokens"):
            check_positive(name, getattr(self, name), integer=True)
        if self.shard is not None:
            i, n = self.shard
            if not (isinstance(i, int) and isinstance(n, int) and 0 <= i < n):
                raise ValueError(f"{option('shard', f'{i}/{n}')} is invalid: pass I/N with 0 <= I < N, e.g. 0/4")
        for m, keep in self.runs():  # bad settings fail now, before any video is decoded
            self.method(m, keep)

    def all_methods(self) -> list[str]:
        """``full``, then the asked methods, then the controls not asked for (when any method reduces)."""
        extra = [c for c in CONTROLS if c not in self.methods] if any(m != "full" for m in self.methods) else []
        return list(dict.fromkeys(["full", *self.methods, *extra]))

    def runs(self) -> list[tuple[str, float | None]]:
        from longvid.methods.registry import takes_keep

        return [(m, k) for m in self.all_methods() for k in (self.keeps if takes_keep(m) else [None])]

    def method(self, name: str, keep: float | None):
        from longvid.methods.registry import get_method

        return get_method(name, keep=keep, **self.overrides.get(name, {}))

    def sampling(self):
        from longvid.video.options import SamplingOptions

        fps = self.fps if self.fps is not None or self.frames is not None else 1.0
        return SamplingOptions(fps, self.frames, self.max_frames)

    def folder_name(self) -> str:
        model = Path(self.model).name if self.model else "longvid-tiny"
        methods = "-".join(self.methods) if len(self.methods) <= 4 else f"{len(self.methods)}methods"
        keeps = "-".join(f"{k:g}" for k in self.keeps)
        sampling = f"frames{self.frames}" if self.frames else f"fps{self.fps or 1:g}"
        parts = [self.name, model, methods, f"keep{keeps}", sampling]
        if self.max_frames:
            parts.append(f"max{self.max_frames}")
        if self.limit:
            parts.append(f"limit{self.limit}")
        if self.shard:
            parts.append(f"shard{self.shard[0]}of{self.shard[1]}")
        return re.sub(r"[^A-Za-z0-9._-]", "_", "_".join(parts))


@dataclass
class PreparedBench:
    settings: BenchSettings
    bench: Benchmark
    lm: object
    folder: Path
    videos: dict  # video path -> its questions, in file order
    done: set  # (video, method, keep) units already in samples.jsonl
    total: int


def select(bench: Benchmark, limit: int | None, shard: tuple[int, int] | None) -> dict:
    """Questions grouped by video (first appearance order); ``limit`` keeps whole videos up to N questions; ``shard``
    every N-th video from the I-th."""
    videos = defaultdict(list)
    for q in bench.questions:
        videos[str(q.video)].append(q)
    if shard is not None:
        i, n = shard
        videos = {v: qs for k, (v, qs) in enumerate(videos.items()) if k % n == i}
    if limit is not None:
        kept, count = {}, 0
        for v, qs in videos.items():
            if count >= limit:
                break
            kept[v], count = qs[:limit - count], count + len(qs[:limit - count])
        videos = kept
    return dict(videos)


def prepare_bench(settings: BenchSettings, *, lm=None, checker=None, device: str = "cpu", dtype: str = "auto",
                  command: str | None = None, log=print) -> PreparedBench:
    """Read the benchmark and check everything (methods against the model, the output folder) before writing; then
    create the results folder or find an interrupted run of the same settings, which continues. ``checker(settings)``
    checks the methods elsewhere (on a Ray actor's model) and returns the device it runs on; then no model is loaded
    here and ``lm`` stays None."""
    import torch

    import longvid
    from longvid.output import writable_folder
    from longvid.eval.common import results_folder, tiny_model_path

    bench = read_benchmark(settings.name, settings.data, skip_missing=settings.skip_missing)
    videos = select(bench, settings.limit, settings.shard)
    if not videos:
        raise ValueError(f"{option('shard', settings.shard)} selects no video of {settings.name}'s "
                         f"{len({str(q.video) for q in bench.questions})}")
    model = settings.model or str(tiny_model_path())
    if checker is None:
        lm = lm or longvid.load(model, device=device, dtype=dtype)
        device = check_runs(lm, settings)
    else:
        device = checker(settings)
    parent = writable_folder(Path(settings.out or "longvid-eval"), option="out")  # made once everything is checked
    config = dict(settings=asdict(settings), model=str(model), command=command or " ".join(sys.argv),
                  benchmark=dict(files=bench.files, note=bench.note, macro=bench.macro_average), started=time.strftime("%Y-%m-%d %H:%M:%S"),
                  torch=torch.__version__, python=platform.python_version(), device=device,
                  machine=platform.machine(), cpus=os.cpu_count())
    folder, resumed = results_folder(parent, settings.folder_name(), config)
    sizes = {v: len(qs) for v, qs in videos.items()}
    total = sum(sizes.values()) * len(settings.runs())
    if resumed:
        done = load_done(folder / "samples.jsonl", _unit, lambda u: sizes.get(u[0]))
        left = total - sum(sizes[unit[0]] for unit in done)
        log(f"continuing {folder}: {left} of {total} answers left" if left else f"{folder} is complete")
    else:
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config, indent=1) + "\n")
        done = set()
    return PreparedBench(settings, bench, lm, folder, videos, done, total)


def check_runs(lm, settings: BenchSettings) -> str:
    """Raise a one-line ValueError if a (method, keep) of ``settings`` cannot run on ``lm``; returns its device."""
    for method, keep in settings.runs():
        settings.method(method, keep).check_model(lm.adapter)
    return str(lm.adapter.device)


def units(prepared: PreparedBench) -> list[dict]:
    """The work left: one unit per video, with its questions, their prompts and positions in the benchmark, and the
    (method, keep) runs not yet in samples.jsonl."""
    index = {id(q): i for i, q in enumerate(prepared.bench.questions)}
    left = []
    for video, questions in prepared.videos.items():
        todo = [(m, k) for m, k in prepared.settings.runs() if (video, m, k) not in prepared.done]
        if todo:
            left.append(dict(video=video, questions=questions, prompts=[prepared.bench.prompt(q) for q in questions],
                             index=[index[id(q)] for q in questions], todo=todo))
    return left


def answers_in(units_left) -> int:
    """Answers the units still have to give (questions x runs)."""
    return sum(len(u["questions"]) * len(u["todo"]) for u in units_left)


def run_unit(lm, settings: BenchSettings, unit: dict, timing: _Timing):
    """Decode a unit's video once and yield ``(method, keep, rows)`` for each of its runs."""
    t0 = time.perf_counter()
    frames = lm.read(unit["video"], settings.sampling())
    timing.work += time.perf_counter() - t0
    for method, keep in unit["todo"]:
        rows = answer_questions(lm, frames, settings.method(method, keep), unit["questions"], unit["prompts"],
                                settings.max_new_tokens, timing)
        yield method, keep, [dict(video_path=unit["video"], method=method, keep=keep, index=i, **r)
                             for i, r in zip(unit["index"], rows)]


def _unit(row: dict) -> tuple:
    return row["video_path"], row["method"], row["keep"]


def run_bench(prepared: PreparedBench, *, log=print, progress=None) -> Path:
    """Run (or continue) the evaluation; returns the results folder. ``progress(done, total)`` is optional."""
    settings, lm, folder = prepared.settings, prepared.lm, prepared.folder
    left = units(prepared)
    done = prepared.total - answers_in(left)
    timing = _Timing.load(folder)
    with open(folder / "samples.jsonl", "a") as samples:
        for unit in left:
            t0 = time.perf_counter()
            for method, keep, rows in run_unit(lm, settings, unit, timing):
                samples.write("".join(json.dumps(r) + "\n" for r in rows))
                samples.flush()
                done += len(rows)
                if progress is not None:
                    progress(done, prepared.total)
            timing.wall += time.perf_counter() - t0
    timing.save(folder)
    summarize_bench(folder)
    return folder


@dataclass
class _Timing:
    """Seconds inside the model's calls (decode, encode, answer) vs the runner's wall time around them."""

    work: float = 0.0
    wall: float = 0.0

    @classmethod
    def load(cls, folder: Path) -> _Timing:
        try:
            return cls(**json.loads((folder / "timing.json").read_text()))
        except (OSError, ValueError, TypeError):
            return cls()

    def save(self, folder: Path) -> None:
        (folder / "timing.json").write_text(json.dumps(asdict(self)) + "\n")


def answer_questions(lm, frames, chosen, questions: list[Question], prompts: list[str], max_new_tokens: int,
                     timing: _Timing) -> list[dict]:
    """One row per question (asked as its prompt) for one video's frames and one Method."""
    from longvid.eval.common import PeakMemory

    device = lm.adapter.device
    answers, peaks = [], []
    if chosen.query_aware:
        for prompt in prompts:
            t0 = time.perf_counter()
            with PeakMemory(device) as mem:
                answers.append(lm.ask(frames, prompt, method=chosen, max_new_tokens=max_new_tokens))
            timing.work += time.perf_counter() - t0
            peaks.append(mem.peak)
    else:
        t0 = time.perf_counter()
        with PeakMemory(device) as mem:
            session = lm.session(frames, method=chosen)
            answers = [session.ask(prompt, max_new_tokens=max_new_tokens) for prompt in prompts]
        timing.work += time.perf_counter() - t0
        peaks = [mem.peak] * len(questions)
    rows = []
    for q, a, peak in zip(questions, answers, peaks):
        s, letter = a.stats, extract_letter(a.text, q.options)
        rows.append(dict(qid=q.qid, categories=q.categories, answer=letter, reply=a.text, truth=q.answer,
                         correct=letter == q.answer, retention=s.retention, visual_tokens=s.visual_tokens,
                         kept_tokens=s.kept_tokens, llm_tokens=s.llm_tokens, kv_bytes=s.kv_bytes,
                         peak_bytes=int(peak), ttft=s.ttft, seconds=s.seconds))
    return rows


# ----- summary ---------------------------------------------------------------------------------------------------------
def summarize_bench(folder: str | Path) -> str:
    """Write ``table.md``, ``summary.json`` and the plot from ``samples.jsonl``; returns the markdown."""
    import numpy as np

    folder = Path(folder)
    rows = [json.loads(line) for line in open(folder / "samples.jsonl")]
    # benchmark order (rows of a Ray run arrive as units finish): the same table as one process writes
    rows.sort(key=lambda r: r.get("index", 0))
    config = json.loads((folder / "config.json").read_text())
    s = config["settings"]
    groups = defaultdict(list)
    for r in rows:
        groups[(r["method"], r["keep"])].append(r)
    reference = {r["qid"]: r["correct"] for r in groups.get(("full", None), [])}
    cat_keys = list(dict.fromkeys(k for r in rows for k in r["categories"]))
    macro = _macro_key(config)
    summary = []
    for (method, keep), rs in groups.items():
        correct = [r["correct"] for r in rs]
        paired = [r for r in rs if r["qid"] in reference]
        delta = paired_delta([r["correct"] for r in paired], [reference[r["qid"]] for r in paired],
                             [r["video_path"] for r in paired]) if method != "full" and paired else None
        per_cat = {}
        for key in cat_keys:
            classes = defaultdict(list)
            for r in rs:
                value = r["categories"].get(key, "-")
                for c in (value if isinstance(value, list) else [value]):
                    classes[str(c)].append(r["correct"])
            per_cat[key] = {c: (float(np.mean(v)), len(v)) for c, v in classes.items()}  # in file order
        summary.append(dict(
            method=method, keep=keep, n=len(rs), videos=len({r["video_path"] for r in rs}),
            accuracy=float(np.mean(correct)), se=clustered_se(correct, [r["video_path"] for r in rs]),
            delta=None if delta is None else dict(mean=delta.mean, se=delta.se, low=delta.low, high=delta.high,
                                                  n=delta.n),
            macro_accuracy=(float(np.mean([a for a, _ in per_cat[macro].values()])) if macro in per_cat else None),
            categories=per_cat, retention=float(np.mean([r["retention"] for r in rs])),
            llm_tokens=float(np.mean([r["llm_tokens"] for r in rs])),
            ttft_ms=1000 * float(np.median([r["ttft"] for r in rs])),
            peak_mib=float(np.median([r["peak_bytes"] for r in rs])) / 2**20,
            kv_kib=float(np.mean([r["kv_bytes"] for r in rs])) / 1024,
            unparsed=sum(r["answer"] is None for r in rs)))
    timing = _Timing.load(folder)
    overhead = (timing.wall - timing.work) / timing.work if timing.work > 0 else float("nan")
    sampling = f"{s['frames']} frames" if s["frames"] else f"{s['fps'] or 1:g} fps"
    lines = [
        f"# {s['name']}: {Path(config['model']).name}, {len(reference) or summary[0]['n']} questions, {sampling}"
        + (f" (at most {s['max_frames']} frames)" if s["max_frames"] else ""),
        "",
        f"Command: `{config['command']}`  ",
        f"Data: {', '.join(config['benchmark']['files'])}"
        + (f" ({config['benchmark']['note']})" if config["benchmark"]["note"] else "") + "  ",
        f"Device: {config['device']} ({config['machine']}, {config['cpus']} CPUs), torch {config['torch']}, "
        f"{config['started']}.",
        "",
        "Accuracy in %, +- its standard error clustered by video. Delta: paired difference from `full` on the same "
        "questions, in points, with its 95% interval (clustered by video). Retention: visual tokens (or KV entries "
        "per layer and head, for presses) the answer attends to, over the sampled frames' tokens. TTFT: median; a "
        "session's encode counts for each of its questions. `uniform` and `random` are the equal-budget controls.",
        "",
        "| method | keep | n | accuracy % | delta vs full | retention | LLM tokens | TTFT ms | peak MiB | KV KiB |"
        + (f" {macro} mean % |" if macro else ""),
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|" + ("---:|" if macro else ""),
    ]
    for r in summary:
        keep = "-" if r["keep"] is None else f"{r['keep']:g}"
        delta = "-" if r["delta"] is None else (f"{100 * r['delta']['mean']:+.1f} [{100 * r['delta']['low']:+.1f}, "
                                                f"{100 * r['delta']['high']:+.1f}]")
        lines.append(f"| {r['method']} | {keep} | {r['n']} | {100 * r['accuracy']:.1f} +- {100 * r['se']:.1f} | "
                     f"{delta} | {r['retention']:.3f} | {r['llm_tokens']:.0f} | {r['ttft_ms']:.1f} | "
                     f"{r['peak_mib']:.1f} | {r['kv_kib']:.0f} |"
                     + (f" {100 * r['macro_accuracy']:.1f} |" if macro else ""))
    for key in cat_keys:
        classes = list(dict.fromkeys(c for r in summary for c in r["categories"][key]))
        if len(classes) > 40:
            continue
        lines += ["", f"Accuracy % by {key} (n):", "",
                  "| method | keep |" + "".join(f" {c} ({summary[0]['categories'][key].get(c, (0, 0))[1]}) |"
                                             for c in classes),
                  "|---|---:|" + "---:|" * len(classes)]
        for r in summary:
            keep = "-" if r["keep"] is None else f"{r['keep']:g}"
            lines.append(f"| {r['method']} | {keep} |" + "".join(
                f" {100 * r['categories'][key][c][0]:.1f} |" if c in r["categories"][key] else " - |"
                for c in classes))
    unparsed = sum(r["unparsed"] for r in summary)
    if unparsed:
        lines += ["", f"{unparsed} replies named no option (or several); they count as wrong."]
    lines += ["", f"Runner overhead: {timing.wall:.1f} s wall around {timing.work:.1f} s inside the model's calls "
                  f"({100 * overhead:+.1f}%)."]
    text = "\n".join(lines) + "\n"
    (folder / "table.md").write_text(text)
    (folder / "summary.json").write_text(json.dumps(dict(runs=summary, overhead=overhead), indent=1) + "\n")
    _plot(summary, folder / "accuracy_vs_retention.png", s["name"])
    return text


def _macro_key(config: dict) -> str | None:
    """The category whose per-class mean the benchmark reports (MLVU's M-Avg over tasks), if any."""
    return config["benchmark"].get("macro")


def _plot(summary: list[dict], path: Path, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for method in dict.fromkeys(r["method"] for r in summary):
        pts = sorted((r["retention"], 100 * r["accuracy"], 100 * r["se"]) for r in summary if r["method"] == method)
        x, y, e = zip(*pts)
        style = dict(marker="*", markersize=12, linestyle="none") if method == "full" else dict(marker="o")
        ax.errorbar(x, y, yerr=e, label=method, capsize=3, **style)
    ax.set_xscale("log")
    ax.set_xlabel("realised retention (log)")
    ax.set_ylabel("accuracy % (+- clustered SE)")
    ax.set_title(name)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
