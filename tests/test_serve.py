"""``longvid serve`` over real HTTP: a server process on a free loopback port, longvid-tiny, generated videos.

Answers equal the library's; streamed deltas equal the whole answer; sessions answer as in-process sessions; every
bad request is a one-line OpenAI-style 4xx and the process keeps serving; the queue refuses with 429; a client that
goes away frees the device; SIGTERM exits 0.

    pytest tests/test_serve.py -q
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time

import httpx
import pytest

import longvid
from serving import running_server, start_server

pytest.importorskip("fastapi")
KEY = "sk-test-0123"


@pytest.fixture(scope="module")
def media(tmp_path_factory, video_path):
    """A media directory with the test clip, a nested copy, a link that leaves it, and a file outside it."""
    root = tmp_path_factory.mktemp("media")
    (root / "clip.mp4").write_bytes(open(video_path, "rb").read())
    (root / "sub").mkdir()
    (root / "sub" / "again.mp4").write_bytes(open(video_path, "rb").read())
    outside = tmp_path_factory.mktemp("outside") / "secret.mp4"
    outside.write_bytes(open(video_path, "rb").read())
    (root / "escape.mp4").symlink_to(outside)
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000))
    from longvid.video.synthetic import write_test_video

    write_test_video(root / "long.mp4", seconds=90, fps=10, width=112, height=84)  # work that takes a while
    return root, outside


@pytest.fixture(scope="module")
def server(media):
    with running_server("--model", "longvid-tiny", "--media-dir", media[0], "--max-frames", "16",
                        "--max-tokens", "64") as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


def chat_body(url="clip.mp4", question="What colour was the shape?", **extra):
    return {"model": "longvid-tiny", "messages": [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": url}}, {"type": "text", "text": question}]}],
        "max_tokens": 4, **extra}


def error_of(response, status: int) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and "\n" not in error["message"]
    return error["message"]


def sse(response) -> list:
    events = [line[len("data: "):] for line in response.text.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


# ----- answers ---------------------------------------------------------------------------------------------------------
def test_models_methods_and_health(client):
    assert client.get("/v1/models").json()["data"][0]["id"] == "longvid-tiny"
    methods = {m["id"]: m for m in client.get("/v1/methods").json()["data"]}
    assert methods["fastv"]["needs_question"] and not methods["knorm"]["needs_question"]
    assert client.get("/health").json()["status"] == "ok"


@pytest.mark.parametrize("extra", [{}, {"method": "evs", "keep": 0.5}, {"method": "fastv", "keep": 0.5}])
def test_chat_answers_as_the_library(client, bundled, video_path, extra):
    r = client.post("/v1/chat/completions", json=chat_body(fps=2, **extra))
    assert r.status_code == 200, r.text
    d = r.json()
    ref = bundled.ask(video_path, "What colour was the shape?", method=extra.get("method", "full"),
                      keep=extra.get("keep"), fps=2, max_new_tokens=4)
    assert d["choices"][0]["message"]["content"] == ref.text
    assert d["usage"]["completion_tokens"] == len(ref.token_ids)
    assert d["usage"]["prompt_tokens"] == ref.stats.llm_tokens == d["longvid"]["llm_tokens"]
    assert (d["longvid"]["visual_tokens"], d["longvid"]["kept_tokens"]) == (ref.stats.visual_tokens,
                                                                            ref.stats.kept_tokens)
    assert d["object"] == "chat.completion" and d["choices"][0]["finish_reason"] in ("stop", "length")
    assert d["longvid"]["method"] == extra.get("method", "full") and d["longvid"]["queue_seconds"] >= 0


def test_streamed_deltas_make_the_whole_answer(client):
    whole = client.post("/v1/chat/completions", json=chat_body(max_tokens=12)).json()
    r = client.post("/v1/chat/completions", json=chat_body(max_tokens=12, stream=True,
                                                           stream_options={"include_usage": True}))
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse(r)
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
    assert text == whole["choices"][0]["message"]["content"]
    final = [e for e in events if e["choices"] and e["choices"][0]["finish_reason"]][0]
    assert final["longvid"]["visual_tokens"] == whole["longvid"]["visual_tokens"]
    assert events[-1]["usage"] == whole["usage"] and events[-1]["choices"] == []


def test_stop_strings_end_the_answer(client):
    whole = client.post("/v1/chat/completions", json=chat_body(max_tokens=12)).json()["choices"][0]["message"]
    text = whole["content"]
    if len(text) < 3:
        pytest.skip("the answer is too short to cut")
    stop = text[1:3]
    d = client.post("/v1/chat/completions", json=chat_body(max_tokens=12, stop=[stop])).json()
    assert d["choices"][0]["message"]["content"] == text[:text.find(stop)].strip()
    assert d["choices"][0]["finish_reason"] == "stop"


def test_keep_map_is_a_png_of_the_run(client):
    d = client.post("/v1/chat/completions", json=chat_body(method="evs", keep=0.5, keep_map=True)).json()
    png = client.get(d["longvid"]["keep_map"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n")
    error_of(client.get("/v1/runs/run-0000/keep_map.png"), 404)


def test_uploads_and_data_urls(client, video_path):
    with open(video_path, "rb") as f:
        up = client.post("/v1/files", files={"file": ("my clip.mp4", f, "video/mp4")}, data={"purpose": "vision"})
    assert up.status_code == 200, up.text
    stored = up.json()
    assert stored["object"] == "file" and stored["bytes"] == os.path.getsize(video_path)
    assert stored["id"] in [f["id"] for f in client.get("/v1/files").json()["data"]]
    by_id = client.post("/v1/chat/completions", json=chat_body(url=stored["id"]))
    by_path = client.post("/v1/chat/completions", json=chat_body())
    assert by_id.json()["choices"] == by_path.json()["choices"]
    data_url = "data:video/mp4;base64," + base64.b64encode(open(video_path, "rb").read()).decode()
    assert client.post("/v1/chat/completions", json=chat_body(url=data_url)).json()["choices"] == \
        by_path.json()["choices"]
    assert client.delete(f"/v1/files/{stored['id']}").json()["deleted"]
    assert "no uploaded file" in error_of(client.post("/v1/chat/completions", json=chat_body(url=stored["id"])), 404)


def test_bad_uploads(client, media):
    bad = client.post("/v1/files", files={"file": ("noise.mp4", os.urandom(5000), "video/mp4")})
    message = error_of(bad, 400)
    assert message.startswith('"file": \'noise.mp4\' is not a readable video: FFmpeg cannot open it'), message
    assert "/" not in message.split("(", 1)[1] and "Errno" not in message  # the server's folders are not shown
    assert "no 'file' field" in error_of(client.post("/v1/files", data={"purpose": "vision"}), 400)
    assert client.get("/v1/files").json()["data"] == [] or all(f["filename"] != "noise.mp4"
                                                               for f in client.get("/v1/files").json()["data"])


# ----- sources outside the media directory ------------------------------------------------------------------------
@pytest.mark.parametrize("url, status, words", [
    ("../clip.mp4", 400, "outside the server's media directory"),
    ("sub/../../clip.mp4", 400, "outside the server's media directory"),
    ("escape.mp4", 400, "outside the server's media directory"),  # a link that leaves it
    ("nope.mp4", 404, "no file 'nope.mp4'"),
    ("http://127.0.0.1:1/x.mp4", 400, "http:// URLs are not fetched by this server"),
    ("ftp://example.org/x.mp4", 400, "the ftp:// scheme is not supported"),
    ("broken.mp4", 400, "is not a video|cannot|no video|decod"),
])
def test_sources_are_confined_to_the_media_directory(client, media, url, status, words):
    import re

    message = error_of(client.post("/v1/chat/completions", json=chat_body(url=url)), status)
    assert re.search(words, message), message
    assert str(media[0]) not in message  # paths as the client wrote them, not the server's folders


def test_absolute_paths_only_inside_the_media_directory(client, media):
    root, outside = media
    assert client.post("/v1/chat/completions", json=chat_body(url=f"file://{root / 'sub' / 'again.mp4'}")
                       ).status_code == 200
    for url in (str(outside), f"file://{outside}", "file:///etc/passwd"):
        assert "outside the server's media directory" in error_of(
            client.post("/v1/chat/completions", json=chat_body(url=url)), 400)
    assert [m["path"] for m in client.get("/v1/media").json()["data"]] == ["broken.mp4", "clip.mp4", "escape.mp4",
                                                                          "long.mp4", "sub/again.mp4"]


# ----- bad requests -------------------------------------------------------------------------------------------------
BAD = [
    (dict(method="nope"), 400, "no method 'nope'|unknown method|not a method"),
    (dict(keep=1.5), 400, '"keep": 1.5'),
    (dict(keep="half"), 400, '"keep": \'half\' must be a number'),
    (dict(budget=-3), 400, '"budget": -3'),
    (dict(fps=0), 400, '"fps": 0'),
    (dict(fps=2, frames=4), 400, '"fps"'),
    (dict(frames=999), 400, '"frames": 999 is more than this server samples'),
    (dict(max_tokens=0), 400, '"max_tokens": 0 is out of range'),
    (dict(max_tokens=100_000), 400, '"max_tokens": 100000 is out of range: it must be 1 to 64'),
    (dict(temperature=3), 400, '"temperature": 3'),
    (dict(n=2), 400, '"n": 2 is not supported'),
    (dict(logprobs=True), 400, '"logprobs" is not supported'),
    (dict(settings={"layer": 99}, method="fastv"), 400, '"settings": {"layer": 99}'),
    (dict(model="gpt-4o"), 404, "'gpt-4o' is not served here"),
    (dict(method="evs", settings={"keep": 0.5}), 400, '"settings.keep" is not a method setting; pass it as "keep"'),
    (dict(settings={"name": "evs"}), 400, '"settings.name" is not a method setting; pass it as "method"'),
    (dict(seed=2**64), 400, r'"seed": 18446744073709551616 is out of range'),
    (dict(seed=-1), 400, r'"seed": -1 is out of range'),
    (dict(stop="x" * 1000), 400, r'"stop": .{80}\.\.\. must be a string'),
    (dict(media_io_kwargs={"video": {"num_frames": 0}}), 400, '"media_io_kwargs.video.num_frames": 0 is invalid'),
    (dict(media_io_kwargs={"video": "8"}), 400, '"media_io_kwargs" must be'),
]


@pytest.mark.parametrize("extra, status, words", BAD)
def test_bad_fields_are_one_line_4xx(client, extra, status, words):
    import re

    message = error_of(client.post("/v1/chat/completions", json=chat_body(**extra)), status)
    assert re.search(words, message), message


@pytest.mark.parametrize("body", [chat_body(url="clip\ud800.mp4"), chat_body(question="\ud800?")])
def test_unpaired_surrogates_are_refused(client, body):
    bad = client.post("/v1/chat/completions", content=json.dumps(body).encode(),  # \ud800 escaped: valid JSON
                      headers={"Content-Type": "application/json"})
    assert "unpaired UTF-16 surrogate" in error_of(bad, 400)


def test_a_long_system_prompt_counts_toward_the_question_limit(server):
    body = chat_body()
    body["messages"].insert(0, {"role": "system", "content": "x" * 9000})
    with httpx.Client(base_url=server.url, timeout=60) as c:
        assert "the question and system prompt have" in error_of(c.post("/v1/chat/completions", json=body), 400)
        assert '"system" has 9000 characters' in error_of(
            c.post("/v1/sessions", json={"video_url": "clip.mp4", "system": "x" * 9000}), 400)


def test_data_urls_leave_no_files_behind(client, video_path, tmp_path):
    """A data: URL is stored for its request only: never listed, removed when the request ends or is refused."""
    from longvid.serve.media import Media

    data_url = "data:video/mp4;base64," + base64.b64encode(open(video_path, "rb").read()).decode()
    assert client.post("/v1/chat/completions", json=chat_body(url=data_url)).status_code == 200
    assert client.post("/v1/chat/completions", json=chat_body(url=data_url, fps=0)).status_code == 400
    assert client.get("/v1/files").json()["data"] == [] or all(
        not f["filename"].startswith("data") for f in client.get("/v1/files").json()["data"])
    media = Media(None, tmp_path / "uploads", 1 << 30, remove_at_close=False)
    stored = media.store_data_url(data_url, "video_url")
    assert stored.path.is_file() and media.list_uploads() == []
    media.release(stored.path)
    assert not stored.path.exists() and list((tmp_path / "uploads").iterdir()) == []
    media.close()
    assert (tmp_path / "uploads").is_dir()  # a folder the caller chose is kept


@pytest.mark.parametrize("body, words", [
    ({"messages": []}, '"messages" must be a non-empty list'),
    ({"messages": [{"role": "user", "content": "no video here"}]}, "has no video"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x.png"}}]}]},
     "image_url parts are not supported"),
    ({"messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": "clip.mp4"}},
                                                {"type": "video_url", "video_url": {"url": "clip.mp4"}},
                                                {"type": "text", "text": "q"}]}]}, "one video per request"),
    ({"messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": "clip.mp4"}}]}]},
     "no question text"),
    ({"messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": "clip.mp4"}},
                                                {"type": "text", "text": "q"}]},
                   {"role": "assistant", "content": "a"}]}, "create a session"),
    ({"messages": [{"role": "wizard", "content": "q"}]}, "is not one of system, user, assistant"),
    ([1, 2], "must be a JSON object"),
])
def test_bad_messages_are_one_line_400(client, body, words):
    assert words in error_of(client.post("/v1/chat/completions", json=body), 400)


def test_malformed_bodies_and_routes(client):
    assert "not valid JSON" in error_of(client.post("/v1/chat/completions", content=b"{oops",
                                                    headers={"content-type": "application/json"}), 400)
    assert "empty" in error_of(client.post("/v1/chat/completions"), 400)
    assert "no route" in error_of(client.get("/v1/nothing"), 404)
    assert "not allowed" in error_of(client.get("/v1/chat/completions"), 405)


def test_the_server_survives_every_bad_request(client):
    for extra, _, _ in BAD:
        client.post("/v1/chat/completions", json=chat_body(**extra))
    client.post("/v1/chat/completions", content=b"\xff\xfe garbage", headers={"content-type": "application/json"})
    assert client.get("/health").json()["status"] == "ok"
    assert client.post("/v1/chat/completions", json=chat_body()).status_code == 200


# ----- sessions -----------------------------------------------------------------------------------------------------
def ask_body(question="Where was it?", **extra):
    return {"messages": [{"role": "user", "content": question}], "max_tokens": 4, **extra}


def test_sessions_answer_as_library_sessions(client, bundled, video_path):
    created = client.post("/v1/sessions", json={"video_url": {"url": "clip.mp4"}, "method": "knorm", "keep": 0.5,
                                                "fps": 2})
    assert created.status_code == 200, created.text
    s = created.json()
    ref = bundled.session(video_path, method="knorm", keep=0.5, fps=2)
    assert s["visual_tokens"] == ref.visual_tokens and s["kept_tokens"] == ref.kept_visual() and s["kv_bytes"] > 0
    for question in ("Where was it?", "What colour was it?"):
        d = client.post(f"/v1/sessions/{s['id']}/messages", json=ask_body(question)).json()
        assert d["choices"][0]["message"]["content"] == ref.ask(question, max_new_tokens=4).text
    streamed = sse(client.post(f"/v1/sessions/{s['id']}/messages", json=ask_body(stream=True)))
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in streamed if e["choices"])
    assert text == ref.ask("Where was it?", max_new_tokens=4).text
    listed = client.get("/v1/sessions").json()
    assert s["id"] in [x["id"] for x in listed["data"]] and listed["used_bytes"] > 0
    assert client.get(f"/v1/sessions/{s['id']}").json()["questions"] == 3
    assert client.delete(f"/v1/sessions/{s['id']}").json()["deleted"]
    assert "is gone: deleted" in error_of(client.post(f"/v1/sessions/{s['id']}/messages", json=ask_body()), 404)


def test_session_frames_stream_in_under_the_press_budget(client):
    s = client.post("/v1/sessions", json={"video_url": "clip.mp4", "method": "knorm", "budget": 8, "fps": 2,
                                          "end": 3.0}).json()
    grown = client.post(f"/v1/sessions/{s['id']}/frames", json={"video_url": "sub/again.mp4", "fps": 2,
                                                                 "start": 3.0})
    assert grown.status_code == 200, grown.text
    g = grown.json()
    assert g["visual_tokens"] > s["visual_tokens"] and g["kept_tokens"] == 8 and g["frames"] > s["frames"]
    assert client.post(f"/v1/sessions/{s['id']}/messages", json=ask_body()).status_code == 200
    client.delete(f"/v1/sessions/{s['id']}")


def test_bad_session_requests(client):
    assert "needs the question during prefill" in error_of(
        client.post("/v1/sessions", json={"video_url": "clip.mp4", "method": "fastv"}), 400)
    assert "no session 'sess-nope'" in error_of(client.post("/v1/sessions/sess-nope/messages", json=ask_body()), 404)
    assert "no session" in error_of(client.delete("/v1/sessions/sess-nope"), 404)
    assert '"video_url" must be' in error_of(client.post("/v1/sessions", json={"method": "full"}), 400)
    s = client.post("/v1/sessions", json={"video_url": "clip.mp4"}).json()
    body = {"messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": "clip.mp4"}},
                                                      {"type": "text", "text": "q"}]}]}
    assert "already holds its video" in error_of(client.post(f"/v1/sessions/{s['id']}/messages", json=body), 400)
    client.delete(f"/v1/sessions/{s['id']}")


# ----- clients -----------------------------------------------------------------------------------------------------
def test_the_official_openai_client(server):
    openai = pytest.importorskip("openai")
    api = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
    assert [m.id for m in api.models.list()] == ["longvid-tiny"]
    messages = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": "clip.mp4"}},
                                             {"type": "text", "text": "What colour?"}]}]
    done = api.chat.completions.create(model="longvid-tiny", messages=messages, max_tokens=4,
                                       extra_body={"method": "evs", "keep": 0.5})
    assert done.choices[0].message.content is not None and done.model_extra["longvid"]["method"] == "evs"
    pieces = api.chat.completions.create(model="longvid-tiny", messages=messages, max_tokens=4, stream=True,
                                         extra_body={"method": "evs", "keep": 0.5})
    assert "".join(c.choices[0].delta.content or "" for c in pieces if c.choices) == done.choices[0].message.content
    with pytest.raises(openai.BadRequestError, match='"keep": 2'):
        api.chat.completions.create(model="longvid-tiny", messages=messages, extra_body={"keep": 2})


def test_lmms_eval_requests(server, media, bundled, video_path):
    """What lmms-eval's ``openai`` chat model sends with ``pass_video_url=True`` (lmms_eval/protocol.py and
    models/chat/openai.py): a file:// URL of the absolute path, and vLLM's frame count in ``media_io_kwargs``."""
    openai = pytest.importorskip("openai")
    api = openai.OpenAI(base_url=server.url + "/v1", api_key="EMPTY")
    url = f"file://{os.path.abspath(media[0] / 'clip.mp4')}"
    messages = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}},
                                             {"type": "text", "text": "What colour was the shape?"}]}]
    done = api.chat.completions.create(model="longvid-tiny", messages=messages, max_tokens=4, temperature=0,
                                       extra_body={"media_io_kwargs": {"video": {"num_frames": 8}}})
    ref = bundled.ask(video_path, "What colour was the shape?", frames=8, max_new_tokens=4)
    assert done.choices[0].message.content == ref.text
    assert done.model_extra["longvid"]["frames_decoded"] == 8 and done.usage.prompt_tokens == ref.stats.llm_tokens
    with pytest.raises(openai.BadRequestError, match=r'"media_io_kwargs.video.num_frames": 768 is more than this '
                                                     r"server samples per video \(16, --max-frames\)"):
        api.chat.completions.create(model="longvid-tiny", messages=messages, max_tokens=4,
                                    extra_body={"media_io_kwargs": {"video": {"num_frames": 768}}})


