"""Tests for `longvid.synth`: seed splits, spec invariants, balanced and correct questions, deterministic
rendering, blank videos, and written H.264 suites that decode to frames agreeing with the questions.

    pytest tests/test_synth.py -q
"""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest

from longvid.synth import (
    COLORS,
    EVAL_SEEDS,
    KINDS,
    LETTERS,
    MIN_EVENT_SECONDS,
    QUADRANTS,
    QUARTERS,
    SHAPES,
    TRAIN_SEEDS,
    check_seed,
    eval_seed,
    make_questions,
    make_video_spec,
    render_frames,
    saturation,
    split_of,
    train_seed,
    write_suite,
)
from longvid.synth.render import _scene
from longvid.video import read_video

SATURATED = 80  # saturation (max - min channel) above which a pixel counts as event-coloured
CHI2_P1E4 = {3: 21.11, 15: 42.58}  # by degrees of freedom; a fair generator fails a check with probability 1e-4


def chi_square(counts) -> float:
    """Pearson chi-square of ``counts`` (k,) against the uniform distribution."""
    counts = np.asarray(counts, dtype=np.float64)
    expected = counts.sum() / len(counts)
    return float(((counts - expected) ** 2 / expected).sum())


@pytest.fixture(scope="module")
def sample():
    """(specs, questions) for train seeds 0..399: ~2,200 questions, specs only (no pixels)."""
    specs = [make_video_spec(train_seed(i), seconds=120.0) for i in range(400)]
    return specs, [q for spec in specs for q in make_questions(spec)]


# -- seeds ----------------------------------------------------------------------------------------------------


def test_seed_splits_are_disjoint_and_checked():
    assert TRAIN_SEEDS.stop <= EVAL_SEEDS.start and len(TRAIN_SEEDS) == len(EVAL_SEEDS) == 1_000_000_000
    edges = [TRAIN_SEEDS.start, TRAIN_SEEDS.stop - 1, EVAL_SEEDS.start, EVAL_SEEDS.stop - 1]
    assert [s in TRAIN_SEEDS for s in edges] == [True, True, False, False]
    assert [s in EVAL_SEEDS for s in edges] == [False, False, True, True]
    assert train_seed(0) == 0 and eval_seed(0) == 1_000_000_000 and eval_seed(7) == 1_000_000_007
    assert split_of(train_seed(123)) == "train" and split_of(eval_seed(123)) == "eval"
    assert check_seed(eval_seed(5), "eval") == eval_seed(5)
    with pytest.raises(ValueError, match="train seed.*eval_seed"):
        check_seed(train_seed(5), "eval")
    with pytest.raises(ValueError, match="eval seed.*train_seed"):
        check_seed(eval_seed(5), "train")
    with pytest.raises(ValueError, match="no split"):
        split_of(-1)
    with pytest.raises(ValueError, match="out of range"):
        train_seed(len(TRAIN_SEEDS))
    with pytest.raises(ValueError, match="split="):
        check_seed(0, "test")


def test_write_suite_refuses_seeds_of_the_other_split(tmp_path):
    with pytest.raises(ValueError, match="train seed"):
        write_suite(tmp_path / "e", split="eval", n_videos=1, seconds=30, seed=train_seed(0))
    with pytest.raises(ValueError, match="eval seed"):
        write_suite(tmp_path / "t", split="train", n_videos=1, seconds=30, seed=eval_seed(0))
    with pytest.raises(ValueError, match="eval seed"):  # the last seed crosses into the eval range
        write_suite(tmp_path / "x", split="train", n_videos=2, seconds=30, seed=TRAIN_SEEDS.stop - 1)
    assert not list(tmp_path.iterdir())  # nothing written


def test_write_suite_never_overwrites(tmp_path):
    (tmp_path / "suite").mkdir()
    with pytest.raises(FileExistsError, match="never overwrites"):
        write_suite(tmp_path / "suite", split="eval", n_videos=1, seconds=30, seed=eval_seed(0))


# -- specs ----------------------------------------------------------------------------------------------------


