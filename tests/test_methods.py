"""Every registered method: keep-everything equals ``full``, realised retention, determinism, stage mechanics.

    pytest tests/test_methods.py -q
"""

from __future__ import annotations

import pytest
import torch

from reference import after_layer, deepstack, prompt_inputs
from longvid.engine.cache import new_cache
from longvid.engine.forward import causal_mask, forward
from longvid.methods.base import LayerPruner
from longvid.methods.compose import Method
from longvid.methods.registry import METHODS, get_method
from longvid.methods.tokens.evs import EVS
from longvid.tokens import VisualTokens

ATOL = 1e-5


@pytest.fixture(scope="module")
def full_answers(lms, frames):
    return {f: lm.ask(frames, "What is it?", max_new_tokens=5, record_logits=True) for f, lm in lms.items()}


# "keep everything": keep=1, and for PruneVid no static slot (tau > 1), no merging, and a layer the tiny model has
KEEP_EVERYTHING = {"prunevid": dict(keep=1.0, tau=1.01, cluster_ratio=1.0, layer=0),
                   "prunevid-merge": dict(tau=1.01, cluster_ratio=1.0),
                   "retake": dict(keep=1.0, yarn_factor=None),  # the released recipe's YaRN RoPE changes the model
                   "citr-merge": dict(keep=1.0, max_ratio=0.0)}  # merges at most 0 % of the tokens


@pytest.mark.parametrize("name", list(METHODS))
def test_keep_everything_equals_full(lm, family, frames, full_answers, name):
    settings = KEEP_EVERYTHING.get(name, dict(keep=1.0))
    if lm.adapter.time_row is None and name in ("pivotkv", "retake"):  # time as text: keep positions (reforge off)
        settings = settings | dict(reforge=False)
    if name in ("citr", "citr-merge"):  # the bundled heads belong to longvid-tiny: heads for this checkpoint
        from longvid.methods.kv.citr import RetainingHeads

        settings = settings | dict(heads=RetainingHeads.for_model(lm.adapter, hidden=16))
    if name == "qtsplus":  # everything kept, in order, not re-encoded; modules for this checkpoint
        from longvid.methods.tokens.qtsplus import QTSPlus

        settings = dict(rho=1.0, reencode=False, n_max=None, modules=QTSPlus.for_model(lm.adapter))
    method = get_method(name, **settings)
    ans = lm.ask(frames, "What is it?", method=method, max_new_tokens=5, record_logits=True, chunk_size=6)
    ref = full_answers[family]
    assert ans.token_ids == ref.token_ids
    for a, b in zip(ans.logits, ref.logits):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    assert ans.stats.kept_tokens == ans.stats.visual_tokens == ref.stats.visual_tokens


@pytest.mark.parametrize("name", ["random", "evs", "knorm", "random-kv", "streamingllm", "citr"])
@pytest.mark.parametrize("keep", [0.3, 0.5, 0.77])
def test_realised_retention_within_one_token(lms, bundled, long_frames, name, keep):
    lm = bundled if name == "citr" else lms["qwen2_vl"]  # CITR's heads are bundled for the bundled models
    ans = lm.ask(long_frames, "q?", method=name, keep=keep, max_new_tokens=1, chunk_size=10)
    s = ans.stats
    assert abs(s.kept_tokens - keep * s.visual_tokens) <= 1
    assert abs(s.retention - keep) <= 1 / s.visual_tokens


@pytest.mark.parametrize("keep", [0.3, 0.5, 0.77])
def test_uniform_retention_within_half_a_temporal_step(lms, long_frames, keep):
    lm = lms["qwen2_vl"]
    s = lm.ask(long_frames, "q?", method="uniform", keep=keep, max_new_tokens=1).stats
    per_step = lm.adapter.tokens_per_step(*long_frames.frames.shape[1:3])
    assert s.kept_tokens % per_step == 0
    assert abs(s.kept_tokens - keep * s.visual_tokens) <= per_step / 2


