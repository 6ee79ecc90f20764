"""``longvid eval synth``: every method's accuracy and cost on the synthetic suite, through the whole pipeline.

For each video length, the suite's mp4 files are written once to a cache (deterministic from the seed, so reused),
then each video is decoded once at the sampling rate and every (method, keep) answers its questions: sessions for
query-agnostic methods (one encode, many questions), one pass per question for query-aware ones. Results go to a
new folder named from the settings (never overwritten)::

    samples.jsonl               one row per (question, method, keep)
    table.md                    accuracy +- SE clustered by video, retention, LLM tokens, TTFT, peak memory
    accuracy_vs_retention.png   accuracy against realised retention, one line per method
    config.json                 the settings, the command line, versions

    longvid eval synth --methods full,uniform,evs --keep 0.5,0.25 --length 60 --n 100 --seed 0
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

import numpy as np
import torch

from longvid.errors import check_positive, option
from longvid.eval.common import PeakMemory, load_done, results_folder, tiny_model_path
from longvid.eval.stats import clustered_se, paired_delta
from longvid.synth.questions import KINDS_V2, LETTERS, kinds_of, make_questions
from longvid.synth.seeds import EVAL_SEEDS, eval_seed
from longvid.synth.spec import SECONDS_RANGE, VERSIONS, make_video_spec
from longvid.synth.suite import write_suite
from longvid.video import cache_dir

__all__ = ["tiny_model_path", "EvalSettings", "select_questions", "ensure_suite", "clustered_se", "parse_letter",
           "answer_video", "run_eval", "summarize"]

DEFAULT_FPS = 1.0


@dataclass
class EvalSettings:
    """What one evaluation runs. ``keeps`` apply to every method but ``full`` (always everything)."""

    methods: list[str] = field(default_factory=lambda: ["full"])
    keeps: list[float] = field(default_factory=lambda: [0.5, 0.25, 0.1])
    lengths: list[float] = field(default_factory=lambda: [60.0])
    n: int = 100
    seed: int = 0
    fps: float = DEFAULT_FPS
    model: str | None = None
    blank: bool = False
    out: str | None = None
    overrides: dict = field(default_factory=dict)  # method -> stage settings, e.g. {"prunevid": {"layer": 2}}
    suite: int | None = None  # suite version; None: the one the model was trained on (its longvid.json), else 1

    def __post_init__(self):
        from longvid.methods.registry import check_keep_ratios, check_method_names

        check_method_names(self.methods)
        stray = [m for m in self.overrides if m not in self.methods]
        if stray:
            raise ValueError(f"settings name methods that are not in {option('methods', ','.join(self.methods))}: "
                             f"{', '.join(stray)}")
        check_keep_ratios(self.keeps)
        lo, hi = SECONDS_RANGE
        for length in self.lengths:
            if not lo <= length <= hi:
                raise ValueError(f"{option('lengths', length)} is invalid: it must be in [{lo:g}, {hi:g}] seconds")
        if isinstance(self.n, bool) or not (isinstance(self.n, int) and self.n >= 1):
            raise ValueError(f"{option('n', self.n)} is invalid: it must be a positive number of questions per kind")
        if isinstance(self.seed, bool) or not (isinstance(self.seed, int) and 0 <= self.seed < len(EVAL_SEEDS) // 2):
            raise ValueError(f"{option('seed', self.seed)} is invalid: it must be an int in [0, "
                             f"{len(EVAL_SEEDS) // 2})")
        check_positive("fps", self.fps)
        if self.suite is not None and self.suite not in VERSIONS:
            raise ValueError(f"{option('suite', self.suite)} is invalid: pass a suite version, one of "
                             f"{', '.join(map(str, VERSIONS))}")
        for m, keep in self.runs():  # unknown or bad settings fail now, not after the videos are written
            self.method(m, keep)

    def method(self, name: str, keep: float | None):
        from longvid.methods.registry import get_method

        return get_method(name, keep=keep, **self.overrides.get(name, {}))

    def runs(self) -> list[tuple[str, float | None]]:
        """(method, keep) pairs in order: each method at every keep, once for methods without a keep ratio."""
        from longvid.methods.registry import takes_keep

        return [(m, k) for m in self.methods for k in (self.keeps if takes_keep(m) else [None])]

    def folder_name(self) -> str:
        from longvid.methods.registry import takes_keep

        model = Path(self.model).name if self.model else "longvid-tiny"
        lengths = "-".join(f"{x:g}" for x in self.lengths)
        methods = "-".join(self.methods) if len(self.methods) <= 4 else f"{len(self.methods)}methods"
        keeps = "_keep" + "-".join(f"{k:g}" for k in self.keeps) if any(map(takes_keep, self.methods)) else ""
        suite = f"_v{self.suite}" if self.suite and self.suite != 1 else ""
        name = f"synth{suite}_{model}_{methods}{keeps}_len{lengths}s_n{self.n}_seed{self.seed}_fps{self.fps:g}"
        return re.sub(r"[^A-Za-z0-9._-]", "_", name + ("_blank" if self.blank else ""))


# ----- the question set --------------------------------------------------------------------------------------------
def model_suite(model: str | Path) -> int:
    """The suite version a checkpoint was trained on (``suite`` in its ``longvid.json``), 1 if it does not say."""
    card = Path(model) / "longvid.json"
    try:
        return int(json.loads(card.read_text()).get("suite", 1))
    except (OSError, ValueError, AttributeError):
        return 1


def select_questions(seconds: float, n: int, seed: int, version: int = 1) -> tuple[int, list[dict]]:
    """Walk eval seeds ``eval_seed(seed), eval_seed(seed) + 1, ...`` taking each video's questions of kinds that
    still have fewer than ``n``; stop when every kind has ``n``. Returns (number of videos, selected rows)."""
    counts, rows, i = dict.fromkeys(kinds_of(version), 0), [], 0
    while min(counts.values()) < n:
        spec = make_video_spec(eval_seed(seed + i), seconds=seconds, version=version)
        for q in make_questions(spec):
            if counts[q.kind] < n:
                counts[q.kind] += 1
                rows.append(dict(video_id=spec.video_id, kind=q.kind, question=q.text, answer=q.answer,
                                 options=list(q.options)))
        i += 1
    return i, rows


def ensure_suite(seconds: float, n_videos: int, seed: int, blank: bool = False, log=None, version: int = 1) -> Path:
    """The suite's mp4 files for these settings, written once under the cache dir (`write_suite`) and reused."""
    name = (("" if version == 1 else f"v{version}_") + f"eval_seed{seed}_len{seconds:g}s_{n_videos}videos"
            + ("_blank" if blank else ""))
    path = cache_dir() / "synth" / name
    if (path / "suite.json").is_file() and not _cached_specs_current(path, version):
        import shutil

        shutil.rmtree(path)  # written by an earlier layout of this suite version: its videos are not today's
    if not (path / "suite.json").is_file():
        if log is not None:
            log(f"writing {n_videos} videos of {seconds:g} s to {path} (once; later runs reuse them)")
        write_suite(path, split="eval", n_videos=n_videos, seconds=seconds, seed=eval_seed(seed), blank=blank,
                    version=version)
    return path