def test_spec_invariants(sample):
    specs, _ = sample
    counts = Counter(len(spec.events) for spec in specs)
    assert set(counts) == {1, 2, 3, 4}
    for spec in specs + [make_video_spec(eval_seed(i), seconds=30.0, width=320, height=180) for i in range(100)]:
        quarter_s = spec.seconds / 4
        margin = max(0.5, 0.05 * quarter_s)
        quarters = [spec.quarter(e) for e in spec.events]
        assert len(set(quarters)) == len(quarters) == len({e.color for e in spec.events}) == len(
            {e.shape for e in spec.events})
        assert [e.start for e in spec.events] == sorted(e.start for e in spec.events)
        for event, q in zip(spec.events, quarters):
            assert event.end - event.start >= MIN_EVENT_SECONDS
            assert q * quarter_s + margin <= event.start < event.end <= (q + 1) * quarter_s - margin
            r = event.size * min(spec.width, spec.height) / 2
            col, row = QUADRANTS.index(event.quadrant) % 2, QUADRANTS.index(event.quadrant) // 2
            cx, cy = event.x * spec.width, event.y * spec.height
            assert col * spec.width / 2 < cx - r and cx + r < (col + 1) * spec.width / 2
            assert row * spec.height / 2 < cy - r and cy + r < (row + 1) * spec.height / 2


def test_spec_errors():
    with pytest.raises(ValueError, match="seconds=5"):
        make_video_spec(0, seconds=5)
    with pytest.raises(ValueError, match="width=223"):
        make_video_spec(0, width=223)
    with pytest.raises(ValueError, match="event_seconds"):
        make_video_spec(0, seconds=30, event_seconds=(7.0, 8.0))
    with pytest.raises(ValueError, match="times must lie"):
        render_frames(make_video_spec(0, seconds=30), [31.0])
    with pytest.raises(ValueError, match="kinds="):
        make_questions(make_video_spec(0), kinds=("colour",))


# -- questions ------------------------------------------------------------------------------------------------


def test_answer_letters_and_positions_are_balanced(sample):
    """Chi-square at p = 1e-4 (a fair generator fails with probability 1e-4 per check; seeds are fixed, so the
    outcome is deterministic): answer letters overall and per kind, and for every fixed option pool, which value
    sits at which position."""
    _, questions = sample
    assert len(questions) >= 2000
    assert chi_square([Counter(q.answer for q in questions)[x] for x in LETTERS]) < CHI2_P1E4[3]
    for kind in KINDS:
        letters = Counter(q.answer for q in questions if q.kind == kind)
        assert chi_square([letters[x] for x in LETTERS]) < CHI2_P1E4[3], (kind, letters)
    pools = {"color": list(COLORS), "shape": SHAPES, "where": QUADRANTS, "count": ("1", "2", "3", "4"),
             "when": tuple(f"{q} quarter" for q in QUARTERS)}
    for kind, pool in pools.items():
        table = Counter((q.options.index(v), v) for q in questions if q.kind == kind for v in pool)
        # a 4x4 table of (position, value) with fixed margins: 9 degrees of freedom; use the 15-dof bound (looser)
        assert chi_square([table[p, v] for p in range(4) for v in pool]) < CHI2_P1E4[15], (kind, table)


def test_answer_values_are_uniform(sample):
    """The text alone gives no prior: each answer value is equally likely within a kind."""
    _, questions = sample
    for kind in ("color", "shape", "where", "when", "count"):
        values = Counter(q.answer_text for q in questions if q.kind == kind)
        assert len(values) == 4 and chi_square(list(values.values())) < CHI2_P1E4[3], (kind, values)


def test_questions_are_correct_and_unambiguous(sample):
    specs, _ = sample
    for spec in specs[:100]:
        questions = {q.kind: q for q in make_questions(spec)}
        assert set(questions) == set(KINDS) - ({"order"} if len(spec.events) == 1 else set())
        for q in questions.values():
            assert len(set(q.options)) == 4 and q.answer in LETTERS and q.video_id == spec.video_id
            assert q.text.endswith("\nD. " + q.options[3] + "\nAnswer with the letter.")
            named = [e for e in spec.events if e.name in q.question or f"the {e.shape}?" in q.question
                     or f"was {e.color}?" in q.question]
            if q.kind in ("count", "order"):
                assert not named
                continue
            assert len(named) == 1, q.question  # names exactly one event
            event = named[0]
            truth = {"color": event.color, "shape": event.shape, "where": event.quadrant,
                     "when": f"{QUARTERS[spec.quarter(event)]} quarter"}[q.kind]
            assert q.answer_text == truth
        assert questions["count"].answer_text == str(len(spec.events))
        if "order" in questions:
            assert questions["order"].answer_text == spec.events[0].name
            assert {e.name for e in spec.events} <= set(questions["order"].options)


# -- rendering ------------------------------------------------------------------------------------------------


