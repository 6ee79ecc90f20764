"""The bundled longvid-tiny: a real Qwen2-VL that answers the synthetic suite, and the honesty checks around it.

Every question goes through the whole pipeline from H.264 files (PyAV decode, resize, vision encoder, prefill,
greedy decoding), on evaluation seeds never used in training. Results are deterministic, so thresholds are fixed
margins below what the model scores, not statistical bounds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import longvid
from longvid.methods.base import TokenReducer
from longvid.methods.compose import Method
from longvid.pipeline import SamplingOptions
from longvid.synth import make_video_spec, split_of, write_suite
from longvid.synth.render import event_tokens
from longvid.methods.registry import get_method
from longvid.eval.synth import answer_video, model_suite, select_questions, tiny_model_path

SEED = 900  # evaluation seeds eval_seed(900)..., away from the committed results (seed 0) and the demo
SUITE = model_suite(tiny_model_path())  # the suite version the bundled model was trained on


@pytest.fixture(scope="module")
def tiny():
    return longvid.load(tiny_model_path())


def suite_and_questions(tmp_path, seconds: float, n: int, blank: bool = False):
    n_videos, rows = select_questions(seconds, n, SEED, SUITE)
    from longvid.synth import eval_seed

    path = Path(write_suite(tmp_path / f"suite{seconds:g}{blank}", split="eval", n_videos=n_videos, seconds=seconds,
                       seed=eval_seed(SEED), blank=blank, version=SUITE))
    return path, rows


def answer_all(lm, path, rows, method="full") -> list[bool]:
    """Whether each question is answered right, through `answer_video` (what ``longvid eval synth`` runs)."""
    by_video = {}
    for row in rows:
        by_video.setdefault(row["video_id"], []).append(row)
    correct = []
    for video_id, questions in by_video.items():
        frames = lm.read(str(path / f"{video_id}.mp4"), SamplingOptions(fps=1.0))
        chosen = method(video_id) if callable(method) else get_method(method)
        correct += [r["correct"] for r in answer_video(lm, frames, chosen, questions)]
    return correct


def test_bundled_checkpoint_is_a_small_real_qwen2_vl():
    from transformers import AutoModelForImageTextToText, AutoTokenizer, Qwen2VLForConditionalGeneration

    path = tiny_model_path()
    assert (path / "model.safetensors").stat().st_size <= 20 * 2**20
    model = AutoModelForImageTextToText.from_pretrained(path)
    assert type(model) is Qwen2VLForConditionalGeneration
    tok = AutoTokenizer.from_pretrained(path)
    assert "<|vision_start|><|video_pad|><|vision_end|>" in tok.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "hi"}]}], tokenize=False)
    card = json.loads((path / "longvid.json").read_text())
    assert card["suite"] == 2 and card["losses"]["attention"].startswith("none")  # no attention supervision
    assert all(split_of(s) == "train" for s in card["train_seeds"] + card["validation_seeds"]), card["command"]
    link, runs = card, 1
    while link.get("init_from"):  # the phase that made it, then the run it started from, and so on
        link, runs = link["init_from"], runs + 1
        assert link["recipe"]["seed"] == 0 and link["step"] > 0  # every phase trains on train-split seeds only
    assert link["recipe"].get("init") is None and runs >= 2  # the chain ends in a run from scratch


def test_v1_stays_bundled_with_its_training_chain():
    from longvid.models import BUNDLED_MODELS

    card, runs = json.loads((BUNDLED_MODELS["longvid-tiny-v1"] / "longvid.json").read_text()), 0
    assert model_suite(BUNDLED_MODELS["longvid-tiny-v1"]) == 1
    while isinstance(card, dict):  # the run that made it, then the checkpoint it continued from, and so on
        assert all(split_of(s) == "train" for s in card["train_seeds"] + card["validation_seeds"]), card["command"]
        card, runs = card.get("init_from"), runs + 1
    assert card is None and runs >= 1  # the chain ends in a run from scratch


@pytest.mark.parametrize("seconds, n, bar", [(60.0, 10, 0.9), (300.0, 3, 0.8)])
def test_answers_held_out_questions_from_mp4_files(tiny, tmp_path, seconds, n, bar):
    """A CI-sized sample of what results/synth measures on 210 questions per length (95.7 / 96.7 / 98.1 / 94.8 % at
    1 / 2 / 5 / 10 min, every kind >= 70 %). It scores 67 / 70 at 60 s and 19 / 21 at 300 s here (the misses are
    `after` questions); the bars sit a few questions below."""
    path, rows = suite_and_questions(tmp_path, seconds, n)
    correct = answer_all(tiny, path, rows)
    assert len(correct) == 7 * n  # n per kind
    assert np.mean(correct) >= bar, np.mean(correct)


def test_near_chance_without_the_events(tiny, tmp_path):
    """Background-only videos (every event removed), same questions: the text alone must not give the answer."""
    path, rows = suite_and_questions(tmp_path, 30.0, 30, blank=True)
    accuracy = np.mean(answer_all(tiny, path, rows))
    assert 0.18 <= accuracy <= 0.32, accuracy  # 210 questions: chance 25 % +- 2.3 binomial SE; it scores 27.1 %


class DropEvents(TokenReducer):
    """Drops every visual token whose cell shows any part of an event in either frame of its step (from the spec)."""

    def __init__(self, spec):
        self.spec = spec

    def reduce(self, tokens, query_embeds=None):
        keep = ~event_tokens(self.spec, tokens)
        return tokens.select(torch.nonzero(torch.as_tensor(keep)).squeeze(1))


def test_dropping_every_event_token_of_colour_questions_gives_chance(tiny, tmp_path):
    path, rows = suite_and_questions(tmp_path, 30.0, 60)
    rows = [r for r in rows if r["kind"] == "color"]
    seeds = {r["video_id"]: int(r["video_id"].split("_")[1]) for r in rows}

    def drop(video_id):
        spec = make_video_spec(seeds[video_id], seconds=30.0, version=SUITE)
        return Method("drop-events", token_reducers=[DropEvents(spec)])

    full = np.mean(answer_all(tiny, path, rows))
    dropped = np.mean(answer_all(tiny, path, rows, method=drop))
    assert full >= 0.9, full  # longvid-tiny scores 60 / 60 here
    assert 0.13 <= dropped <= 0.37, dropped  # 60 questions: chance 25 % +- 2 binomial SE; it scores 28.3 %
