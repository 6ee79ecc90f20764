"""Multiple-choice questions about a `VideoSpec`: six kinds, four options, answers balanced over A-D.

Balance: for every question the correct option goes to a position drawn uniformly from 0-3, and the three
distractors are drawn uniformly, without replacement and in random order, from the other values. So each letter
is the answer with probability 1/4, and every value is equally likely at every position. Answer values are
uniform too (colours, shapes, quadrants, quarters and counts are all drawn uniformly by `make_video_spec`), so
the text alone carries no prior beyond chance.

Unambiguity: events have distinct colours and shapes, so "the circle", "the red shape" and "the red circle" each
name one event; each event lies inside one quarter with a margin (`make_video_spec`). Grey distractor blobs are
always present, so questions ask about *coloured* shapes. ``order`` needs two or more events and is skipped for
a single-event video.

Suite v2 (`VideoSpec.version` = 2) adds the kind ``after`` ("What appeared right after the red square?": the next
event in time; needs two events, asks about one of the non-last ones, options are the other events' names topped up
with absent ones), "where" over the 9 `REGIONS`, and names the event colours in ``count`` and ``order`` (v2's
magenta and cyan movers are coloured shapes too, and never count). Each kind draws from its own stream per version.

Example::

    python -c "from longvid.synth import make_video_spec, make_questions; \
print(make_questions(make_video_spec(0))[0].text)"
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .seeds import rng
from .spec import COLORS, QUADRANTS, QUARTERS, REGIONS, SHAPES, Event, VideoSpec

__all__ = ["KINDS", "KINDS_V2", "LETTERS", "PROMPT_TEMPLATE", "STEMS", "STEMS_V2", "VALUES", "VALUES_V2", "Question",
           "format_question", "make_questions", "kinds_of"]

KINDS = ("color", "shape", "where", "when", "count", "order")
KINDS_V2 = KINDS + ("after",)
LETTERS = ("A", "B", "C", "D")

PROMPT_TEMPLATE = "{question}\nA. {a}\nB. {b}\nC. {c}\nD. {d}\nAnswer with the letter."
"""The one text format shown to the model; the expected reply is the answer letter."""

STEMS = {
    "color": "What colour was the {shape}?",
    "shape": "Which shape was {color}?",
    "where": "In which part of the frame did the {name} appear?",
    "when": "In which quarter of the video did the {name} appear?",
    "count": "How many coloured shapes appeared?",
    "order": "Which coloured shape appeared first?",
}
"""Each kind's question; ``{shape}``, ``{color}`` and ``{name}`` ("red circle") are the event asked about."""

VALUES = {
    "color": tuple(COLORS),
    "shape": tuple(SHAPES),
    "where": tuple(QUADRANTS),
    "when": tuple(f"{q} quarter" for q in QUARTERS),
    "count": ("1", "2", "3", "4"),
    "order": tuple(f"{c} {s}" for c in COLORS for s in SHAPES),
}
"""Every value an option of each kind can hold (``order``: the events' names)."""

STEMS_V2 = STEMS | {
    "count": "How many red, green, blue or yellow shapes appeared?",
    "order": "Which of the red, green, blue or yellow shapes appeared first?",
    "after": "What appeared right after the {name}?",
}
VALUES_V2 = VALUES | {"where": tuple(REGIONS), "after": VALUES["order"]}


def kinds_of(version: int) -> tuple[str, ...]:
    """The question kinds of a suite version."""
    return KINDS if version == 1 else KINDS_V2


@dataclass(frozen=True)
class Question:
    """One multiple-choice question about one video.

    Attributes
    ----------
    kind : str
        One of `KINDS`.
    question : str
        The bare question, e.g. ``"What colour was the circle?"``.
    options : tuple of str
        (4,), shown as A-D.
    answer : str
        ``"A"`` to ``"D"``.
    video_id : str
        `VideoSpec.video_id` of the video asked about.
    """

    kind: str
    question: str
    options: tuple[str, str, str, str]
    answer: str
    video_id: str

    @property
    def text(self) -> str:
        """The full prompt: question, options A-D, and the instruction (`PROMPT_TEMPLATE`)."""
        return format_question(self.question, self.options)

    @property
    def answer_index(self) -> int:
        return LETTERS.index(self.answer)

    @property
    def answer_text(self) -> str:
        return self.options[self.answer_index]

    def to_dict(self) -> dict:
        return asdict(self) | {"text": self.text}