def test_same_seed_same_frames_and_questions():
    times = np.linspace(0, 30, 61)
    first = make_video_spec(train_seed(3), seconds=30)
    frames = render_frames(first, times)
    _scene.cache_clear()  # rebuild the texture and masks from scratch
    second = make_video_spec(train_seed(3), seconds=30)
    assert second == first and make_questions(second) == make_questions(first)
    np.testing.assert_array_equal(render_frames(second, times), frames)
    assert frames.dtype == np.uint8 and frames.shape == (61, 224, 224, 3)
    assert not np.array_equal(render_frames(make_video_spec(train_seed(4), seconds=30), times), frames)
    assert make_questions(make_video_spec(train_seed(4), seconds=30)) != make_questions(first)


def test_background_moves_and_stays_grey():
    spec = make_video_spec(train_seed(1), seconds=60)
    frames = render_frames(spec, np.arange(0, 60, 1.0), blank=True)
    assert saturation(frames).max() < 25  # never mistaken for an event colour
    assert np.abs(np.diff(frames.astype(np.int16), axis=0)).mean() > 5  # drift and distractors change every frame


def event_pixels(frame: np.ndarray) -> tuple[str | None, str | None, int]:
    """(quadrant, nearest event colour, pixel count) of a frame's saturated pixels; (None, None, 0) if none."""
    mask = saturation(frame) > SATURATED
    if mask.sum() < 20:
        return None, None, int(mask.sum())
    rows, cols = np.nonzero(mask)
    height, width = mask.shape
    quadrant = QUADRANTS[2 * int(rows.mean() >= height / 2) + int(cols.mean() >= width / 2)]
    mean = frame[mask].mean(axis=0)
    color = min(COLORS, key=lambda c: np.abs(mean - COLORS[c]).sum())
    return quadrant, color, int(mask.sum())


def test_events_show_where_and_when_the_spec_says():
    spec = make_video_spec(eval_seed(2), seconds=60)
    times = np.arange(0, 60, 0.5)
    frames, blank = render_frames(spec, times), render_frames(spec, times, blank=True)
    for t, frame, empty in zip(times, frames, blank):
        shown = [e for e in spec.events if e.start <= t < e.end]
        if not shown:
            np.testing.assert_array_equal(frame, empty)  # blank differs only during events
            assert event_pixels(frame)[2] < 20
            continue
        assert event_pixels(frame)[:2] == (shown[0].quadrant, shown[0].color)
        assert event_pixels(empty)[2] < 20


# -- written suites -------------------------------------------------------------------------------------------


def test_written_suite_decodes_and_agrees_with_questions(tmp_path):
    out = write_suite(tmp_path / "eval", split="eval", n_videos=2, seconds=30, seed=eval_seed(10), fps=4)
    rows = [json.loads(line) for line in open(f"{out}/questions.jsonl")]
    suite = json.load(open(f"{out}/suite.json"))
    assert suite["config"]["split"] == "eval" and len(suite["videos"]) == 2
    assert {"video", "kind", "length", "question", "options", "answer", "seed"} <= set(rows[0])
    for seed in (eval_seed(10), eval_seed(11)):
        spec = make_video_spec(seed, seconds=30)
        mine = [r for r in rows if r["seed"] == seed]
        assert [(r["kind"], r["question"], r["answer"]) for r in mine] == [
            (q.kind, q.text, q.answer) for q in make_questions(spec)]
        video = read_video(f"{out}/{mine[0]['video']}", fps=1)
        assert video.info.width == 224 and math.isclose(video.info.duration, 30, abs_tol=0.3)
        reference = render_frames(spec, video.timestamps)
        assert np.abs(reference.astype(np.int16) - video.frames).mean() < 4  # H.264 at crf 18 keeps the pixels
        seen = set()
        for t, frame in zip(video.timestamps, video.frames):
            shown = [e for e in spec.events if e.start <= t < e.end]
            quadrant, color, count = event_pixels(frame)
            if shown:
                assert (quadrant, color) == (shown[0].quadrant, shown[0].color), (t, shown[0])
                seen.add(shown[0])
            else:
                assert count < 20, t
        assert seen == set(spec.events)  # >= 2 s events are caught by 1 fps sampling


def test_blank_suite_has_the_same_questions_and_no_events(tmp_path):
    real = write_suite(tmp_path / "real", split="train", n_videos=1, seconds=30, seed=train_seed(7), fps=2)
    blank = write_suite(tmp_path / "blank", split="train", n_videos=1, seconds=30, seed=train_seed(7), fps=2,
                        blank=True)
    assert open(f"{real}/questions.jsonl").read() == open(f"{blank}/questions.jsonl").read()
    frames = read_video(f"{blank}/synth_{train_seed(7):010d}.mp4", fps=2).frames
    assert len(frames) == 60 and saturation(frames).max() < 40