def _cached_specs_current(path: Path, version: int) -> bool:
    """Whether a cached suite's first video is the spec this code draws for its seed (suite v2's layout changed once
    before its model shipped; a cache from then must not be reused)."""
    try:
        video = json.loads((path / "suite.json").read_text())["videos"][0]
        now = make_video_spec(video["seed"], seconds=video["seconds"], version=version).to_dict()
    except (OSError, ValueError, KeyError, IndexError):
        return False
    now = json.loads(json.dumps(now))
    return "events" in video and all(now[k] == v for k, v in video.items() if k in now)  # older records lack new keys


# ----- statistics ---------------------------------------------------------------------------------------------------
def parse_letter(text: str) -> str | None:
    """The answer letter: the first character of the reply when it is A-D (upper or lower case), else None."""
    text = text.strip()
    return text[0].upper() if text and text[0].upper() in LETTERS else None


# ----- running ------------------------------------------------------------------------------------------------------
@dataclass
class PreparedEval:
    """An evaluation checked and ready to run: everything that can fail on bad input has been tried, and only the
    results folder (with its config.json) exists. ``done`` holds the (length, video, method, keep) units an earlier,
    interrupted run of the same settings already wrote to ``samples.jsonl``."""

    settings: EvalSettings
    lm: object
    folder: Path
    plans: list
    done: set
    total: int