def format_question(question: str, options) -> str:
    """Fill `PROMPT_TEMPLATE` with a question and its 4 options."""
    if len(options) != 4:
        raise ValueError(f"options must hold 4 strings (A-D), got {len(options)}: {options!r}.")
    return PROMPT_TEMPLATE.format(question=question, **dict(zip("abcd", options)))


def _options(gen: np.random.Generator, answer: str, pool) -> tuple[tuple[str, ...], str]:
    """Put ``answer`` at a uniform position and 3 uniform distractors from ``pool`` (without it) elsewhere."""
    others = [value for value in pool if value != answer]
    distractors = [others[i] for i in gen.choice(len(others), size=3, replace=False)]
    position = int(gen.integers(4))
    distractors.insert(position, answer)
    return tuple(distractors), LETTERS[position]


def _order_pool(gen: np.random.Generator, events: tuple[Event, ...]) -> list[str]:
    """The other events' names, topped up to 3 with names of colour-shape pairs that did not appear."""
    names = [event.name for event in events[1:]]
    seen = {event.name for event in events}
    absent = [name for name in VALUES["order"] if name not in seen]
    extra = gen.choice(len(absent), size=3 - len(names), replace=False)
    return names + [absent[i] for i in extra]


def _ask(kind: str, spec: VideoSpec, gen: np.random.Generator) -> tuple[str, str, list[str]] | None:
    """``(question, correct value, values to draw distractors from)``, or None if ``kind`` does not apply."""
    events = spec.events
    stems, values = (STEMS, VALUES) if spec.version == 1 else (STEMS_V2, VALUES_V2)
    if kind not in stems:
        raise ValueError(f"kind={kind!r} is not supported in suite v{spec.version}. Pass kinds from "
                         f"{kinds_of(spec.version)}.")
    if kind == "after":
        if len(events) < 2:
            return None
        i = int(gen.integers(len(events) - 1))  # any event but the last
        question = stems[kind].format(name=events[i].name)
        nxt = events[i + 1].name
        others = [e.name for e in events if e.name not in (events[i].name, nxt)]
        absent = [name for name in values["after"] if name not in {e.name for e in events}]
        extra = gen.choice(len(absent), size=3 - len(others), replace=False)
        return question, nxt, [nxt] + others + [absent[j] for j in extra]
    event = events[int(gen.integers(len(events)))]  # the event asked about, for the first four kinds
    question = stems[kind].format(shape=event.shape, color=event.color, name=event.name)
    if kind == "when":
        return question, VALUES["when"][spec.quarter(event)], VALUES["when"]
    if kind == "count":
        return question, str(len(events)), VALUES["count"]
    if kind == "order":
        if len(events) < 2:
            return None
        return question, events[0].name, _order_pool(gen, events)
    answer = {"color": event.color, "shape": event.shape, "where": event.quadrant}[kind]
    return question, answer, values[kind]


def make_questions(spec: VideoSpec, seed: int | None = None, kinds=None) -> list[Question]:
    """One question per kind in ``kinds`` (``order``, ``after`` only when the video has >= 2 events), deterministic.

    Parameters
    ----------
    spec : VideoSpec
    seed : int, optional
        Seeds the choice of event and the option order; defaults to ``spec.seed``. Each kind draws from its own
        stream, so asking for fewer kinds does not change the others.
    kinds : sequence of str, optional
        Subset of the spec's kinds (`KINDS` in v1, `KINDS_V2` in v2); default all of them. A kind may repeat.

    Returns
    -------
    list of Question
        In the order of ``kinds``.
    """
    allowed = kinds_of(spec.version)
    kinds = allowed if kinds is None else kinds
    unknown = [kind for kind in kinds if kind not in allowed]
    if unknown or isinstance(kinds, str):
        raise ValueError(f"kinds={kinds!r} has unsupported kinds {unknown or kinds!r}. Pass a subset of {allowed} "
                         f"(suite v{spec.version}).")
    seed = spec.seed if seed is None else seed
    questions = []
    for kind in kinds:
        extra = () if spec.version == 1 else (spec.version,)
        gen = rng(seed, "question", allowed.index(kind), *extra)
        asked = _ask(kind, spec, gen)
        if asked is None:
            continue
        question, value, pool = asked
        options, answer = _options(gen, value, pool)
        questions.append(Question(kind, question, options, answer, spec.video_id))
    return questions
