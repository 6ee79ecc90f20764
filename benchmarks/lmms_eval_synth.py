"""Evaluate ``longvid serve`` with lmms-eval: the synthetic suite as an lmms-eval task, asked through the server by
lmms-eval's ``openai`` chat model with ``pass_video_url`` (each video sent as a ``file://`` URL, decoded by the
server, which applies its method).

    python benchmarks/lmms_eval_synth.py --out /tmp/lvs --videos 10      # writes videos/, task/; prints the commands

then, in two shells (lmms-eval in its own environment: ``pip install lmms-eval``):

    longvid serve --model longvid-tiny --media-dir /tmp/lvs/videos --method evs --keep 0.5 --port 8000
    HF_HUB_OFFLINE=1 python -m lmms_eval --model openai --model_args model=longvid-tiny,\
base_url=http://127.0.0.1:8000/v1,api_key=EMPTY,pass_video_url=True,max_frames_num=60 \
        --include_path /tmp/lvs/task --tasks longvid_synth --batch_size 1 --output_path /tmp/lvs/logs

The task (``task/longvid_synth.yaml`` + ``task/utils.py``) reads ``videos/questions.jsonl`` and scores the first
letter of each reply against the truth (``accuracy``), as ``longvid eval synth`` does.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

TASK_YAML = """\
dataset_path: json
dataset_kwargs:
  data_files:
    test: {questions}
task: longvid_synth
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: !function utils.doc_to_target
process_results: !function utils.process_results
generation_kwargs:
  max_new_tokens: 4
  temperature: 0
  do_sample: false
metric_list:
  - metric: accuracy
    aggregation: mean
    higher_is_better: true
metadata:
  - version: 0.0
"""

TASK_UTILS = '''\
"""lmms-eval task functions for longvid's synthetic suite (written by benchmarks/lmms_eval_synth.py)."""

import os
import re

VIDEOS = {videos!r}


def doc_to_visual(doc):
    return [os.path.join(VIDEOS, doc["video"])]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]  # the question, its four options and "Answer with the letter."


def doc_to_target(doc):
    return doc["answer"]


def process_results(doc, results):
    match = re.search(r"\\b([ABCD])\\b", results[0] if results else "")
    return {{"accuracy": float(match is not None and match.group(1) == doc["answer"])}}
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="a new folder")
    parser.add_argument("--videos", type=int, default=10)
    parser.add_argument("--length", type=float, default=60.0, help="seconds per video")
    parser.add_argument("--seed", type=int, default=0, help="evaluation seed (as longvid eval synth --seed)")
    args = parser.parse_args()
    from longvid.synth.seeds import eval_seed
    from longvid.synth.suite import write_suite

    videos = (args.out / "videos").resolve()
    write_suite(videos, split="eval", n_videos=args.videos, seconds=args.length, seed=eval_seed(args.seed))
    task = args.out / "task"
    task.mkdir(parents=True)
    (task / "longvid_synth.yaml").write_text(TASK_YAML.format(questions=videos / "questions.jsonl"))
    (task / "utils.py").write_text(TASK_UTILS.format(videos=str(videos)))
    n = sum(1 for _ in open(videos / "questions.jsonl"))
    print(f"{n} questions about {args.videos} videos of {args.length:g} s in {videos}; the task in {task}")
    print(f"longvid serve --model longvid-tiny --media-dir {videos} --port 8000 [--method evs --keep 0.5]")
    print("HF_HUB_OFFLINE=1 python -m lmms_eval --model openai --model_args model=longvid-tiny,"
          f"base_url=http://127.0.0.1:8000/v1,api_key=EMPTY,pass_video_url=True,max_frames_num={int(args.length)} "
          f"--include_path {os.path.abspath(task)} --tasks longvid_synth --batch_size 1 "
          f"--output_path {os.path.abspath(args.out / 'logs')}")


if __name__ == "__main__":
    main()
