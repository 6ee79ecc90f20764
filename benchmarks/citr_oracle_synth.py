"""The oracle press on the synthetic suite: accuracy when each layer and KV head keeps the visual KV entries the true
answer attends to most (CITR's labels; ``--rows prompt``: the prompt after the video), beside `full`, on the questions
`longvid eval synth` wrote.

    longvid eval synth --methods citr --length 60 --n 30      # writes the suite's videos once (~/.cache/longvid)
    python benchmarks/citr_oracle_synth.py --limit 240
    python benchmarks/citr_oracle_synth.py --suite ~/.cache/longvid/synth/v2_eval_seed0_len120s_45videos --rows answer,prompt

Prints one line per keep and a JSON line last.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import longvid
from longvid.eval.letters import extract_letter
from longvid.train.citr_labels import oracle_method


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default=str(Path.home() / ".cache/longvid/synth/eval_seed0_len60s_41videos"))
    parser.add_argument("--limit", type=int, default=240)
    parser.add_argument("--keep", default="0.5,0.25,0.1")
    parser.add_argument("--rows", default="answer", help="label rows, comma-separated: answer (the paper's), prompt")
    parser.add_argument("--model", default="longvid-tiny")
    args = parser.parse_args()
    root = Path(args.suite)
    rows = [json.loads(line) for line in open(root / "questions.jsonl")][: args.limit]
    keeps = [(rows, float(k)) for rows in args.rows.split(",") for k in args.keep.split(",")]
    lm = longvid.load(args.model)
    right = {"full": []} | {k: [] for k in keeps}
    unparsed = {k: 0 for k in keeps}
    frames, video = None, None
    for r in rows:
        if r["video"] != video:
            video, frames = r["video"], lm.read(str(root / r["video"]))
        reply = lm.ask(frames, r["question"], max_new_tokens=4).text
        right["full"].append(extract_letter(reply, r["options"]) == r["answer"])
        for key in keeps:
            method = oracle_method(lm, frames, r["question"], r["answer"], keep=key[1], rows=key[0])
            letter = extract_letter(lm.ask(frames, r["question"], method=method, max_new_tokens=4).text, r["options"])
            unparsed[key] += letter is None
            right[key].append(letter == r["answer"])
    name = {k: k if k == "full" else f"{k[0]} {k[1]:g}" for k in right}
    for k, v in right.items():
        print(f"{name[k]:>12}: {100 * sum(v) / len(v):5.1f} %"
              + (f" ({unparsed[k]} replies named no option)" if k != "full" else ""))
    print(json.dumps(dict(benchmark="citr_oracle_synth", model=args.model, n=len(rows),
                          accuracy={name[k]: round(100 * sum(v) / len(v), 1) for k, v in right.items()},
                          unparsed={name[k]: v for k, v in unparsed.items()})))


if __name__ == "__main__":
    main()
