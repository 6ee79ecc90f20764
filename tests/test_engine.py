"""Equivalence tests of the engine against plain transformers, on tiny random models of both families (fp32).

    pytest tests/test_engine.py -q
"""

from __future__ import annotations

import pytest
import torch

import longvid
from reference import deepstack, explicit_generate, prompt_inputs, transformers_inputs
from longvid.engine.cache import new_cache
from longvid.engine.forward import causal_mask, forward
from longvid.methods.base import KVPress, gather_entries
from longvid.methods.compose import Method
from longvid.video import read_video

ATOL = 1e-5


def no_squeeze(lm, name: str) -> dict:
    """PivotKV's positions kept where the family writes time as text (its reforge refuses Qwen3-VL)."""
    return dict(reforge=False) if lm.adapter.time_row is None and name in ("pivotkv", "retake") else {}


def hf_generate(model, max_new_tokens, **kwargs):
    out = model.generate(**kwargs, max_new_tokens=max_new_tokens, do_sample=False, output_logits=True,
                         return_dict_in_generate=True)
    n = kwargs["input_ids" if "input_ids" in kwargs else "inputs_embeds"].shape[1]
    tokens = out.sequences[0, n:].tolist() if "input_ids" in kwargs else out.sequences[0].tolist()
    return tokens, [x[0] for x in out.logits]


def assert_same_generation(ours, tokens, logits, stop_ids):
    """Our tokens equal transformers' (which also emits the stop token); logits agree at every step we took."""
    assert ours.token_ids == [t for t in tokens if t not in stop_ids][: len(ours.token_ids)]
    for mine, theirs in zip(ours.logits, logits):
        torch.testing.assert_close(mine, theirs.float(), atol=ATOL, rtol=0)


@pytest.fixture(scope="module")
def short_frames(video_path):
    """4 frames 0.2 s apart: 2 temporal steps, short enough that transformers 5.23's layout equals the original."""
    return read_video(video_path, fps=5, start=0.0, end=0.8)


def test_full_equals_transformers_generate(lm, short_frames):
    q = "What moves?"
    ours = lm.ask(short_frames, q, method="full", max_new_tokens=8, record_logits=True)
    tokens, logits = hf_generate(lm.adapter.model, 8, **transformers_inputs(lm, short_frames, q))
    assert len(ours.logits) >= 2
    assert_same_generation(ours, tokens, logits, lm.adapter.stop_ids())


def test_full_equals_transformers_with_explicit_positions_on_long_video(lm, long_frames):
    """Where transformers' get_rope_index diverges (long videos), generate() with our positions agrees."""
    q = "Count the squares."
    method = longvid.get_method("full")
    enc = lm.encode(long_frames, method)
    ours = lm.ask(long_frames, q, max_new_tokens=6, record_logits=True)
    a = lm.adapter
    embeds, positions, _ = prompt_inputs(lm, enc, q)
    tokens, logits = explicit_generate(lm, 6, embeds, positions, deepstack(lm, enc, embeds.shape[1]))
    assert_same_generation(ours, tokens, logits, a.stop_ids())


def test_text_after_video_starts_at_full_layout_max_plus_one(lm, long_frames):
    """Pins the original Qwen layout, and the transformers 5.23 difference it guards against."""
    if lm.adapter.family not in ("qwen2_vl", "qwen2_5_vl"):
        pytest.skip("a fact of the Qwen2-VL layout (one block, time on the temporal row)")
    enc = lm.encode(long_frames, longvid.get_method("full"))
    pos = enc.tokens.positions
    start = len(enc.prefix_ids)
    assert enc.next_position == int(pos.max()) + 1
    t, h, w = enc.tokens.grid_thw
    assert pos[1].min() == start and pos[1].max() == start + h - 1 and pos[2].max() == start + w - 1
    step = lm.adapter.time_interval(enc.seconds_per_step)  # 1 (Qwen2-VL) or tokens_per_second * s/step (2.5)
    assert int(pos[0].max()) - start == int((t - 1) * step)  # the temporal extent spans the video
    ids = transformers_inputs(lm, long_frames, "q")
    hf_pos, _ = lm.adapter.model.model.get_rope_index(
        ids["input_ids"], ids["mm_token_type_ids"], video_grid_thw=ids["video_grid_thw"],
        second_per_grid_ts=ids.get("second_per_grid_ts"))
    n_vis = len(enc.tokens)
    torch.testing.assert_close(hf_pos[:, 0, start:start + n_vis], pos)  # video block: identical
    assert int(hf_pos[0, 0, start + n_vis]) == start + max(h, w) < enc.next_position  # transformers 5.23 differs