def test_budget_is_an_absolute_token_count(lms, bundled, long_frames):
    lm = lms["qwen2_vl"]
    for name in ("random", "evs", "knorm", "random-kv", "streamingllm"):
        assert lm.ask(long_frames, "q?", method=name, budget=20, max_new_tokens=1).stats.kept_tokens == 20
    assert bundled.ask(long_frames, "q?", method="citr", budget=20, max_new_tokens=1).stats.kept_tokens == 20


def test_random_is_seeded(lms, long_frames):
    lm = lms["qwen2_vl"]
    enc = [lm.encode(long_frames, get_method("random", keep=0.4, seed=s)) for s in (0, 0, 1)]
    assert torch.equal(enc[0].tokens.thw, enc[1].tokens.thw)
    assert not torch.equal(enc[0].tokens.thw, enc[2].tokens.thw)


def tokens_from(embeds: torch.Tensor, grid) -> VisualTokens:
    t, h, w = grid
    thw = torch.stack(torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij"), -1).view(-1, 3)
    return VisualTokens(embeds, thw, thw.T.clone(), thw[:, 0].double(), torch.ones(len(thw), dtype=torch.long),
                        grid, len(thw))


def test_evs_scores_against_a_hand_worked_example():
    # 3 steps x 2 slots. Slot 0 never changes; slot 1 turns 90 degrees at step 1, then stays.
    e = torch.tensor([[1.0, 0.0], [1.0, 0.0],
                      [1.0, 0.0], [0.0, 1.0],
                      [1.0, 0.0], [0.0, 1.0]])
    tokens = tokens_from(e, (3, 1, 2))
    scores = EVS(keep=0.5).score(tokens, None)
    assert torch.isinf(scores[:2]).all()  # first step always kept
    torch.testing.assert_close(scores[2:], torch.tensor([0.0, 1.0, 0.0, 0.0]))
    kept = EVS(keep=0.5).reduce(tokens)  # 3 of 6: the first step and the changed slot
    assert kept.thw.tolist() == [[0, 0, 0], [0, 0, 1], [1, 0, 1]]
    assert EVS(keep=0.1).reduce(tokens).thw.tolist() == [[0, 0, 0], [0, 0, 1]]  # never below one step


def test_evs_needs_the_full_grid():
    tokens = tokens_from(torch.randn(6, 4), (3, 1, 2)).select(torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="full 3x1x2 grid"):
        EVS(keep=0.5).reduce(tokens)


class DropOddVisual(LayerPruner):
    """Test double: after layer 0, drop every other visual token."""

    layer = 0

    def select(self, ctx):
        visual_idx = ctx.visual.nonzero().flatten()
        dropped = visual_idx[1::2]
        keep = torch.ones_like(ctx.visual)
        keep[dropped] = False
        return keep.nonzero().flatten()


def test_layer_pruner_equals_per_layer_masking(lm, frames):
    """Pruning after layer K == masking the dropped keys in layers > K, and in every layer while decoding."""
    q = "Where?"
    pruner = DropOddVisual()
    ours = lm.ask(frames, q, method=Method("drop-odd", layer_pruner=pruner), max_new_tokens=2, record_logits=True)
    a = lm.adapter
    enc = lm.encode(frames, get_method("full"))
    embeds, positions, tail = prompt_inputs(lm, enc, q)
    n_pre, n_vis = len(enc.prefix_ids), len(enc.tokens)
    total = embeds.shape[1]
    dropped = torch.zeros(total, dtype=torch.bool)
    dropped[n_pre + enc.block.visual.nonzero().flatten()[1::2]] = True  # structural tokens (newline) stay
    assert ours.stats.kept_tokens == n_vis - int(dropped.sum())
    causal = causal_mask("eager", total, total, torch.float32, "cpu")
    pruned = causal.masked_fill(dropped, torch.finfo(torch.float32).min)
    ds = deepstack(lm, enc, total)  # DeepStack rows follow the pruned tokens: a model run with them masked
    with torch.inference_mode():
        cache, h = new_cache(a.lm.config), embeds
        cos_sin = a.lm.rope(h, positions)
        for i, layer in enumerate(a.lm.layers):
            h = layer(h, attention_mask=causal if i <= pruner.layer else pruned, position_embeddings=cos_sin,
                      use_cache=True, **{a.lm.cache_kwarg: cache})
            h = after_layer(lm, h, i, ds)
        first = a.lm.logits(a.lm.norm(h[:, -1:]))[0, 0]
        token = torch.tensor([[int(first.argmax())]])
        step_mask = torch.zeros(1, 1, 1, total + 1).masked_fill(torch.cat([dropped, torch.tensor([False])]),
                                                                torch.finfo(torch.float32).min)
        pos = a.text_positions(enc.next_position + len(tail), 1)[:, None]
        h2, _ = forward(a.lm, a.lm.embed_tokens(token), pos, cache, attention_mask=step_mask)
        second = a.lm.logits(h2[:, -1])[0]
    torch.testing.assert_close(ours.logits[0], first, atol=ATOL, rtol=0)
    torch.testing.assert_close(ours.logits[1], second, atol=ATOL, rtol=0)


def test_layer_pruner_must_keep_text(lm, frames):
    class DropText(LayerPruner):
        layer = 0

        def select(self, ctx):
            return torch.arange(1, len(ctx.visual))

    with pytest.raises(ValueError, match="visual tokens only"):
        lm.ask(frames, "q?", method=Method("bad", layer_pruner=DropText()), max_new_tokens=1)


def test_query_aware_method_refused_in_sessions(lm, frames):
    with pytest.raises(ValueError, match="query-agnostic.*full, uniform, random, evs, knorm"):
        lm.session(frames, method=Method("drop-odd", layer_pruner=DropOddVisual()))


@pytest.mark.parametrize("kwargs, match", [
    (dict(keep=0.0), r"keep=0.0 is invalid: keep must be a ratio in \(0, 1\]"),
    (dict(keep=1.5), r"keep=1.5 is invalid: keep must be a ratio in \(0, 1\]"),
    (dict(budget=0), "budget=0 is invalid: budget must be a positive"),
    (dict(keep=True), r"keep=True is invalid"),
    (dict(keep=0.5, budget=10), "not both"),
])
def test_bad_keep_or_budget(kwargs, match):
    with pytest.raises(ValueError, match=match):
        get_method("random", **kwargs)


@pytest.mark.parametrize("name", list(METHODS))
def test_keep_ratio_flag_says_whether_keep_applies(name):
    """``MethodSpec.keep_ratio`` (what ``eval synth`` reads to sweep --keep) agrees with the preset itself."""
    if METHODS[name].keep_ratio:
        assert get_method(name, keep=0.5).keep == 0.5
    else:
        with pytest.raises(ValueError, match="keep"):
            get_method(name, keep=0.5)


def test_unknown_method_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown method 'nope' \(method\); valid methods: full, uniform, random, "
                                         "evs, knorm"):
        get_method("nope")


