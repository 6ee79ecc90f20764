"""Model adapters: loading, preprocessing parity, prompt layout, attention implementations, dtypes, sampling.

    pytest tests/test_models.py -q
"""

from __future__ import annotations

import pytest
import torch

import longvid
from longvid.engine.decode import Sampling
from longvid.models import load_adapter, model_family, pixel_plan

ATOL = 1e-5


def test_processor_parity_when_torchvision_imports(qwen_lm, frames):
    """Our resize/normalise/patchify equals transformers' Qwen2VLVideoProcessor (needs torchvision)."""
    pytest.importorskip("torchvision")
    from transformers import Qwen2VLVideoProcessor

    a = qwen_lm.adapter
    proc = Qwen2VLVideoProcessor(size={"shortest_edge": a.pixels.min_pixels, "longest_edge": a.pixels.max_pixels})
    ref = proc(videos=[torch.from_numpy(frames.frames).permute(0, 3, 1, 2)], do_sample_frames=False,
               return_tensors="pt")
    ours = a.preprocess(frames.frames, frames.timestamps)
    assert tuple(ref["video_grid_thw"][0].tolist()) == ours.grid_thw
    torch.testing.assert_close(ours.pixel_values, ref["pixel_values_videos"], atol=ATOL, rtol=0)


def test_patchify_layout_matches_the_vision_grid(qwen_lm, frames):
    a = qwen_lm.adapter
    inputs = a.preprocess(frames.frames, frames.timestamps)
    t, gh, gw = inputs.grid_thw
    assert inputs.pixel_values.shape == (t * gh * gw, 3 * a.temporal_patch * a.patch_size ** 2)
    assert inputs.step_times.tolist() == frames.timestamps[::2].tolist()
    h, w = a.frame_size(*frames.frames.shape[1:3])
    assert (h % 28, w % 28) == (0, 0) and a.pixels.min_pixels <= h * w <= a.pixels.max_pixels


def test_odd_frame_count_is_padded_with_the_last_frame(qwen_lm, frames):
    a = qwen_lm.adapter
    odd = a.preprocess(frames.frames[:3], frames.timestamps[:3])
    padded = a.preprocess(frames.frames[[0, 1, 2, 2]], frames.timestamps[[0, 1, 2, 2]])
    assert odd.grid_thw[0] == 2
    torch.testing.assert_close(odd.pixel_values, padded.pixel_values)


def test_prompt_uses_the_chat_template(qwen_lm):
    a = qwen_lm.adapter
    prefix, tail = a.prompt_parts()
    text = a.tokenizer.decode(prefix)
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
    assert text.endswith("<|vision_start|>")
    full = a.tokenizer.decode(a.tail_ids(tail, "Why?"))
    assert full == "<|vision_end|>Why?<|im_end|>\n<|im_start|>assistant\n"
    custom, _ = a.prompt_parts(system="Be brief.")
    assert a.tokenizer.decode(custom).startswith("<|im_start|>system\nBe brief.<|im_end|>")


def test_llava_processor_parity_when_torchvision_imports(lms, frames):
    """LLaVA-OneVision: our square resize and normalisation equal transformers' video processor (needs torchvision)."""
    pytest.importorskip("torchvision")
    from transformers import LlavaOnevisionVideoProcessor

    a = lms["llava_onevision"].adapter
    proc = LlavaOnevisionVideoProcessor(size={"height": a.side, "width": a.side}, image_mean=a.mean.flatten().tolist(),
                                        image_std=a.std.flatten().tolist())
    ref = proc(videos=[torch.from_numpy(frames.frames).permute(0, 3, 1, 2)], do_sample_frames=False,
               return_tensors="pt")
    torch.testing.assert_close(a.preprocess(frames.frames), ref["pixel_values_videos"], atol=ATOL, rtol=0)