def test_the_servers_method_for_requests_that_name_none(media, bundled, video_path):
    """``--method evs --keep 0.5``: what a client that cannot send longvid's fields (lmms-eval) gets."""
    with running_server("--model", "longvid-tiny", "--media-dir", media[0], "--method", "evs", "--keep", "0.5") as s, \
            httpx.Client(base_url=s.url, timeout=120) as c:
        assert [m["id"] for m in c.get("/v1/methods").json()["data"] if m["default"]] == ["evs"]
        for extra, method, keep in (({}, "evs", 0.5), ({"keep": 0.25}, "evs", 0.25),
                                    ({"method": "full"}, "full", None), ({"method": "knorm"}, "knorm", None)):
            d = c.post("/v1/chat/completions", json=chat_body(fps=2, **extra)).json()
            ref = bundled.ask(video_path, "What colour was the shape?", method=method, keep=keep, fps=2,
                              max_new_tokens=4)
            assert d["longvid"]["method"] == method and d["choices"][0]["message"]["content"] == ref.text
            assert (d["longvid"]["kept_tokens"], d["longvid"]["kv_bytes"]) == (ref.stats.kept_tokens,
                                                                               ref.stats.kv_bytes)
        session = c.post("/v1/sessions", json={"video_url": "clip.mp4", "fps": 2}).json()
        assert session["method"] == "evs"
    with running_server("--model", "longvid-tiny", "--media-dir", media[0], "--method", "fastv") as s, \
            httpx.Client(base_url=s.url, timeout=120) as c:
        message = error_of(c.post("/v1/sessions", json={"video_url": "clip.mp4"}), 400)
        assert message.startswith("this server's default method 'fastv' (--method) needs the question")


