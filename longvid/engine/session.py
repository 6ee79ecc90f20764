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
from longvid.methods.base import PrefillChunk, TimeShift
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

    ``block`` is the video block the LLM reads (the kept visual tokens and the family's structural tokens);
    ``next_position`` is the first text position after it (the full, unreduced layout's max + 1, unless a reducer
    squeezed time). ``steps`` temporal steps of frames at the model-side size ``frame_shape`` (H, W) were encoded
    (streaming continues at that size).
    """

    tokens: VisualTokens
    block: object
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
        method.check_model(adapter)
        check_request(chunk_size=chunk_size)
        self.adapter, self.encoded, self.method = adapter, encoded, method
        self.chunk_size, self.progress = chunk_size, progress
        self.seconds = dict(encoded.seconds)
        self.visual_tokens = encoded.visual_tokens
        self.frames = [encoded.frames_planned, encoded.frames_decoded]  # planned, decoded (extend adds to both)
        self.llm_tokens = len(encoded.prefix_ids) + len(encoded.block)
        self.visual_seen = 0
        self.shift = TimeShift(0)  # what a press that squeezed time moved every later token by (PivotKV)
        self.steps = encoded.steps
        self.next_position = encoded.next_position
        self.lm = method.language_model(adapter.lm)
        self.cache = new_cache(adapter.lm.config)
        self.press_state: dict = {}  # the press's memory across this session's chunks (PrefillChunk.state)
        self.n_protected = 0  # cache entries never evicted (text, structural tokens), kept at the front by a press
        self.total_tokens = 0
        self.broken: str | None = None  # why the session can no longer answer (an extend that did not finish)
        self._prefill(encoded.prefix_ids, encoded.block, encoded.tokens)

    def check_usable(self) -> None:
        if self.broken:
            raise RuntimeError(f"this session cannot be used any more: {self.broken}; build a new one")

    @property
    def time_shift(self) -> int:
        return self.shift.amount

    def kept_visual(self) -> int:
        return self.cache.get_seq_length() - self.n_protected

    def extend(self, frames) -> None:
        """Stream more frames (a ``longvid.video.Frames``) into the session; they are resized to the stream's frame
        size (``encoded.frame_shape``), so every temporal step has the same token grid.

        Their temporal positions continue the video's at the session's seconds per step; the method's frame selector
        and token reducers run on the new frames alone (EVS keeps their first step whole); the press then holds the
        cache under its budget. Each call pads its frames to a multiple of the temporal patch like the processor.
        """
        self.check_usable()
        enc = encode_frames(self.adapter, frames, self.method, start=len(self.encoded.prefix_ids),
                            first_step=self.steps, seconds_per_step=self.encoded.seconds_per_step,
                            frame_shape=self.encoded.frame_shape, after=self.next_position,
                            step_tokens=self.encoded.tokens.tokens_per_step)
        try:  # from here the cache changes in place: an interruption (Ctrl-C, a cancelled request) leaves part of it
            for stage, sec in enc.seconds.items():
                self.seconds[stage] += sec
            self.steps += enc.steps
            self.visual_tokens += enc.visual_tokens
            self.frames[0] += frames.frames_planned
            self.frames[1] += len(frames)
            self.llm_tokens += len(enc.block)
            self._prefill([], enc.block, enc.tokens)
            self.next_position = max(self.next_position, enc.next_position)
        except BaseException as err:
            self.broken = f"an extend stopped while prefilling its frames ({type(err).__name__}), so the cache holds " \
                          "part of them"
            raise

    @torch.inference_mode()
    def _prefill(self, text_ids: list[int], block, tokens: VisualTokens) -> None:
        """Prefill ``[text_ids, block]`` in chunks, compressing after each chunk.

        The chat prefix goes in the same chunk stream as the video, so the first chunk starts from an empty cache
        and needs no mask (SDPA's causal fast path); only later chunks attend to a past through an explicit mask.
        After a press squeezed time, visual tokens move on the model's time row and structural tokens as text.
        """
        t0 = time.perf_counter()
        adapter, lm, press = self.adapter, self.lm, self.method.press
        device, n_text = adapter.device, len(text_ids)
        embeds = block.embeds.to(device, adapter.dtype).unsqueeze(0)
        positions, visual, index = block.positions.to(device), block.visual.to(device), block.index.to(device)
        if n_text:
            embeds = torch.cat([lm.embed_tokens(torch.tensor([text_ids], device=device)), embeds], dim=1)
            positions = torch.cat([adapter.text_positions(0, n_text, device), positions], dim=1)
            visual = torch.cat([torch.zeros(n_text, dtype=torch.bool, device=device), visual])
            index = torch.cat([torch.full((n_text,), -1, device=device), index])
        total = embeds.shape[1]
        self.total_tokens += total
        seen = 0  # visual entries prefilled so far: where the next chunk's residual rows start
        for start, end in self._chunks(total, n_text, tokens, visual):
            vis = visual[start:end]
            rows = vis.nonzero().flatten()
            chunk_pos = self._shifted(positions[:, start:end], vis)
            watch = press if press is not None and press.will_compress(self.total_tokens) else None
            residuals = None
            if block.residuals is not None and len(rows):
                residuals = (vis, block.residuals[:, seen:seen + len(rows)])
            seen += len(rows)
            with observing(lm, watch, rows) as observed:
                forward(lm, embeds[:, start:end], chunk_pos.unsqueeze(1), self.cache, residuals=residuals)
            n_visual, n_kept_text = len(rows), (end - start) - len(rows)
            self.visual_seen += n_visual
            if press is not None:
                _protect_new(self.cache, self.n_protected, vis)
                if n_visual:
                    pivot = None if tokens.pivot is None else tokens.pivot[index[start:end][vis].to(
                        tokens.pivot.device)]
                    chunk = PrefillChunk(self.n_protected + n_kept_text, end - start, n_visual, self.visual_seen,
                                         chunk_pos[:, vis], pivot, self.total_tokens, self._rerotate,
                                         adapter.time_row, observed, self.press_state)
                    shift = press.compress(self.cache, chunk)
                    if shift is not None:
                        self.shift = TimeShift(self.shift.amount + shift.amount, shift.text_rows)
            self.n_protected += n_kept_text
            if self.progress is not None:
                self.progress("prefill", end, total)
        self.seconds["prefill"] += time.perf_counter() - t0

    def _rerotate(self, keys: torch.Tensor, old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        """Post-RoPE keys (B, H, K, d) moved from positions ``old`` to ``new`` (each (R, K)) with the model's rotary."""
        x = keys[:, :1, :, :1]
        return self.lm.attention.rerotate(keys, self.lm.rope(x, old.unsqueeze(1)), self.lm.rope(x, new.unsqueeze(1)))

    def _shifted(self, positions: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """(R, n) ``positions`` of block entries after the session's time shift: visual entries on the model's time
        row, structural entries on the rows text moves on."""
        if not self.shift.amount:
            return positions
        out = positions.clone()
        out[self.adapter.time_row, visual] += self.shift.amount
        for row in self._text_rows():
            out[row, ~visual] += self.shift.amount
        return out

    def _text_rows(self) -> tuple[int, ...]:
        rows = self.shift.text_rows
        return tuple(range(self.adapter.position_rows)) if rows is None else rows

    def _chunks(self, total: int, n_text: int, tokens: VisualTokens, visual: torch.Tensor) -> list[tuple[int, int]]:
        """(start, end) of each prefill chunk: every ``chunk_size`` tokens, or, for a press that sets its own chunks
        (PivotKV's, in visual tokens from the video's temporal steps), the text plus the first chunk of video, then
        per chunk of that many visual entries (with the structural entries between them: Qwen3-VL's timestamps) up
        to the last visual entry; what follows it (LLaVA's newline) is a chunk of its own, prefilled after the last
        squeeze at its shifted position."""
        press = self.method.press
        size = None if press is None else press.chunk_tokens(tokens.grid_thw[0], tokens.tokens_per_step,
                                                              self.adapter.temporal_patch)
        if size:  # chunks of ``size`` visual entries (with the structural ones between them)
            at = visual.nonzero().flatten().tolist()
            last = at[-1] + 1 if at else total
            ends = [at[k - 1] + 1 for k in range(size, len(at), size)] + [last] + ([total] if total > last else [])
        else:
            ends = list(range(self.chunk_size, total, self.chunk_size)) + [total]
        return list(zip([0] + ends[:-1], ends))

    def text_positions(self, start: int, n: int) -> torch.Tensor:
        """(R, 1, n) position ids of text at ``start..start+n-1`` after any press shift (on the rows it names)."""
        pos = self.adapter.text_positions(start, n, self.adapter.device)
        if self.shift.amount:
            pos[list(self._text_rows())] += self.shift.amount
        return pos.unsqueeze(1)

    @torch.inference_mode()
    def ask(self, question: str, *, max_new_tokens: int = 128, sampling: Sampling | None = None,
            record_logits: bool = False, stream=None) -> Answer:
        """Answer from a copy of the session cache; the session itself is unchanged. ``stream(token_id)`` sees each
        new token as it is decoded."""
        check_request(question, max_new_tokens)
        self.check_usable()
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
                       self.progress, stream)


def _protect_new(cache, n_protected: int, visual: torch.Tensor) -> None:
    """Move the protected entries the last forward appended (``~visual`` of its ``len(visual)`` entries) to the
    protected front of every layer, keeping order otherwise: ``[protected, new protected, older evictable, new
    visual]``. A no-op when they are already there (Qwen2-VL: the prefix, then visual tokens only)."""
    n_new = len(visual)
    length = cache.get_seq_length()
    older = length - n_new - n_protected  # evictable entries cached before this chunk
    new_text = (~visual).nonzero().flatten()
    if len(new_text) == 0 or (older == 0 and bool((new_text == torch.arange(len(new_text), device=new_text.device))
                                                 .all())):
        return
    base = length - n_new
    order = torch.cat([torch.arange(n_protected, device=visual.device), base + new_text,
                       torch.arange(n_protected, base, device=visual.device), base + visual.nonzero().flatten()])
    for layer in cache.layers:
        layer.keys = layer.keys.index_select(2, order.to(layer.keys.device))
        layer.values = layer.values.index_select(2, order.to(layer.values.device))


@torch.inference_mode()
def answer_with_query(adapter, encoded: EncodedVideo, method, question: str, *, max_new_tokens: int = 128,
                      sampling: Sampling | None = None, record_logits: bool = False, progress=None,
                      stream=None) -> Answer:
    """One forward over [prefix, video block, question] so a layer pruner sees the question rows, then decode."""
    if method.press is not None:
        raise ValueError(f"method {method.name!r} combines a layer pruner with a KV press; pick one of the two")
    lm, device, block, tokens = method.language_model(adapter.lm), adapter.device, encoded.block, encoded.tokens
    tail = adapter.tail_ids(encoded.tail_template, question)
    n_pre, n_block, n_tail = len(encoded.prefix_ids), len(block), len(tail)
    seconds = dict(encoded.seconds)
    t0 = time.perf_counter()
    embeds = torch.cat([lm.embed_tokens(torch.tensor([encoded.prefix_ids], device=device)),
                        block.embeds.to(device, adapter.dtype).unsqueeze(0),
                        lm.embed_tokens(torch.tensor([tail], device=device))], dim=1)
    positions = torch.cat([adapter.text_positions(0, n_pre, device), block.positions.to(device),
                           adapter.text_positions(encoded.next_position, n_tail, device)], dim=1)
    text = torch.zeros(n_pre, dtype=torch.bool, device=device)
    visual = torch.cat([text, block.visual.to(device), torch.zeros(n_tail, dtype=torch.bool, device=device)])
    query = torch.zeros_like(visual)
    query[n_pre + n_block:] = True
    group = tokens.group if tokens.group is not None else tokens.thw[:, 0]
    groups = torch.full_like(visual, -1, dtype=torch.long)
    at = block.index.to(device)
    groups[n_pre:n_pre + n_block][at >= 0] = group.to(device)[at[at >= 0]]
    cache = new_cache(lm.config)
    residuals = None if block.residuals is None else (visual, block.residuals)
    hidden, kept = forward(lm, embeds, positions.unsqueeze(1), cache, pruner=method.layer_pruner,
                           visual=visual, query=query, groups=groups, residuals=residuals)
    logits = lm.logits(hidden[:, -1])[0]
    seconds["prefill"] += time.perf_counter() - t0
    if progress is not None:
        progress("prefill", 1, 1)
    n_kept = int(visual[kept].sum()) if kept is not None else int(block.visual.sum())
    stats = RunStats(method.name, method.keep, method.budget, encoded.visual_tokens, n_kept,
                     n_pre + n_block + n_tail, kv_bytes(cache), seconds, encoded.frames_planned,
                     encoded.frames_decoded)
    stats.notes = run_notes(method, stats, tokens.tokens_per_step)
    next_position = adapter.text_positions(encoded.next_position + n_tail, 1, device)[:, 0]
    return _decode(adapter, lm, cache, logits, next_position, stats, max_new_tokens, sampling, record_logits, progress,
                   stream)


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


def _decode(adapter, lm, cache, logits, next_position, stats, max_new_tokens, sampling, record_logits, progress,
            stream=None):
    t0 = time.perf_counter()
    on_token = (lambda n: progress("generate", n, max_new_tokens)) if progress is not None else None
    ids, seen = generate(lm, cache, logits, next_position, adapter.stop_ids(), max_new_tokens, sampling,
                         record_logits, on_token, stream)
    stats.seconds["generate"] += time.perf_counter() - t0
    return Answer(adapter.decode_text(ids), ids, stats, seen)


def _agnostic_names() -> list[str]:
    from longvid.methods.registry import query_agnostic_methods

    return query_agnostic_methods()