def _unit(row: dict) -> tuple:
    return row["length"], row["video"], row["method"], row["keep"]


def prepare_eval(settings: EvalSettings, *, lm=None, command: str | None = None, log=print) -> PreparedEval:
    """Check everything before anything is written (methods and their settings against the model, the model, the
    output folder), then create the results folder and its config.json, or find the folder of an interrupted run of
    the same settings and model, which then continues."""
    import longvid
    from longvid.output import writable_folder

    model = settings.model or str(tiny_model_path())
    lm = lm or longvid.load(model)
    if settings.suite is None:
        from longvid.models import resolve_model

        settings.suite = model_suite(resolve_model(model))
    for method, keep in settings.runs():
        settings.method(method, keep).check_model(lm.adapter)
    parent = writable_folder(Path(settings.out or "longvid-eval"), option="out")
    config = dict(settings=asdict(settings), model=str(model), command=command or " ".join(sys.argv),
                  started=time.strftime("%Y-%m-%d %H:%M:%S"), torch=torch.__version__,
                  python=platform.python_version(), device=str(lm.adapter.device), machine=platform.machine(),
                  cpus=os.cpu_count())
    folder, resumed = results_folder(parent, settings.folder_name(), config)
    plans = [(length, *select_questions(length, settings.n, settings.seed, settings.suite))
             for length in settings.lengths]
    sizes = defaultdict(int)
    for length, _, rows in plans:
        for row in rows:
            sizes[(length, f"{row['video_id']}.mp4")] += 1
    total = sum(sizes.values()) * len(settings.runs())
    if resumed:
        done = load_done(folder / "samples.jsonl", _unit, lambda u: sizes.get(u[:2]))
        left = total - sum(sizes[unit[:2]] for unit in done)
        log(f"continuing {folder}: {left} of {total} answers left" if left else f"{folder} is complete")
    else:
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config, indent=1) + "\n")
        done = set()
    return PreparedEval(settings, lm, folder, plans, done, total)


def run_eval(prepared: PreparedEval | EvalSettings, *, log=print, progress=None, command: str | None = None) -> Path:
    """Run (or continue) the evaluation and write its folder; returns the folder.

    Each (video, method, keep) unit's rows are written and flushed together, so an interrupted run loses at most the
    unit in flight, and running the same settings again continues after the last complete unit.
    ``progress(done, total)`` is optional.
    """
    from longvid.video.options import SamplingOptions

    if isinstance(prepared, EvalSettings):
        prepared = prepare_eval(prepared, command=command, log=log)
    settings, lm, folder = prepared.settings, prepared.lm, prepared.folder
    runs = settings.runs()
    done = 0
    for length, _, rows in prepared.plans:
        for row in rows:
            done += sum((length, f"{row['video_id']}.mp4", m, k) in prepared.done for m, k in runs)
    with open(folder / "samples.jsonl", "a") as samples:
        for length, n_videos, rows in prepared.plans:
            by_video = defaultdict(list)
            for row in rows:
                by_video[row["video_id"]].append(row)
            todo = {vid: [(m, k) for m, k in runs if (length, f"{vid}.mp4", m, k) not in prepared.done]
                    for vid in by_video}
            if not any(todo.values()):
                continue
            suite = ensure_suite(length, n_videos, settings.seed, settings.blank, log, settings.suite or 1)
            for video_id, questions in by_video.items():
                if not todo[video_id]:
                    continue
                path = suite / f"{video_id}.mp4"
                frames = lm.read(str(path), SamplingOptions(fps=settings.fps))
                for method, keep in todo[video_id]:
                    unit = [json.dumps(dict(video=path.name, length=length, method=method, keep=keep, **row)) + "\n"
                            for row in answer_video(lm, frames, settings.method(method, keep), questions)]
                    samples.write("".join(unit))
                    samples.flush()
                    done += len(questions)
                    if progress is not None:
                        progress(done, prepared.total)
    summarize(folder)
    return folder


