"""PivotKV: chunk-local eviction equals masking, the temporal squeeze, key re-rotation, pivots, ratios.

    pytest tests/test_pivotkv.py -q
"""

from __future__ import annotations

import pytest
import torch
import longvid
from reference import after_layer, deepstack, prompt_inputs
from longvid.engine.cache import new_cache
from longvid.methods.compose import Method
from longvid.models.attention import AttentionOps, rotate_half
from longvid.methods.kv.pivotkv import PivotKV

ATOL = 1e-5


class LoggingPivotKV(PivotKV):
    """Remembers, per chunk, what each layer kept (indices into the chunk's visual tokens)."""

    def compress(self, cache, chunk):
        shift = super().compress(cache, chunk)
        self.history = getattr(self, "history", []) + [(chunk.n_new_visual, dict(chunk.kept))]
        return shift


def rope(x, cos_sin):
    cos, sin = (t.unsqueeze(1) for t in cos_sin)
    return x * cos + rotate_half(x) * sin


@pytest.mark.parametrize("yarn", [None, 4.0])
def test_rerotate_moves_keys_between_positions(lm, yarn):
    rotary = PivotKV(yarn_factor=yarn).language_model(lm.adapter.lm).rotary_emb
    x = torch.randn(1, 2, 6, lm.adapter.lm.layers[0].self_attn.head_dim)
    old = torch.tensor([[40, 40, 41, 41, 42, 42], [5, 6, 5, 6, 5, 6], [7, 7, 8, 8, 9, 9]]).unsqueeze(1)
    new = old.clone()
    new[0] = torch.tensor([40, 40, 40, 40, 41, 41])
    cs_old, cs_new = rotary(x, old), rotary(x, new)
    if yarn:
        assert rotary.attention_scaling != 1.0  # YaRN really scales, so the inverse must divide by it
    torch.testing.assert_close(AttentionOps.rerotate(rope(x, cs_old), cs_old, cs_new), rope(x, cs_new), atol=ATOL,
                               rtol=0)


def test_squeeze_and_shift_by_hand():
    # 8 tokens over temporal ids 10..13, keep 4 of 8: t -> 10 + (t - 10) * 4 // 8
    pos = torch.tensor([[10, 10, 11, 11, 12, 12, 13, 13], [0] * 8, [1] * 8])
    out = PivotKV.squeeze(pos, 10, 4, 8)
    assert out[0].tolist() == [10, 10, 10, 10, 11, 11, 11, 11] and torch.equal(out[1:], pos[1:])


def test_pivots_are_kept_by_default_and_scored_one_when_faithful():
    scores = torch.tensor([0.5, 3.0, 0.2, 2.0, 0.1, 1.5])
    pivot = torch.tensor([False, False, True, False, True, False])
    assert PivotKV()._kept(scores, pivot, 2).tolist() == [2, 4]  # paper: pivots first
    assert PivotKV(faithful=True)._kept(scores, pivot, 3).tolist() == [1, 3, 5]  # code: 1.0 < 1.5, pivots lose
    # a pivot at 1.0 beats 0.5; the two pivots tie at 1.0: the earlier one wins
    assert PivotKV(faithful=True)._kept(scores, pivot, 4).tolist() == [1, 2, 3, 5]
    assert PivotKV()._kept(scores, None, 2).tolist() == [1, 3]


def test_ratio_from_max_input_length_keep_or_budget():
    assert PivotKV(max_input_length=1000).ratio(4000) == 0.25
    assert PivotKV(max_input_length=1000).ratio(800) == 1.0
    assert PivotKV(keep=0.3).ratio(10) == 0.3
    assert PivotKV(budget=2000).ratio(4000) == 0.5


