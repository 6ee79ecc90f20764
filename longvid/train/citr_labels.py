"""CITR's training labels: how strongly the ground-truth answer attends to each visual token, per layer and KV head.

The frozen model reads the whole teacher-forced sequence ``[chat prefix | video block | question tail | answer]`` in
one forward, at the positions longvid's engine gives it for ``full`` (the family's own layout: M-RoPE rows for the
video, text continuing after the video's largest position, the answer right after the tail, as decoding would place
it). At every layer the queries of the answer rows and the keys of the visual tokens are taken where the attention
itself computes them (the family's capture points: after bias, after QK-norm where the family has one, then its
RoPE), and the label of a visual token for KV head ``h`` is the largest pre-softmax logit ``q.k * scaling`` over
the query heads of ``h``'s group and over the answer rows (Locret's and CITR's label; logit scale, not
probabilities). Only answer rows x visual columns are computed, never the sequence x sequence map, and no
``output_attentions`` pass is needed.

``rows="prompt"`` (not the paper's): the query rows are the prompt's text after the video (question, options and
the assistant's turn header) instead of the answer. On longvid-tiny 2 the answer letter's attention onto the video
ranks the tokens that show the events no better than chance (AUC 0.51) while the prompt's ranks them at 0.82: the
model reads the evidence at the question and the answer reads the question (results/citr_tiny2.md). The heads
still see only each token's own q/k/v, so the press stays question-agnostic whichever rows trained them.

Differences from the released code (``src/data_gen.py``): positions are always explicit. The original calls the
model without ``cache_position``, so after its first sample the vendored forward takes its decode branch with
``rope_deltas`` set and gives every later prompt plain 1-D positions ``0..L-1`` and the answer ``0..L_ans-1``;
``tests/test_citr_labels.py`` checks the logits against transformers' own eager attention, with its own positions,
which that bug would fail. The answer is its tokens alone (no end-of-turn token after it).

    from longvid.train.citr_labels import answer_attention, oracle_method
    labels = answer_attention(lm, frames, "What colour was the square?", "B")   # (layers, kv_heads, visual tokens)
    lm.ask(frames, "What colour was the square?", method=oracle_method(lm, frames, "What colour ...?", "B", keep=0.25))
"""

from __future__ import annotations

import torch


class _Collector:
    """The ``observes`` side of a press, used only to read each layer's queries, keys (and values) (`observing`)."""

    observes = True

    def __init__(self, n_visual: int, kv_heads: int, reduce: bool, inputs: bool):
        self.n_visual, self.kv_heads, self.reduce, self.inputs = n_visual, kv_heads, reduce, inputs
        self.observes_values = inputs

    def observe(self, layer_idx: int, q: torch.Tensor, k: torch.Tensor, rope, scaling: float, v=None):
        n = self.n_visual
        qa = rope(q)[:, :, n:].float()  # (1, H_q, n_rows, d): the query rows (answer or prompt), rotated
        kv = rope(k)[:, :, :n].float()  # (1, H_kv, n_visual, d)
        group = qa.shape[1] // self.kv_heads
        logits = torch.matmul(qa, kv.repeat_interleave(group, dim=1).transpose(-1, -2))[0] * scaling
        label = logits if not self.reduce else logits.view(self.kv_heads, group, -1, n).amax(dim=(1, 2))
        if not self.inputs:
            return label
        return label, (q[:, :, :n].clone(), k[:, :, :n].clone(), v[:, :, :n].clone())  # what CITR's heads read


@torch.inference_mode()
def answer_attention(lm, frames, question: str, answer: str, *, system: str | None = None,
                     reduce: bool = True, rows: str = "answer") -> torch.Tensor:
    """Labels (layers, H_kv, n_visual) float32 for one (video, question, answer), or with ``reduce=False`` the raw
    logits (layers, H_q, n_rows, n_visual) they are the maxima of (for tests on small inputs). ``rows``: ``answer``
    (the paper's) or ``prompt`` (the text between the video and the answer).

    ``frames`` are decoded frames (`LongVid.read`); visual tokens are in the order the engine caches them.
    """
    observed = _teacher_forced(lm, frames, question, answer, system, reduce, inputs=False, rows=rows)
    return torch.stack([observed[i] for i in range(len(observed))])