def answer_video(lm, frames, chosen, questions: list[dict]) -> list[dict]:
    """One row per question (suite rows with ``question``, ``answer``, ``kind``) for one video's frames and a Method."""
    device = lm.adapter.device
    out = []
    if chosen.query_aware:
        answers, peaks = [], []
        for q in questions:
            with PeakMemory(device) as mem:
                answers.append(lm.ask(frames, q["question"], method=chosen, max_new_tokens=2))
            peaks.append(mem.peak)
    else:
        with PeakMemory(device) as mem:
            session = lm.session(frames, method=chosen)
            answers = [session.ask(q["question"], max_new_tokens=2) for q in questions]
        peaks = [mem.peak] * len(questions)
    for q, a, peak in zip(questions, answers, peaks):
        s = a.stats
        letter = parse_letter(a.text)
        out.append(dict(kind=q["kind"], answer=letter, reply=a.text, truth=q["answer"], correct=letter == q["answer"],
                        retention=s.retention, visual_tokens=s.visual_tokens, kept_tokens=s.kept_tokens,
                        llm_tokens=s.llm_tokens, kv_bytes=s.kv_bytes, peak_bytes=int(peak),
                        ttft=s.ttft, seconds=s.seconds))
    return out


# ----- summary ------------------------------------------------------------------------------------------------------
def summarize(folder: str | Path) -> str:
    """Write ``table.md`` and ``accuracy_vs_retention.png`` from ``samples.jsonl``; returns the markdown."""
    folder = Path(folder)
    rows = [json.loads(line) for line in open(folder / "samples.jsonl")]
    config = json.loads((folder / "config.json").read_text())
    groups = defaultdict(list)
    for r in rows:
        groups[(r["length"], r["method"], r["keep"])].append(r)
    summary = []
    ordinal, seen = [], defaultdict(int)  # a question is its (length, video, place in the video's unit)
    for r in rows:
        unit = (r["length"], r["video"], r["method"], r["keep"])
        ordinal.append((r["length"], r["video"], seen[unit]))
        seen[unit] += 1
    key = {id(r): k for r, k in zip(rows, ordinal)}
    reference = {key[id(r)]: r["correct"] for r in rows if r["method"] == "full"}
    for (length, method, keep), rs in groups.items():
        correct = [r["correct"] for r in rs]
        paired = [r for r in rs if key[id(r)] in reference]
        delta = paired_delta([r["correct"] for r in paired], [reference[key[id(r)]] for r in paired],
                             [r["video"] for r in paired]) if method != "full" and paired else None
        by_kind = {k: [r["correct"] for r in rs if r["kind"] == k] for k in KINDS_V2}
        summary.append(dict(
            length=length, method=method, keep=keep, n=len(rs), videos=len({r["video"] for r in rs}),
            accuracy=float(np.mean(correct)), se=clustered_se(correct, [r["video"] for r in rs]),
            delta=None if delta is None else dict(mean=delta.mean, low=delta.low, high=delta.high, n=delta.n),
            kinds={k: float(np.mean(v)) for k, v in by_kind.items() if v},
            retention=float(np.mean([r["retention"] for r in rs])),
            llm_tokens=float(np.mean([r["llm_tokens"] for r in rs])),
            ttft_ms=1000 * float(np.median([r["ttft"] for r in rs])),
            peak_mib=float(np.median([r["peak_bytes"] for r in rs])) / 2**20,
            kv_kib=float(np.mean([r["kv_bytes"] for r in rs])) / 1024,
            unparsed=sum(r["answer"] is None for r in rs)))
    s = config["settings"]
    kinds = [k for k in KINDS_V2 if any(k in r["kinds"] for r in summary)]
    lines = [
        f"# Synthetic suite{' v' + str(s['suite']) if s.get('suite', 1) != 1 else ''}: {Path(config['model']).name}, seed {s['seed']}, {s['n']} questions per kind per length, "
        f"{s['fps']:g} fps{' (background-only videos)' if s['blank'] else ''}",
        "",
        f"Command: `{config['command']}`  ",
        f"Device: {config['device']} ({config['machine']}, {config['cpus']} CPUs), torch {config['torch']}, "
        f"{config['started']}.",
        "",
        "Accuracy in %, +- its standard error clustered by video; chance is 25 %. Delta: the paired difference from "
        "`full` on the same questions, points, with its 95% interval (clustered by video). Retention: visual tokens (or, for KV "
        "presses, visual KV entries per layer and head) the answer attends to, over the sampled frames' tokens. TTFT: "
        "vision + reduction + prefill of video and question (median; video decoding excluded; a session's encode "
        "counts for each of its questions). Peak: extra memory during the video's encode and answers (median; CPU: "
        "resident set sampled every ms, coarse for a tiny model).",
        "",
        "| length s | method | keep | n | accuracy % | delta vs full | retention | LLM tokens | TTFT ms | peak MiB | "
        "KV KiB |" + "".join(f" {k} % |" for k in kinds),
        "|---:|---|---:|---:|---:|---|---:|---:|---:|---:|---:|" + "---:|" * len(kinds),
    ]
    for r in summary:
        keep = "-" if r["keep"] is None else f"{r['keep']:g}"
        delta = "-" if r["delta"] is None else (f"{100 * r['delta']['mean']:+.1f} [{100 * r['delta']['low']:+.1f}, "
                                                f"{100 * r['delta']['high']:+.1f}]")
        lines.append(
            f"| {r['length']:g} | {r['method']} | {keep} | {r['n']} | {100 * r['accuracy']:.1f} +- {100 * r['se']:.1f} "
            f"| {delta} | {r['retention']:.3f} | {r['llm_tokens']:.0f} | {r['ttft_ms']:.1f} | {r['peak_mib']:.1f} "
            f"| {r['kv_kib']:.0f} |" + "".join(f" {100 * r['kinds'][k]:.0f} |" if k in r["kinds"] else " - |"
                                               for k in kinds))
    unparsed = sum(r["unparsed"] for r in summary)
    if unparsed:
        lines += ["", f"{unparsed} replies did not start with a letter A-D; they count as wrong."]
    text = "\n".join(lines) + "\n"
    (folder / "table.md").write_text(text)
    (folder / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    _plot(summary, folder / "accuracy_vs_retention.png", config)
    return text


def _plot(summary: list[dict], path: Path, config: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = sorted({r["length"] for r in summary})
    fig, axes = plt.subplots(1, len(lengths), figsize=(4.5 * len(lengths) + 1.6, 4), squeeze=False, sharey=True)
    for ax, length in zip(axes[0], lengths):
        rows = [r for r in summary if r["length"] == length]
        for method in dict.fromkeys(r["method"] for r in rows):
            pts = sorted((r["retention"], 100 * r["accuracy"], 100 * r["se"]) for r in rows if r["method"] == method)
            x, y, e = zip(*pts)
            style = dict(marker="*", markersize=12, linestyle="none") if method == "full" else dict(marker="o")
            ax.errorbar(x, y, yerr=e, label=method, capsize=3, **style)
        ax.axhline(25, color="grey", linestyle=":", linewidth=1, label="chance")
        ax.set_xscale("log")
        ax.set_xlabel("realised retention (log)")
        ax.set_title(f"{length:g} s videos")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy % (+- clustered SE)")
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(f"{Path(config['model']).name} on the synthetic suite (seed {config['settings']['seed']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