def test_chunked_prefill_equals_one_pass(lm, frames):
    one = lm.ask(frames, "Where is the square?", chunk_size=100_000, max_new_tokens=6, record_logits=True)
    chunked = lm.ask(frames, "Where is the square?", chunk_size=5, max_new_tokens=6, record_logits=True)
    assert chunked.token_ids == one.token_ids
    for a, b in zip(chunked.logits, one.logits):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


def test_window_vision_encoding_equals_one_shot(lm, long_frames):
    a = lm.adapter
    if a.family == "llava_onevision":  # frame-wise tower: windows of frames
        windowed = a.encode_frames(long_frames.frames, window=3)
        whole = a.model.model.get_video_features(a.preprocess(long_frames.frames)).pooler_output[0, :-1]
        torch.testing.assert_close(windowed, whole, atol=ATOL, rtol=0)
        return
    inputs = a.preprocess(long_frames.frames, long_frames.timestamps)
    _, gh, gw = inputs.grid_thw
    windowed = a.encode_inputs(inputs, max_window_patches=gh * gw * 2)  # 2 temporal steps per window
    out = a.model.get_video_features(inputs.pixel_values, torch.tensor([inputs.grid_thw]))
    whole = out.pooler_output[0]
    if a.family.startswith("qwen3_vl"):  # DeepStack features ride along, one block of D per level
        whole = torch.cat([whole, *[level[0] for level in out.deepstack_features]], dim=-1)
    torch.testing.assert_close(windowed, whole, atol=ATOL, rtol=0)


def test_session_second_question_equals_fresh_encode(lm, frames):
    session = lm.session(frames, method="knorm", keep=0.5, chunk_size=8)
    session.ask("First question?", max_new_tokens=5)
    second = session.ask("Second question?", max_new_tokens=5, record_logits=True)
    fresh = lm.ask(frames, "Second question?", method="knorm", keep=0.5, chunk_size=8, max_new_tokens=5,
                   record_logits=True)
    assert second.token_ids == fresh.token_ids
    for a, b in zip(second.logits, fresh.logits):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert second.stats.kept_tokens == fresh.stats.kept_tokens


def test_reduced_tokens_keep_positions_and_decode_continues(lm, frames):
    """Random drop: kept tokens carry their full-layout ids; transformers generate on them agrees."""
    full = lm.encode(frames, longvid.get_method("full"))
    enc = lm.encode(frames, longvid.get_method("random", keep=0.5))
    index = [int(((full.tokens.thw == row).all(1)).nonzero()) for row in enc.tokens.thw]
    torch.testing.assert_close(enc.tokens.positions, full.tokens.positions[:, index])
    assert enc.next_position == full.next_position
    q = "Which colour?"
    ours = lm.ask(frames, q, method="random", keep=0.5, max_new_tokens=6, record_logits=True)
    a = lm.adapter
    embeds, positions, tail = prompt_inputs(lm, enc, q)
    # a model run on the kept subset (with its DeepStack rows, where the family has them)
    tokens, logits = explicit_generate(lm, 6, embeds, positions, deepstack(lm, enc, embeds.shape[1]))
    assert_same_generation(ours, tokens, logits, a.stop_ids())


