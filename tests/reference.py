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
    a = lm.adapter
    prefix, tail_template = a.prompt_parts()
    tail = a.tail_ids(tail_template, question)
    if a.family == "llava_onevision":  # <video> x (tokens per frame x frames + the newline)
        pixels = a.preprocess(frames.frames)
        n = a.tokens_per_step(0, 0) * len(frames) + 1
        ids = torch.tensor([prefix + [a.video_token_id] * n + tail])
        return dict(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values_videos=pixels)
    inputs = a.preprocess(frames.frames, frames.timestamps)
    t, h, w = a.merged_grid(inputs.grid_thw)
    ids = torch.tensor([prefix + [a.video_token_id] * (t * h * w) + tail])
    kwargs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values_videos=inputs.pixel_values,
                  video_grid_thw=torch.tensor([inputs.grid_thw]), mm_token_type_ids=(ids == a.video_token_id).int() * 2)
    if a.family == "qwen2_5_vl":
        kwargs["second_per_grid_ts"] = torch.tensor([inputs.seconds_per_step])
    return kwargs
