"""``longvid train citr``: heads train on the frozen longvid-tiny (loss falls, held-out overlap is measured), an
interrupted run continues to exactly the heads of an uninterrupted one, users' JSONL data is checked line by line
before training, and the CLI writes heads the `citr` method loads.

    pytest tests/test_train_citr.py -q
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from longvid.train.citr import CITRRecipe, Trainer

RECIPE = dict(hidden=16, held_out=2, eval_every=3, checkpoint_every=2, lengths=(20.0, 30.0))


def test_an_interrupted_run_continues_to_the_same_heads(bundled, tmp_path):
    straight = Trainer(bundled, tmp_path / "a", CITRRecipe(steps=4, **RECIPE), log=lambda m: None)
    straight.run()
    cut = Trainer(bundled, tmp_path / "b", CITRRecipe(steps=4, **RECIPE), log=lambda m: None)
    cut.out.mkdir()
    cut.train_step(), cut.train_step()
    cut.save_checkpoint()  # as the run does every checkpoint_every steps; then the process dies
    again = Trainer(bundled, tmp_path / "b", CITRRecipe(steps=4, **RECIPE), log=lambda m: None)
    again.run()
    assert again.step == 4
    for x, y in zip(straight.heads.state_dict().values(), again.heads.state_dict().values()):
        torch.testing.assert_close(x, y, atol=0, rtol=0)
    card = json.loads((tmp_path / "a" / "citr_card.json").read_text())
    assert card["steps_done"] == 4 and card["history"][-1]["step"] == 4 and "SmoothL1" in card["losses"]
    # the heads train on the videos the model knows: longvid-tiny 2's suite (v2: 140 px frames, 7 kinds)
    assert card["data"] == "synth (suite v2)" and straight.example(0).frames.frames.shape[1:3] == (140, 140)
    with pytest.raises(ValueError, match="holds a CITR run with other settings"):
        Trainer(bundled, tmp_path / "a", CITRRecipe(steps=5, **RECIPE), log=lambda m: None).run()


@pytest.mark.parametrize("loss", ["smoothl1", "kl"])
def test_training_lowers_the_loss(bundled_v1, tmp_path, loss):  # v1: 4 tokens per step, a sixth of the cost
    t = Trainer(bundled_v1, tmp_path / "h", CITRRecipe(steps=40, loss=loss, **(RECIPE | dict(eval_every=40,
                                                                                              held_out=4))),
                log=lambda m: None)
    before = t.evaluate()["loss"]
    t.run()
    after = t.history[-1]
    assert after["loss"] < before and 0 <= after["top10"] <= 1 and 0 <= after["top25"] <= 1


def test_users_jsonl_is_checked_line_by_line(bundled, tmp_path, video_path):
    good = {"video": str(video_path), "question": "What moved?", "answer": "A square."}
    cases = [("{not json", ":1: not JSON"), (json.dumps({"video": str(video_path)}), ":1: needs non-empty string"),
             (json.dumps(good | {"video": "missing.mp4"}), ":1: video 'missing.mp4' does not exist")]
    for line, words in cases:
        data = tmp_path / "data.jsonl"
        data.write_text(line + "\n")
        with pytest.raises(ValueError, match=words):
            Trainer(bundled, tmp_path / "o", CITRRecipe(steps=1, **RECIPE), data=str(data))
    data = tmp_path / "ok.jsonl"
    data.write_text(json.dumps(good) + "\n" + json.dumps(good | {"answer": "It moved right."}) + "\n")
    t = Trainer(bundled, tmp_path / "o2", CITRRecipe(steps=2, **RECIPE), data=str(data), log=lambda m: None)
    t.run()
    assert (tmp_path / "o2" / "citr_heads.safetensors").exists()


def test_the_cli_trains_heads_the_method_loads(tmp_path, frames, bundled):
    out = tmp_path / "heads"
    r = subprocess.run([sys.executable, "-m", "longvid", "train", "citr", "--out", str(out), "--steps", "3",
                        "--hidden", "16", "--held-out", "2", "--eval-every", "3", "--lengths", "20,30",
                        "--labels", "prompt"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "step 3: train loss" in r.stderr and f"heads: {out}" in r.stdout
    assert json.loads((out / "citr_card.json").read_text())["recipe"]["labels"] == "prompt"  # the question's rows
    import longvid

    method = longvid.get_method("citr", keep=0.5, heads=str(out))
    answer = bundled.ask(frames, "What moved?", method=method, max_new_tokens=1)
    assert answer.stats.kept_tokens < answer.stats.visual_tokens
    for flags, words in ((["--lengths", "5,10"], "--lengths 5,10 is invalid"),
                         (["--labels", "question"], "--labels question is invalid: pass answer"),
                         (["--loss", "mse"], "--loss mse is invalid: pass smoothl1")):
        bad = subprocess.run([sys.executable, "-m", "longvid", "train", "citr", "--out", str(tmp_path / "x"), *flags],
                             capture_output=True, text=True, timeout=120)
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and words in bad.stderr, bad.stderr