def test_llava_frames_are_square_normalised_and_one_per_step(lms, frames):
    a = lms["llava_onevision"].adapter
    pixels = a.preprocess(frames.frames)
    assert pixels.shape == (1, len(frames), 3, a.side, a.side)  # aspect ratio not kept, as the HF processor does
    from longvid.video import resize_frames

    raw = resize_frames(frames.frames[:1], a.side, a.side)[0]
    assert a.mean.flatten().tolist() == a.std.flatten().tolist() == [0.5] * 3  # SigLIP's, from the video processor
    torch.testing.assert_close(pixels[0, 0], (raw / 255 - 0.5) / 0.5)
    enc = lms["llava_onevision"].encode(frames, longvid.get_method("full"))
    assert enc.steps == len(frames) and len(enc.tokens) == len(frames) * a.pooled ** 2
    assert a.pooled == 2  # 56 px / patch 14 = 4 x 4 patches, pooled 2 x 2 to ceil(4 / 2)


def test_llava_prompt_uses_the_chat_template_and_one_newline_after_the_frames(lms, frames):
    lm = lms["llava_onevision"]
    a = lm.adapter
    prefix, tail = a.prompt_parts()
    assert a.tokenizer.decode(prefix) == "<|im_start|>user "
    assert a.tokenizer.decode(a.tail_ids(tail, "Why?")) == "\nWhy?<|im_end|>\n<|im_start|>assistant\n"
    enc = lm.encode(frames, longvid.get_method("full"))
    block, n = enc.block, len(enc.tokens)
    assert block.visual.tolist() == [True] * n + [False]  # the learned newline: structural, never evicted
    torch.testing.assert_close(block.embeds[-1], a.model.model.image_newline.detach())
    assert block.positions.tolist() == [list(range(len(prefix), len(prefix) + n + 1))]  # 1-D: the prompt index
    assert enc.next_position == len(prefix) + n + 1


@pytest.mark.parametrize("kw", [dict(max_pixels=84 * 84), dict(min_pixels=56 * 56)])
def test_llava_refuses_pixel_budgets(tiny_dirs, kw):
    with pytest.raises(ValueError, match=r"max_pixels/min_pixels do not apply to LLaVA-OneVision.*56x56"):
        load_adapter(tiny_dirs["llava_onevision"], **kw)
    with pytest.raises(ValueError, match="do not apply to LLaVA-OneVision"):
        pixel_plan(tiny_dirs["llava_onevision"], **kw)


def test_qwen2_5_temporal_ids_scale_with_time(lms, video_path):
    """Qwen2.5-VL: temporal ids step by tokens_per_second * seconds per step; Qwen2-VL: by one per step."""
    from longvid.video import read_video

    sparse = read_video(video_path, fps=1)  # 1 s between frames -> 2 s per temporal step
    for family, step in (("qwen2_vl", 1), ("qwen2_5_vl", 2 * 2)):
        enc = lms[family].encode(sparse, longvid.get_method("full"))
        t0 = enc.tokens.positions[0]
        per_step = enc.tokens.tokens_per_step
        assert int(t0[per_step] - t0[0]) == step


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_attention_implementations_agree(tiny_dirs, frames, attn):
    ref = longvid.load(tiny_dirs["qwen2_vl"], min_pixels=56 * 56, max_pixels=84 * 84)
    other = longvid.load(tiny_dirs["qwen2_vl"], attn_implementation=attn, min_pixels=56 * 56, max_pixels=84 * 84)
    kw = dict(method="knorm", keep=0.5, chunk_size=7, max_new_tokens=4, record_logits=True)
    a, b = ref.ask(frames, "What?", **kw), other.ask(frames, "What?", **kw)
    assert a.token_ids == b.token_ids
    for x, y in zip(a.logits, b.logits):
        torch.testing.assert_close(x, y, atol=1e-4, rtol=0)


def test_bfloat16_runs_and_reports_half_the_kv_bytes(tiny_dirs, frames):
    f32 = longvid.load(tiny_dirs["qwen2_vl"], min_pixels=56 * 56, max_pixels=84 * 84)
    bf16 = longvid.load(tiny_dirs["qwen2_vl"], dtype="bfloat16", min_pixels=56 * 56, max_pixels=84 * 84)
    a, b = f32.ask(frames, "What?", max_new_tokens=2), bf16.ask(frames, "What?", max_new_tokens=2)
    assert bf16.adapter.dtype == torch.bfloat16
    assert b.stats.kv_bytes * 2 == a.stats.kv_bytes


