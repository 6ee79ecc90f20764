"""Tiny checkpoints of every supported family built in code: a byte-level tokenizer, real configs, random weights.

Used by the test suite and by ``longvid demo`` so that nothing is downloaded. The models are the real
transformers classes at a tiny size; with random weights their answers mean nothing.

    python -c "from longvid.tiny import save_tiny_model; print(save_tiny_model('/tmp/tiny-qwen2vl'))"
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

# The chat template shipped with Qwen2-VL-7B-Instruct and Qwen2.5-VL-7B-Instruct (tokenizer_config.json).
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# The shape of llava-hf's LLaVA-OneVision template: role, media placeholders each on its own line, then the text.
LLAVA_OV_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + ' ' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{% endif %}{{ '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# The shape of Qwen3-VL-*-Instruct's template: no default system turn, media as <|vision_start|><pad><|vision_end|>.
QWEN3_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)  # ids 256..263 after the 256 byte symbols
LLAVA_TOKENS = ("<image>", "<video>")  # ids 264, 265 in the LLaVA-OneVision tokenizer
LLAVA_TOKEN_IDS = dict(image_token_index=264, video_token_index=265)
VOCAB_SIZE = 272  # 256 bytes + 8 specials, padded to a multiple of 16
TOKEN_IDS = dict(vision_start_token_id=259, vision_end_token_id=260, image_token_id=262, video_token_id=263)
EOS_ID, PAD_ID = 258, 256  # <|im_end|>, <|endoftext|>
FAMILIES = ("qwen2_vl", "qwen2_5_vl", "llava_onevision", "qwen3_vl", "qwen3_vl_moe")
VARIANTS = {"qwen3_vl_moe": "qwen3_vl"}  # same adapter and layout as the family named; tested on its own
# Processor configs of the tiny checkpoints, laid out as the released ones (video_preprocessor_config.json), sized
# so that the tests' 112 x 84 clips give 2 x 3 tokens a step (Qwen2-VL: 56 x 84 px) or, by the clip budget, 3 x 4
# (Qwen3-VL, up to 18 frames: 96 x 128 px) and 2 x 3 (24 frames: 64 x 96 px).
CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
VIDEO_PROCESSORS = {
    "qwen2_vl": dict(video_processor_type="Qwen2VLVideoProcessor", size=dict(shortest_edge=56 * 56,
                     longest_edge=84 * 84), patch_size=14, temporal_patch_size=2, merge_size=2, image_mean=CLIP_MEAN,
                     image_std=CLIP_STD),
    "llava_onevision": dict(video_processor_type="LlavaOnevisionVideoProcessor", size=dict(height=56, width=56),
                            image_mean=[0.5] * 3, image_std=[0.5] * 3, resample=3),
    "qwen3_vl": dict(video_processor_type="Qwen3VLVideoProcessor", size=dict(shortest_edge=32 * 32 * 4,
                     longest_edge=96 * 96 * 24), patch_size=16, temporal_patch_size=2, merge_size=2,
                     image_mean=[0.5] * 3, image_std=[0.5] * 3, fps=2, min_frames=4, max_frames=768,
                     cap_pixels_per_frame=True),
}
VIDEO_PROCESSORS["qwen2_5_vl"] = VIDEO_PROCESSORS["qwen2_vl"] | dict(video_processor_type="Qwen2VLVideoProcessor")
VIDEO_PROCESSORS["qwen3_vl_moe"] = VIDEO_PROCESSORS["qwen3_vl"]


def build_tokenizer(family: str = "qwen2_vl"):
    """A byte-level Qwen2 tokenizer (no merges) with the family's special tokens and chat template (Qwen-VL's, or
    for LLaVA-OneVision the Qwen ones plus ``<image>``/``<video>`` and its template)."""
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    specials = SPECIAL_TOKENS + (LLAVA_TOKENS if family == "llava_onevision" else ())
    vocab = {ch: i for i, ch in enumerate(bytes_to_unicode().values())}
    for token in specials:
        vocab[token] = len(vocab)
    tok = Qwen2Tokenizer(vocab=vocab, merges=[], unk_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": list(specials[1:])})
    tok.chat_template = {"llava_onevision": LLAVA_OV_CHAT_TEMPLATE, "qwen3_vl": QWEN3_VL_CHAT_TEMPLATE,
                         "qwen3_vl_moe": QWEN3_VL_CHAT_TEMPLATE}.get(family, QWEN2_VL_CHAT_TEMPLATE)
    return tok


def tiny_config(family: str = "qwen2_vl", *, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4,
                num_kv_heads: int = 2, vision_depth: int = 2, tokens_per_second: int = 2, vocab_size: int = VOCAB_SIZE,
                intermediate_size: int | None = None, vision_embed_dim: int = 32, mrope_section=None,
                image_size: int = 56):
    """A real config of ``family`` at a tiny size, with the real patch geometry (Qwen2/2.5-VL: patch 14, merge 2,
    temporal patch 2; Qwen3-VL: patch 16, DeepStack after every vision block; LLaVA-OneVision: SigLIP at 56 px).

    ``mrope_section`` (t, h, w) must sum to ``head_dim / 2``; by default it splits like the real models (1:1.5:1.5).
    ``image_size`` is LLaVA-OneVision's square frame side (56 px: 2 x 2 tokens a frame; 384 as released: 14 x 14).
    """
    from transformers import Qwen2_5_VLConfig, Qwen2VLConfig

    head_dim = hidden_size // num_heads
    half = head_dim // 2  # mrope_section must sum to head_dim / 2
    section = list(mrope_section or [half - 2 * (half * 3 // 8), half * 3 // 8, half * 3 // 8])
    if sum(section) != half:
        raise ValueError(f"mrope_section={section} must sum to head_dim / 2 = {half}")
    text = dict(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
        max_position_embeddings=32768, bos_token_id=PAD_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID,
        rope_parameters=dict(rope_type="default", rope_theta=1e6, mrope_section=section),
    )
    if family == "qwen2_vl":
        vision = dict(depth=vision_depth, embed_dim=vision_embed_dim, hidden_size=hidden_size, num_heads=2, mlp_ratio=2,
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
        return Qwen2VLConfig(text_config=text, vision_config=vision, **TOKEN_IDS)
    if family == "llava_onevision":
        from transformers import LlavaOnevisionConfig

        text = {k: v for k, v in text.items() if k != "rope_parameters"} | dict(
            model_type="qwen2", rope_parameters=dict(rope_type="default", rope_theta=1e6))
        vision = dict(model_type="siglip_vision_model", hidden_size=vision_embed_dim,
                      intermediate_size=2 * vision_embed_dim, num_hidden_layers=vision_depth, num_attention_heads=2,
                      image_size=image_size, patch_size=14, vision_use_head=False)
        return LlavaOnevisionConfig(vision_config=vision, text_config=text, image_grid_pinpoints=[[image_size] * 2],
                                    vision_aspect_ratio="anyres_max_9", vision_feature_layer=-1,
                                    vision_feature_select_strategy="full", **LLAVA_TOKEN_IDS)
    if family in ("qwen3_vl", "qwen3_vl_moe"):
        from transformers import Qwen3VLConfig, Qwen3VLMoeConfig

        text = text | dict(head_dim=head_dim, rope_parameters=dict(rope_type="default", rope_theta=5e6,
                                                                   mrope_section=section, mrope_interleaved=True))
        if family == "qwen3_vl_moe":
            text |= dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=hidden_size // 2,
                         decoder_sparse_step=1)
        vision = dict(depth=vision_depth, hidden_size=vision_embed_dim, intermediate_size=2 * vision_embed_dim,
                      num_heads=2, patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                      out_hidden_size=hidden_size, num_position_embeddings=16,
                      deepstack_visual_indexes=list(range(vision_depth)))
        cls = Qwen3VLMoeConfig if family == "qwen3_vl_moe" else Qwen3VLConfig
        return cls(text_config=text, vision_config=vision, **TOKEN_IDS)
    if family == "qwen2_5_vl":
        vision = dict(depth=vision_depth, hidden_size=vision_embed_dim, intermediate_size=2 * vision_embed_dim,
                      num_heads=2,
                      out_hidden_size=hidden_size, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                      window_size=56, fullatt_block_indexes=[vision_depth - 1], tokens_per_second=tokens_per_second)
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **TOKEN_IDS)
    raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")


def build_tiny_model(family: str = "qwen2_vl", *, seed: int = 0, **config_kwargs):
    """Random-weight model of the real transformers class, in float32 and eval mode."""
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(tiny_config(family, **config_kwargs), dtype=torch.float32)
    model.generation_config.eos_token_id = EOS_ID
    model.generation_config.pad_token_id = PAD_ID
    return model.eval()


def save_tiny_model(path: str | Path, family: str = "qwen2_vl", *, seed: int = 0, **config_kwargs) -> Path:
    """Write a loadable checkpoint directory (config, safetensors, tokenizer with its chat template, video processor
    config) and return its path."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    build_tiny_model(family, seed=seed, **config_kwargs).save_pretrained(path)
    build_tokenizer(family).save_pretrained(path)
    processor = dict(VIDEO_PROCESSORS[family])
    if family == "llava_onevision":
        processor["size"] = dict(height=config_kwargs.get("image_size", 56), width=config_kwargs.get("image_size", 56))
    (path / "video_preprocessor_config.json").write_text(json.dumps(processor, indent=2) + "\n")
    return path
