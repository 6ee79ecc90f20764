"""Seeded synthetic long videos with sparse coloured-shape events, and balanced multiple-choice questions.

Frames render in memory for training (`render_frames`) or go to H.264 files with a JSONL of questions for
evaluation through the whole pipeline (`write_suite`). Training and evaluation seeds are disjoint
(`TRAIN_SEEDS`, `EVAL_SEEDS`).

Example::

    python -c "from longvid.synth import *; s = make_video_spec(train_seed(0), seconds=60); \
print(make_questions(s)[0].text); print(render_frames(s, [0.0, 30.0]).shape)"
"""

from .questions import KINDS, KINDS_V2, LETTERS, kinds_of, PROMPT_TEMPLATE, Question, format_question, make_questions
from .render import render_frames, saturation
from .seeds import EVAL_SEEDS, SPLITS, TRAIN_SEEDS, check_seed, eval_seed, split_of, train_seed
from .spec import (
    COLORS,
    MIN_EVENT_SECONDS,
    QUADRANTS,
    QUARTERS,
    REGIONS,
    SECONDS_RANGE,
    VERSIONS,
    SHAPES,
    Distractor,
    Event,
    Mover,
    VideoSpec,
    make_video_spec,
)
from .suite import write_suite, write_video

__all__ = [
    "COLORS", "SHAPES", "QUADRANTS", "REGIONS", "QUARTERS", "KINDS", "KINDS_V2", "VERSIONS", "kinds_of", "Mover", "LETTERS", "PROMPT_TEMPLATE", "MIN_EVENT_SECONDS",
    "SECONDS_RANGE", "TRAIN_SEEDS", "EVAL_SEEDS", "SPLITS",
    "Event", "Distractor", "VideoSpec", "Question",
    "make_video_spec", "make_questions", "format_question", "render_frames", "saturation",
    "write_video", "write_suite", "train_seed", "eval_seed", "check_seed", "split_of",
]
