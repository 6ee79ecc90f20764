"""The option a multiple-choice reply chose: ``"A"``, ``"(A)"``, ``"Answer: A."``, ``"The best answer is B"``, the
option's text, or nothing (a refusal, a reply that names no option or several).

    extract_letter("The best answer is (C).", ["red", "blue", "green", "pink"])   # -> "C"
    extract_letter("green", ["red", "blue", "green", "pink"])                     # -> "C"
    extract_letter("I cannot tell from the video.", ["red", "blue"])              # -> None

Rules, in order (the first that decides wins):

1. Leading phrases are dropped: "the best answer is", "the answer is", "answer:", "best option: (", "option",
   "my answer is" ... (case-insensitive), and surrounding quotes, brackets and markup (``**B**``).
2. The reply starts with a valid letter that stands alone: ``B``, ``B.``, ``B)``, ``(B)``, ``[B]``, ``B: text``.
3. One valid letter stands alone in a marked form anywhere: ``(B)``, ``[B]``, or after "answer is" / "option";
   two different ones are ambiguous (None).
4. The reply is one option's text (ignoring case, punctuation and an "A. " prefix), or contains exactly one option's
   text and no other (the longest wins when one option's text contains another's).
5. Otherwise None: counted wrong, and reported as unparsed.

Unlike lmms-eval's parsers, nothing is chosen at random: a reply that names no option is wrong in every run, so
two methods' tables differ only by their answers.
"""

from __future__ import annotations

import re

LETTERS = "ABCDEFGHIJ"

_PREFIXES = re.compile(
    r"^(?:the\s+)?(?:best\s+|correct\s+|final\s+)?(?:answer|option|choice)(?:\s+is)?\s*[:：]?\s*|"
    r"^my\s+answer\s+is\s*[:：]?\s*|^answer\s*[:：]\s*|^best\s+option\s*[:：]?\s*\(?",
    re.IGNORECASE)
_MARKED = r"\(\s*([A-J])\s*\)|\[\s*([A-J])\s*\]|(?:answer\s+is|option|choice)\s*[:：]?\s*\(?([A-J])\b"


def extract_letter(reply: str, options, letters: str | None = None) -> str | None:
    """The letter of the option ``reply`` chose among ``options`` (a list of option texts, with or without an "A. "
    prefix), or None. ``letters`` defaults to the first ``len(options)`` of A-J."""
    valid = letters or LETTERS[:len(options)]
    text = _clean(reply)
    for _ in range(3):  # "Answer: the answer is (B)" needs two passes
        stripped = _PREFIXES.sub("", text).strip(" \t\n\"'`*_:")
        if stripped == text:
            break
        text = stripped
    marked = set()
    for m in re.finditer(_MARKED, reply, flags=re.IGNORECASE):
        letter = next(g for g in m.groups() if g)
        if letter.isupper() or m.group(3):  # "(b)" may be prose; "the answer is b" is not
            marked.add(letter.upper())
    marked &= set(valid)
    if re.fullmatch(r"[(\[]?\s*([A-Ja-j])\s*[)\].]?", text) and text.strip("()[]. ").upper() in valid:
        return text.strip("()[]. ").upper()  # the whole reply is one letter, in either case
    first = re.match(r"^[(\[]?\s*([A-J])\s*(?:[)\].:,;]|$|\s)", text)
    if first and first.group(1) in valid and not re.match(r"^[A-J]\s+[a-z]", text):  # "A man walks" is not an answer
        return first.group(1) if marked <= {first.group(1)} else None  # "(A) or (B)" is ambiguous
    if len(marked) == 1:
        return marked.pop()
    if len(marked) > 1:
        return None
    return _by_text(text, options, valid)


def _clean(reply: str) -> str:
    text = (reply or "").strip()
    text = re.sub(r"<[^>]{1,40}>", " ", text)  # tags such as <answer>...</answer>
    return text.strip(" \t\n\"'`*_")


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def option_text(option: str) -> str:
    """An option without its "A. " / "(A) " / "A) " prefix."""
    return re.sub(r"^\s*(?:\(?[A-J][.)]|\([A-J]\)|[A-J]:)\s+", "", option)


def _by_text(text: str, options, valid: str) -> str | None:
    said = _norm(text)
    if not said:
        return None
    texts = [(_norm(option_text(o)), letter) for o, letter in zip(options, valid)]
    exact = [letter for t, letter in texts if t and t == said]
    if len(exact) == 1:
        return exact[0]
    inside = [(t, letter) for t, letter in texts if t and re.search(rf"(?:^| ){re.escape(t)}(?: |$)", said)]
    if not inside:
        return None
    longest = max(inside, key=lambda x: len(x[0]))
    if all(t in longest[0] for t, _ in inside):  # "red" inside "red square": the longer option was named
        return longest[1]
    return None