@torch.inference_mode()
def labels_and_inputs(lm, frames, question: str, answer: str, *, system: str | None = None, rows: str = "answer"):
    """From the same single forward: the labels (layers, H_kv, n_visual) and, per layer, what CITR's heads read for
    each visual token, its pre-RoPE ``(q, k, v)`` (each (1, H, n_visual, d)). Visual tokens see only what precedes
    them, so these equal what a prefill of the prompt alone (chunked or not) gives the heads."""
    observed = _teacher_forced(lm, frames, question, answer, system, True, inputs=True, rows=rows)
    layers = range(len(observed))
    return torch.stack([observed[i][0] for i in layers]), [observed[i][1] for i in layers]


LABEL_ROWS = ("answer", "prompt")


def _teacher_forced(lm, frames, question, answer, system, reduce: bool, inputs: bool, rows: str = "answer") -> dict:
    from longvid.engine.cache import new_cache
    from longvid.engine.forward import forward, observing
    from longvid.methods.registry import get_method

    if not isinstance(answer, str) or not answer.strip():
        raise ValueError(f"answer={answer!r} is invalid: pass the ground-truth answer text")
    a = lm.adapter
    answer_ids = a.tokenizer(answer, add_special_tokens=False)["input_ids"]
    enc = lm.encode(frames, get_method("full"), system=system)
    block = enc.block
    tail = a.tail_ids(enc.tail_template, question)
    text = torch.tensor(list(enc.prefix_ids)), torch.tensor(tail + answer_ids)
    device = a.device
    embeds = torch.cat([a.lm.embed_tokens(text[0].to(device)), block.embeds.to(device, a.dtype),
                        a.lm.embed_tokens(text[1].to(device))])[None]
    n_pre, n_block = len(enc.prefix_ids), len(block)
    positions = torch.cat([a.text_positions(0, n_pre, device), block.positions.to(device),
                           a.text_positions(enc.next_position, len(text[1]), device)], dim=1)[:, None]
    total = embeds.shape[1]
    visual_rows = n_pre + block.visual.nonzero().flatten().to(device)
    if rows not in LABEL_ROWS:
        raise ValueError(f"rows={rows!r} is invalid: pass answer (the paper's labels) or prompt")
    answer_rows = (torch.arange(total - len(answer_ids), total, device=device) if rows == "answer" else
                   torch.arange(n_pre + n_block, total - len(answer_ids), device=device))
    residuals = None
    if block.residuals is not None:  # Qwen3-VL's DeepStack, added at the video block's visual rows
        rows = torch.zeros(total, dtype=torch.bool, device=device)
        rows[n_pre:n_pre + n_block] = block.visual.to(device)
        residuals = rows, block.residuals
    collector = _Collector(len(visual_rows), a.lm.config.num_key_value_heads, reduce, inputs)
    with observing(a.lm, collector, torch.cat([visual_rows, answer_rows])) as observed:
        forward(a.lm, embeds, positions, new_cache(a.lm.config), residuals=residuals)
    return observed


def oracle_method(lm, frames, question: str, answer: str, *, keep: float | None = None, budget: int | None = None,
                  system: str | None = None, rows: str = "answer"):
    """The evaluation-only upper bound of a learned press: a `Method` whose KV press keeps, per layer and KV head,
    the visual entries the true answer attends to most (`answer_attention`) under ``keep`` / ``budget``."""
    from longvid.methods.compose import Method
    from longvid.methods.kv.oracle import OraclePress

    labels = answer_attention(lm, frames, question, answer, system=system, rows=rows)
    press = OraclePress(keep if keep is not None or budget is not None else 0.5, budget, labels=labels)
    return Method("oracle", press=press, keep=press.keep, budget=press.budget)
