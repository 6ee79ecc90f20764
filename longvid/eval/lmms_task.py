"""The synthetic suite as an lmms-eval task (``longvid_synth``), for running lmms-eval on longvid offline: through
``--model longvid`` (`longvid.eval.lmms_model`) or through ``longvid serve`` with lmms-eval's ``openai`` model.

    from longvid.eval.lmms_task import write_synth_task
    write_synth_task("/tmp/lvs", n_videos=5)   # /tmp/lvs/videos (mp4 + questions.jsonl), /tmp/lvs/task (yaml + utils)
"""

from __future__ import annotations

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
"""lmms-eval task functions for longvid's synthetic suite (written by longvid.eval.lmms_task)."""

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


def write_synth_task(out: str | Path, *, n_videos: int = 10, length: float = 60.0, seed: int = 0,
                     version: int = 2) -> Path:
    """Write ``out/videos`` (suite ``version``, the bundled longvid-tiny's by default; evaluation seeds from
    ``seed``, ``length`` s each, with ``questions.jsonl``) and ``out/task`` (``longvid_synth.yaml`` + ``utils.py``,
    for ``--include_path``); returns ``out``."""
    from longvid.synth.seeds import eval_seed
    from longvid.synth.suite import write_suite

    out = Path(out)
    videos = (out / "videos").resolve()
    write_suite(videos, split="eval", n_videos=n_videos, seconds=length, seed=eval_seed(seed), version=version)
    task = out / "task"
    task.mkdir(parents=True)
    (task / "longvid_synth.yaml").write_text(TASK_YAML.format(questions=videos / "questions.jsonl"))
    (task / "utils.py").write_text(TASK_UTILS.format(videos=str(videos)))
    return out
