"""Reference inputs for equivalence tests: the whole prompt as one sequence, and the same prompt as transformers' own
``generate`` takes it, per family.

    from reference import prompt_inputs, transformers_inputs
"""

from __future__ import annotations

import torch


def prompt_inputs(lm, enc, question: str):
    """``[prefix, video block, question tail]`` as inputs_embeds (1, L, D), positions (R, 1, L) and the tail ids."""
    a = lm.adapter
    tail = a.tail_ids(enc.tail_template, question)
    block = enc.block
    embeds = torch.cat([a.lm.embed_tokens(torch.tensor(enc.prefix_ids)), block.embeds,
                        a.lm.embed_tokens(torch.tensor(tail))])[None]
    positions = torch.cat([a.text_positions(0, len(enc.prefix_ids)), block.positions,
                           a.text_positions(enc.next_position, len(tail))], dim=1)[:, None]
    return embeds, positions, tail


def hf_position_ids(positions: torch.Tensor) -> torch.Tensor:
    """Our (R, 1, L) positions as transformers takes them: (3, 1, L) for M-RoPE, (1, L) for 1-D RoPE."""
    return positions if positions.shape[0] > 1 else positions[0]


def transformers_inputs(lm, frames, question):
    """The same prompt as longvid builds, in the form transformers' own ``generate`` takes (its processor's layout)."""
    return lm.adapter.generate_inputs(frames.frames, frames.timestamps, question)


def deepstack(lm, enc, total: int):
    """The video block's DeepStack over a prompt ``[prefix, block, tail]`` of ``total`` tokens: ``(rows, features)``
    with rows (total,) bool at the block's visual entries and features (K, n, D), or None without DeepStack."""
    block = enc.block
    if block.residuals is None:
        return None
    rows = torch.zeros(total, dtype=torch.bool)
    n_pre = len(enc.prefix_ids)
    rows[n_pre:n_pre + len(block)] = block.visual
    return rows, block.residuals


def after_layer(lm, hidden, i: int, ds):
    """Hidden states after decoder layer ``i`` as transformers' Qwen3-VL text model leaves them (its own
    ``_deepstack_process``); unchanged without DeepStack or past its layers."""
    if ds is None or i >= len(ds[1]):
        return hidden
    return lm.adapter.model.model.language_model._deepstack_process(hidden, ds[0][None], ds[1][i])


def explicit_generate(lm, max_new_tokens: int, embeds, positions, ds=None):
    """Greedy decoding by transformers from explicit ``inputs_embeds`` (1, L, D) and ``positions`` (R, 1, L): its
    ``generate`` without DeepStack, else its Qwen3-VL text model (which takes the DeepStack rows) step by step.
    Returns the tokens and the logits of every step."""
    a = lm.adapter
    if ds is None:
        out = a.model.generate(inputs_embeds=embeds, attention_mask=torch.ones(1, embeds.shape[1]),
                               position_ids=hf_position_ids(positions), max_new_tokens=max_new_tokens,
                               do_sample=False, output_logits=True, return_dict_in_generate=True)
        return out.sequences[0].tolist(), [x[0] for x in out.logits]
    from transformers import DynamicCache

    text_model = a.model.model.language_model
    cache = DynamicCache(config=text_model.config)
    step = dict(visual_pos_masks=ds[0][None], deepstack_visual_embeds=list(ds[1]))
    nxt = int(positions.max()) + 1
    tokens, logits = [], []
    for _ in range(max_new_tokens):
        out = text_model(inputs_embeds=embeds, position_ids=positions, use_cache=True, **{a.lm.cache_kwarg: cache},
                         **step)
        logits.append(a.model.lm_head(out.last_hidden_state[0, -1]))
        tokens.append(int(logits[-1].argmax()))
        embeds = text_model.embed_tokens(torch.tensor([[tokens[-1]]]))
        positions, step, nxt = torch.full((positions.shape[0], 1, 1), nxt), {}, nxt + 1
    return tokens, logits
