"""Method: a named composition of stages, run by the pipeline in the order of the data flow.

    frames -> [FrameSelector] -> vision -> [TokenReducer ...] -> prefill with [LayerPruner] / [KVPress] -> decode

    from longvid.methods.compose import Method
"""

from __future__ import annotations

from dataclasses import dataclass, field

from longvid.errors import method_context
from longvid.methods.base import FrameSelector, KVPress, LayerPruner, TokenReducer


@dataclass
class Method:
    """A named pipeline of optional stages; ``keep`` / ``budget`` are what was requested (for reports)."""

    name: str
    frame_selector: FrameSelector | None = None
    token_reducers: list[TokenReducer] = field(default_factory=list)
    layer_pruner: LayerPruner | None = None
    press: KVPress | None = None
    keep: float | None = None
    budget: int | None = None

    def stages(self) -> list:
        return [s for s in (self.frame_selector, *self.token_reducers, self.layer_pruner, self.press) if s]

    @property
    def query_aware(self) -> bool:
        return any(stage.query_aware for stage in self.stages())

    def check_model(self, model) -> None:
        """Raise a one-line ValueError naming this method if a stage cannot run on ``model`` (a model adapter: its
        ``num_layers``, ``time_row``, ``family``), before any work is done: a layer pruner's layer past the last one,
        a stage that moves time on a model that writes time as text."""
        with method_context(self.name):
            try:
                for stage in self.stages():
                    stage.check_model(model)
            except ValueError as err:
                raise ValueError(f"method {self.name!r}: {err}") from None

    def language_model(self, lm):
        """The language model this method runs on: a stage may swap a module (PivotKV's YaRN RoPE), never mutate."""
        for stage in self.stages():
            if hasattr(stage, "language_model"):
                lm = stage.language_model(lm)
        return lm