# ----- a strict server: key, tiny queue, short idle, small memory and uploads ---------------------------------------
@pytest.fixture(scope="module")
def strict(media, client):
    one = client.post("/v1/sessions", json={"video_url": "clip.mp4", "fps": 2}).json()
    client.delete(f"/v1/sessions/{one['id']}")
    memory = int(one["bytes"] * 1.5)  # room for one such session, not two
    with running_server("--model", "longvid-tiny", "--media-dir", media[0], "--api-key", KEY, "--queue", "1",
                        "--session-idle", "2", "--session-memory", str(memory), "--max-upload-mb", "0.01") as s:
        yield s


def test_api_key(strict):
    body = chat_body()
    assert "missing API key" in error_of(httpx.post(strict.url + "/v1/chat/completions", json=body, timeout=60), 401)
    assert "wrong API key" in error_of(httpx.post(strict.url + "/v1/chat/completions", json=body, timeout=60,
                                                  headers={"Authorization": "Bearer nope"}), 401)
    ok = httpx.post(strict.url + "/v1/chat/completions", json=body, timeout=60,
                    headers={"Authorization": f"Bearer {KEY}"})
    assert ok.status_code == 200 and httpx.get(strict.url + "/").status_code == 200  # the page itself is public


def test_huge_uploads_are_refused(strict, video_path):
    auth = {"Authorization": f"Bearer {KEY}"}
    with open(video_path, "rb") as f:
        r = httpx.post(strict.url + "/v1/files", files={"file": ("clip.mp4", f, "video/mp4")}, headers=auth)
    assert "larger than this server accepts" in error_of(r, 413)
    url = "data:video/mp4;base64," + base64.b64encode(open(video_path, "rb").read()).decode()
    assert "larger than this server accepts" in error_of(
        httpx.post(strict.url + "/v1/chat/completions", json=chat_body(url=url), headers=auth, timeout=60), 413)


