"""longvid-tiny's tokenizer: a byte-level BPE over the synthetic suite's closed set of lines, each line one token.

Shared by longvid-tiny v1 (`longvid.train.tiny_v1`) and 2 (`longvid.train.tiny`, which adds suite v2's lines).

    python -c "from longvid.train.tokenizer import build_synth_tokenizer; print(len(build_synth_tokenizer()))"
"""

from __future__ import annotations

from collections import Counter

from longvid.synth.questions import KINDS, LETTERS, PROMPT_TEMPLATE, STEMS, VALUES
from longvid.synth.spec import COLORS, SHAPES
from longvid.tiny import QWEN2_VL_CHAT_TEMPLATE, SPECIAL_TOKENS

__all__ = ["synth_lines", "train_bpe", "build_synth_tokenizer", "line_id", "vocab_size"]


def synth_lines() -> list[str]:
    """Every line the model reads: each question stem, each option line "X. value", the instruction, chat words."""
    stems = list(dict.fromkeys(STEMS[kind].format(shape=s, color=c, name=f"{c} {s}")
                               for kind in KINDS for c in COLORS for s in SHAPES))
    values = [value for kind in KINDS for value in VALUES[kind]]
    options = [f"{letter}. {value}" for letter in LETTERS for value in values]
    instruction = PROMPT_TEMPLATE.splitlines()[-1]  # "Answer with the letter."
    return stems + options + [instruction, "You are a helpful assistant.", "system", "user", "assistant"]


def _line_pre_tokenizer():
    """Split at newlines only (then bytes -> GPT-2 symbols): a whole line can become one token."""
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex("\n"), behavior="isolated"),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def train_bpe(texts: list[str], max_merges: int = 5000) -> list[tuple[str, str]]:
    """Byte-level BPE merges until every line of ``texts`` is one token; deterministic (ties: the larger pair)."""
    pre = _line_pre_tokenizer()
    words = Counter(piece for text in texts for piece, _ in pre.pre_tokenize_str(text))
    pieces = {word: list(word) for word in words}
    merges = []
    for _ in range(max_merges):
        pairs = Counter()
        for word, count in words.items():
            seq = pieces[word]
            for pair in zip(seq, seq[1:]):
                pairs[pair] += count
        if not pairs:
            return merges
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        for word, seq in pieces.items():
            i, out = 0, []
            while i < len(seq):
                if i + 1 < len(seq) and (seq[i], seq[i + 1]) == best:
                    out.append(seq[i] + seq[i + 1])
                    i += 2
                else:
                    out.append(seq[i])
                    i += 1
            pieces[word] = out
    raise ValueError(f"BPE did not close the vocabulary within {max_merges} merges")


def build_synth_tokenizer(lines: list[str] | None = None):
    """longvid-tiny's tokenizer: every line of the suite's prompts is one token (its text vocabulary is closed).

    Byte-level BPE over lines (`synth_lines`): 256 byte symbols, the 8 Qwen-VL special tokens at ids 256-263 (as
    `longvid.tiny`), then the merges. Any other text still encodes, byte by byte. The chat template is Qwen2-VL's.
    ``lines`` replaces `synth_lines` (longvid-tiny 2 adds suite v2's lines: `longvid.train.tiny.synth_lines_v2`).
    One token per line leaves the model's capacity to the video: which event the question names, and which option
    holds the answer, are each one token to match.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {ch: i for i, ch in enumerate(bytes_to_unicode().values())}
    for token in SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    merges = train_bpe(synth_lines() if lines is None else lines)
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = _line_pre_tokenizer()
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  additional_special_tokens=list(SPECIAL_TOKENS[1:]))
    tok.chat_template = QWEN2_VL_CHAT_TEMPLATE
    return tok


def line_id(tokenizer, line: str) -> int:
    """The single token of a suite line; raises if the tokenizer splits it."""
    ids = tokenizer(line, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"{line!r} is {len(ids)} tokens for this tokenizer; longvid-tiny's lines are one token")
    return ids[0]


def vocab_size(tokenizer) -> int:
    """The model's vocabulary: the tokenizer's, padded to a multiple of 16."""
    return -(-len(tokenizer) // 16) * 16