def test_eviction_equals_masking_per_layer(lm, long_frames):
    """reforge off: each chunk's eviction == later queries not seeing those keys, layer by layer."""
    press = LoggingPivotKV(keep=0.5, reforge=False, chunk_steps=2)
    q = "What happened?"
    ours = lm.ask(long_frames, q, method=Method("pivotkv", press=press), max_new_tokens=1, record_logits=True)
    a = lm.adapter
    enc = lm.encode(long_frames, longvid.get_method("full"))
    embeds, positions, tail = prompt_inputs(lm, enc, q)
    n_pre, n_vis = len(enc.prefix_ids), len(enc.tokens)
    total = embeds.shape[1]  # with the family's structural entries (LLaVA's newline, Qwen3-VL's timestamps)
    vis_seq = n_pre + enc.block.visual.nonzero().flatten()  # where each visual token sits in the prompt
    per_step = enc.tokens.tokens_per_step
    n_layers = len(a.lm.layers)
    visible = torch.ones(n_layers, total, total, dtype=torch.bool).tril()
    start = 0
    for n_chunk, kept in press.history:  # chunk = its own 2 steps; later rows only see what each layer kept
        assert n_chunk == 2 * per_step or start + n_chunk == n_vis
        evicted = torch.ones(n_layers, n_chunk, dtype=torch.bool)
        for layer, idx in kept.items():
            evicted[layer, idx] = False
        cols = vis_seq[start:start + n_chunk]
        later = int(cols[-1]) + 1
        visible[:, later:, cols] &= ~evicted[:, None, :]
        start += n_chunk
    assert start == n_vis
    ds = deepstack(lm, enc, total)
    with torch.inference_mode():
        h, cache = embeds, new_cache(a.lm.config)
        cos_sin = a.lm.rope(h, positions)
        for i, layer in enumerate(a.lm.layers):
            mask = torch.zeros(1, 1, total, total).masked_fill(~visible[i], torch.finfo(torch.float32).min)
            h = layer(h, attention_mask=mask, position_embeddings=cos_sin, use_cache=True, **{a.lm.cache_kwarg: cache})
            h = after_layer(lm, h, i, ds)
        reference = a.lm.logits(a.lm.norm(h[:, -1:]))[0, 0]
    torch.testing.assert_close(ours.logits[0], reference, atol=ATOL, rtol=0)
    assert not torch.equal(press.history[0][1][0], press.history[0][1][1])  # layers keep different tokens


