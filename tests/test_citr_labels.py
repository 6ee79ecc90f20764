"""CITR's labels (`longvid.train.citr_labels`): the answer rows' pre-softmax attention logits onto the visual tokens
equal transformers' own eager attention map (up to each row's softmax constant) on every family, given the engine's
positions (the original Qwen layout, pinned against transformers in test_engine.py, which also records where
transformers 5.23+ places text after a video differently); plain 1-D positions, the released code's bug, give other
labels; labels are the logits' maxima over the query-head group and the answer rows (or, ``rows="prompt"``, the
prompt's text after the video).

    pytest tests/test_citr_labels.py -q
"""

from __future__ import annotations

import pytest
import torch

import longvid
from longvid.train.citr_labels import answer_attention
from reference import hf_position_ids

QUESTION, ANSWER = "What colour was the square?", "It was green."


@pytest.fixture(scope="module")
def eager(tiny_dirs, family):
    return longvid.load(tiny_dirs[family], attn_implementation="eager")


@pytest.mark.parametrize("rows", ["answer", "prompt"])
def test_logits_equal_transformers_eager_attention_at_its_own_positions(eager, frames, rows):
    a = eager.adapter
    raw = answer_attention(eager, frames, QUESTION, ANSWER, reduce=False, rows=rows)  # (layers, H_q, n_rows, n_visual)
    answer_ids = a.tokenizer(ANSWER, add_special_tokens=False)["input_ids"]
    kwargs = a.generate_inputs(frames.frames, frames.timestamps, QUESTION)
    n_prompt = kwargs["input_ids"].shape[1]
    extra = torch.tensor([answer_ids])
    kwargs["input_ids"] = torch.cat([kwargs["input_ids"], extra], dim=1)
    kwargs["attention_mask"] = torch.ones_like(kwargs["input_ids"])
    if "mm_token_type_ids" in kwargs:
        kwargs["mm_token_type_ids"] = torch.cat([kwargs["mm_token_type_ids"], torch.zeros_like(extra)], dim=1)
    enc = eager.encode(frames, longvid.get_method("full"))
    tail = a.tail_ids(enc.tail_template, QUESTION)
    positions = torch.cat([a.text_positions(0, len(enc.prefix_ids)), enc.block.positions,
                           a.text_positions(enc.next_position, len(tail) + len(answer_ids))], dim=1)[:, None]
    assert positions.shape[-1] == kwargs["input_ids"].shape[1]  # the same prompt, token for token
    with torch.inference_mode():
        attentions = a.model(**kwargs, position_ids=hf_position_ids(positions), output_attentions=True).attentions
    visual = len(enc.prefix_ids) + enc.block.visual.nonzero().flatten()  # the same prompt, token for token
    answer_rows = (torch.arange(n_prompt, n_prompt + len(answer_ids)) if rows == "answer" else  # the answer, or
                   torch.arange(len(enc.prefix_ids) + len(enc.block), n_prompt))  # the text after the video block
    assert raw.shape == (len(attentions), a.lm.config.num_attention_heads, len(answer_rows), len(visual))
    for layer, probs in enumerate(attentions):
        logp = probs[0][:, answer_rows][:, :, visual].float().log()  # = logit - the row's logsumexp
        ours = raw[layer]
        torch.testing.assert_close(ours - ours.mean(-1, keepdim=True), logp - logp.mean(-1, keepdim=True),
                                   atol=2e-4, rtol=1e-4)


def test_labels_are_the_maxima_over_the_group_and_the_answer_rows(lm, frames):
    raw = answer_attention(lm, frames, QUESTION, ANSWER, reduce=False)
    labels = answer_attention(lm, frames, QUESTION, ANSWER)
    kv = lm.adapter.lm.config.num_key_value_heads
    layers, heads, n_answer, n_visual = raw.shape
    assert labels.shape == (layers, kv, n_visual) and labels.dtype == torch.float32
    expected = raw.view(layers, kv, heads // kv, n_answer, n_visual).amax(dim=(2, 3))
    torch.testing.assert_close(labels, expected, atol=0, rtol=0)
    assert labels.std() > 0  # not a constant


def test_wrong_positions_would_change_the_labels(lm, frames, monkeypatch):
    """The released code's bug (plain 1-D positions 0..L-1 for the whole prompt) gives other labels: the check above
    can tell them apart."""
    a = lm.adapter
    if a.position_rows == 1 and a.family == "llava_onevision":
        pytest.skip("1-D RoPE over a prompt without gaps: plain positions are the right ones")
    right = answer_attention(lm, frames, QUESTION, ANSWER)
    from longvid.engine import forward as engine_forward

    real = engine_forward.forward

    def one_d(model, hidden, positions, cache, **kw):
        flat = torch.arange(positions.shape[-1]).expand_as(positions)
        return real(model, hidden, flat, cache, **kw)

    monkeypatch.setattr(engine_forward, "forward", one_d)
    wrong = answer_attention(lm, frames, QUESTION, ANSWER)
    assert not torch.allclose(right, wrong, atol=1e-3)


def test_bad_answer_is_one_line(lm, frames):
    with pytest.raises(ValueError, match="answer='' is invalid"):
        answer_attention(lm, frames, QUESTION, "")


def test_oracle_press_keeps_each_heads_top_labels_however_chunked():
    from longvid.methods.kv.oracle import OraclePress
    from test_kv_baselines import HEADS, LAYERS, run_press

    labels = torch.randn(LAYERS, HEADS, 50, generator=torch.Generator().manual_seed(0))
    for chunk in (1, 7, 50):
        kept = run_press(OraclePress(budget=9, labels=labels), n_visual=50, chunk=chunk)
        for layer in range(LAYERS):
            expected = labels[layer].topk(9, dim=-1).indices.sort(dim=-1).values
            assert torch.equal(kept[layer], expected)


def test_oracle_method_runs_and_at_keep_one_equals_full(lm, frames):
    from longvid.train.citr_labels import oracle_method

    full = lm.ask(frames, QUESTION, max_new_tokens=2, record_logits=True)
    everything = lm.ask(frames, QUESTION, method=oracle_method(lm, frames, QUESTION, ANSWER, keep=1.0),
                        max_new_tokens=2, record_logits=True, chunk_size=8)
    assert everything.token_ids == full.token_ids
    torch.testing.assert_close(everything.logits[0], full.logits[0], atol=1e-4, rtol=0)
    small = lm.ask(frames, QUESTION, method=oracle_method(lm, frames, QUESTION, ANSWER, budget=10), chunk_size=8,
                   max_new_tokens=2)
    assert small.stats.kept_tokens == 10


def test_the_oracle_needs_labels():
    from longvid.methods.kv.oracle import OraclePress

    with pytest.raises(ValueError, match="needs labels"):
        OraclePress(keep=0.5)
