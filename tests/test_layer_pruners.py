"""FastV and PruneVid stage 2: scores equal rows of a full eager attention map; pruning keeps what it should.

    pytest tests/test_layer_pruners.py -q
"""

from __future__ import annotations

import pytest
import torch
from transformers.models.qwen2_vl.modeling_qwen2_vl import eager_attention_forward

import longvid
from longvid.methods.compose import Method
from longvid.methods.layers.fastv import FastV
from longvid.methods.layers.prunevid_prune import PruneVidPrune

ATOL = 1e-5


class Recording:
    """Mixin: remember the context and scores a pruner saw."""

    def select(self, ctx):
        self.ctx, self.seen = ctx, self.scores(ctx)
        return super().select(ctx)


class RecordingFastV(Recording, FastV):
    pass


class RecordingPruneVid(Recording, PruneVidPrune):
    pass


@pytest.fixture(scope="module", params=["qwen2_vl", "qwen3_vl"])
def eager_lm(tiny_dirs, request):
    """Eager attention returns its weights: Qwen2-VL's, and Qwen3-VL's with QK-norm."""
    return longvid.load(tiny_dirs[request.param], attn_implementation="eager")


def full_attention_map(lm, ctx, rope: bool):
    """(H, L, L) softmax map of the pruner's layer from transformers' eager attention, without a mask."""
    attn = ctx.layer.self_attn
    x = ctx.layer.input_layernorm(ctx.hidden_in)
    b, n, _ = x.shape
    q = attn.q_proj(x).view(b, n, -1, attn.head_dim)
    k = attn.k_proj(x).view(b, n, -1, attn.head_dim)
    if hasattr(attn, "q_norm"):  # Qwen3: per-head RMSNorm after the projections
        q, k = attn.q_norm(q), attn.k_norm(k)
    q, k = q.transpose(1, 2), k.transpose(1, 2)
    v = attn.v_proj(x).view(b, n, -1, attn.head_dim).transpose(1, 2)
    if rope:
        from transformers.models.qwen2_vl.modeling_qwen2_vl import apply_rotary_pos_emb

        q, k = apply_rotary_pos_emb(q, k, *ctx.position_embeddings)
    _, weights = eager_attention_forward(attn, q, k, v, None, scaling=attn.scaling)
    return weights[0]


def test_fastv_score_is_the_last_row_of_the_models_own_attention(eager_lm, frames):
    """Against output_attentions of the real eager model: the causal last row, averaged over heads."""
    pruner = RecordingFastV(keep=0.5, layer=1)
    eager_lm.ask(frames, "What moves?", method=Method("fastv", layer_pruner=pruner), max_new_tokens=1)
    a = eager_lm.adapter
    ctx = pruner.ctx
    embeds = ctx.hidden_in  # layer 1's input == layer 0's output; rerun the model's own layer 1 with attentions
    mask = torch.full((embeds.shape[1],) * 2, torch.finfo(torch.float32).min).triu(1)[None, None]
    with torch.inference_mode():
        _, weights = ctx.layer.self_attn(ctx.layer.input_layernorm(embeds), attention_mask=mask,
                                         position_embeddings=ctx.position_embeddings)
    torch.testing.assert_close(pruner.seen, weights[0, :, -1].mean(0), atol=ATOL, rtol=0)
    assert a.lm.config._attn_implementation == "eager"


def test_prunevid_score_is_max_of_question_rows_of_a_rope_free_unmasked_map(eager_lm, frames):
    pruner = RecordingPruneVid(layer=0, alpha=0.5)
    eager_lm.ask(frames, "Where is the square?", method=Method("pv", layer_pruner=pruner), max_new_tokens=1)
    ctx = pruner.ctx
    with torch.inference_mode():
        full = full_attention_map(eager_lm, ctx, rope=False)
    rows = ctx.query.nonzero().flatten()
    torch.testing.assert_close(pruner.seen, full[:, rows].amax(dim=(0, 1)), atol=ATOL, rtol=0)


