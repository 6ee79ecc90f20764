"""Readers for the long-video benchmarks' released file layouts, from a local folder (no downloads).

Each reader takes the folder the user downloaded into and returns a `Benchmark`: one `Question` per multiple-choice
question (the video file, the question without its options, the option texts, the answer letter, categories) and
the benchmark's standard prompt. A file or field that does not match the layout is one line naming the file, the
field and what was expected (`LayoutError`). Where two layouts are common (the authors' release and the copy
lmms-eval reads from the Hugging Face hub) both are read; each reader's docstring says what it looks for.

    bench = read_benchmark("videomme", "/data/Video-MME")
    bench.questions[0].video, bench.prompt(bench.questions[0])

Parquet files need ``pyarrow`` (``pip install 'longvid[eval]'``).
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from longvid.eval.letters import LETTERS, option_text

VIDEO_SUFFIXES = (".mp4", ".MP4", ".mkv", ".webm", ".avi", ".mov")


class LayoutError(ValueError):
    """The files under ``--data`` do not match the benchmark's released layout (one line)."""


@dataclass
class Question:
    qid: str
    video: Path
    question: str  # the question alone; the prompt adds the options
    options: list[str]  # option texts without their letters
    answer: str | None  # the correct letter
    categories: dict[str, str | list[str]] = field(default_factory=dict)
    start: float | None = None  # seconds, when a question is about a clip of the file
    end: float | None = None

    @property
    def letters(self) -> str:
        return LETTERS[:len(self.options)]


@dataclass
class Benchmark:
    name: str
    questions: list[Question]
    prompt: Callable[[Question], str]
    categories: list[str]  # category keys tabulated, in order
    files: list[str]  # what was read, for the record
    note: str = ""  # what was left out (questions without answers, missing videos)
    macro_average: str | None = None  # a category whose per-class mean the benchmark reports (MLVU's M-Avg)


# ----- helpers --------------------------------------------------------------------------------------------------------
def _find(root: Path, patterns: list[str], what: str) -> Path:
    for pattern in patterns:
        found = sorted(root.glob(pattern))
        if found:
            return found[0]
    raise LayoutError(f"no {what} under {root}: looked for {', '.join(patterns)}; pass the folder the benchmark was "
                      "downloaded into as --data")


def _rows(path: Path) -> list[dict]:
    """Rows of a parquet, JSON (a list, or an object of lists), JSONL or CSV file."""
    try:
        if path.suffix == ".parquet":
            try:
                import pyarrow.parquet as pq
            except ImportError:
                raise LayoutError(f"{path} is a parquet file: reading it needs pyarrow (pip install "
                                  "'longvid[eval]')") from None
            return pq.read_table(path).to_pylist()
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if path.suffix == ".csv":
            with open(path, newline="") as f:
                return list(csv.DictReader(f))
        data = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as err:
        if isinstance(err, LayoutError):
            raise
        raise LayoutError(f"{path} cannot be read: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
                          ) from None
    if isinstance(data, dict):
        data = next((v for v in data.values() if isinstance(v, list)), None) if not all(
            isinstance(v, dict) for v in data.values()) else [dict(v, _key=k) for k, v in data.items()]
    if not isinstance(data, list):
        raise LayoutError(f"{path} holds no list of questions")
    return data


def _need(row: dict, keys: tuple[str, ...], path: Path, index: int) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise LayoutError(f"{path}: row {index} has no {', '.join(repr(k) for k in missing)} field (has "
                          f"{', '.join(sorted(map(str, row))[:12])}); is this the benchmark's released file?")


def _video(dirs: list[Path], name: str) -> Path:
    """The first existing file ``dir/name`` (trying the usual suffixes when ``name`` has none), else the first
    candidate (reported as missing later)."""
    stem_has_suffix = Path(name).suffix in VIDEO_SUFFIXES
    candidates = [d / name for d in dirs] if stem_has_suffix else [d / f"{name}{s}" for d in dirs for s in
                                                                   VIDEO_SUFFIXES]
    return next((c for c in candidates if c.is_file()), candidates[0])


def _letter(value, n_options: int, path: Path, index: int, options: list[str] | None = None) -> str:
    """An answer given as a letter, an index (int or digit string) or the option's text, as a letter."""
    letters = LETTERS[:n_options]
    if isinstance(value, str) and value.strip().upper() in letters and len(value.strip()) == 1:
        return value.strip().upper()
    if isinstance(value, (int, float)) or (isinstance(value, str) and value.strip().isdigit()):
        i = int(value)
        if 0 <= i < n_options:
            return letters[i]
    if options is not None and isinstance(value, str):
        texts = [option_text(o).strip() for o in options]
        if value.strip() in texts:
            return letters[texts.index(value.strip())]
    raise LayoutError(f"{path}: row {index} has answer {value!r}, which is not a letter, an index or the text of "
                      f"one of its {n_options} options")


