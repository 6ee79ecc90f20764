"""Encode a video once, answer many questions from a copy of its (compressed) cache, and extend it while streaming.

``VideoSession`` prefills ``[chat prefix, visual tokens]`` in chunks, with the method's KV press between chunks,
then for each question appends ``[<|vision_end|>, question, assistant prefix]`` to a copy of that cache and
decodes. A one-shot ``ask`` with a query-agnostic method is a session with one question, so both paths are the
same code. Query-aware methods (layer pruners) need the question inside the prefill: ``answer_with_query``.

    session = VideoSession(adapter, encoded, method); session.ask("What colour is the car?")
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from longvid.engine.cache import copy_cache, kv_bytes, new_cache
from longvid.engine.decode import Sampling, generate
from longvid.engine.encode import encode_frames
from longvid.engine.forward import forward, observing
from longvid.methods.base import PrefillChunk
from longvid.tokens import VisualTokens

STAGES = ("decode", "vision", "reduce", "prefill", "generate")
# Prefill chunk in tokens: bounds activation memory (about 8192 x intermediate size per MLP on a 7B model, ~0.3 GB
# in bf16) while a 4k-token video still fits one unmasked forward (results/engine_ttft.md).
DEFAULT_CHUNK = 8192


def check_request(question: str | None = None, max_new_tokens: int = 1, chunk_size: int = DEFAULT_CHUNK) -> None:
    """Raise a one-line ValueError for a request no video can satisfy: an empty question, a non-positive
    ``max_new_tokens`` or ``chunk_size`` (checked before anything is decoded)."""
    from longvid.errors import check_positive

    if question is not None and (not isinstance(question, str) or not question.strip()):
        raise ValueError("the question is empty: ask something about the video")
    check_positive("max_new_tokens", max_new_tokens, integer=True, allow_none=False)
    check_positive("chunk_size", chunk_size, integer=True, allow_none=False)


@dataclass
class RunStats:
    """What every run reports (design invariant 7).

    ``visual_tokens``: visual tokens of the sampled frames before any stage; ``kept_tokens``: visual tokens (or, under
    a KV press, visual KV entries per layer and head) that the answer attends to; ``llm_tokens``: tokens fed to the LLM
    in prefill; ``kv_bytes``: cache size after prefill; ``seconds``: time per stage; ``frames_planned`` /
    ``frames_decoded``: frames the sampling asked for and got (fewer when the file is truncated or damaged).
    """

    method: str
    keep: float | None
    budget: int | None
    visual_tokens: int
    kept_tokens: int
    llm_tokens: int
    kv_bytes: int
    seconds: dict = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    frames_planned: int = 0
    frames_decoded: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def truncated(self) -> bool:
        """The video broke or ended before every planned frame decoded; the answer saw ``frames_decoded`` frames."""
        return self.frames_decoded < self.frames_planned

    @property
    def retention(self) -> float:
        return self.kept_tokens / max(1, self.visual_tokens)

    @property
    def ttft(self) -> float:
        """Seconds to the first token: vision + reduction + prefill (video decoding excluded)."""
        return self.seconds["vision"] + self.seconds["reduce"] + self.seconds["prefill"]


@dataclass
class Answer:
    text: str
    token_ids: list[int]
    stats: RunStats
    logits: list = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        s = self.stats
        return {"answer": self.text, "method": s.method, "keep": s.keep, "retention": s.retention,
                "visual_tokens": s.visual_tokens, "kept_tokens": s.kept_tokens, "llm_tokens": s.llm_tokens,
                "kv_bytes": s.kv_bytes, "frames_planned": s.frames_planned, "frames_decoded": s.frames_decoded,
                "truncated": s.truncated, "notes": s.notes, "seconds": {k: round(v, 4) for k, v in s.seconds.items()}}


@dataclass
class EncodedVideo:
    """A video after sampling, frame selection, vision encoding and pre-LLM reduction, plus its prompt layout.

    ``next_position`` is the first text position after the video in the full (unreduced) layout: max + 1.
    ``steps`` temporal steps of ``frame_shape`` (H, W) frames were encoded (streaming continues from there).
    """

    tokens: VisualTokens
    visual_tokens: int
    prefix_ids: list[int]
    tail_template: str
    next_position: int
    seconds_per_step: float
    seconds: dict
    steps: int = 0
    frame_shape: tuple[int, int] | None = None
    frames_planned: int = 0
    frames_decoded: int = 0


class VideoSession:
    """Encode once, ask many times. Each question starts from a copy of the compressed cache."""

    @staticmethod
    def check_method(method) -> None:
        if method.query_aware:
            raise ValueError(
                f"method {method.name!r} needs the question during prefill, so it cannot encode a video before the "
                f"questions are known; use a query-agnostic method in sessions ({', '.join(_agnostic_names())})"
            )

    def __init__(self, adapter, encoded: EncodedVideo, method, *, chunk_size: int = DEFAULT_CHUNK, progress=None):
        self.check_method(method)
        check_request(chunk_size=chunk_size)
        self.adapter, self.encoded, self.method = adapter, encoded, method
        self.chunk_size, self.progress = chunk_size, progress
        self.seconds = dict(encoded.seconds)
        self.visual_tokens = encoded.visual_tokens
        self.frames = [encoded.frames_planned, encoded.frames_decoded]  # planned, decoded (extend adds to both)
        self.llm_tokens = len(encoded.prefix_ids) + len(encoded.tokens)
        self.visual_seen = 0
        self.time_shift = 0  # temporal shift (<= 0) a press applied to everything after what it squeezed (PivotKV)
        self.steps = encoded.steps
        self.next_position = encoded.next_position
        self.lm = method.language_model(adapter.lm)
        self.cache = new_cache(adapter.lm.config)
        self.press_state: dict = {}  # the press's memory across this session's chunks (PrefillChunk.state)
        self.total_tokens = 0
        self._prefill(encoded.prefix_ids, encoded.tokens)

    @property
    def n_protected(self) -> int:
        return len(self.encoded.prefix_ids)

    def kept_visual(self) -> int:
        return self.cache.get_seq_length() - self.n_protected

    def extend(self, frames) -> None:
        """Stream more frames (a ``longvid.video.Frames`` of the same size) into the session.

        Their temporal positions continue the video's at the session's seconds per step; the method's frame selector
        and token reducers run on the new frames alone (EVS keeps their first step whole); the press then holds the
        cache under its budget. Each call pads its frames to a multiple of the temporal patch like the processor.
        """
        enc = encode_frames(self.adapter, frames, self.method, start=self.n_protected, first_step=self.steps,
                            seconds_per_step=self.encoded.seconds_per_step, frame_shape=self.encoded.frame_shape)
        for stage, sec in enc.seconds.items():
            self.seconds[stage] += sec
        self.steps += enc.steps
        self.visual_tokens += enc.visual_tokens
        self.frames[0] += frames.frames_planned
        self.frames[1] += len(frames)
        self.llm_tokens += len(enc.tokens)
        self.extend_tokens(enc.tokens)
        self.next_position = max(self.next_position, enc.next_position)

    def extend_tokens(self, tokens: VisualTokens) -> None:
        """Append visual tokens (positions already in the full layout) and compress under the press's budget."""
        self._prefill([], tokens)

    @torch.inference_mode()
    def _prefill(self, text_ids: list[int], tokens: VisualTokens) -> None:
        """Prefill ``[text_ids, tokens]`` in chunks, compressing after each chunk.

        The chat prefix goes in the same chunk stream as the video, so the first chunk starts from an empty cache
        and needs no mask (SDPA's causal fast path); only later chunks attend to a past through an explicit mask.
        Visual tokens after a press squeezed time move with ``time_shift`` on the temporal row.
        """
        t0 = time.perf_counter()
        adapter, lm, press = self.adapter, self.lm, self.method.press
        n_text = len(text_ids)
        embeds = tokens.embeds.to(adapter.device, adapter.dtype).unsqueeze(0)
        positions = tokens.positions.to(adapter.device)
        if n_text:
            ids = torch.tensor([text_ids], device=adapter.device)
            embeds = torch.cat([lm.embed_tokens(ids), embeds], dim=1)
            positions = torch.cat([torch.arange(n_text, device=adapter.device).expand(3, -1), positions], dim=1)
        positions, total = positions.unsqueeze(1), embeds.shape[1]
        self.total_tokens += len(tokens) + n_text
        for start, end in self._chunks(total, n_text, tokens):
            n_visual = end - max(start, n_text)
            chunk_pos = positions[..., start:end].clone()
            chunk_pos[0, :, end - start - max(0, n_visual):] += self.time_shift
            watch = press if press is not None and press.will_compress(self.total_tokens) else None
            with observing(lm, watch, max(0, n_visual)) as observed:
                forward(lm, embeds[:, start:end], chunk_pos, self.cache)
            self.visual_seen += max(0, n_visual)
            if press is not None and n_visual > 0:
                first = max(start, n_text) - n_text  # this chunk's first visual token, in ``tokens``
                pivot = None if tokens.pivot is None else tokens.pivot[first:first + n_visual]
                chunk = PrefillChunk(self.n_protected, end - start, n_visual, self.visual_seen, chunk_pos[:, 0],
                                     pivot, self.total_tokens, lambda p, x=embeds[:, :1]: lm.rotary_emb(x, p),
                                     observed, self.press_state)
                self.time_shift += press.compress(self.cache, chunk)
            if self.progress is not None:
                self.progress("prefill", end, total)
        self.seconds["prefill"] += time.perf_counter() - t0

    def _chunks(self, total: int, n_text: int, tokens: VisualTokens) -> list[tuple[int, int]]:
        """(start, end) of each prefill chunk: every ``chunk_size`` tokens, or, for a press that sets its own chunks
        (PivotKV's, from the video's temporal steps), the text plus the first chunk of video, then per chunk."""
        press = self.method.press
        size = None if press is None else press.chunk_tokens(tokens.grid_thw[0], tokens.tokens_per_step,
                                                              self.adapter.temporal_patch)
        if size:
            ends = list(range(n_text + size, total, size)) + [total]
        else:
            ends = list(range(self.chunk_size, total, self.chunk_size)) + [total]
        return list(zip([0] + ends[:-1], ends))

    def text_positions(self, start: int, n: int) -> torch.Tensor:
        """(3, 1, n) M-RoPE ids of text at ``start..start+n-1`` after any press shift (rows the press names)."""
        pos = (start + torch.arange(n, device=self.adapter.device)).expand(3, -1).clone()
        if self.time_shift and self.method.press is not None:
            pos[list(self.method.press.text_shift_rows)] += self.time_shift
        return pos.unsqueeze(1)

    @torch.inference_mode()
    def ask(self, question: str, *, max_new_tokens: int = 128, sampling: Sampling | None = None,
            record_logits: bool = False) -> Answer:
        """Answer from a copy of the session cache; the session itself is unchanged."""
        check_request(question, max_new_tokens)
        adapter, lm = self.adapter, self.lm
        tail = adapter.tail_ids(self.encoded.tail_template, question)
        cache = copy_cache(self.cache)
        seconds = dict(self.seconds)
        t0 = time.perf_counter()
        ids = torch.tensor([tail], device=adapter.device)
        pos = self.text_positions(self.next_position, len(tail) + 1)  # + 1: where decoding starts
        hidden, _ = forward(lm, lm.embed_tokens(ids), pos[..., :-1], cache)
        logits = lm.logits(hidden[:, -1])[0]
        seconds["prefill"] += time.perf_counter() - t0
        kept = self.kept_visual()
        stats = RunStats(self.method.name, self.method.keep, self.method.budget, self.visual_tokens, kept,
                         self.llm_tokens + len(tail), kv_bytes(cache), seconds, *self.frames)
        stats.notes = run_notes(self.method, stats, self.encoded.tokens.tokens_per_step)
        return _decode(adapter, lm, cache, logits, pos[:, 0, -1], stats, max_new_tokens, sampling, record_logits,
                       self.progress)


