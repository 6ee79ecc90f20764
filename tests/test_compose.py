"""Method compositions from a string (``uniform:0.5+evs:0.5+knorm``): the stages of the presets, in data-flow order,
equal to the same Method built by hand; one-line errors; named in the CLI's --json and in eval tables.

    pytest tests/test_compose.py -q
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from longvid.methods.compose import Method
from longvid.methods.registry import get_method


def test_a_composition_is_the_presets_stages(bundled, frames):
    composed = get_method("uniform:0.5+evs:0.5+knorm:8")
    by_hand = Method("by hand", get_method("uniform", keep=0.5).frame_selector,
                     get_method("evs", keep=0.5).token_reducers, None, get_method("knorm", budget=8).press)
    a = bundled.ask(frames, "What colour?", method=composed, max_new_tokens=3, record_logits=True)
    b = bundled.ask(frames, "What colour?", method=by_hand, max_new_tokens=3, record_logits=True)
    assert a.token_ids == b.token_ids and all(torch.equal(x, y) for x, y in zip(a.logits, b.logits))
    assert a.stats.method == "uniform:0.5+evs:0.5+knorm:8" and a.stats.kept_tokens == b.stats.kept_tokens
    full = bundled.ask(frames, "What colour?", method="full", max_new_tokens=1).stats
    assert a.stats.kept_tokens < full.kept_tokens and a.stats.kv_bytes < full.kv_bytes
    assert get_method("evs:0.5+fastv:0.5").query_aware and not composed.query_aware


@pytest.mark.parametrize("text, words", [
    ("uniform:0.5+dpselect:0.5+uniform", "'uniform' and 'uniform' both bring a frame selector"),
    ("knorm+pivotkv", "'knorm' and 'pivotkv' both bring a KV press"),
    ("nope+evs", "unknown method 'nope'"),
    ("evs:abc", "'evs:abc' needs a ratio in (0, 1] (evs:0.5) or a budget"),
    ("evs:1.5", "'evs:1.5': keep=1.5 is invalid"),
    ("+evs", "has an empty part"),
])
def test_composition_errors(text, words):
    with pytest.raises(ValueError) as err:
        get_method(text)
    assert words in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValueError, match="does not apply to the composition"):
        get_method("evs:0.5+knorm", keep=0.5)


def test_the_cli_names_the_composition(video_path):
    r = subprocess.run([sys.executable, "-m", "longvid", "ask", video_path, "What colour?", "--model", "longvid-tiny",
                        "--method", "uniform:0.5+evs:0.5", "--fps", "2", "--max-new-tokens", "2", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["method"] == "uniform:0.5+evs:0.5"
    bad = subprocess.run([sys.executable, "-m", "longvid", "ask", video_path, "What?", "--model", "longvid-tiny",
                          "--method", "knorm+pivotkv"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --method knorm+pivotkv: 'knorm' and 'pivotkv' both")


def test_eval_runs_a_composition_once_beside_the_controls():
    from longvid.eval.runner import BenchSettings

    runs = BenchSettings(name="videomme", data=".", methods=["uniform:0.5+evs:0.5"], keeps=[0.25]).runs()
    assert runs == [("full", None), ("uniform:0.5+evs:0.5", None), ("uniform", 0.25), ("random", 0.25)]
    with pytest.raises(ValueError, match="'knorm' and 'pivotkv' both bring a KV press"):
        BenchSettings(name="videomme", data=".", methods=["knorm+pivotkv"])