def test_sessions_are_evicted_least_recently_used_and_expire(strict):
    auth = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=strict.url, headers=auth, timeout=60) as c:
        first = c.post("/v1/sessions", json={"video_url": "clip.mp4", "fps": 2}).json()["id"]
        second = c.post("/v1/sessions", json={"video_url": "clip.mp4", "fps": 2}).json()["id"]
        assert "evicted to make room" in error_of(c.post(f"/v1/sessions/{first}/messages", json=ask_body()), 404)
        assert [s["id"] for s in c.get("/v1/sessions").json()["data"]] == [second]
        time.sleep(3)
        assert "expired after 2 s" in error_of(c.post(f"/v1/sessions/{second}/messages", json=ask_body()), 404)
        assert c.get("/v1/sessions").json()["data"] == []


def test_a_session_that_outgrows_the_memory_is_dropped(strict):
    auth = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=strict.url, headers=auth, timeout=60) as c:
        sid = c.post("/v1/sessions", json={"video_url": "clip.mp4", "fps": 2}).json()["id"]  # 2/3 of the memory
        for _ in range(4):  # the prompt's text is a fixed cost: the second append at the latest is too many
            grown = c.post(f"/v1/sessions/{sid}/frames", json={"video_url": "clip.mp4", "fps": 2})
            if grown.status_code != 200:
                break
        assert "these frames grew the session to" in error_of(grown, 400)
        assert "is gone: dropped: its frames grew it to" in error_of(
            c.post(f"/v1/sessions/{sid}/messages", json=ask_body()), 404)
        assert c.get("/v1/sessions").json()["data"] == []


