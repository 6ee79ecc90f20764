"""The scorer-free KV presses a learned or scored press is compared with: ``streamingllm`` keeps the sinks and the most
recent visual entries, ``random-kv`` a seeded random share per layer and head; both keep the same entries however the
prefill is chunked, and run through sessions and streaming under their budget.

    pytest tests/test_kv_baselines.py -q
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import longvid
from longvid.methods.base import PrefillChunk
from longvid.methods.kv.random_kv import RandomKVPress
from longvid.methods.kv.streaming import StreamingLLMPress

PROTECTED, HEADS, LAYERS = 3, 2, 2


def run_press(press, n_visual: int, chunk: int) -> list[torch.Tensor]:
    """Feed ``n_visual`` visual entries in chunks of ``chunk`` through ``press.compress`` on a cache whose values hold
    each entry's visual index; returns, per layer, (H, kept) the visual indices left at the end."""
    cache = SimpleNamespace(layers=[SimpleNamespace(keys=torch.zeros(1, HEADS, PROTECTED, 4),
                                                    values=torch.full((1, HEADS, PROTECTED, 4), -1.0))
                                    for _ in range(LAYERS)])
    state: dict = {}
    for start in range(0, n_visual, chunk):
        end = min(start + chunk, n_visual)
        new = torch.arange(start, end, dtype=torch.float32).view(1, 1, -1, 1).expand(1, HEADS, -1, 4)
        for layer in cache.layers:
            layer.keys = torch.cat([layer.keys, torch.randn(1, HEADS, end - start, 4)], dim=2)
            layer.values = torch.cat([layer.values, new], dim=2)
        press.compress(cache, PrefillChunk(PROTECTED, end - start, end - start, end, torch.zeros(3, end - start),
                                           None, PROTECTED + end, state=state))
    out = []
    for layer in cache.layers:
        assert torch.equal(layer.values[0, :, :PROTECTED, 0], torch.full((HEADS, PROTECTED), -1.0))  # never evicted
        out.append(layer.values[0, :, PROTECTED:, 0].long())
    return out


@pytest.mark.parametrize("sink", [0, 2])
def test_streamingllm_keeps_the_sinks_and_the_most_recent_entries(sink):
    kept = run_press(StreamingLLMPress(budget=10, sink=sink), n_visual=57, chunk=8)
    expected = list(range(sink)) + list(range(57 - 10 + sink, 57))
    assert all(k.tolist() == [expected] * HEADS for k in kept)


def test_streamingllm_keep_ratio_grows_the_window_with_the_video():
    kept = run_press(StreamingLLMPress(keep=0.25), n_visual=40, chunk=8)
    assert kept[0][0].tolist() == list(range(30, 40))


@pytest.mark.parametrize("chunk", [1, 5, 16, 64])
def test_random_kv_keeps_the_same_entries_however_the_prefill_is_chunked(chunk):
    reference = run_press(RandomKVPress(budget=12, seed=3), n_visual=64, chunk=64)
    kept = run_press(RandomKVPress(budget=12, seed=3), n_visual=64, chunk=chunk)
    assert all(torch.equal(a, b) for a, b in zip(kept, reference))
    assert all(k.shape == (HEADS, 12) for k in kept)


def test_random_kv_is_seeded_and_differs_across_heads_layers_and_seeds():
    a, b = run_press(RandomKVPress(budget=12, seed=0), 64, 8), run_press(RandomKVPress(budget=12, seed=0), 64, 8)
    other = run_press(RandomKVPress(budget=12, seed=1), 64, 8)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], other[0])
    assert not torch.equal(a[0][0], a[0][1]) and not torch.equal(a[0], a[1])


def test_random_kv_scores_are_spread_evenly():
    scores = RandomKVPress(seed=0).index_score(0, torch.arange(20_000).expand(2, -1))
    assert 0 <= scores.min() and scores.max() < 1
    counts = torch.histc(scores.float(), bins=10, min=0, max=1)
    assert counts.min() > 3_700 and counts.max() < 4_300  # 2 heads x 20,000: 4,000 per decile expected
    kept_share = (RandomKVPress(budget=5_000).index_score(3, torch.arange(20_000)[None])[0].argsort()[-5_000:] < 10_000)
    assert 0.45 < kept_share.float().mean() < 0.55  # no drift towards early or late entries


@pytest.mark.parametrize("name", ["streamingllm", "random-kv"])
def test_sessions_and_streams_hold_the_budget(lm, video_path, name):
    from longvid.video import read_video

    first, rest = read_video(video_path, fps=2, end=3.0), read_video(video_path, fps=2, start=3.0)
    s = lm.session(first, method=name, budget=10, chunk_size=8)
    assert s.kept_visual() == 10
    s.extend(rest)
    assert s.kept_visual() == 10
    answer = s.ask("What moved?", max_new_tokens=2)
    assert answer.stats.kept_tokens == 10 and answer.stats.visual_tokens > 10


def test_bad_sink_is_one_line():
    with pytest.raises(ValueError, match="sink=-1 is invalid: it must be 0 or more visual entries"):
        longvid.get_method("streamingllm", sink=-1)
