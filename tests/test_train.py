"""Training longvid-tiny: the tokenizer, the token labels, and that training sees exactly what inference sees."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import longvid
from longvid.synth import KINDS, make_questions, make_video_spec, render_frames, saturation, train_seed
from longvid.train import tiny_v1 as T
from longvid.video import Frames
from longvid.video.decode import VideoInfo


@pytest.fixture(scope="module")
def untrained(untrained_tiny):
    return untrained_tiny, longvid.load(untrained_tiny)


def test_tokenizer_is_deterministic_and_round_trips():
    a, b = T.build_synth_tokenizer(), T.build_synth_tokenizer()
    assert a.get_vocab() == b.get_vocab()
    spec = make_video_spec(train_seed(123), seconds=45)
    for q in make_questions(spec):
        ids = a(q.text, add_special_tokens=False)["input_ids"]
        assert a.decode(ids) == q.text
        assert len(ids) == 2 * len(q.text.split("\n")) - 1  # every line one token, then its newline
    assert a.convert_tokens_to_ids("<|video_pad|>") == 263 and a.eos_token == "<|im_end|>"
    other = "Is the cat on the mat?\nA. yes"
    assert a.decode(a(other)["input_ids"]) == other  # any other text still encodes (bytes)


def test_token_labels_mark_exactly_the_quadrants_with_saturated_pixels():
    """A token is labelled with an event iff a frame of its step shows saturated pixels in its quadrant."""
    for i in range(5):
        spec = make_video_spec(train_seed(i), seconds=40)
        times = T.sample_times(spec.seconds)
        frames = render_frames(spec, times)
        steps = len(times) // 2 + len(times) % 2
        labels = T.token_labels(spec, times, (steps, 4, 4)).reshape(steps, 4, 3)
        sat = saturation(frames) > 100  # events are >= 150, background < 20
        h, w = frames.shape[1] // 2, frames.shape[2] // 2
        for s in range(steps):
            shown = sat[2 * s : 2 * s + 2]
            for q, (r, c) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
                assert bool(shown[:, r * h : (r + 1) * h, c * w : (c + 1) * w].any()) == bool(labels[s, q, 0] > 0)
        assert (labels[..., 0] > 0).sum() > 0
        assert torch.equal(labels[..., 0] > 0, labels[..., 1] > 0)
        assert torch.equal(labels[..., 2], torch.arange(4).expand(steps, 4))


def test_sample_times_match_reading_the_suites_mp4(tmp_path):
    from longvid.synth import write_video
    from longvid.video import read_video

    spec = make_video_spec(train_seed(7), seconds=33)
    path = write_video(spec, tmp_path / "v.mp4", fps=T.FILE_FPS)
    np.testing.assert_allclose(read_video(path, fps=T.SAMPLE_FPS).timestamps, T.sample_times(33), atol=1e-6)


def test_training_logits_equal_the_pipelines(untrained):
    """The packed training forward gives, for every question, the logits the pipeline computes for its answer."""
    _, lm = untrained
    adapter = lm.adapter
    spec = make_video_spec(train_seed(11), seconds=30)
    questions = make_questions(spec)
    example = T.Example(adapter, spec, questions)
    with torch.no_grad():
        logits, targets = T.answer_logits(adapter.model, adapter, [example])
    times = T.sample_times(spec.seconds)
    info = VideoInfo("synth", spec.seconds, 4.0, int(spec.seconds * 4), spec.width, spec.height, "h264", 0.0, None)
    frames = Frames(render_frames(spec, times), times, (times * 4).astype(np.int64), info)
    session = lm.session(frames, method="full")
    for i, q in enumerate(questions):
        answer = session.ask(q.text, max_new_tokens=1, record_logits=True)
        torch.testing.assert_close(logits[i, 0], answer.logits[0].float(), atol=1e-4, rtol=1e-4)
    assert targets[:, 1].eq(T.EOS_ID).all()


def test_packing_equals_one_sequence_per_question(untrained):
    _, lm = untrained
    adapter = lm.adapter
    spec = make_video_spec(train_seed(12), seconds=36)
    questions = make_questions(spec)
    with torch.no_grad():
        packed, _ = T.answer_logits(adapter.model, adapter, [T.Example(adapter, spec, questions)])
        alone = torch.cat([T.answer_logits(adapter.model, adapter, [T.Example(adapter, spec, [q])])[0]
                           for q in questions])
    torch.testing.assert_close(packed, alone, atol=1e-4, rtol=1e-4)


def test_training_is_reproducible_from_its_seed(tmp_path):
    from safetensors.torch import load_file

    kwargs = dict(steps=2, videos_per_step=2, n_validation=2, validate_every=1000, log=lambda _: None)
    T.train(tmp_path / "a", seed=3, **kwargs)
    T.train(tmp_path / "b", seed=3, **kwargs)
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_train_seeds_only(untrained):
    import json

    from longvid.synth import split_of

    card = json.loads((untrained[0] / "longvid.json").read_text())
    assert all(split_of(s) == "train" for s in card["train_seeds"] + card["validation_seeds"])
    assert set(KINDS) <= set(card["history"][-1])


def test_training_continues_from_a_checkpoint(untrained_tiny, tmp_path):
    import json

    from safetensors.torch import load_file

    T.train(tmp_path / "more", seed=1, steps=1, videos_per_step=2, n_validation=2, validate_every=1000,
            init_from=untrained_tiny, log=lambda _: None)
    before, after = load_file(untrained_tiny / "model.safetensors"), load_file(tmp_path / "more" / "model.safetensors")
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)
    card = json.loads((tmp_path / "more" / "longvid.json").read_text())
    assert card["init_from"]["steps"] == 2 and f"--init-from {untrained_tiny}" in card["command"]
    torch.manual_seed(12345)  # whatever ran before in this process, continuing gives the same weights
    T.train(tmp_path / "again", seed=1, steps=1, videos_per_step=2, n_validation=2, validate_every=1000,
            init_from=untrained_tiny, log=lambda _: None)
    again = load_file(tmp_path / "again" / "model.safetensors")
    assert all(torch.equal(after[k], again[k]) for k in after)


@pytest.mark.parametrize("kwargs, match", [
    (dict(steps=0), "steps=0"), (dict(videos_per_step=2.5), "videos_per_step=2.5"),
    (dict(lengths=(60.0, 30.0)), "lengths="), (dict(lengths=(5.0, 30.0)), "lengths="),
    (dict(lr=0.0), "lr=0.0"), (dict(event_weight=-1.0), "event_weight=-1.0"),
    (dict(aux_weight=float("nan")), "aux_weight=nan"), (dict(kinds=["color", "colour"]), "colour"),
])
def test_bad_training_arguments_fail_before_writing(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        T.train(tmp_path / "out", log=lambda _: None, **kwargs)
    assert not (tmp_path / "out").exists()


def test_event_loss_weighs_the_event_tokens(untrained):
    """``event_weight`` adds the colour/shape loss on the event tokens alone; 0 leaves the other losses as they were."""
    adapter = untrained[1].adapter
    model = adapter.model
    examples = T.make_examples(adapter, [train_seed(5)], [30.0])
    probe = torch.nn.Linear(model.config.text_config.hidden_size, 27)
    off, parts_off = T.answer_loss(model, adapter, examples, probe, event_weight=0.0)
    on, parts_on = T.answer_loss(model, adapter, examples, probe, event_weight=2.0)
    assert "event" not in parts_off and parts_on["event"] > 0
    assert torch.allclose(on - off, torch.tensor(parts_on["event"]), atol=2e-3)