@torch.inference_mode()
def answer_with_query(adapter, encoded: EncodedVideo, method, question: str, *, max_new_tokens: int = 128,
                      sampling: Sampling | None = None, record_logits: bool = False, progress=None) -> Answer:
    """One forward over [prefix, visual, question] so a layer pruner sees the question rows, then decode."""
    if method.press is not None:
        raise ValueError(f"method {method.name!r} combines a layer pruner with a KV press; pick one of the two")
    lm, device = method.language_model(adapter.lm), adapter.device
    tail = adapter.tail_ids(encoded.tail_template, question)
    n_pre, n_vis, n_tail = len(encoded.prefix_ids), len(encoded.tokens), len(tail)
    seconds = dict(encoded.seconds)
    t0 = time.perf_counter()
    embeds = torch.cat([lm.embed_tokens(torch.tensor([encoded.prefix_ids], device=device)),
                        encoded.tokens.embeds.to(device, adapter.dtype).unsqueeze(0),
                        lm.embed_tokens(torch.tensor([tail], device=device))], dim=1)
    positions = torch.cat([torch.arange(n_pre).expand(3, -1), encoded.tokens.positions.cpu(),
                           encoded.next_position + torch.arange(n_tail).expand(3, -1)], dim=1)
    visual = torch.zeros(n_pre + n_vis + n_tail, dtype=torch.bool, device=device)
    visual[n_pre:n_pre + n_vis] = True
    query = torch.zeros_like(visual)
    query[n_pre + n_vis:] = True
    cache = new_cache(lm.config)
    groups = torch.full_like(visual, -1, dtype=torch.long)
    tokens = encoded.tokens
    groups[n_pre:n_pre + n_vis] = (tokens.group if tokens.group is not None else tokens.thw[:, 0]).to(device)
    hidden, kept = forward(lm, embeds, positions.to(device).unsqueeze(1), cache, pruner=method.layer_pruner,
                           visual=visual, query=query, groups=groups)
    logits = lm.logits(hidden[:, -1])[0]
    seconds["prefill"] += time.perf_counter() - t0
    if progress is not None:
        progress("prefill", 1, 1)
    n_kept = int(visual[kept].sum()) if kept is not None else n_vis
    stats = RunStats(method.name, method.keep, method.budget, encoded.visual_tokens, n_kept,
                     n_pre + n_vis + n_tail, kv_bytes(cache), seconds, encoded.frames_planned, encoded.frames_decoded)
    stats.notes = run_notes(method, stats, tokens.tokens_per_step)
    return _decode(adapter, lm, cache, logits, torch.tensor(encoded.next_position + n_tail), stats, max_new_tokens,
                   sampling, record_logits, progress)


