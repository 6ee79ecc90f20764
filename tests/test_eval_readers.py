"""The benchmark readers against fixtures written in each released layout; answer-letter extraction; clustered and
paired statistics against hand-computed values.

    pytest tests/test_eval_readers.py -q
"""

from __future__ import annotations

import csv
import json
import math
import shutil

import pytest

from longvid.eval.letters import extract_letter
from longvid.eval.readers import LayoutError, read_benchmark
from longvid.eval.stats import clustered_se, paired_delta

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def parquet(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def put_video(video_path, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(video_path, path)


# ----- layouts ----------------------------------------------------------------------------------------------------
def test_videomme(tmp_path, video_path):
    parquet(tmp_path / "videomme" / "test-00000-of-00001.parquet", [
        dict(video_id="001", duration="short", domain="Knowledge", sub_category="Humanity & History", url="u",
             videoID="fFjv93ACGo8", question_id="001-1", task_type="Counting Problem",
             question="How many kinds of fruit are shown?", options=["A. 1.", "B. 2.", "C. 3.", "D. 4."],
             answer="C"),
        dict(video_id="002", duration="long", domain="Sports", sub_category="Football", url="u", videoID="ZZ",
             question_id="002-1", task_type="Action Recognition", question="Who scores?",
             options=["A. Red.", "B. Blue.", "C. Nobody.", "D. Both."], answer="A")])
    put_video(video_path, tmp_path / "data" / "fFjv93ACGo8.mp4")
    put_video(video_path, tmp_path / "data" / "ZZ.MP4")
    b = read_benchmark("videomme", tmp_path)
    q = b.questions[0]
    assert (q.qid, q.video.name, q.options, q.answer) == ("001-1", "fFjv93ACGo8.mp4", ["1.", "2.", "3.", "4."], "C")
    assert q.categories == {"duration": "short", "task_type": "Counting Problem"}
    assert b.questions[1].video.name == "ZZ.MP4"
    assert b.prompt(q) == ("Select the best answer to the following multiple-choice question based on the video. "
                           "Respond with only the letter (A, B, C, or D) of the correct option.\nHow many kinds of "
                           "fruit are shown?\nA. 1.\nB. 2.\nC. 3.\nD. 4.\nThe best answer is:")


def test_mlvu_authors_layout(tmp_path, video_path):
    (tmp_path / "json").mkdir()
    (tmp_path / "json" / "1_plotQA.json").write_text(json.dumps([
        dict(video="movie101_66.mp4", duration=246, question="What color is the main male character?",
             candidates=["Yellow", "Red", "Green", "Blue"], answer="Red", question_type="plotQA")]))
    (tmp_path / "json" / "9_summary.json").write_text(json.dumps([dict(video="x.mp4", question="Summarize.",
                                                                      answer="...")]))
    put_video(video_path, tmp_path / "video" / "1_plotQA" / "movie101_66.mp4")
    b = read_benchmark("mlvu", tmp_path)
    assert len(b.questions) == 1 and b.questions[0].answer == "B" and b.questions[0].categories == {"task": "plotQA"}
    assert b.prompt(b.questions[0]).endswith("(A) Yellow\n(B) Red\n(C) Green\n(D) Blue\nOnly give the best option.\n"
                                             "Best option: (")
    assert b.macro_average == "task"


def test_mlvu_hub_layout(tmp_path, video_path):
    parquet(tmp_path / "mlvu" / "test-00000-of-00001.parquet", [
        dict(video_name="needle_1.mp4", duration=300.0, question="What is hidden?\n(A) a key\n(B) a cat",
             candidates=["a key", "a cat"], answer="a cat", task_type="needle", question_id="needle_1")])
    put_video(video_path, tmp_path / "mlvu" / "needle_1.mp4")
    q = read_benchmark("mlvu", tmp_path).questions[0]
    assert (q.question, q.options, q.answer) == ("What is hidden?", ["a key", "a cat"], "B")


@pytest.mark.parametrize("form", ["json", "parquet"])
def test_longvideobench(tmp_path, video_path, form):
    row = dict(video_id="86CxyhFV9MI", id="86CxyhFV9MI_0", video_path="86CxyhFV9MI.mp4", question="What happens?",
               correct_choice=2, duration=42.5, duration_group=60, question_category="S2E")
    if form == "json":
        (tmp_path / "lvb_val.json").write_text(json.dumps([dict(row, candidates=["a", "b", "c", "d"])]))
    else:
        parquet(tmp_path / "validation-00000-of-00001.parquet",
                [dict(row, option0="a", option1="b", option2="c", option3="d", option4="N/A")])
    put_video(video_path, tmp_path / "videos" / "86CxyhFV9MI.mp4")
    q = read_benchmark("longvideobench", tmp_path).questions[0]
    assert (q.qid, q.options, q.answer) == ("86CxyhFV9MI_0", ["a", "b", "c", "d"], "C")
    assert q.categories == {"duration_group": "60", "question_category": "S2E"}


@pytest.mark.parametrize("form", ["authors", "hub"])
def test_egoschema(tmp_path, video_path, form):
    uid, other = "00b9a0de-c59e-49cb-a127-6081e2fb8c8e", "0b0c6e45-7e1c-4ff7-8bba-5f2b2dbd5a85"
    if form == "authors":
        rows = [{"q_uid": u, "google_drive_id": "x", "question": "What is C doing?",
                 **{f"option {k}": f"opt {k}" for k in range(5)}} for u in (uid, other)]
        (tmp_path / "questions.json").write_text(json.dumps(rows))
        (tmp_path / "subset_answers.json").write_text(json.dumps({uid: 3}))
    else:
        parquet(tmp_path / "Subset" / "test-00000-of-00001.parquet", [
            dict(question_idx="0", question="What is C doing?", video_idx=uid,
                 option=[f"{letter}. opt {k}" for k, letter in enumerate("ABCDE")], answer="3"),
            dict(question_idx="1", question="Why?", video_idx=other, option=["A. a"] * 5, answer=None)])
    put_video(video_path, tmp_path / "videos" / f"{uid}.mp4")
    b = read_benchmark("egoschema", tmp_path)
    assert [(q.video.name, q.answer, q.options[3]) for q in b.questions] == [(f"{uid}.mp4", "D", "opt 3")]
    assert b.note == "1 questions without a public answer were left out"


def test_egoschema_needs_the_subset_answers(tmp_path):
    (tmp_path / "questions.json").write_text("[]")
    with pytest.raises(LayoutError, match="subset_answers.json"):
        read_benchmark("egoschema", tmp_path)


@pytest.mark.parametrize("mapped", [False, True])
def test_nextqa(tmp_path, video_path, mapped):
    fields = ["video", "frame_count", "width", "height", "question", "answer", "qid", "type",
              "a0", "a1", "a2", "a3", "a4"]
    with open(tmp_path / "val.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(fields)
        w.writerow(["2574374895", "719", "320", "240", "what did the baby do after throwing the ball", "2", "8", "TN",
                    "clap", "cry", "crawl", "sleep", "eat"])
    if mapped:
        (tmp_path / "map_vid_vidorID.json").write_text(json.dumps({"2574374895": "0101/2574374895"}))
        put_video(video_path, tmp_path / "NExTVideo" / "0101" / "2574374895.mp4")
    else:
        put_video(video_path, tmp_path / "NExTVideo" / "2574374895.mp4")
    q = read_benchmark("nextqa", tmp_path).questions[0]
    assert (q.qid, q.answer, q.question) == ("2574374895_8", "C", "What did the baby do after throwing the ball?")
    assert q.categories == {"group": "temporal", "type": "TN"} and q.video.is_file()


@pytest.mark.parametrize("form", ["authors", "hub"])
def test_lvbench(tmp_path, video_path, form):
    question = "How many goals?\n(A) 1\n(B) 2\n(C) 3\n(D) 4"
    if form == "authors":
        (tmp_path / "video_info.meta.jsonl").write_text(json.dumps(dict(
            key="0jHmbn9VBjc", type="sport", video_info={"duration_minutes": 70},
            qa=[dict(uid="1", question=question, answer="B", question_type=["key information retrieval"],
                     time_reference="03:29-03:32")])) + "\n")
        put_video(video_path, tmp_path / "0jHmbn9VBjc.mp4")
    else:
        parquet(tmp_path / "data" / "train-00000-of-00001.parquet", [dict(
            key="0jHmbn9VBjc", type="sport", uid="1", question=question, answer="B",
            question_type=["key information retrieval", "reasoning"], time_reference="03:29-03:32",
            video_path="all_videos/0jHmbn9VBjc.mp4")])
        put_video(video_path, tmp_path / "all_videos" / "0jHmbn9VBjc.mp4")
    b = read_benchmark("lvbench", tmp_path)
    q = b.questions[0]
    assert (q.question, q.options, q.answer, q.video.is_file()) == ("How many goals?", ["1", "2", "3", "4"], "B",
                                                                    True)
    assert b.prompt(q) == "How many goals?\n(A) 1\n(B) 2\n(C) 3\n(D) 4\nAnswer the question with the option letter"


# ----- errors ---------------------------------------------------------------------------------------------------------
def test_layout_errors_are_one_line(tmp_path, video_path):
    with pytest.raises(LayoutError, match=r"no Video-MME question file .* under .*: looked for videomme/test-\*\."):
        read_benchmark("videomme", tmp_path)
    parquet(tmp_path / "videomme" / "test-00000-of-00001.parquet", [dict(videoID="a", question="q")])
    with pytest.raises(LayoutError, match=r"row 0 has no 'question_id', 'options', 'answer', 'duration' field"):
        read_benchmark("videomme", tmp_path)
    parquet(tmp_path / "videomme" / "test-00000-of-00001.parquet", [dict(
        videoID="a", question_id="1", question="q", options=["A. x", "B. y"], answer="Q", duration="short")])
    with pytest.raises(LayoutError, match=r"row 0 has answer 'Q', which is not a letter"):
        read_benchmark("videomme", tmp_path)
    parquet(tmp_path / "videomme" / "test-00000-of-00001.parquet", [dict(
        videoID=v, question_id=v, question="q", options=["A. x", "B. y"], answer="A", duration="short")
        for v in ("a", "b")])
    put_video(video_path, tmp_path / "data" / "a.mp4")
    with pytest.raises(LayoutError, match=r"1 of 2 questions' videos are missing .*pass --skip-missing"):
        read_benchmark("videomme", tmp_path)
    b = read_benchmark("videomme", tmp_path, skip_missing=True)
    assert [q.qid for q in b.questions] == ["a"] and "1 questions whose video is missing" in b.note
    with pytest.raises(ValueError, match="unknown benchmark 'vidmme'; pass one of videomme, mlvu"):
        read_benchmark("vidmme", tmp_path)
    with pytest.raises(LayoutError, match="is not a folder"):
        read_benchmark("videomme", tmp_path / "nope")


# ----- letters ----------------------------------------------------------------------------------------------------
OPTIONS = ["red", "blue", "green", "red square"]


@pytest.mark.parametrize("reply, letter", [
    ("A", "A"), ("(A)", "A"), ("Answer: A.", "A"), ("The best answer is (C).", "C"), ("the answer is b", "B"),
    ("B) blue", "B"), ("**D**", "D"), ("[C]", "C"), ("b.", "B"), ("<answer>B</answer>", "B"),
    ("The correct answer is option B.", "B"), ("I think the answer is C because it is", "C"),
    ("Best option: (B", "B"),
    ("green", "C"), ("Green.", "C"), ("It was the red square.", "D"), ("C. green", "C"),
    ("I cannot tell from the video.", None), ("Sorry, I can't answer that.", None), ("A man walks in", None),
    ("The answer is (A) or (B)", None), ("blue or green", None), ("E", None), ("", None),
])
def test_answer_letters(reply, letter):
    assert extract_letter(reply, OPTIONS) == letter


# ----- statistics -------------------------------------------------------------------------------------------------
def test_clustered_se_by_hand():
    # mean 0.75; cluster sums of deviations: v1: (1-.75)+(0-.75) = -0.5, v2: 0.25, v3: 0.25
    # SE = sqrt(3/2 * (0.25 + 0.0625 + 0.0625)) / 4 = sqrt(0.5625) / 4 = 0.1875
    assert clustered_se([1, 0, 1, 1], ["v1", "v1", "v2", "v3"]) == pytest.approx(0.1875)
    # one question per video: the i.i.d. standard error sqrt(n/(n-1) * sum (x-m)^2) / n = std(ddof=1)/sqrt(n)
    x = [1, 0, 1, 1, 0]
    m = sum(x) / 5
    iid = math.sqrt(sum((v - m) ** 2 for v in x) / 4) / math.sqrt(5)
    assert clustered_se(x, list("abcde")) == pytest.approx(iid)
    assert math.isnan(clustered_se([1, 0], ["v", "v"]))


def test_paired_delta_by_hand():
    # diffs: 0, -1, 0, +1, -1 -> mean -0.2; clusters v1: [0, -1], v2: [0, 1], v3: [-1]
    # deviations from -0.2 summed per cluster: v1: 0.2 - 0.8 = -0.6, v2: 0.2 + 1.2 = 1.4, v3: -0.8
    # SE = sqrt(3/2 * (0.36 + 1.96 + 0.64)) / 5 = sqrt(4.44) / 5
    d = paired_delta([1, 0, 1, 1, 0], [1, 1, 1, 0, 1], ["v1", "v1", "v2", "v2", "v3"])
    se = math.sqrt(4.44) / 5
    assert (d.mean, d.se, d.n) == (pytest.approx(-0.2), pytest.approx(se), 5)
    assert (d.low, d.high) == (pytest.approx(-0.2 - 1.959964 * se), pytest.approx(-0.2 + 1.959964 * se))
    assert str(d) == f"-20.0 [{100 * (-0.2 - 1.959964 * se):+.1f}, {100 * (-0.2 + 1.959964 * se):+.1f}]"