def _choices(options: list[str]) -> str:
    return "\n".join(f"{letter}. {text}" for letter, text in zip(LETTERS, options))


def _split_embedded(question: str) -> tuple[str, list[str]]:
    """``"How many?\\n(A) 1\\n(B) 2"`` -> ``("How many?", ["1", "2"])`` (options written into the question)."""
    lines = question.split("\n")
    options, stem = [], []
    for line in lines:
        m = re.match(r"^\s*\(?([A-J])[).]\s*(.*)$", line)
        if m and m.group(1) == LETTERS[len(options)]:
            options.append(m.group(2).strip())
        elif not options:
            stem.append(line)
    return "\n".join(stem).strip(), options


# ----- Video-MME ------------------------------------------------------------------------------------------------------
VIDEOMME_PROMPT = ("Select the best answer to the following multiple-choice question based on the video. Respond "
                   "with only the letter (A, B, C, or D) of the correct option.\n{question}\n{options}\nThe best "
                   "answer is:")


def read_videomme(data: Path) -> Benchmark:
    """Video-MME (https://video-mme.github.io): ``videomme/test-00000-of-00001.parquet`` (or any ``*.parquet`` under
    ``--data``) with ``videoID, question_id, question, options`` (4 strings "A. ...") and ``answer`` (a letter),
    ``duration`` (short/medium/long), ``domain``, ``sub_category``, ``task_type``; videos at ``data/{videoID}.mp4``
    (also ``.MP4``, ``.mkv``; ``data/`` beside the parquet or under ``--data``). Prompt: the authors' (their
    repository's evaluation prompt, without subtitles), ending "The best answer is:". Categories: duration, then
    task type."""
    path = _find(data, ["videomme/test-*.parquet", "test-*.parquet", "**/test-*.parquet", "*.parquet"],
                 "Video-MME question file (videomme/test-00000-of-00001.parquet)")
    dirs = [path.parent / "data", data / "data", data / "videomme" / "data", data]
    questions = []
    for i, row in enumerate(_rows(path)):
        _need(row, ("videoID", "question_id", "question", "options", "answer", "duration"), path, i)
        options = [option_text(o) for o in row["options"]]
        questions.append(Question(
            str(row["question_id"]), _video(dirs, row["videoID"]), row["question"].strip(), options,
            _letter(row["answer"], len(options), path, i),
            {"duration": row["duration"], "task_type": row.get("task_type") or "-"}))
    return Benchmark("videomme", questions,
                     lambda q: VIDEOMME_PROMPT.format(question=q.question, options=_choices(q.options)),
                     ["duration", "task_type"], [str(path)])


# ----- MLVU -----------------------------------------------------------------------------------------------------------
MLVU_PROMPT = "{question}\n{options}\nOnly give the best option.\nBest option: ("

MLVU_TASKS = {"1_plotQA": "plotQA", "2_needle": "needle", "3_ego": "ego", "4_count": "count", "5_order": "order",
              "6_anomaly_reco": "anomaly_reco", "7_topic_reasoning": "topic_reasoning"}