def run_notes(method, stats: RunStats, tokens_per_step: int) -> list[str]:
    """What a user should know about a run beyond its answer: a method that reduced nothing, or a requested ratio it
    could not meet (by more than half a temporal step: methods that keep whole steps, or the first step whole, cannot
    go below one step). A truncated video is not repeated here: the reader warns, and the stats say it."""
    from longvid.errors import option
    from longvid.methods.budget import num_to_keep
    from longvid.methods.registry import METHODS

    notes = []
    if not method.stages() or stats.visual_tokens == 0:
        return notes
    spec = METHODS.get(method.name)
    asked = option("keep", method.keep) if method.keep is not None else option("budget", method.budget)
    if stats.kept_tokens >= stats.visual_tokens and not (method.keep == 1 and method.budget is None):
        if spec is not None and not spec.keep_ratio:
            why = "its retention follows the video (see `longvid methods`)"
        elif method.keep is not None or method.budget is not None:
            why = f"{asked} cannot drop a token of this clip"
        else:
            why = (f"its default operating point does not reduce a prompt of {stats.llm_tokens} tokens (see `longvid "
                   f"methods`); pass {option('keep')} or {option('budget')}")
        notes.append(f"{method.name} reduced nothing: it kept all {stats.visual_tokens} visual tokens; {why}")
    elif (spec is None or spec.keep_is_retention) and (method.keep is not None or method.budget is not None):
        target = num_to_keep(stats.visual_tokens, method.keep, method.budget)
        if abs(stats.kept_tokens - target) > max(1, tokens_per_step // 2):
            notes.append(f"{method.name} kept {stats.kept_tokens} of {stats.visual_tokens} visual tokens (retention "
                         f"{stats.retention:.3f}), not the {target} that {asked} asks for: it works in whole temporal "
                         f"steps of {tokens_per_step} tokens, or keeps the first step whole, and this clip has "
                         f"{-(-stats.visual_tokens // tokens_per_step)} steps")
    return notes


def _decode(adapter, lm, cache, logits, next_position, stats, max_new_tokens, sampling, record_logits, progress):
    t0 = time.perf_counter()
    on_token = (lambda n: progress("generate", n, max_new_tokens)) if progress is not None else None
    ids, seen = generate(lm, cache, logits, next_position, adapter.stop_ids(), max_new_tokens, sampling,
                         record_logits, on_token)
    stats.seconds["generate"] += time.perf_counter() - t0
    return Answer(adapter.decode_text(ids), ids, stats, seen)


def _agnostic_names() -> list[str]:
    from longvid.methods.registry import query_agnostic_methods

    return query_agnostic_methods()
