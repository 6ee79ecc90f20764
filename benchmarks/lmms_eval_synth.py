"""Evaluate ``longvid serve`` with lmms-eval: the synthetic suite as an lmms-eval task, asked through the server by
lmms-eval's ``openai`` chat model with ``pass_video_url`` (each video sent as a ``file://`` URL, decoded by the
server, which applies its method).

    python benchmarks/lmms_eval_synth.py --out /tmp/lvs --videos 10      # writes videos/, task/; prints the commands

then, in two shells (lmms-eval in its own environment: ``pip install lmms-eval``):

    longvid serve --model longvid-tiny --media-dir /tmp/lvs/videos --method evs --keep 0.5 --port 8000
    HF_HUB_OFFLINE=1 python -m lmms_eval --model openai --model_args model=longvid-tiny,\
base_url=http://127.0.0.1:8000/v1,api_key=EMPTY,pass_video_url=True,max_frames_num=60 \
        --include_path /tmp/lvs/task --tasks longvid_synth --batch_size 1 --output_path /tmp/lvs/logs

The task (``task/longvid_synth.yaml`` + ``task/utils.py``, written by `longvid.eval.lmms_task`) reads
``videos/questions.jsonl`` and scores the first standalone letter of each reply against the truth (``accuracy``).
lmms-eval can also run longvid in-process: ``--model longvid --model_args pretrained=longvid-tiny,method=evs,...``
(`longvid.eval.lmms_model`).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="a new folder")
    parser.add_argument("--videos", type=int, default=10)
    parser.add_argument("--length", type=float, default=60.0, help="seconds per video")
    parser.add_argument("--seed", type=int, default=0, help="evaluation seed (as longvid eval synth --seed)")
    args = parser.parse_args()
    from longvid.eval.lmms_task import write_synth_task

    write_synth_task(args.out, n_videos=args.videos, length=args.length, seed=args.seed)
    videos, task = (args.out / "videos").resolve(), args.out / "task"
    n = sum(1 for _ in open(videos / "questions.jsonl"))
    print(f"{n} questions about {args.videos} videos of {args.length:g} s in {videos}; the task in {task}")
    print(f"longvid serve --model longvid-tiny --media-dir {videos} --port 8000 [--method evs --keep 0.5]")
    print("HF_HUB_OFFLINE=1 python -m lmms_eval --model openai --model_args model=longvid-tiny,"
          f"base_url=http://127.0.0.1:8000/v1,api_key=EMPTY,pass_video_url=True,max_frames_num={int(args.length)} "
          f"--include_path {os.path.abspath(task)} --tasks longvid_synth --batch_size 1 "
          f"--output_path {os.path.abspath(args.out / 'logs')}")


if __name__ == "__main__":
    main()
