"""The four method stages: FrameSelector, TokenReducer, LayerPruner, KVPress (mechanics only).

A method is a named composition of stages (``longvid.methods.registry``). Each stage base class does the
bookkeeping (budgets, sorting, gathering); a subclass returns scores or indices. Every stage reports whether it
needs the question (``query_aware``), so sessions can refuse what cannot run before the question is known.

    from longvid.methods.base import TokenReducer
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from longvid.errors import setting
from longvid.methods.budget import check_keep_budget, num_to_keep, num_to_keep_floor  # noqa: F401 (re-exported)
from longvid.tokens import VisualTokens


def top_k_indices(scores: torch.Tensor, k: int, dim: int = -1) -> torch.Tensor:
    """Indices of the ``k`` largest ``scores`` along ``dim``, in increasing order; ties go to the earliest index.

    ``torch.topk`` breaks ties arbitrarily, differently on CPU and GPU; a stable descending sort makes every selection
    in the library deterministic on every device, and is the order vLLM's EVS uses (``argsort(descending=True,
    stable=True)``), so on a static video the earliest temporal steps keep their tokens.
    """
    order = torch.sort(scores, dim=dim, descending=True, stable=True).indices
    return order.narrow(dim, 0, k).sort(dim=dim).values


@dataclass
class TokenPlan:
    """What a frame selector needs to know about the token cost of the sampled frames.

    Attributes
    ----------
    temporal_patch_size : int
        Frames per temporal step of the vision encoder (2 for Qwen2-VL / Qwen2.5-VL).
    tokens_per_step : int
        LLM tokens per temporal step after the spatial merge (H * W / merge**2).
    num_frames : int
        Sampled frames before selection.
    """

    temporal_patch_size: int
    tokens_per_step: int
    num_frames: int

    @property
    def num_steps(self) -> int:
        return math.ceil(self.num_frames / self.temporal_patch_size)

    @property
    def total_tokens(self) -> int:
        return self.num_steps * self.tokens_per_step


class Stage:
    """Common base: a stage that needs the question says so (sessions refuse it), and a stage that cannot run on some
    model says why before any work is done (``check_model``)."""

    query_aware: bool = False

    def check_model(self, model) -> None:
        """Raise a one-line ValueError if this stage cannot run on ``model`` (a model adapter: ``num_layers``,
        ``time_row``, ``family``, ``position_rows``)."""


@dataclass
class Budget:
    """How much a stage keeps: a ratio ``keep`` in (0, 1] or an absolute ``budget`` of visual tokens (not both)."""

    keep: float | None = None
    budget: int | None = None

    def __post_init__(self):
        check_keep_budget(self.keep, self.budget)


class FrameSelector(Stage):
    """Chooses which sampled frames reach the vision encoder."""

    def select(self, timestamps: torch.Tensor, plan: TokenPlan, query: str | None = None) -> torch.Tensor:
        """Return sorted indices (F',) into the sampled frames, given their timestamps (F,) in seconds."""
        raise NotImplementedError


class TokenReducer(Stage):
    """Reduces visual tokens before the LLM; returns a new VisualTokens (subset or merge)."""

    def reduce(self, tokens: VisualTokens, query_embeds: torch.Tensor | None = None) -> VisualTokens:
        """``query_embeds``: (L, D) input embeddings of the question text alone (no template), for query-aware
        reducers (`longvid.pipeline.question_embeds`); None otherwise."""
        raise NotImplementedError


@dataclass
class ScoredTokenReducer(TokenReducer, Budget):
    """Keeps the ``num_to_keep`` highest-scoring tokens, in their original order. Subclasses give ``score``."""

    def min_keep(self, tokens: VisualTokens) -> int:
        return 1

    def score(self, tokens: VisualTokens, query_embeds: torch.Tensor | None) -> torch.Tensor:
        """(N,) float scores, higher is kept first."""
        raise NotImplementedError

    def reduce(self, tokens: VisualTokens, query_embeds: torch.Tensor | None = None) -> VisualTokens:
        n_keep = num_to_keep(len(tokens), self.keep, self.budget, self.min_keep(tokens))
        if n_keep >= len(tokens):
            return tokens
        return tokens.select(top_k_indices(self.score(tokens, query_embeds).float(), n_keep))


@dataclass
class PruneContext:
    """What a LayerPruner sees at its layer, for one prefill forward of the whole prompt (batch 1).

    Attributes
    ----------
    layer : torch.nn.Module
        The decoder layer ``layer_idx``.
    hidden_in : torch.Tensor
        (1, L, D) input of the layer.
    hidden_out : torch.Tensor
        (1, L, D) output of the layer.
    position_embeddings : tuple[torch.Tensor, torch.Tensor]
        M-RoPE (cos, sin), each (1, L, head_dim).
    visual : torch.Tensor
        (L,) bool, True at visual tokens.
    query : torch.Tensor
        (L,) bool, True at the question and the assistant prefix (the tokens after the video).
    groups : torch.LongTensor
        (L,) selection group of each visual token (``VisualTokens.group``, or its temporal step when a reducer set
        none); -1 at text tokens.
    qk : callable
        ``qk(query_rows=None, rope=True) -> (q (1, H_q, R, d), k (1, H_kv, L, d))``: this layer's queries (for
        ``query_rows``) and keys for its input, as the model's attention computes them (the family's norms,
        projections and QK-norms), with RoPE or un-rotated. Methods score from these, never from their own idea of
        a layer's internals.
    scaling : float
        The attention's softmax scale (``1 / sqrt(head_dim)`` for these families).
    """

    layer_idx: int
    layer: torch.nn.Module
    hidden_in: torch.Tensor
    hidden_out: torch.Tensor
    position_embeddings: tuple[torch.Tensor, torch.Tensor]
    visual: torch.Tensor
    query: torch.Tensor
    groups: torch.Tensor
    qk: object = None
    scaling: float = 1.0


class LayerPruner(Stage):
    """Drops visual tokens inside the LLM after decoder layer ``layer``.

    The engine runs layers ``0..layer`` on the full sequence, calls ``select``, then gathers the hidden states,
    positions and the KV entries of layers ``0..layer`` (as PruneVid does), so later queries, decoding included, never
    see a dropped token in any layer. Needs the question in the same forward, so it is query-aware.
    """

    layer: int = 2
    query_aware = True

    def layer_index(self, num_layers: int) -> int:
        """The layer this pruner scores at, in a model with ``num_layers`` decoder layers (a relative depth may
        resolve differently per model)."""
        return self.layer

    def check_model(self, model) -> None:
        self.check_layers(model.num_layers)

    def check_layers(self, num_layers: int) -> None:
        """Raise a one-line ValueError if this pruner's layer does not exist in a model of ``num_layers`` layers."""
        layer = self.layer_index(num_layers)
        if not 0 <= layer < num_layers:
            raise ValueError(f"{setting('layer', layer)} is past the model's last decoder layer: it has {num_layers} "
                             f"layers (0..{num_layers - 1}); pass a layer in that range")

    def select(self, ctx: PruneContext) -> torch.Tensor:
        """Sorted indices (L',) of the sequence positions to keep; every non-visual position must be kept."""
        raise NotImplementedError


@dataclass(frozen=True)
class TimeShift:
    """How a press moved time: every later token moves by ``amount`` (<= 0) on the position row that carries a
    visual token's time (the model's ``time_row``); text moves on ``text_rows`` (None: every row, so text keeps equal
    rows; ``(time_row,)``: only that row, as ReTaKe's code does)."""

    amount: int
    text_rows: tuple[int, ...] | None = None


@dataclass
class PrefillChunk:
    """What a KVPress sees after each prefill forward (batch 1).

    The forward appended ``n_new`` entries to every layer; the engine has already moved the new protected entries
    (text, and the structural tokens a family writes inside the video block) to the protected front, so each layer
    is ``[n_protected protected | older visual | the chunk's n_new_visual visual entries]``.

    Attributes
    ----------
    n_protected : int
        Cache entries at the front that are never evicted (the chat prefix, structural tokens so far).
    n_new : int
        Entries this forward appended; ``n_new_visual`` of them visual (now the last ones, in order).
    n_new_visual : int
    visual_seen : int
        Visual tokens prefilled so far, this chunk included.
    positions : torch.LongTensor
        (R, n_new_visual) position ids the chunk's visual keys were rotated with.
    pivot : torch.BoolTensor or None
        (n_new_visual,) key-patch flags of the new visual tokens (ReTaKe's DPSelect), if any.
    total_tokens : int
        Prompt length known to the session (chat prefix + all visual tokens so far).
    rerotate : callable
        ``rerotate(keys (B, H, K, d), old (R, K), new (R, K)) -> keys``: post-RoPE keys moved from one set of
        positions to another with the model's rotary (and its inverse), to re-index kept keys.
    time_row : int or None
        The position row carrying time (the model's); None where time is text, so nothing may squeeze it.
    observed : dict
        layer index -> what the press's ``observe`` returned for that layer during this chunk's forward.
    state : dict
        The session's memory for this press, the same dict for every chunk of one session (a press object holds no
        per-run state, so one press can serve many sessions): e.g. per-entry scores of the cached visual entries.
    kept : dict
        Filled by ``compress`` where it is useful to inspect: layer index -> indices it kept of the evictable entries.
    """

    n_protected: int
    n_new: int
    n_new_visual: int
    visual_seen: int
    positions: torch.Tensor
    pivot: torch.Tensor | None
    total_tokens: int
    rerotate: object = None
    time_row: int | None = 0
    observed: dict = field(default_factory=dict)
    state: dict = field(default_factory=dict)
    kept: dict = field(default_factory=dict)


@dataclass
class KVPress(Stage, Budget):
    """Compresses the KV cache between prefill chunks, per layer and per KV head, under a visual-token budget.

    Only the visual entries are evictable (text, and the structural tokens a family writes inside the video block,
    are protected; the engine keeps them at the front of the cache). Each KV head keeps the same number
    of entries, so the cache stays rectangular. The default ``compress`` keeps, after every chunk, the
    ``target(visual_seen)`` best-scoring visual entries of the whole cache; subclasses give ``score``. A press whose
    score of an entry depends on that entry alone sets ``per_entry_scores = True``: each entry is then scored once,
    when it arrives, and its score kept beside it (``chunk.state``), instead of re-scoring the whole cache after every
    chunk. A press that needs each layer's queries sets ``observes = True`` and gets ``observe`` calls during the
    chunk's forward. ``compress`` may return a `TimeShift` for every later token, when it re-indexed the kept
    entries' time (PivotKV). A press holds settings only: what one session needs between chunks lives in
    ``chunk.state``.
    """

    observes = False
    per_entry_scores = False

    def will_compress(self, total_tokens: int) -> bool:
        """Whether this press may evict anything for a prompt of ``total_tokens``; if not, nothing is observed."""
        return True

    def chunk_tokens(self, num_steps: int, tokens_per_step: int, temporal_patch: int) -> int | None:
        """Prefill chunk length this press needs for a video of ``num_steps`` temporal steps (None: the session's)."""
        return None

    def observe(self, layer_idx: int, q: torch.Tensor, k: torch.Tensor, rope, scaling: float):
        """If ``observes``: one layer's queries q (1, H_q, n, d) and keys k (1, H_kv, n, d) of the chunk's n visual
        tokens before RoPE (after the family's QK-norms), captured from the attention itself (not recomputed);
        ``rope(x)`` rotates such a tensor to their positions; ``scaling`` is the softmax scale. The return value
        reaches ``compress`` as ``chunk.observed[layer_idx]``."""

    def score(self, layer_idx: int, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """(B, H_kv, L) scores for the evictable entries; ``keys``/``values`` are (B, H_kv, L, d), keys post-RoPE."""
        raise NotImplementedError

    def target(self, num_visual_seen: int) -> int:
        """Visual entries to keep per head once ``num_visual_seen`` visual tokens have been prefilled."""
        return num_to_keep(num_visual_seen, self.keep, self.budget)

    def moves_time(self) -> bool:
        """Whether ``compress`` re-indexes time (then a model without a time row is refused)."""
        return False

    def check_model(self, model) -> None:
        if self.moves_time() and model.time_row is None:
            raise ValueError(f"it squeezes time, which {model.family} writes as text between frames, not in a "
                             f"position row; pass {setting('reforge', False)} to keep positions")

    def compress(self, cache, chunk: PrefillChunk) -> TimeShift | None:
        """Evict in place so every layer keeps its protected entries and ``target`` visual ones per head."""
        n_keep = self.target(chunk.visual_seen)
        for layer_idx, layer in enumerate(cache.layers):
            keys, values = layer.keys, layer.values
            n_evictable = keys.shape[2] - chunk.n_protected
            if n_evictable <= n_keep and not self.per_entry_scores:
                continue
            scores = self._scores(layer_idx, keys, values, chunk)  # per-entry scores are recorded on arrival
            if n_evictable <= n_keep:
                continue
            keep = top_k_indices(self.rank(scores, n_keep), n_keep)
            layer.keys = gather_entries(keys, keep, chunk.n_protected)
            layer.values = gather_entries(values, keep, chunk.n_protected)
            if self.per_entry_scores:
                chunk.state[layer_idx] = scores.gather(-1, keep)
        return None

    def rank(self, scores: torch.Tensor, n_keep: int) -> torch.Tensor:
        """What the top-``n_keep`` selection ranks: the scores themselves, unless a press forces some entries in
        (CITR's stabilizers); the stored per-entry scores are never changed by it."""
        return scores

    def new_scores(self, layer_idx: int, keys: torch.Tensor, values: torch.Tensor, chunk: PrefillChunk,
                   n_old: int) -> torch.Tensor:
        """With ``per_entry_scores``: (B, H_kv, n) scores of the entries that arrived since the last chunk, the
        evictable ones after the first ``n_old``; by default ``score`` on them."""
        p = chunk.n_protected + n_old
        return self.score(layer_idx, keys[:, :, p:], values[:, :, p:])

    def _scores(self, layer_idx: int, keys: torch.Tensor, values: torch.Tensor, chunk: PrefillChunk) -> torch.Tensor:
        """(B, H_kv, L) float32 scores of the evictable entries; with ``per_entry_scores`` only the entries that
        arrived since the last chunk are scored (`new_scores`), the others' scores come from ``chunk.state``."""
        p = chunk.n_protected
        if not self.per_entry_scores:
            return self.score(layer_idx, keys[:, :, p:], values[:, :, p:]).float()
        old = chunk.state.get(layer_idx)
        n_old = 0 if old is None else old.shape[-1]
        new = self.new_scores(layer_idx, keys, values, chunk, n_old).float()
        scores = new if old is None else torch.cat([old, new], dim=-1)
        chunk.state[layer_idx] = scores
        return scores


def gather_entries(x: torch.Tensor, keep: torch.Tensor, n_protected: int) -> torch.Tensor:
    """Keep the first ``n_protected`` entries of x (B, H, L, d) and, per head, entries ``n_protected + keep``.

    ``keep`` is (B, H, K) sorted, relative to the evictable region; the result is (B, H, n_protected + K, d). One
    row gather over the flattened cache (half the memory traffic of a ``gather`` then a ``cat``: the cache rebuild is
    what a press costs on a long video).
    """
    b, h, length, d = x.shape
    protected = torch.arange(n_protected, device=keep.device).expand(b, h, n_protected)
    rows = torch.cat([protected, keep + n_protected], dim=-1)  # (B, H, P + K)
    rows = rows + torch.arange(b * h, device=keep.device).view(b, h, 1) * length
    return x.reshape(b * h * length, d).index_select(0, rows.flatten()).view(b, h, -1, d)