def read_mlvu(data: Path) -> Benchmark:
    """MLVU dev (https://github.com/JUNJIE99/MLVU): the authors' ``json/{1_plotQA,...,7_topic_reasoning}.json``
    (``video, question, candidates, answer`` (the option's text), ``question_type``) with videos at
    ``video/{task folder}/{video}``, or the hub copy lmms-eval reads (``mlvu/test-*.parquet``: ``video_name,
    question, candidates, answer, task_type, question_id``; videos under ``mlvu/`` or ``--data``). The open-ended
    tasks (8_sub_scene, 9_summary) have no options and are left out. Prompt: the authors' ("Only give the best
    option. Best option: ("), options as "(A) text". Categories: task; MLVU reports M-Avg, the mean of the per-task
    accuracies, which the table adds."""
    jsons = sorted((data / "json").glob("*.json")) if (data / "json").is_dir() else []
    questions, files = [], []
    if jsons:
        for path in jsons:
            if path.stem not in MLVU_TASKS:
                continue  # open-ended tasks
            files.append(str(path))
            for i, row in enumerate(_rows(path)):
                _need(row, ("video", "question", "candidates", "answer"), path, i)
                options = [str(c) for c in row["candidates"]]
                questions.append(Question(
                    f"{path.stem}/{i}", _video([data / "video" / path.stem, data / "video"], row["video"]),
                    row["question"].strip(), options, _letter(row["answer"], len(options), path, i, options),
                    {"task": MLVU_TASKS[path.stem]}))
    else:
        path = _find(data, ["mlvu/test-*.parquet", "test-*.parquet", "*.parquet"],
                     "MLVU question files (json/1_plotQA.json ... or mlvu/test-00000-of-00001.parquet)")
        files.append(str(path))
        dirs = [path.parent, data / "mlvu", data / "video", data]
        for i, row in enumerate(_rows(path)):
            _need(row, ("video_name", "question", "candidates", "answer"), path, i)
            options = [str(c) for c in row["candidates"]]
            if not options:
                continue
            stem, _ = _split_embedded(row["question"])
            questions.append(Question(
                str(row.get("question_id", i)), _video(dirs, row["video_name"]), stem, options,
                _letter(row["answer"], len(options), path, i, options), {"task": row.get("task_type") or "-"}))
    return Benchmark("mlvu", questions, lambda q: MLVU_PROMPT.format(
        question=q.question, options="\n".join(f"({letter}) {t}" for letter, t in zip(LETTERS, q.options))),
                     ["task"], files, macro_average="task")


# ----- LongVideoBench -------------------------------------------------------------------------------------------------
LVB_PROMPT = "{question}\n{options}\nAnswer with the option's letter from the given choices directly."


def read_longvideobench(data: Path) -> Benchmark:
    """LongVideoBench (https://longvideobench.github.io) validation: ``lvb_val.json`` (``id, video_path, question,
    candidates, correct_choice`` (0-based), ``duration_group``, ``question_category``) or the hub's
    ``validation-00000-of-00001.parquet`` (``option0``-``option4``, unused ones "N/A"); videos at
    ``videos/{video_path}`` (each file is already the question's clip). Prompt: lmms-eval's
    (``longvideobench_val_v``), the one the leaderboard's reported runs use. Categories: duration group (15, 60, 600,
    3600 s), question category (S2E, T3O, ...)."""
    path = _find(data, ["lvb_val.json", "**/lvb_val.json", "validation-*.parquet", "**/validation-*.parquet"],
                 "LongVideoBench question file (lvb_val.json or validation-00000-of-00001.parquet)")
    dirs = [path.parent / "videos", data / "videos", data]
    questions = []
    for i, row in enumerate(_rows(path)):
        _need(row, ("video_path", "question", "correct_choice"), path, i)
        if "candidates" in row:
            options = [str(c) for c in row["candidates"]]
        else:
            options = [str(row[f"option{k}"]) for k in range(5) if row.get(f"option{k}") not in (None, "N/A")]
        questions.append(Question(
            str(row.get("id", i)), _video(dirs, row["video_path"]), row["question"].strip(), options,
            _letter(int(row["correct_choice"]), len(options), path, i),
            {"duration_group": str(row.get("duration_group", "-")),
             "question_category": row.get("question_category") or "-"}))
    return Benchmark("longvideobench", questions,
                     lambda q: LVB_PROMPT.format(question=q.question, options=_choices(q.options)),
                     ["duration_group", "question_category"], [str(path)])


# ----- EgoSchema ------------------------------------------------------------------------------------------------------
EGOSCHEMA_PROMPT = "{question}\n{options}\nAnswer with the option's letter from the given choices directly."


