"""The Python API: load a local checkpoint, then ask questions about videos with any registered method.

    import longvid
    lm = longvid.load("/models/Qwen2.5-VL-7B-Instruct")
    print(lm.ask("talk.mp4", "What is on the slide?", method="evs", keep=0.25).text)
    s = lm.session("talk.mp4", method="knorm", budget=8192); s.ask("Who speaks first?"); s.ask("How many slides?")
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from longvid.engine.decode import Sampling
from longvid.errors import option
from longvid.engine.session import (DEFAULT_CHUNK, STAGES, Answer, EncodedVideo, VideoSession, answer_with_query,
                                    check_request)
from longvid.engine.encode import encode_frames
from longvid.methods.base import TokenPlan
from longvid.methods.compose import Method
from longvid.methods.registry import get_method
from longvid.models import load_adapter
from longvid.video import Frames, plan_indices, probe, read_video
from longvid.video.options import SamplingOptions


def load(path: str | Path, *, device: str = "cpu", dtype="auto", attn_implementation: str = "sdpa",
         min_pixels: int | None = None, max_pixels: int | None = None, progress: bool = False) -> LongVid:
    """Load a Qwen2-VL / Qwen2.5-VL checkpoint from a local directory (``"longvid-tiny"``: the bundled model).

    ``progress`` shows transformers' weight-loading bar (off by default: a library should not draw on the terminal).
    """
    return LongVid(load_adapter(path, device=device, dtype=dtype, attn_implementation=attn_implementation,
                                min_pixels=min_pixels, max_pixels=max_pixels, progress=progress))


class LongVid:
    """A loaded model with the whole pipeline: sample, select, encode, reduce, prefill, decode."""

    def __init__(self, adapter):
        self.adapter = adapter

    # ----- encoding ------------------------------------------------------------------------------------------
    def read(self, video, sampling: SamplingOptions | None = None, progress=None) -> Frames:
        """Frames from a path (decoded with PyAV, upright, resized to the model's frame size as they are decoded, so
        memory holds the sampled frames at model resolution) or a ready ``Frames`` object (returned as is).

        ``progress(stage, done, total)`` sees ``"decode"`` after every frame.
        """
        if isinstance(video, Frames):
            return video
        s = sampling or SamplingOptions()
        step = None if progress is None else (lambda done, total: progress("decode", done, total))
        return read_video(video, fps=s.fps, num_frames=s.frames, max_frames=s.max_frames, start=s.start, end=s.end,
                          size=self.adapter.frame_size, progress=step)

    @torch.inference_mode()
    def encode(self, video, method: Method, *, sampling: SamplingOptions | None = None, question: str | None = None,
               system: str | None = None, progress=None) -> EncodedVideo:
        """Run every stage before the LLM. ``question`` is needed only by query-aware token reducers."""
        t0 = time.perf_counter()
        frames = self.read(video, sampling, progress)
        decode_seconds = time.perf_counter() - t0
        adapter = self.adapter
        prefix_ids, tail_template = adapter.prompt_parts(system)
        query_embeds = None  # only query-aware reducers read the question's embeddings
        if question is not None and any(r.query_aware for r in method.token_reducers):
            query_embeds = question_embeds(adapter, question)
        enc = encode_frames(adapter, frames, method, start=len(prefix_ids), query_embeds=query_embeds,
                            question=question)
        if progress is not None:
            progress("vision", 1, 1)
        seconds = dict.fromkeys(STAGES, 0.0) | enc.seconds | {"decode": decode_seconds}
        return EncodedVideo(enc.tokens, enc.block, enc.visual_tokens, prefix_ids, tail_template, enc.next_position,
                            enc.seconds_per_step, seconds, enc.steps, enc.size,
                            frames.frames_planned, len(frames))

    # ----- questions -----------------------------------------------------------------------------------------
    def ask(self, video, question: str, *, method: str | Method = "full", keep: float | None = None,
            budget: int | None = None, fps: float | None = None, frames: int | None = None,
            max_frames: int | None = None, start: float | None = None, end: float | None = None,
            max_new_tokens: int = 128, sampling: Sampling | None = None, chunk_size: int = DEFAULT_CHUNK,
            system: str | None = None, record_logits: bool = False, progress=None) -> Answer:
        """Answer one question about a video (a path or ``Frames``) with a registered method."""
        method = self.check(method, keep, budget, question=question, max_new_tokens=max_new_tokens,
                            chunk_size=chunk_size)
        opts = SamplingOptions(fps, frames, max_frames, start, end)
        encoded = self.encode(video, method, sampling=opts, question=question, system=system, progress=progress)
        return self.answer(encoded, question, method, max_new_tokens=max_new_tokens, sampling=sampling,
                           chunk_size=chunk_size, record_logits=record_logits, progress=progress)

    def answer(self, encoded: EncodedVideo, question: str, method: Method, *, max_new_tokens: int = 128,
               sampling: Sampling | None = None, chunk_size: int = DEFAULT_CHUNK, record_logits: bool = False,
               progress=None, stream=None) -> Answer:
        """Answer ``question`` about a video ``encode`` prepared with ``method`` (and, for a query-aware method, that
        question): prefill, compress, decode. ``stream(token_id)`` sees each new token as it is decoded."""
        if method.query_aware:
            return answer_with_query(self.adapter, encoded, method, question, max_new_tokens=max_new_tokens,
                                     sampling=sampling, record_logits=record_logits, progress=progress,
                                     stream=stream)
        session = VideoSession(self.adapter, encoded, method, chunk_size=chunk_size, progress=progress)
        return session.ask(question, max_new_tokens=max_new_tokens, sampling=sampling, record_logits=record_logits,
                           stream=stream)

    def session(self, video, *, method: str | Method = "full", keep: float | None = None, budget: int | None = None,
                fps: float | None = None, frames: int | None = None, max_frames: int | None = None,
                start: float | None = None, end: float | None = None, chunk_size: int = DEFAULT_CHUNK,
                system: str | None = None, progress=None) -> VideoSession:
        """Encode a video once into a (compressed) cache; ``session.ask`` then answers many questions."""
        method = self.check(method, keep, budget, chunk_size=chunk_size)
        VideoSession.check_method(method)  # fail before spending time on decoding and encoding
        opts = SamplingOptions(fps, frames, max_frames, start, end)
        encoded = self.encode(video, method, sampling=opts, system=system, progress=progress)
        return VideoSession(self.adapter, encoded, method, chunk_size=chunk_size, progress=progress)

    def check(self, method: str | Method, keep: float | None = None, budget: int | None = None, *,
              question: str | None = None, max_new_tokens: int = 1, chunk_size: int = DEFAULT_CHUNK) -> Method:
        """The Method to run, after checking everything that can be checked before decoding: the method and its
        settings against this model, the question, ``max_new_tokens`` and ``chunk_size``. Raises ValueError."""
        method = _resolve(method, keep, budget)
        method.check_model(self.adapter)
        check_request(question, max_new_tokens, chunk_size)
        return method

    def info(self, video, sampling: SamplingOptions | None = None) -> dict:
        """Duration, fps, codec, size and the planned visual-token count at the given sampling."""
        return video_info(video, self.adapter.pixels, sampling)


def video_info(video, pixels, sampling: SamplingOptions | None = None) -> dict:
    """What ``longvid info`` prints: the video's metadata and its visual-token cost under ``pixels`` (a PixelPlan)."""
    meta = probe(video)
    s = sampling or SamplingOptions()
    n_frames = len(plan_indices(meta, fps=s.fps, num_frames=s.frames, max_frames=s.max_frames, start=s.start,
                                end=s.end))
    plan = TokenPlan(pixels.temporal_patch, pixels.tokens_per_step(meta.height, meta.width, n_frames), n_frames)
    return {"path": str(video), "duration": meta.duration, "fps": meta.fps, "codec": meta.codec,
            "width": meta.width, "height": meta.height, "rotation": meta.rotation, "sampled_frames": n_frames,
            "resized": list(pixels.frame_size(meta.height, meta.width, n_frames)),
            "tokens_per_step": plan.tokens_per_step,
            "visual_tokens": plan.total_tokens}


def _resolve(method: str | Method, keep: float | None, budget: int | None) -> Method:
    if isinstance(method, Method):
        if keep is not None or budget is not None:
            raise ValueError(f"{option('keep')}/{option('budget')} apply to a method name; a Method object carries "
                             "its own")
        return method
    return get_method(method, keep=keep, budget=budget)


def question_embeds(adapter, question: str) -> torch.Tensor:
    """(L, D) input embeddings of the question text alone (no chat template, no special tokens): what query-aware
    token reducers read (QTSplus's ``question_input_ids``)."""
    if not isinstance(question, str) or not question.strip():
        raise ValueError("the question is empty: ask something about the video")
    ids = adapter.tokenizer(question, add_special_tokens=False)["input_ids"]
    return adapter.lm.embed_tokens(torch.tensor(ids, device=adapter.device))
