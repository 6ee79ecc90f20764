"""Suite v2 and longvid-tiny 2's recipe: determinism, balance, token labels, and that training sees what inference
sees through the engine's own forward, resumable bit for bit."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

import longvid
from longvid.synth import (
    COLORS,
    KINDS_V2,
    LETTERS,
    REGIONS,
    make_questions,
    make_video_spec,
    render_frames,
    saturation,
    train_seed,
)
from longvid.synth.render import cell_coverage
from longvid.synth.spec import MOVER_COLORS
from longvid.train import tiny as T


def test_v2_specs_and_frames_are_deterministic_and_v1_is_unchanged():
    a, b = make_video_spec(train_seed(5), seconds=300, version=2), make_video_spec(train_seed(5), seconds=300, version=2)
    assert a == b and (a.width, a.height, a.version) == (140, 140, 2) and len(a.movers) == 2
    times = np.arange(0, 300, 7.0)
    assert np.array_equal(render_frames(a, times), render_frames(b, times))
    v1 = make_video_spec(train_seed(5), seconds=300)
    assert (v1.version, v1.movers, v1.width) == (1, (), 224) and v1.events != a.events
    assert all(e.quadrant in REGIONS for e in a.events)
    for m in a.movers:  # visits are disjoint, in order, inside the video
        ends = [t for visit in m.visits for t in visit]
        assert ends == sorted(ends) and 0 <= ends[0] and ends[-1] <= 300 and 2 <= len(m.visits) <= 5


def test_v2_movers_are_drawn_and_blank_keeps_them():
    spec = make_video_spec(train_seed(8), seconds=240, version=2)
    mover = spec.movers[0]
    t = np.array([(mover.visits[0][0] + mover.visits[0][1]) / 2])
    frame = render_frames(spec, t, blank=True)[0].astype(int)
    color = np.array(MOVER_COLORS[mover.color])
    assert (np.abs(frame - color).sum(-1) < 30).sum() > 50  # the diamond is there, without any event
    away = render_frames(spec, np.array([mover.visits[0][1] + 0.01]), blank=True)[0].astype(int)
    assert (np.abs(away - color).sum(-1) < 30).sum() == 0


def test_v2_questions_are_balanced_and_after_asks_the_next_event():
    specs = [make_video_spec(train_seed(i), seconds=120, version=2) for i in range(600)]
    questions = [q for s in specs for q in make_questions(s)]
    assert {q.kind for q in questions} == set(KINDS_V2)
    for kind in KINDS_V2:
        letters = Counter(q.answer for q in questions if q.kind == kind)
        n = sum(letters.values())
        assert all(abs(letters[x] / n - 0.25) < 0.06 for x in LETTERS), (kind, letters)
    regions = Counter(q.answer_text for q in questions if q.kind == "where")
    assert set(regions) == set(REGIONS) and min(regions.values()) > 0.5 * max(regions.values())
    for spec in specs[:100]:
        names = [e.name for e in spec.events]
        for q in make_questions(spec, kinds=["after"]):
            named = q.question.removeprefix("What appeared right after the ").rstrip("?")
            assert q.answer_text == names[names.index(named) + 1] and named not in q.options
            assert len(set(q.options)) == 4
    assert make_questions(make_video_spec(train_seed(5), seconds=60)) == make_questions(
        make_video_spec(train_seed(5), seconds=60), kinds=None)  # v1's default kinds unchanged
    with pytest.raises(ValueError, match="after"):
        make_questions(make_video_spec(train_seed(5), seconds=60), kinds=["after"])  # not a v1 kind


def test_cell_coverage_and_token_labels_find_the_events():
    for i in range(6):
        spec = make_video_spec(train_seed(100 + i), seconds=60, version=2)
        times = np.arange(0, 60, 1.0)
        cover = cell_coverage(spec, times, 5, 5)
        for j, event in enumerate(spec.events):
            shown = (times >= event.start) & (times < event.end)
            np.testing.assert_allclose(cover[shown, j].sum(axis=(1, 2)), 1.0, atol=1e-5)
            assert cover[~shown, j].sum() == 0
            # wholly inside one token cell, and that cell lies in the event's region (side thirds: 2 cells, middle: 1)
            np.testing.assert_allclose(cover[shown, j].max(axis=(1, 2)), 1.0, atol=1e-5)
            r, c = np.unravel_index(cover[shown, j][0].argmax(), (5, 5))
            third = (0, 0, 1, 2, 2)
            assert REGIONS[3 * third[r] + third[c]] == event.quadrant
        steps = (len(times) + 1) // 2
        labels = T.token_labels(spec, times, (steps, 10, 10)).reshape(steps, 5, 5, 2)
        event_colors = set(range(1, 1 + len(COLORS)))
        frames = render_frames(spec, times)
        for event in spec.events:  # a step showing an event has a token labelled with its colour and shape
            step = int(np.flatnonzero((times >= event.start) & (times < event.end))[0]) // 2
            colors = labels[step, ..., 0]
            assert (colors == T.OBJ_COLORS.index(event.color)).any()
        # every token labelled with an event colour shows saturated pixels of that colour in its cell
        for s, r, c in zip(*np.nonzero(np.isin(labels[..., 0].numpy(), list(event_colors)))):
            cell = frames[2 * s : 2 * s + 2, 28 * r : 28 * r + 28, 28 * c : 28 * c + 28]
            assert (saturation(cell) > 100).any()


def test_write_suite_v2_records_its_version(tmp_path):
    from longvid.synth import eval_seed, write_suite

    out = write_suite(tmp_path / "s", split="eval", n_videos=1, seconds=20, seed=eval_seed(0), version=2)
    config = json.loads((tmp_path / "s" / "suite.json").read_text())["config"]
    assert config["version"] == 2 and config["width"] == 140 and "after" in config["kinds"]
    rows = [json.loads(line) for line in open(f"{out}/questions.jsonl")]
    assert {r["kind"] for r in rows} <= set(KINDS_V2)


# ----- the recipe -------------------------------------------------------------------------------------------------
def small_recipe(**kw) -> T.Recipe:
    base = dict(steps=2, videos_per_step=2, start_lengths=(12.0, 20.0), lengths=(12.0, 20.0), ramp=0, n_validation=2,
                validation_lengths=(12.0, 20.0), validate_every=1000, checkpoint_every=1)
    return T.Recipe(**(base | kw))


@pytest.fixture(scope="module")
def untrained2(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny2")
    T.Trainer(out, small_recipe(steps=1), log=lambda _: None).run()
    return out


def test_tokenizer_v2_keeps_lines_whole():
    tok = T.build_tokenizer()
    for i in range(20):
        for q in make_questions(make_video_spec(train_seed(i), seconds=60, version=2)):
            ids = tok(q.text, add_special_tokens=False)["input_ids"]
            assert len(ids) == 2 * len(q.text.split("\n")) - 1 and tok.decode(ids) == q.text


def test_training_logits_equal_the_pipelines(untrained2):
    """video_forward (training) gives, for every question, the logits the pipeline computes for its answer."""
    from longvid.synth.suite import sample_times
    from longvid.video import Frames
    from longvid.video.decode import VideoInfo

    lm = longvid.load(untrained2 / "model")
    adapter = lm.adapter
    spec = make_video_spec(train_seed(11), seconds=30, version=2)
    questions = make_questions(spec)
    example = T.make_example(adapter, spec, questions)
    with torch.no_grad():
        _, _, tails = T.video_forward(adapter.model, adapter, example)
    offsets = np.cumsum([0] + [len(t) for t in example.tails])
    times = sample_times(spec.seconds)
    info = VideoInfo("synth", spec.seconds, 4.0, int(spec.seconds * 4), spec.width, spec.height, "h264", 0.0, None)
    session = lm.session(Frames(render_frames(spec, times), times, (times * 4).astype(np.int64), info), method="full")
    for i, q in enumerate(questions):
        answer = session.ask(q.text, max_new_tokens=1, record_logits=True)
        logits = adapter.lm.logits(tails[offsets[i] + len(example.tails[i]) - 3])
        torch.testing.assert_close(logits, answer.logits[0].float(), atol=1e-4, rtol=1e-4)


def test_training_resumes_bit_for_bit(tmp_path):
    whole = T.Trainer(tmp_path / "a", small_recipe(steps=3), log=lambda _: None)
    whole.run()
    T.Trainer(tmp_path / "b", small_recipe(steps=3), log=lambda _: None).run(stop_after=1)
    resumed = T.Trainer(tmp_path / "b", small_recipe(steps=3), log=lambda _: None)
    assert resumed.step == 1
    resumed.run()
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    card = json.loads((tmp_path / "b" / "model" / "longvid.json").read_text())
    assert card["step"] == 3 and card["losses"]["attention"].startswith("none")
    with pytest.raises(ValueError, match="another recipe"):
        T.Trainer(tmp_path / "b", small_recipe(steps=3, lr=1e-3), log=lambda _: None)
    # a later phase starts from those weights, with its own optimiser and schedule; its card names the source
    staged = T.Trainer(tmp_path / "c", small_recipe(steps=1, init=str(tmp_path / "b"), probe_layer=2),
                       log=lambda _: None)
    assert staged.step == 0 and all(torch.equal(b[k], staged.model.state_dict()[k]) for k in b)
    staged.run()
    card = json.loads((tmp_path / "c" / "model" / "longvid.json").read_text())
    assert card["init_from"]["step"] == 3 and "--init" in card["command"]
    assert T.Trainer(tmp_path / "c", small_recipe(steps=1, init=str(tmp_path / "b"), probe_layer=2),
                     log=lambda _: None).init_from["step"] == 3  # resuming keeps the record
    chained = T.Trainer(tmp_path / "d", small_recipe(steps=1, init=str(tmp_path / "c"), probe_layer=2),
                        log=lambda _: None).init_from  # a third phase records the whole chain back to scratch
    assert (chained["step"], chained["init_from"]["step"], chained["init_from"]["init_from"]) == (1, 3, None)


def test_training_questions_add_draws_after_the_suites_own():
    spec = make_video_spec(train_seed(3), seconds=60, version=2)
    one, three = T.training_questions(spec, KINDS_V2, 1), T.training_questions(spec, KINDS_V2, 3)
    assert one == make_questions(spec) and three[: len(one)] == one and len(three) == 3 * len(one)
    assert len({(q.text, q.options) for q in three}) > len(one)  # other events named, other option orders


def test_train_tiny_cli_refuses_bad_options_in_one_line(tmp_path):
    import subprocess
    import sys

    for args, flag in ((["--lengths", "600,60"], "--lengths"), (["--steps", "0"], "--steps"),
                       (["--kinds", "color,colour"], "--kinds"), (["--init", str(tmp_path / "none")], "--init"),
                       (["--question-rounds", "0"], "--question-rounds"), (["--probe-layer", "6"], "--probe-layer")):
        out = tmp_path / "o"
        run = subprocess.run([sys.executable, "-m", "longvid", "train", "tiny", "--out", str(out), *args],
                             capture_output=True, text=True)
        assert run.returncode == 2 and flag in run.stderr and "Traceback" not in run.stderr, run.stderr
        assert len(run.stderr.strip().splitlines()) == 1 and not out.exists()


def test_a_cached_suite_from_an_earlier_layout_is_rewritten(tmp_path, monkeypatch):
    from longvid.eval.synth import ensure_suite

    monkeypatch.setenv("LONGVID_CACHE_DIR", str(tmp_path))
    path = ensure_suite(12, 1, 0, version=2)
    record = json.loads((path / "suite.json").read_text())
    mtime = (path / "suite.json").stat().st_mtime_ns
    assert ensure_suite(12, 1, 0, version=2) and (path / "suite.json").stat().st_mtime_ns == mtime  # reused
    record["videos"][0]["events"][0]["x"] += 0.1  # as the pre-token-grid layout would have drawn it
    (path / "suite.json").write_text(json.dumps(record))
    ensure_suite(12, 1, 0, version=2)
    fresh = json.loads((path / "suite.json").read_text())["videos"][0]
    assert fresh["events"] == json.loads(json.dumps(make_video_spec(fresh["seed"], seconds=12, version=2).to_dict()))[
        "events"]