def read_egoschema(data: Path) -> Benchmark:
    """EgoSchema (https://egoschema.github.io): the authors' ``questions.json`` (``q_uid, question, "option 0"`` ...
    ``"option 4"``) with ``subset_answers.json`` (``{q_uid: index}``, the 500 questions whose answers are public),
    or the hub copy's ``Subset/test-*.parquet`` (``video_idx, question, option`` (5 strings "A. ..."), ``answer``
    "0"-"4"); videos at ``videos/{q_uid}.mp4``. The full set's answers are not public (its server scores them), so
    only questions with an answer are read, and the note says how many were left out. Prompt: lmms-eval's."""
    dirs = [data / "videos", data / "egoschema" / "videos", data]
    questions, files, left = [], [], 0
    if (data / "questions.json").is_file():
        path, answers_path = data / "questions.json", data / "subset_answers.json"
        if not answers_path.is_file():
            raise LayoutError(f"no {answers_path}: EgoSchema's answers are public only for the 500-question subset "
                              "(subset_answers.json, in the authors' release); put it beside questions.json")
        try:
            answers = json.loads(answers_path.read_text())
        except (OSError, ValueError) as err:
            raise LayoutError(f"{answers_path} cannot be read: {err}") from None
        if not isinstance(answers, dict):
            raise LayoutError(f"{answers_path} must map q_uid to the answer's index")
        files += [str(path), str(answers_path)]
        for i, row in enumerate(_rows(path)):
            _need(row, ("q_uid", "question", "option 0"), path, i)
            if row["q_uid"] not in answers:
                left += 1
                continue
            options = [str(row[f"option {k}"]) for k in range(5) if f"option {k}" in row]
            questions.append(Question(row["q_uid"], _video(dirs, row["q_uid"]), row["question"].strip(), options,
                                      _letter(answers[row["q_uid"]], len(options), answers_path, i),
                                      {"set": "subset"}))
    else:
        path = _find(data, ["Subset/test-*.parquet", "**/Subset/test-*.parquet"],
                     "EgoSchema question file (questions.json + subset_answers.json, or Subset/test-*.parquet)")
        files.append(str(path))
        for i, row in enumerate(_rows(path)):
            _need(row, ("video_idx", "question", "option", "answer"), path, i)
            if row["answer"] in (None, ""):
                left += 1
                continue
            options = [option_text(o) for o in row["option"]]
            questions.append(Question(str(row.get("question_idx", row["video_idx"])), _video(dirs, row["video_idx"]),
                                      row["question"].strip(), options,
                                      _letter(row["answer"], len(options), path, i), {"set": "subset"}))
    note = f"{left} questions without a public answer were left out" if left else ""
    return Benchmark("egoschema", questions,
                     lambda q: EGOSCHEMA_PROMPT.format(question=q.question, options=_choices(q.options)),
                     [], files, note)


# ----- NExT-QA --------------------------------------------------------------------------------------------------------
NEXTQA_PROMPT = "{question}\n{options}\nAnswer with the option's letter from the given choices directly."
NEXTQA_GROUPS = {"CW": "causal", "CH": "causal", "TN": "temporal", "TC": "temporal", "TP": "temporal",
                 "DC": "descriptive", "DL": "descriptive", "DO": "descriptive"}


def read_nextqa(data: Path, split: str = "val") -> Benchmark:
    """NExT-QA multiple choice (https://github.com/doc-doc/NExT-QA): ``{split}.csv`` (``video, frame_count, width,
    height, question, answer`` (0-4), ``qid, type, a0``-``a4``; found under ``--data`` or ``dataset/nextqa/``);
    videos at ``NExTVideo/{video}.mp4``, or through ``map_vid_vidorID.json`` (``"2909445186": "0101/2909445186"``)
    at ``NExTVideo/0101/2909445186.mp4``. Question ids are ``{video}_{qid}``. Prompt: the question, its options,
    and lmms-eval's "Answer with the option's letter from the given choices directly." Categories: the authors'
    groups (causal, temporal, descriptive) and the type codes (CW, TN, DC, ...)."""
    path = _find(data, [f"{split}.csv", f"dataset/nextqa/{split}.csv", f"**/{split}.csv"],
                 f"NExT-QA question file ({split}.csv)")
    video_root = next((d for d in (data / "NExTVideo", path.parent / "NExTVideo", data) if d.is_dir()), data)
    map_path = next((p for p in (data / "map_vid_vidorID.json", path.parent / "map_vid_vidorID.json",
                                 video_root / "map_vid_vidorID.json") if p.is_file()), None)
    vid_map = json.loads(map_path.read_text()) if map_path else {}
    questions = []
    for i, row in enumerate(_rows(path)):
        _need(row, ("video", "question", "answer", "qid", "type", "a0", "a4"), path, i)
        video = str(row["video"])
        flat = _video([video_root], video)
        file = flat if flat.is_file() or video not in vid_map else _video([video_root], vid_map[video])
        options = [str(row[f"a{k}"]).strip() for k in range(5)]
        q = row["question"].strip()
        questions.append(Question(
            f"{video}_{row['qid']}", file, q[:1].upper() + q[1:] + ("" if q.endswith("?") else "?"), options,
            _letter(row["answer"], 5, path, i),
            {"group": NEXTQA_GROUPS.get(row["type"], "-"), "type": row["type"]}))
    return Benchmark("nextqa", questions,
                     lambda q: NEXTQA_PROMPT.format(question=q.question, options=_choices(q.options)),
                     ["group", "type"], [str(path)] + ([str(map_path)] if map_path else []))