def test_session_answers_do_not_change_the_session(lm, frames):
    s = lm.session(frames, method="knorm", keep=0.5, chunk_size=8)
    before = [layer.keys.clone() for layer in s.cache.layers]
    s.ask("One?", max_new_tokens=3)
    assert all(torch.equal(b, layer.keys) for b, layer in zip(before, s.cache.layers))


def test_extend_streams_under_the_press_budget(lm, video_path):
    from longvid.video import read_video

    first = read_video(video_path, fps=2, end=3.0)
    second = read_video(video_path, fps=2, start=3.0)
    s = lm.session(first, method="knorm", budget=10, chunk_size=8)
    n0 = s.visual_tokens
    s.extend(second)
    assert s.visual_tokens > n0
    assert s.kept_visual() == 10
    assert s.ask("What now?", max_new_tokens=2).stats.kept_tokens == 10


def test_an_extend_interrupted_mid_prefill_makes_the_session_refuse(lm, video_path):
    """Ctrl-C (or a cancelled server request) during an extend's prefill leaves part of the frames in the cache: the
    session says so instead of answering from it."""
    from longvid.video import read_video

    s = lm.session(read_video(video_path, fps=2, end=3.0), method="knorm", budget=10, chunk_size=8)

    def stop(stage, done, total):
        if stage == "prefill" and done < total:
            raise KeyboardInterrupt

    s.progress = stop
    with pytest.raises(KeyboardInterrupt):
        s.extend(read_video(video_path, fps=2, start=3.0))
    s.progress = None
    for call in (lambda: s.ask("What now?", max_new_tokens=2), lambda: s.extend(read_video(video_path, fps=2))):
        with pytest.raises(RuntimeError, match="this session cannot be used any more: an extend stopped while "
                                               "prefilling its frames .KeyboardInterrupt.*; build a new one"):
            call()