def test_sampling_is_seeded(lm, frames):
    s = Sampling(do_sample=True, temperature=1.5, top_k=50, top_p=0.95, seed=3)
    runs = [lm.ask(frames, "What?", max_new_tokens=6, sampling=s).token_ids for _ in range(2)]
    other = lm.ask(frames, "What?", max_new_tokens=6, sampling=Sampling(do_sample=True, temperature=1.5, seed=4))
    assert runs[0] == runs[1] and runs[0] != other.token_ids


@pytest.mark.parametrize("kwargs, match", [
    (dict(temperature=0.0), "temperature must be > 0"),
    (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
    (dict(top_k=-1), "top_k must be >= 0"),
])
def test_bad_sampling_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Sampling(do_sample=True, **kwargs)


def test_unsupported_and_missing_model_dirs(tmp_path):
    with pytest.raises(ValueError, match="no model checkpoint .*nothing.*does not exist; pass path"):
        load_adapter(tmp_path / "nothing")
    (tmp_path / "config.json").write_text('{"model_type": "llava"}')
    with pytest.raises(ValueError, match="unsupported model family 'llava' in .*config.json; supported families: "
                                         "qwen2_vl, qwen2_5_vl"):
        model_family(tmp_path)


def test_pixel_plan_reads_the_checkpoint_without_weights(tiny_dirs):
    plan = pixel_plan(tiny_dirs["qwen2_5_vl"], max_pixels=84 * 84)
    assert (plan.patch_size, plan.merge, plan.temporal_patch) == (14, 2, 2)
    assert plan.min_pixels <= plan.max_pixels == 84 * 84
    with pytest.raises(ValueError, match="min_pixels=10000 must not exceed max_pixels=5000"):
        pixel_plan(None, min_pixels=10_000, max_pixels=5_000)


def test_full_refuses_a_reduction_request():
    with pytest.raises(ValueError, match="method 'full' keeps every visual token"):
        longvid.get_method("full", keep=0.5)


def test_loading_draws_no_progress_bar_unless_asked(tiny_dirs, capfd):
    longvid.load(tiny_dirs["qwen2_vl"])
    assert "Loading weights" not in capfd.readouterr().err
    longvid.load(tiny_dirs["qwen2_vl"], progress=True)
    assert "Loading weights" in capfd.readouterr().err
    from transformers.utils import logging as hf_logging

    assert hf_logging.is_progress_bar_enabled()  # the global setting is left as it was


def test_a_directory_named_dot_is_a_checkpoint_path(tiny_dirs, monkeypatch):
    monkeypatch.chdir(tiny_dirs["qwen2_vl"])
    assert model_family(".") == "qwen2_vl"
    with pytest.raises(ValueError, match="no model given"):
        model_family("")


def test_frames_are_resized_once_from_the_source(tiny_dirs, video_path):
    """With min_pixels == max_pixels Qwen2-VL's resize rule is not idempotent (112x84 -> 56x84 -> 84x112): frames
    are sized from the source as the processor sizes them, not again from the already-resized frames."""
    from longvid.video import smart_resize

    lm = longvid.load(tiny_dirs["qwen2_vl"], max_pixels=84 * 84)  # min_pixels follows max_pixels down
    assert smart_resize(84, 112, factor=28, min_pixels=84 * 84, max_pixels=84 * 84) == (56, 84)
    assert smart_resize(56, 84, factor=28, min_pixels=84 * 84, max_pixels=84 * 84) == (84, 112)
    enc = lm.encode(video_path, longvid.get_method("full"), sampling=longvid.pipeline.SamplingOptions(fps=2))
    assert enc.tokens.grid_thw[1:] == (2, 3) and enc.visual_tokens == len(enc.tokens) == 6 * 6
