"""Reference inputs for equivalence tests: the whole prompt as one sequence, built from an EncodedVideo.

    from reference import prompt_inputs
"""

from __future__ import annotations

import torch


def prompt_inputs(lm, enc, question: str):
    """``[prefix, visual, question tail]`` as inputs_embeds (1, L, D), positions (3, 1, L) and the tail ids."""
    a = lm.adapter
    tail = a.tail_ids(enc.tail_template, question)
    embeds = torch.cat([a.lm.embed_tokens(torch.tensor(enc.prefix_ids)), enc.tokens.embeds,
                        a.lm.embed_tokens(torch.tensor(tail))])[None]
    positions = torch.cat([torch.arange(len(enc.prefix_ids)).expand(3, -1), enc.tokens.positions,
                           enc.next_position + torch.arange(len(tail)).expand(3, -1)], dim=1)[:, None]
    return embeds, positions, tail