@pytest.mark.parametrize("name", list(METHODS))
def test_every_preset_runs_at_its_defaults_on_every_checkpoint(lms, bundled, bundled_v1, frames, name):
    """No --keep, no settings: each preset runs on every tiny family and on both bundled models (PruneVid's layer is
    a relative depth), and a reducing preset reduces, or says why it did not; a preset that squeezes time refuses a
    family that writes time as text (Qwen3-VL), in one line naming the fix; a learned preset runs on the model its
    bundled parts were trained for (each bundled model has its own) and refuses the others in one line."""
    for model in (*lms.values(), bundled, bundled_v1):
        if name in ("citr", "citr-merge", "qtsplus") and model not in (bundled, bundled_v1):  # learned parts
            with pytest.raises(ValueError, match=r"trained for another model .*; pass (heads|modules) trained for this "):
                model.ask(frames, "What is it?", method=name, max_new_tokens=1)
            continue
        if model.adapter.time_row is None and name in ("retake", "dpselect", "pivotkv"):
            with pytest.raises(ValueError, match=rf"method '{name}': .*squeezes time.*writes as text.*; pass "):
                model.ask(frames, "What is it?", method=name, max_new_tokens=1)
            continue
        s = model.ask(frames, "What is it?", method=name, max_new_tokens=1).stats
        assert 0 < s.kept_tokens <= s.visual_tokens
        if name in ("full", "prunevid-merge"):
            continue
        if s.kept_tokens == s.visual_tokens:
            assert any(f"{name} reduced nothing" in note for note in s.notes), (name, s.notes)
        else:
            assert not any("reduced nothing" in note for note in s.notes)


def test_defaults_are_the_documented_operating_points():
    assert get_method("evs").keep == get_method("uniform").keep == get_method("random").keep == 0.25
    assert get_method("dpselect").keep == 0.25 and get_method("knorm").keep == 0.5 and get_method("fastv").keep == 0.5
    retake = get_method("retake")
    assert retake.press.yarn_factor == 4.0 and len(retake.token_reducers) == 1  # the released configs
    assert get_method("retake", dpselect=False).token_reducers == []  # the Qwen2-VL VideoMME config
    assert get_method("pivotkv").press.yarn_factor is None


def test_a_run_that_cannot_meet_its_ratio_says_so(lms, video_path):
    """A 1-step clip at --keep 0.25: EVS keeps the first step whole, uniform keeps whole steps; both say so."""
    lm = lms["qwen2_vl"]
    for name in ("evs", "uniform"):
        s = lm.ask(video_path, "q?", method=name, keep=0.25, frames=2, max_new_tokens=1).stats
        assert s.kept_tokens == s.visual_tokens
        assert any(f"{name} reduced nothing" in note and "keep=0.25 cannot drop a token" in note for note in s.notes)
    s = lm.ask(video_path, "q?", method="evs", keep=0.1, frames=6, max_new_tokens=1).stats  # 3 steps of 6
    assert s.kept_tokens == s.visual_tokens // 3
    assert any("not the 2 that keep=0.1 asks for" in note for note in s.notes), s.notes


def test_a_session_reports_the_retake_default_that_reduces_nothing(lms, frames):
    s = lms["qwen2_vl"].ask(frames, "q?", method="retake", max_new_tokens=1).stats
    assert s.kept_tokens == s.visual_tokens
    assert any("its default operating point does not reduce a prompt of" in note for note in s.notes)