def test_prunevid_keeps_a_share_of_every_group(lm, frames):
    pruner = RecordingPruneVid(layer=0, alpha=0.4)
    ans = lm.ask(frames, "Where?", method=Method("pv", layer_pruner=pruner), max_new_tokens=1)
    ctx = pruner.ctx
    kept = torch.zeros_like(ctx.visual)
    with torch.inference_mode():
        kept[pruner.select(ctx)] = True
    groups = ctx.groups[ctx.visual]
    for g in groups.unique():  # without stage 1: one group per temporal step
        members = (ctx.groups == g).nonzero().flatten()
        n = int(kept[members].sum())
        assert n == max(1, int(0.4 * len(members)))  # floor, as the reference code keeps
        top = pruner.seen[members].topk(n).indices
        assert kept[members[top]].all()  # the best-scoring ones
    assert ans.stats.kept_tokens == int(kept[ctx.visual].sum())


def test_fastv_drops_the_least_attended_tokens(lm, frames):
    pruner = RecordingFastV(keep=0.25, layer=0)
    ans = lm.ask(frames, "What?", method=Method("fastv", layer_pruner=pruner), max_new_tokens=1)
    ctx, scores = pruner.ctx, pruner.seen
    with torch.inference_mode():
        keep = pruner.select(ctx)
    visual_idx = ctx.visual.nonzero().flatten()
    kept_visual = visual_idx[torch.isin(visual_idx, keep)]
    dropped = visual_idx[~torch.isin(visual_idx, keep)]
    assert scores[kept_visual].min() >= scores[dropped].max()
    assert abs(ans.stats.kept_tokens - 0.25 * ans.stats.visual_tokens) <= 1


@pytest.mark.parametrize("name", ["fastv", "prunevid"])
def test_query_aware_presets_refused_in_sessions(lm, frames, name):
    import re

    from longvid.methods.registry import query_agnostic_methods

    listed = re.escape(", ".join(query_agnostic_methods()))  # every registered method that needs no question
    assert "knorm" in listed and "fastv" not in listed
    with pytest.raises(ValueError, match=rf"'{name}' needs the question.*query-agnostic method in sessions "
                                         rf"\({listed}\)"):
        lm.session(frames, method=name)


def test_pruner_layer_outside_the_model_is_a_clear_error(lm, frames):
    with pytest.raises(ValueError, match=r"method 'prunevid': layer=10 is past the model's last decoder layer: it has "
                                         r"2 layers \(0..1\)"):
        lm.ask(frames, "q?", method=longvid.get_method("prunevid", layer=10), max_new_tokens=1)


@pytest.mark.parametrize("layers, expected", [(32, 10), (28, 9), (4, 1), (2, 1), (1, 0)])
def test_prunevid_layer_is_a_relative_depth_unless_given(layers, expected):
    """The paper's K=10 of 32 layers, on every model; an explicit layer wins."""
    assert PruneVidPrune().layer_index(layers) == expected
    assert PruneVidPrune(layer=3).layer_index(layers) == 3
    assert PruneVidPrune(depth=0.5).layer_index(layers) == min(layers - 1, layers // 2)


def test_presets_route_overrides_and_reject_unknown_ones():
    m = longvid.get_method("prunevid", keep=0.3, layer=4, tau=0.9)
    assert m.layer_pruner.alpha == 0.3 and m.layer_pruner.layer == 4 and m.token_reducers[0].tau == 0.9
    assert longvid.get_method("fastv").layer_pruner.keep == 0.5
    with pytest.raises(ValueError, match="method 'fastv' has no setting 'tau'"):
        longvid.get_method("fastv", tau=0.5)
    with pytest.raises(ValueError, match="keep/budget do not apply"):
        longvid.get_method("prunevid-merge", keep=0.5)
