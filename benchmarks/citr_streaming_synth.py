"""KV presses in streaming on the synthetic suite: frames arrive in batches (``extend``) under a hard cap of KV entries,
then every question of the video is asked; beside the same presses given the whole video at once at the same cap.

    longvid eval synth --methods citr --length 60 --n 30          # writes the suite's videos once (~/.cache/longvid)
    python benchmarks/citr_streaming_synth.py --batch 15 --keep 0.5,0.25,0.1

The cap is ``keep`` x the whole video's visual tokens, as an absolute ``budget``, so every batch is compressed into
the same cap (a press that kept a ratio of what it has seen would grow with the stream). Asserts after every batch
that each layer and KV head holds at most the cap. Replies are read as `longvid eval synth` reads them (the first
character, A-D). Prints a table and a JSON last line.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

import longvid
from longvid.eval.stats import clustered_se
from longvid.eval.synth import parse_letter
from longvid.video import read_video


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default=str(Path.home() / ".cache/longvid/synth/eval_seed0_len60s_41videos"))
    parser.add_argument("--methods", default="citr,knorm,random-kv,streamingllm")
    parser.add_argument("--keep", default="0.5,0.25,0.1")
    parser.add_argument("--batch", type=float, default=15.0, help="seconds of video per extend")
    parser.add_argument("--videos", type=int, default=41)
    args = parser.parse_args()
    root = Path(args.suite)
    rows = [json.loads(line) for line in open(root / "questions.jsonl")]
    by_video = defaultdict(list)
    for r in rows:
        by_video[r["video"]].append(r)
    videos = sorted(by_video)[: args.videos]
    lm = longvid.load("longvid-tiny")
    keeps = [float(k) for k in args.keep.split(",")]
    methods = args.methods.split(",")
    right, clusters, peak = defaultdict(list), defaultdict(list), defaultdict(int)
    for video in videos:
        path = str(root / video)
        length = by_video[video][0]["length"]
        whole = read_video(path, fps=1.0)
        total = lm.session(whole, method="full").visual_tokens
        batches = [read_video(path, fps=1.0, start=s, end=min(length, s + args.batch))
                   for s in np.arange(0, length, args.batch)]
        for method in methods:
            for keep in keeps:
                cap = max(1, round(keep * total))
                for mode in ("stream", "whole"):
                    if mode == "whole":
                        s = lm.session(whole, method=method, budget=cap)
                    else:
                        s = lm.session(batches[0], method=method, budget=cap)
                        for batch in batches[1:]:
                            s.extend(batch)
                            assert s.kept_visual() <= cap, (method, keep, s.kept_visual(), cap)
                    peak[(method, keep, mode)] = max(peak[(method, keep, mode)], s.kept_visual())
                    for q in by_video[video]:
                        letter = parse_letter(s.ask(q["question"], max_new_tokens=2).text)  # as eval synth
                        right[(method, keep, mode)].append(letter == q["answer"])
                        clusters[(method, keep, mode)].append(video)
    print(f"{len(videos)} videos of {by_video[videos[0]][0]['length']:g} s, {args.batch:g} s batches; cap = keep x the "
          "whole video's visual tokens")
    print("| method | keep | streaming accuracy % | whole-video accuracy % | most entries kept / cap |")
    print("|---|---:|---:|---:|---:|")
    out = []
    for method in methods:
        for keep in keeps:
            row = dict(method=method, keep=keep)
            for mode in ("stream", "whole"):
                key = (method, keep, mode)
                row[mode] = 100 * float(np.mean(right[key]))
                row[mode + "_se"] = 100 * clustered_se(right[key], clusters[key])
            row["peak"] = peak[(method, keep, "stream")]
            out.append(row)
            print(f"| {method} | {keep:g} | {row['stream']:.1f} +- {row['stream_se']:.1f} | {row['whole']:.1f} +- "
                  f"{row['whole_se']:.1f} | {row['peak']} |")
    print(json.dumps(dict(benchmark="citr_streaming_synth", videos=len(videos), batch_seconds=args.batch, rows=out)))


if __name__ == "__main__":
    main()