# ----- LVBench --------------------------------------------------------------------------------------------------------
LVBENCH_PROMPT = "{question}\n{options}\nAnswer the question with the option letter"


def read_lvbench(data: Path) -> Benchmark:
    """LVBench (https://lvbench.github.io): the authors' ``video_info.meta.jsonl`` (one video per line: ``key``,
    ``type``, ``qa``: [{``uid, question, answer, question_type, time_reference``}]) or the hub copy's
    ``data/train-00000-of-00001.parquet`` (one question per row: ``key, uid, question, answer, question_type,
    video_path``). Options are written into the question ("(A) ..." lines) and parsed out; the answer is a letter.
    Videos at ``{key}.mp4`` under ``--data``, ``videos/`` or ``all_videos/`` (or the row's ``video_path``). Prompt:
    lmms-eval's. Categories: the video type (cartoon, documentary, ...) and question types (a question counts in
    each of its types)."""
    dirs = [data, data / "videos", data / "all_videos", data / "lvbench"]
    meta = next(iter(sorted(data.glob("**/video_info.meta.jsonl"))), None)
    rows, files = [], []
    if meta is not None:
        files.append(str(meta))
        for i, video in enumerate(_rows(meta)):
            _need(video, ("key", "qa"), meta, i)
            for qa in video["qa"]:
                rows.append(dict(qa, key=video["key"], type=video.get("type", "-")))
        path = meta
    else:
        path = _find(data, ["data/train-*.parquet", "data/test-*.parquet", "*.parquet"],
                     "LVBench question file (video_info.meta.jsonl or data/train-00000-of-00001.parquet)")
        files.append(str(path))
        rows = _rows(path)
    questions = []
    for i, row in enumerate(rows):
        _need(row, ("key", "uid", "question", "answer"), path, i)
        stem, options = _split_embedded(row["question"])
        if not options and row.get("options"):
            options = [option_text(o) for o in row["options"]]
        if len(options) < 2:
            raise LayoutError(f"{path}: question {row['uid']} has no options ('(A) ...' lines in the question)")
        types = row.get("question_type") or ["-"]
        types = [types] if isinstance(types, str) else list(types)
        file = _video([data / Path(row["video_path"]).parent] + dirs, Path(row["video_path"]).name) \
            if row.get("video_path") else _video(dirs, row["key"])
        questions.append(Question(str(row["uid"]), file, stem, options, _letter(row["answer"], len(options), path, i),
                                  {"video_type": row.get("type") or "-", "question_type": types}))
    return Benchmark("lvbench", questions, lambda q: LVBENCH_PROMPT.format(
        question=q.question, options="\n".join(f"({letter}) {t}" for letter, t in zip(LETTERS, q.options))),
                     ["video_type", "question_type"], files)


READERS = {"videomme": read_videomme, "mlvu": read_mlvu, "longvideobench": read_longvideobench,
           "egoschema": read_egoschema, "nextqa": read_nextqa, "lvbench": read_lvbench}


def read_benchmark(name: str, data: str | Path, *, skip_missing: bool = False) -> Benchmark:
    """The benchmark ``name`` (one of `READERS`) from the folder ``data``; every question's video must exist unless
    ``skip_missing`` (then questions without their video are left out and the note says how many)."""
    if name not in READERS:
        raise ValueError(f"unknown benchmark {name!r}; pass one of {', '.join(READERS)} (or synth)")
    data = Path(data)
    if not data.is_dir():
        raise LayoutError(f"{data} is not a folder: pass the folder the {name} files were downloaded into as --data")
    bench = READERS[name](data)
    if not bench.questions:
        raise LayoutError(f"{', '.join(bench.files)} holds no multiple-choice questions with answers")
    missing = [q for q in bench.questions if not q.video.is_file()]
    if missing and not skip_missing:
        raise LayoutError(f"{len(missing)} of {len(bench.questions)} questions' videos are missing (first: "
                          f"{missing[0].video}); download them, or pass --skip-missing to evaluate the rest")
    if missing:
        bench.questions = [q for q in bench.questions if q.video.is_file()]
        left = f"{len(missing)} questions whose video is missing were left out"
        bench.note = f"{bench.note}; {left}" if bench.note else left
    return bench
