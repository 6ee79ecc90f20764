"""CITR: KV eviction by learned causal importance (Locret's retaining heads on a video LLM).

**Retaining heads** (`RetainingHeads`): one small MLP per decoder layer, ``Linear((H_q + 2 H_kv) d -> hidden, no
bias) -> the model's activation -> Linear(hidden -> H_kv, no bias)``, reading each token's own q, k and v as the
attention computes them: after the projections' bias, after the QK-norm where the family has one (Qwen3-VL), before
RoPE. (The released code reads ``q_proj``/``k_proj``/``v_proj`` outputs; on a family with QK-norm we read the
normed q/k the attention actually uses, since those are what decide attention.) The score of a token depends on that
token alone, so it is computed once, when the token is prefilled (captured from the layer's own forward: no extra
pass, never ``output_attentions``), and never updated: the cache can be compressed chunk by chunk, streamed, and
reused for every question of a session.

The heads are saved as safetensors + ``citr_config.json``, which records the base model they were trained for (its
family, sizes, and a fingerprint of its weights); loading them against another model is refused with one line.

**Press** (`CITRPress`): after each prefill chunk, each layer and KV head keeps its ``budget`` (or ``keep`` share of
the visual tokens seen) visual entries with the highest predicted scores, the ``stabilizers`` most recent cached
visual entries always kept (the tail of the cache after the chunk is appended, as the released code; at most a
quarter of the budget, the ratio of the paper's NExT-QA setting, 128 of 512, so a small budget is not all
stabilizers); the chat prefix before the video and the text are never evicted (the engine protects them).
Deviation: the released code drops the stabilizers' protection on the last chunk of a prompt; a streaming session
never knows which chunk is the last, so they are kept after every chunk (at most ``stabilizers`` of the budget).

Based on: CITR (ACM MM 2025) and Locret (https://arxiv.org/abs/2410.01805); `../shared/research/seed-algorithms.md`
section 1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from longvid.errors import setting
from longvid.methods.base import KVPress, PrefillChunk
from longvid.methods.learned import ASSETS, base_description, check_base, load_setting, settle

CONFIG_NAME, WEIGHTS_NAME = "citr_config.json", "citr_heads.safetensors"
BUNDLED_HEADS = (ASSETS / "citr-longvid-tiny", ASSETS / "citr-longvid-tiny-v1")  # for the two bundled models


class RetainingHeads(torch.nn.Module):
    """One scoring MLP per decoder layer; ``base`` describes the model they belong to (`base_description`)."""

    def __init__(self, base: dict, hidden: int = 1024, activation: str = "silu"):
        super().__init__()
        self.base, self.hidden, self.activation = dict(base), hidden, activation
        width = (base["num_attention_heads"] + 2 * base["num_key_value_heads"]) * base["head_dim"]
        act = {"silu": torch.nn.SiLU, "gelu": torch.nn.GELU, "relu": torch.nn.ReLU}[activation]
        self.layers = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.Linear(width, hidden, bias=False), act(),
                                torch.nn.Linear(hidden, base["num_key_value_heads"], bias=False))
            for _ in range(base["num_layers"]))

    @classmethod
    def for_model(cls, model, hidden: int = 1024, seed: int = 0) -> RetainingHeads:
        """Fresh heads for a model adapter (the activation is the LLM's ``hidden_act``), seeded."""
        torch.manual_seed(seed)
        act = getattr(model.lm.config, "hidden_act", "silu")
        return cls(base_description(model), hidden, act if act in ("silu", "gelu", "relu") else "silu")

    def forward(self, layer_idx: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """(B, H_kv, n) scores of n tokens from their q (B, H_q, n, d), k and v (B, H_kv, n, d)."""
        x = torch.cat([t.transpose(1, 2).flatten(2) for t in (q, k, v)], dim=-1)  # (B, n, (H_q + 2 H_kv) d)
        head = self.layers[layer_idx]
        return head(x.to(head[0].weight.dtype)).transpose(1, 2).float()

    def save(self, folder: str | Path) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, folder / WEIGHTS_NAME)
        (folder / CONFIG_NAME).write_text(json.dumps(dict(base=self.base, hidden=self.hidden,
                                                          activation=self.activation), indent=1) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> RetainingHeads:
        """Heads saved by `save`; a one-line ValueError if the folder does not hold them."""
        from safetensors.torch import load_file

        folder = Path(folder)
        try:
            config = json.loads((folder / CONFIG_NAME).read_text())
            heads = cls(config["base"], config["hidden"], config["activation"])
            heads.load_state_dict(load_file(folder / WEIGHTS_NAME))
        except (OSError, ValueError, KeyError, RuntimeError) as err:
            raise ValueError(f"{setting('heads', str(folder))} does not hold CITR retaining heads ({CONFIG_NAME} and "
                             f"{WEIGHTS_NAME}): {str(err).splitlines()[0]}; train them with the CITR recipe") from None
        return heads.eval()

    def check_base(self, model) -> None:
        """A one-line ValueError unless ``model`` (an adapter) is the model these heads were trained for."""
        check_base(self.base, model, "CITR heads", "heads", "citr")


@dataclass
class CITRPress(KVPress):
    heads: RetainingHeads | str | None = field(default=None, repr=False)
    stabilizers: int = 128

    observes = True
    observes_values = True
    per_entry_scores = True  # scored once, on arrival, by the heads

    def __post_init__(self):
        super().__post_init__()
        self.heads, self._bundled = load_setting(self.heads, BUNDLED_HEADS, RetainingHeads.load)
        if not isinstance(self.heads, RetainingHeads):
            raise ValueError(f"CITR needs retaining heads: pass {setting('heads', 'DIR')} (a folder saved by "
                             "RetainingHeads.save)")
        if isinstance(self.stabilizers, bool) or not isinstance(self.stabilizers, int) or self.stabilizers < 0:
            raise ValueError(f"{setting('stabilizers', self.stabilizers)} is invalid: it must be 0 or more entries")

    def check_model(self, model) -> None:
        self.heads = settle(self.heads, self._bundled, model, "CITR heads", "heads", "citr")

    def observe(self, layer_idx: int, q: torch.Tensor, k: torch.Tensor, rope, scaling: float, v=None):
        with torch.no_grad():
            self.heads.layers[layer_idx].to(q.device)  # a no-op once there; a model split over devices moves each
            return self.heads(layer_idx, q, k, v)  # (1, H_kv, n_new_visual): fixed on insertion

    def new_scores(self, layer_idx: int, keys: torch.Tensor, values: torch.Tensor, chunk: PrefillChunk,
                   n_old: int) -> torch.Tensor:
        return chunk.observed[layer_idx]  # the heads' scores of the chunk's visual entries, from `observe`

    def rank(self, scores: torch.Tensor, n_keep: int) -> torch.Tensor:
        recent = min(self.stabilizers, n_keep // 4)  # at most a quarter of the budget (128 of the paper's 512)
        if not recent:
            return scores
        ranked = scores.clone()
        ranked[..., -recent:] = float("inf")  # the most recent cached visual entries stay (the code's tail)
        return ranked