def test_bodies_larger_than_the_largest_upload_are_refused(strict):
    auth = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=strict.url, headers=auth, timeout=60) as c:
        huge = chat_body(question="x" * (2 << 20))
        assert "larger than this server reads" in error_of(c.post("/v1/chat/completions", json=huge), 413)
        assert c.post("/v1/chat/completions", json=chat_body()).status_code == 200


def test_a_full_queue_answers_429_with_retry_after(strict):
    """--queue 1: one request runs, one waits, the rest are refused at once; none is lost."""
    auth = {"Authorization": f"Bearer {KEY}"}
    body = chat_body(fps=2, max_tokens=32)
    results = []

    def send():
        results.append(httpx.post(strict.url + "/v1/chat/completions", json=body, headers=auth, timeout=120))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.status_code for r in results)
    assert len(codes) == 8 and set(codes) <= {200, 429} and codes.count(200) >= 1 and 429 in codes
    refused = next(r for r in results if r.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1 and "the server is busy" in error_of(refused, 429)
    answers = {r.json()["choices"][0]["message"]["content"] for r in results if r.status_code == 200}
    assert len(answers) == 1  # the same request, the same answer


def test_a_client_that_goes_away_frees_the_device(client):
    """Close a stream after its first chunk: the worker stops at its next token instead of decoding to the end."""
    body = chat_body(max_tokens=64, stream=True)
    with httpx.Client(base_url=client.base_url, timeout=60) as c:
        with c.stream("POST", "/v1/chat/completions", json=body) as r:
            next(r.iter_lines())
    deadline = time.monotonic() + 10
    while client.get("/health").json()["busy"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not client.get("/health").json()["busy"]
    assert client.post("/v1/chat/completions", json=chat_body()).status_code == 200


def test_clients_that_go_away_before_their_answer_free_the_device(strict):
    """Non-streamed requests whose clients time out: those still waiting are dropped, not run (behind the API-key
    check, which must not hide the disconnect)."""
    import asyncio

    auth = {"Authorization": f"Bearer {KEY}"}
    before = httpx.get(strict.url + "/health").json()

    async def impatient():
        async with httpx.AsyncClient(base_url=strict.url, headers=auth, timeout=0.3) as c:
            async def one():
                try:
                    await c.post("/v1/chat/completions", json=chat_body("long.mp4", fps=10))
                except httpx.TimeoutException:
                    pass
            await asyncio.gather(one(), one())

    for _ in range(4):  # --queue 1: one runs, one waits; the waiting one's client leaves after 0.3 s
        asyncio.run(impatient())
    deadline = time.monotonic() + 20
    while httpx.get(strict.url + "/health").json()["busy"] and time.monotonic() < deadline:
        time.sleep(0.1)
    after = httpx.get(strict.url + "/health").json()
    assert after["cancelled"] - before["cancelled"] >= 1
    with httpx.Client(base_url=strict.url, headers=auth, timeout=60) as c:
        assert c.post("/v1/chat/completions", json=chat_body()).status_code == 200


# ----- process ------------------------------------------------------------------------------------------------------
def test_sigterm_finishes_in_flight_work_and_exits_0(media):
    server = start_server("--model", "longvid-tiny", "--media-dir", media[0])
    result = []
    thread = threading.Thread(target=lambda: result.append(httpx.post(
        server.url + "/v1/chat/completions", json=chat_body(fps=2, max_tokens=32), timeout=60)))
    thread.start()
    time.sleep(0.3)
    assert server.stop() == 0
    thread.join()
    assert result and result[0].status_code in (200, 499)  # finished, or cancelled with a reply


@pytest.mark.parametrize("args, words", [
    (["--media-dir", "/nonexistent"], "--media-dir /nonexistent is not a directory"),
    (["--session-memory", "lots"], "--session-memory lots is not a size"),
    (["--port", "70000"], "--port 70000 is invalid"),
    (["--queue", "0"], "--queue 0 is invalid"),
    (["--method", "nope"], "unknown method 'nope'"),
    (["--method", "evs", "--keep", "1.5"], "--keep 1.5 is invalid"),
    (["--method", "evs", "--set", "lay=1"], "lay"),
])
def test_bad_serve_options_are_one_line(args, words):
    r = subprocess.run([sys.executable, "-m", "longvid", "serve", "--model", "longvid-tiny", *args],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.strip() == f"error: {r.stderr.strip()[7:]}" and words in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_a_port_in_use_is_one_line(server):
    port = server.url.rsplit(":", 1)[1]
    r = subprocess.run([sys.executable, "-m", "longvid", "serve", "--model", "longvid-tiny", "--port", port],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