@pytest.mark.parametrize("faithful, rows", [(False, [0, 1, 2]), (True, [0])])
def test_squeezed_time_shifts_what_follows(lm, long_frames, faithful, rows):
    if lm.adapter.time_row is None:
        pytest.skip("no time row to squeeze (the refusal is tested in test_methods)")
    press = PivotKV(keep=0.5, chunk_steps=4, faithful=faithful)
    session = lm.session(long_frames, method=Method("pivotkv", press=press))
    enc = lm.encode(long_frames, longvid.get_method("full"))
    a = lm.adapter
    time = enc.tokens.positions[a.time_row].view(-1, enc.tokens.tokens_per_step)  # (steps, tokens per step)
    shift = 0
    for c in range(0, len(time), 4):  # chunks of 4 steps, each keeps half its tokens
        chunk = time[c:c + 4]
        t0, t_last, n = int(chunk.min()) + shift, int(chunk.max()) + shift, chunk.numel()
        shift += (t0 + (t_last - t0) * (n // 2) // n) - t_last
    assert session.time_shift == shift < 0
    pos = session.text_positions(enc.next_position, 2)[:, 0]
    for row in range(a.position_rows):
        assert pos[row].tolist() == [enc.next_position + (shift if row in rows else 0) + i for i in range(2)]
    assert session.ask("Then?", max_new_tokens=2).stats.kept_tokens == len(enc.tokens) // 2


def test_llava_newline_follows_the_squeezed_video(lms, long_frames):
    """1-D positions: the newline after the last frame moves back with the text, right after the squeezed video (it is
    prefilled after the last chunk's squeeze, at its shifted position)."""
    lm = lms["llava_onevision"]
    a = lm.adapter
    session = lm.session(long_frames, method=Method("pivotkv", press=PivotKV(keep=0.5, chunk_steps=5)))
    enc = lm.encode(long_frames, longvid.get_method("full"))
    newline_at = enc.next_position - 1 + session.time_shift
    n_pre = len(enc.prefix_ids)
    layer = a.lm.layers[0]
    with torch.inference_mode():
        h = enc.block.embeds[-1:][None]  # layer 0's input for the newline is its embedding
        _, k = a.lm.attention.qk(layer, h, a.lm.rope(h, torch.tensor([[[newline_at]]])))
    torch.testing.assert_close(session.cache.layers[0].keys[:, :, n_pre], k[:, :, 0], atol=ATOL, rtol=0)
    # 24 frames x 4 tokens in chunks of 5 frames: the last chunk (4 frames, 16 tokens) starts at t0 (after the earlier
    # chunks' shift, all but its own -8) and is squeezed to ids t0..t0+7: the newline is next
    t0 = int(enc.tokens.positions[0, -16]) + session.time_shift + 8
    assert newline_at == t0 + 8


def test_realised_retention_per_chunk(lms, long_frames):
    """ReTaKe's count per chunk, max(1, int(ratio * n)), on ReTaKe's chunks: a 12-step video -> 2 chunks of 6 steps."""
    lm = lms["qwen2_5_vl"]
    two = lm.ask(long_frames, "q?", method="pivotkv", keep=0.3, max_new_tokens=1).stats
    per_step = two.visual_tokens // 12
    assert two.kept_tokens == 2 * int(0.3 * 6 * per_step)
    press = PivotKV(keep=0.3, chunk_steps=5)  # chunks of 5, 5 and 2 steps: rounding down once per chunk
    three = lm.ask(long_frames, "q?", method=Method("pivotkv", press=press), max_new_tokens=1).stats
    assert three.kept_tokens == 2 * int(0.3 * 5 * per_step) + int(0.3 * 2 * per_step)
    assert 0.3 * three.visual_tokens - 3 < three.kept_tokens <= 0.3 * three.visual_tokens


@pytest.mark.parametrize("steps, chunk", [(8, 4), (16, 8), (24, 12), (32, 16), (64, 16), (9, 4.5)])
def test_chunks_follow_retakes_formula(steps, chunk):
    """min(chunked_prefill_frames, T) * tokens_per_step // temporal_patch tokens (ReTaKe compares frames with steps)."""
    assert PivotKV().chunk_tokens(steps, 256, 2) == chunk * 256
    assert PivotKV(chunk_steps=3).chunk_tokens(steps, 256, 2) == 3 * 256


@pytest.mark.parametrize("reforge", [True, False])
def test_scores_are_the_chunks_attention_from_the_captured_queries_and_keys(lm, long_frames, reforge):
    """observe's scores == the column sums of a bidirectional softmax over the chunk, recomputed from the layer's
    input with the layer's own modules: un-rotated with reforge, rotated without (ReTaKe's code)."""
    if reforge and lm.adapter.time_row is None:
        pytest.skip("reforge refuses a family that writes time as text")
    from longvid.methods.attention import attention_received

    inputs = {}

    class Recording(LoggingPivotKV):
        def observe(self, layer_idx, q, k, rope, scaling):
            scores = super().observe(layer_idx, q, k, rope, scaling)
            self.scores = getattr(self, "scores", []) + [(layer_idx, scores)]
            return scores

    hooks = [layer.register_forward_pre_hook(
        lambda m, a, kw, i=i: inputs.setdefault(i, []).append((a[0], kw["position_embeddings"])),
        with_kwargs=True) for i, layer in enumerate(lm.adapter.lm.layers)]
    try:
        press = Recording(keep=0.5, reforge=reforge, chunk_steps=6)
        lm.ask(long_frames, "q?", method=Method("pivotkv", press=press), max_new_tokens=1)
    finally:
        for h in hooks:
            h.remove()
    n = press.history[0][0]
    enc = lm.encode(long_frames, longvid.get_method("full"))
    rows = len(enc.prefix_ids) + enc.block.visual.nonzero().flatten()[:n]  # the first chunk's visual entries
    assert n == 6 * enc.tokens.tokens_per_step
    for layer_idx, scores in press.scores[: len(lm.adapter.lm.layers)]:  # the first chunk of every layer
        hidden, (cos, sin) = inputs[layer_idx][0]
        layer = lm.adapter.lm.layers[layer_idx]
        rope = (cos[:, rows], sin[:, rows]) if not reforge else None
        with torch.inference_mode():  # the family's norms (Qwen3-VL: q_norm / k_norm) and projections
            q, k = AttentionOps(qk_norm=hasattr(layer.self_attn, "q_norm")).qk(layer, hidden[:, rows], rope)
            expected = attention_received(q, k, layer.self_attn.scaling, reduce="sum")[0].mean(0)
        torch.testing.assert_close(scores, expected, atol=ATOL, rtol=0)


def test_retake_marks_pivots_and_compresses(lm, long_frames):
    kw = dict(reforge=False) if lm.adapter.time_row is None else {}
    s = lm.ask(long_frames, "q?", method=longvid.get_method("retake", keep=0.5, **kw), max_new_tokens=1).stats
    assert abs(s.retention - 0.5) <= 1 / s.visual_tokens


def test_no_scoring_when_the_prompt_fits(lm, frames):
    """At ratio 1 PivotKV evicts nothing, so the session does not pay for its attention scores."""
    calls = []

    class Counting(PivotKV):
        def observe(self, *args):
            calls.append(1)
            return super().observe(*args)

    kw = dict(reforge=False) if lm.adapter.time_row is None else {}
    lm.ask(frames, "q?", method=Method("pivotkv", press=Counting(**kw)), max_new_tokens=1)
    assert calls == []
    lm.ask(frames, "q?", method=Method("pivotkv", press=Counting(keep=0.5, **kw)), max_new_tokens=1)
    assert calls
