"""Qwen3-VL's own facts: the clip-budget resize rule, per-step timestamps as text, the interleaved layout and its
positions (against transformers' get_rope_index), DeepStack through reducers, the prompt, the MoE variant.

    pytest tests/test_qwen3_vl.py -q
"""

from __future__ import annotations

import pytest
import torch

import longvid
from reference import prompt_inputs, transformers_inputs
from longvid.models.qwen3_vl import ClipPlan
from longvid.video import read_video

ATOL = 1e-5


@pytest.fixture(scope="module")
def q3(lms):
    return lms["qwen3_vl"]


def test_frame_size_is_the_video_processors():
    """transformers' own rule (cap_pixels_per_frame=True) at the processor's defaults, over many sizes and counts."""
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import smart_resize

    plan = ClipPlan.create()
    for t in (2, 3, 4, 7, 11, 16, 64, 255, 256, 768):
        per_frame = max(min(768 * 32 * 32, plan.longest_edge // t), int(plan.shortest_edge * 1.05))
        for h, w in ((84, 112), (360, 640), (480, 640), (720, 1280), (1080, 1920), (1920, 1080), (100, 3000)):
            theirs = smart_resize(t, h, w, temporal_factor=2, factor=32, min_pixels=plan.shortest_edge,
                                  max_pixels=per_frame * t)
            assert plan.frame_size(h, w, t) == theirs, (t, h, w)


def test_longer_clips_get_smaller_frames():
    plan = ClipPlan.create(longest_edge=24576 * 32 * 32)  # the released checkpoints' budget
    sizes = [plan.frame_size(1080, 1920, t) for t in (16, 32, 64, 128, 256, 768)]
    # up to 32 frames the per-frame ceiling (768 tokens), then the clip budget, then the floor (1.05 x 128 tokens)
    assert sizes == [(640, 1152), (640, 1152), (448, 832), (320, 576), (256, 480), (256, 480)]
    uncapped = ClipPlan.create(longest_edge=24576 * 32 * 32, cap_pixels_per_frame=False)  # transformers' default
    assert uncapped.frame_size(1080, 1920, 8) == (1088, 1920) and plan.frame_size(1080, 1920, 8) == (640, 1152)


def test_user_pixels_are_a_per_frame_ceiling_and_floor(tiny_dirs):
    plan = ClipPlan.create(max_pixels=64 * 64)
    assert plan.frame_size(1080, 1920, 2) == (32, 64)  # within 64 x 64 pixels a frame whatever the budget
    with pytest.raises(ValueError, match=r"--min-pixels 8192 must not exceed --max-pixels 4096|min_pixels"):
        ClipPlan.create(min_pixels=8192, max_pixels=4096)
    lm = longvid.load(tiny_dirs["qwen3_vl"], max_pixels=64 * 64)
    assert lm.adapter.frame_size(84, 112, 8) == (32, 64)


def test_timestamps_are_each_steps_mean_time_written_as_text(q3, frames):
    a = q3.adapter
    t = torch.as_tensor(frames.timestamps)
    torch.testing.assert_close(a.step_times(frames.timestamps), (t[0::2] + t[1::2]) / 2)
    odd = a.step_times(frames.timestamps[:3])
    assert odd.tolist() == [float(t[0] + t[1]) / 2, float(t[2])]  # the last frame pairs with itself
    assert a.tokenizer.decode(a.timestamp_ids(0.25)) == "<0.2 seconds>"  # f"{t:.1f}", as the processor
    enc = q3.encode(frames, longvid.get_method("full"))
    block, lm = enc.block, a.lm
    first = block.visual.nonzero()[0, 0]
    head = a.timestamp_ids(float(enc.tokens.time[0])) + [a.vision_start_id]
    with torch.inference_mode():
        torch.testing.assert_close(block.embeds[:first], lm.embed_tokens(torch.tensor(head)))
    assert int(first) == len(head) and not block.visual[:first].any()


def test_positions_equal_transformers_rope_index_over_the_whole_prompt(q3, long_frames):
    """Unlike Qwen2-VL, transformers' layout is right here, long videos included: every id matches."""
    a = q3.adapter
    enc = q3.encode(long_frames, longvid.get_method("full"))
    _, positions, _ = prompt_inputs(q3, enc, "Where?")
    ids = transformers_inputs(q3, long_frames, "Where?")
    theirs, _ = a.model.model.get_rope_index(ids["input_ids"], ids["mm_token_type_ids"],
                                             video_grid_thw=ids["video_grid_thw"])
    assert positions.shape == theirs.shape and torch.equal(positions, theirs)
    assert enc.tokens.grid_thw == (12, 2, 3)  # 24 frames: the clip budget gives 64 x 96 px frames (8 frames: 96 x 128)
    n_pre = len(enc.prefix_ids)
    assert int(positions[:, 0, n_pre:n_pre + len(enc.block)].max()) + 1 == enc.next_position


def test_prompt_drops_the_templates_outer_vision_markers(q3):
    a = q3.adapter
    prefix, tail = a.prompt_parts()
    assert a.tokenizer.decode(prefix) == "<|im_start|>user\n"  # no default system turn, as Qwen3-VL's template
    assert a.tokenizer.decode(a.tail_ids(tail, "Why?")) == "Why?<|im_end|>\n<|im_start|>assistant\n"
    system, _ = a.prompt_parts(system="Be brief.")
    assert a.tokenizer.decode(system) == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n"


def test_deepstack_rows_follow_every_reducer(q3, frames):
    """Subsetting (random, EVS), pooling (PruneVid stage 1) and selecting inside the LLM (FastV) keep each token's
    DeepStack features with it; the block hands them to the engine in block order."""
    full = q3.encode(frames, longvid.get_method("full"))
    features = full.tokens.extras["deepstack"]
    assert features.shape == (len(full.tokens), 2, q3.adapter.lm.embed_tokens.embedding_dim)
    for method in (longvid.get_method("random", keep=0.5), longvid.get_method("evs", keep=0.5)):
        enc = q3.encode(frames, method)
        index = [int(((full.tokens.thw == row).all(1)).nonzero()) for row in enc.tokens.thw]
        torch.testing.assert_close(enc.tokens.extras["deepstack"], features[index])
        order = enc.block.index[enc.block.index >= 0]
        torch.testing.assert_close(enc.block.residuals, enc.tokens.extras["deepstack"][order].transpose(0, 1))
    merged = q3.encode(frames, longvid.get_method("prunevid-merge", tau=0.0, cluster_ratio=0.5))
    assert len(merged.tokens) < len(full.tokens) and merged.block.residuals.shape[1] == len(merged.tokens)
    ans = q3.ask(frames, "q?", method="fastv", keep=0.5, max_new_tokens=2)  # pruned inside the LLM: runs
    assert ans.stats.kept_tokens == len(full.tokens) // 2


def test_moe_variant_equals_transformers_generate(tmp_path_factory, video_path):
    from longvid.tiny import save_tiny_model

    path = save_tiny_model(tmp_path_factory.mktemp("moe") / "qwen3_vl_moe", "qwen3_vl_moe", seed=0)
    lm = longvid.load(path)
    assert lm.adapter.family == "qwen3_vl_moe" and lm.adapter.lm.attention.qk_norm
    frames = read_video(video_path, fps=5, start=0.0, end=0.8)
    ours = lm.ask(frames, "What moves?", max_new_tokens=4, record_logits=True)
    out = lm.adapter.model.generate(**transformers_inputs(lm, frames, "What moves?"), max_new_tokens=4,
                                    do_sample=False, output_logits=True, return_dict_in_generate=True)
    assert ours.token_ids == out.sequences[0, -4:].tolist()[: len(ours.token_ids)]
    for mine, theirs in zip(ours.logits, out.logits):
        torch.testing.assert_close(mine, theirs[0], atol=ATOL, rtol=0)
    kept = lm.ask(frames, "q?", method="knorm", keep=0.5, max_new_tokens=1).stats
    assert kept.kept_tokens == kept.visual_tokens // 2


def test_processor_parity_when_torchvision_imports(q3, tiny_dirs, frames, long_frames):
    """Our resize (from the clip budget), normalisation and patchify equal transformers' Qwen3VLVideoProcessor
    (cap_pixels_per_frame=True) to 1e-5 after normalisation (the uint8 bicubic resize matches torchvision's exactly);
    needs torchvision."""
    pytest.importorskip("torchvision")
    from transformers import Qwen3VLVideoProcessor

    from transformers import AutoVideoProcessor

    a = q3.adapter
    proc = AutoVideoProcessor.from_pretrained(tiny_dirs["qwen3_vl"])  # the checkpoint's own settings
    assert isinstance(proc, Qwen3VLVideoProcessor) and proc.cap_pixels_per_frame
    for clip in (frames, long_frames):  # 8 frames: 96 x 128 px; 24 frames: the budget shrinks them to 64 x 96
        ref = proc(videos=[torch.from_numpy(clip.frames).permute(0, 3, 1, 2)], do_sample_frames=False,
                   return_tensors="pt")
        ours = a.preprocess(clip.frames, clip.timestamps, a.frame_size(84, 112, len(clip)))
        assert tuple(ref["video_grid_thw"][0].tolist()) == ours.grid_thw
        torch.testing.assert_close(ours.pixel_values, ref["pixel_values_videos"], atol=ATOL, rtol=0)


def test_a_checkpoint_saved_as_transformers_5_saves_processors_loads_the_same(tiny_dirs, tmp_path, frames):
    """transformers 5 writes processor settings nested in processor_config.json, and many released repos keep the
    chat template in chat_template.json (which the tokenizer does not read): same plan, same prompt, same answer."""
    import json
    import shutil

    src = tiny_dirs["qwen3_vl"]
    dst = tmp_path / "v5-layout"
    shutil.copytree(src, dst)
    video = json.loads((dst / "video_preprocessor_config.json").read_text())
    (dst / "video_preprocessor_config.json").unlink()
    (dst / "processor_config.json").write_text(json.dumps({"video_processor": video, "processor_class": "Qwen3VLProcessor"}))
    template = (dst / "chat_template.jinja").read_text()
    (dst / "chat_template.jinja").unlink()
    (dst / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    a, b = longvid.load(src), longvid.load(dst)
    assert a.adapter.pixels == b.adapter.pixels and a.adapter.prompt_parts() == b.adapter.prompt_parts()
    assert a.ask(frames, "Why?", max_new_tokens=3).token_ids == b.ask(frames, "Why?", max_new_tokens=3).token_ids
    (dst / "chat_template.json").unlink()
    with pytest.raises(ValueError, match=r"no chat template in .*: expected one in tokenizer_config.json, "
                                         r"chat_template.jinja or chat_template.json"):
        longvid.load(dst)


def test_timestamps_count_from_the_streams_start(q3, frames):
    """A stream whose first frame is at 100 s (an MPEG-TS cut) is written as the processor writes it: from 0."""
    from dataclasses import replace

    from longvid.video import Frames

    late = Frames(frames.frames, frames.timestamps + 100.0, frames.indices,
                  replace(frames.info, start_time=frames.info.start_time + 100.0), frames.planned)
    method = longvid.get_method("full")
    on_time, shifted = q3.encode(frames, method), q3.encode(late, method)
    torch.testing.assert_close(shifted.block.embeds, on_time.block.embeds, atol=0, rtol=0)
    assert float(on_time.tokens.time[0]) < 1.0


def test_frames_read_at_another_size_are_sized_from_that_size(q3, video_path):
    """The source (84 x 112) is resized once, as the processor does; frames a caller read square keep their shape."""
    square = read_video(video_path, fps=2, max_frames=8, size=(64, 64))
    enc = q3.encode(square, longvid.get_method("full"))
    assert enc.frame_shape == q3.adapter.frame_size(64, 64, 8) == (64, 64)
    assert q3.encode(read_video(video_path, fps=2, max_frames=8), longvid.get_method("full")).frame_shape == (96, 128)


def test_min_pixels_is_a_per_frame_floor():
    h, w = ClipPlan.create(min_pixels=200_000).frame_size(84, 112, 8)
    assert h * w >= 200_000 and (h, w) == (416, 544)  # enlarged, as Qwen2-VL's min_pixels enlarges


def test_time_squeezing_methods_are_refused_on_every_entry_point(q3, frames):
    """Not only ask and session: encode and a VideoSession built by hand refuse too, in one line."""
    from longvid.engine.session import VideoSession

    with pytest.raises(ValueError, match="method 'dpselect': below keep 1 it squeezes time"):
        q3.encode(frames, longvid.get_method("dpselect", keep=0.5))
    encoded = q3.encode(frames, longvid.get_method("full"))
    with pytest.raises(ValueError, match="method 'pivotkv': it squeezes time"):
        VideoSession(q3.adapter, encoded, longvid.get_method("pivotkv", keep=0.5))