class ScheduledPress(KVPress):
    """Test double: evicts by a fixed per-(KV head, visual token) priority and logs what each head keeps."""

    def __init__(self, priority: torch.Tensor, budget: int):
        self.priority, self.budget, self.keep = priority, budget, None
        self.ids, self.seen, self.log = None, 0, []

    def compress(self, cache, chunk):
        n_protected, n_keep = chunk.n_protected, self.target(chunk.visual_seen)
        cached = cache.get_seq_length() - n_protected
        heads = self.priority.shape[0]
        old = self.ids if self.ids is not None else torch.empty(heads, 0, dtype=torch.long)
        new = torch.arange(self.seen, self.seen + cached - old.shape[1]).expand(heads, -1)
        ids = torch.cat([old, new], dim=1)
        self.seen += new.shape[1]
        if cached > n_keep:
            keep = torch.topk(self.priority.gather(1, ids), n_keep, dim=1).indices.sort(dim=1).values
            for layer in cache.layers:
                layer.keys = gather_entries(layer.keys, keep[None], n_protected)
                layer.values = gather_entries(layer.values, keep[None], n_protected)
            ids = ids.gather(1, keep)
        self.ids = ids
        self.log.append((self.seen, ids.clone()))
        return None


def test_evicting_equals_masking(lm, frames):
    """Chunked prefill with per-head eviction == one forward where each query cannot see what was evicted before it."""
    a = lm.adapter
    q, chunk = "What changed?", 7
    n_vis = len(lm.encode(frames, longvid.get_method("full")).tokens)
    kv_heads, groups = a.lm.config.num_key_value_heads, a.lm.config.num_attention_heads // a.lm.config.num_key_value_heads
    press = ScheduledPress(torch.rand(kv_heads, n_vis, generator=torch.Generator().manual_seed(1)), budget=9)
    press.target = lambda seen: min(seen, 9)
    ours = lm.ask(frames, q, method=Method("scheduled", press=press), chunk_size=chunk, max_new_tokens=1,
                  record_logits=True)
    enc = lm.encode(frames, longvid.get_method("full"))
    embeds, positions, tail = prompt_inputs(lm, enc, q)
    n_pre, n_block, n_tail = len(enc.prefix_ids), len(enc.block), len(tail)
    vis_seq = n_pre + enc.block.visual.nonzero().flatten()  # where each visual token sits in the prompt
    total = n_pre + n_block + n_tail
    visible = torch.ones(kv_heads, total, total, dtype=torch.bool).tril()
    kept_before = torch.ones(kv_heads, n_vis, dtype=torch.bool)  # what each head still holds, chunk by chunk
    logs = iter(press.log)
    for start in range(0, n_pre + n_block, chunk):  # the chat prefix and the video block form one chunk stream
        end = min(start + chunk, n_pre + n_block)
        past = vis_seq < start  # visual tokens prefilled before this chunk (structural ones are never evicted)
        visible[:, start:end, vis_seq[past]] &= kept_before[:, None, past]
        if not ((vis_seq >= start) & (vis_seq < end)).any():
            continue
        seen, ids = next(logs)
        kept_before = torch.zeros(kv_heads, n_vis, dtype=torch.bool)
        kept_before.scatter_(1, ids, True)
        kept_before[:, seen:] = True
    visible[:, n_pre + n_block:, vis_seq] &= kept_before[:, None, :]
    mask = torch.zeros(1, kv_heads * groups, total, total)
    mask.masked_fill_(~visible.repeat_interleave(groups, 0)[None], torch.finfo(torch.float32).min)
    with torch.inference_mode():
        hidden, _ = forward(a.lm, embeds, positions, new_cache(a.lm.config), attention_mask=mask,
                            residuals=deepstack(lm, enc, total))
        reference = a.lm.logits(hidden[:, -1])[0]
    torch.testing.assert_close(ours.logits[0], reference, atol=ATOL, rtol=0)
    assert ours.stats.kept_tokens == 9 and press.ids.shape == (kv_heads, 9)
    assert not torch.equal(press.ids[0], press.ids[1])  # heads really kept different entries


def test_causal_mask_is_bottom_right_aligned():
    allowed = causal_mask("sdpa", 2, 5, torch.float32, "cpu")[0, 0]
    assert allowed.dtype == torch.bool and allowed.tolist() == [[True] * 4 + [False], [True] * 5]
    additive = causal_mask("eager", 2, 5, torch.float32, "cpu")[0, 0]
    assert ((additive == 0) == allowed).all() and additive[0, 4] == torch.finfo(torch.float32).min
    assert causal_mask("sdpa", 4, 4, torch.float32, "cpu") is None  # no past: SDPA's own is_causal
    assert causal_mask("eager", 1, 9, torch.float32, "cpu") is None


def test_no_deprecation_warning_from_transformers(lm, frames):
    """The cache goes to the decoder layers under the keyword the installed transformers expects (``cache`` from
    5.24, which warns that ``past_key_values`` goes away in 5.40)."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lm.ask(frames, "q?", method="knorm", keep=0.5, chunk_size=8, max_new_tokens=2)
    assert not [str(w.message) for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))]


@pytest.mark.parametrize("name, keep", [("knorm", 0.5), ("pivotkv", 0.5), ("retake", 0.5), ("evs", 0.5)])
def test_one_method_serves_interleaved_sessions(lm, frames, long_frames, name, keep):
    """Stages hold settings only (per-run state lives in the session): two sessions built and asked in turns on ONE
    Method object answer exactly as each would alone."""
    import longvid

    kw = dict(keep=keep) | no_squeeze(lm, name)
    method = longvid.get_method(name, **kw)
    a = lm.session(long_frames, method=method, chunk_size=16)
    b = lm.session(frames, method=method, chunk_size=16)
    a2 = lm.session(long_frames, method=longvid.get_method(name, **kw), chunk_size=16)
    b2 = lm.session(frames, method=longvid.get_method(name, **kw), chunk_size=16)
    for q in ("First?", "Second?"):
        got = [s.ask(q, max_new_tokens=3, record_logits=True) for s in (a, b)]
        alone = [s.ask(q, max_new_tokens=3, record_logits=True) for s in (a2, b2)]
        for x, y in zip(got, alone):
            assert x.token_ids == y.token_ids and x.stats.kept_tokens == y.stats.kept_tokens
            torch.testing.assert_close(x.logits[0], y.logits[0], atol=0, rtol=0)


@pytest.mark.parametrize("name", ["knorm", "pivotkv"])
def test_streaming_sessions_on_one_method_do_not_share_press_state(lm, video_path, name):
    """Two streams extended in turns on one Method: the press's per-entry scores / observations stay per session."""
    import longvid
    from longvid.video import read_video

    halves = [read_video(video_path, fps=4, end=3.0), read_video(video_path, fps=4, start=3.0)]
    other = [read_video(video_path, fps=2, end=3.0), read_video(video_path, fps=2, start=3.0)]
    kw = dict(keep=0.5) | (dict(chunk_steps=1) if name == "pivotkv" else {}) | no_squeeze(lm, name)
    shared = longvid.get_method(name, **kw)
    alone = [longvid.get_method(name, **kw) for _ in range(2)]
    s = [lm.session(halves[0], method=shared, chunk_size=8), lm.session(other[0], method=shared, chunk_size=8)]
    r = [lm.session(halves[0], method=alone[0], chunk_size=8), lm.session(other[0], method=alone[1], chunk_size=8)]
    s[0].extend(halves[1]), s[1].extend(other[1])
    r[0].extend(halves[1]), r[1].extend(other[1])
    for x, y in zip(s, r):
        assert all(torch.equal(p.keys, q.keys) for p, q in zip(x.cache.layers, y.cache.layers))


def test_streamed_segments_equal_one_encode(lm, video_path):
    """A session fed two halves answers as one encode of the whole clip: positions (and Qwen3-VL's timestamps and
    markers) continue where the first half ended. LLaVA-OneVision writes a newline after each segment instead."""
    whole = read_video(video_path, fps=2, end=4.0)
    halves = [read_video(video_path, fps=2, end=2.0), read_video(video_path, fps=2, start=2.0, end=4.0)]
    session = lm.session(halves[0], method="full", chunk_size=7)
    session.extend(halves[1])
    streamed = session.ask("What moves?", max_new_tokens=4, record_logits=True)
    if lm.adapter.family == "llava_onevision":
        n = lm.adapter.tokens_per_step(84, 112)
        assert streamed.stats.llm_tokens == lm.ask(whole, "What moves?", max_new_tokens=1).stats.llm_tokens + 1
        assert session.next_position == len(session.encoded.prefix_ids) + 8 * n + 2  # two newlines
        return
    one = lm.ask(whole, "What moves?", max_new_tokens=4, record_logits=True)
    assert streamed.token_ids == one.token_ids and streamed.stats.visual_tokens == one.stats.visual_tokens
    for a, b in zip(streamed.logits, one.logits):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
