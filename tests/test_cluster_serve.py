"""``longvid serve --replicas 2 --ray local``: two CPU replicas of the server app behind Ray Serve, over real HTTP.

Stateless requests are balanced over both replicas and answer as the library does (streamed too); an upload made
through one replica is asked about through the other; each session's requests reach the replica that holds it; a
replica killed by its process id fails only its own sessions, with a one-line 4xx/5xx, while the other keeps
serving; SIGTERM stops everything.

    pytest tests/test_cluster_serve.py -q
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from serving import start_server

pytest.importorskip("ray.serve")
pytest.importorskip("fastapi")


def chat_body(url="clip.mp4", question="What colour was the shape?", **extra):
    return {"model": "longvid-tiny", "messages": [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": url}}, {"type": "text", "text": question}]}],
        "max_tokens": 4, "fps": 2, **extra}


def ask_body(question="Where was it?", **extra):
    return {"messages": [{"role": "user", "content": question}], "max_tokens": 4, **extra}


def replica_pids() -> dict[int, int]:
    """Replica index -> process id of this machine's Ray Serve replicas (titled ``ray::ServeReplica:longvid:replicaI``)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if title.startswith("ray::ServeReplica:longvid:replica"):
            found[int(title.rsplit("replica", 1)[1].split()[0])] = int(entry.name)
    return found


def one_line_error(response, statuses) -> str:
    assert response.status_code in statuses, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and "\n" not in error["message"]
    return error["message"]


@pytest.fixture(scope="module")
def media(tmp_path_factory, video_path):
    root = tmp_path_factory.mktemp("media")
    (root / "clip.mp4").write_bytes(Path(video_path).read_bytes())
    return root


@pytest.fixture(scope="module")
def cluster(media):
    server = start_server("--model", "longvid-tiny", "--media-dir", media, "--replicas", 2, "--ray", "local",
                          timeout=240)
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            yield server, client
    finally:
        code = server.stop(timeout=120)
        assert code == 0, "".join(server.stderr)
        assert not replica_pids()  # the replicas (and the local cluster) stopped with the server


def test_stateless_requests_are_balanced_and_answer_as_the_library(cluster, bundled, video_path):
    _, client = cluster
    ref = bundled.ask(video_path, "What colour was the shape?", fps=2, max_new_tokens=4)
    served = []
    for _ in range(4):
        r = client.post("/v1/chat/completions", json=chat_body())
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == ref.text
        served.append(r.headers["x-longvid-replica"])
    assert set(served) == {"0", "1"}  # one at a time, round-robin among the idle
    r = client.post("/v1/chat/completions", json=chat_body(stream=True, max_tokens=8))
    events = [json.loads(line[6:]) for line in r.text.split("\n\n") if line.startswith("data: {")]
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
    assert text == bundled.ask(video_path, "What colour was the shape?", fps=2, max_new_tokens=8).text
    assert client.get("/v1/models").json()["data"][0]["id"] == "longvid-tiny"


def test_an_upload_is_asked_about_through_either_replica(cluster, video_path):
    _, client = cluster
    with open(video_path, "rb") as f:
        up = client.post("/v1/files", files={"file": ("clip.mp4", f, "video/mp4")})
    assert up.status_code == 200, up.text
    file_id = up.json()["id"]
    served = set()
    for _ in range(4):
        r = client.post("/v1/chat/completions", json=chat_body(url=file_id))
        assert r.status_code == 200, r.text
        served.add(r.headers["x-longvid-replica"])
    assert served == {"0", "1"}
    assert file_id in [f["id"] for f in client.get("/v1/files").json()["data"]]


def test_sessions_stick_to_their_replica_and_a_dead_replica_fails_only_its_own(cluster, bundled, video_path):
    server, client = cluster
    sessions = {}
    for _ in range(4):
        r = client.post("/v1/sessions", json={"video_url": {"url": "clip.mp4"}, "method": "evs", "keep": 0.5,
                                              "fps": 2})
        assert r.status_code == 200, r.text
        sessions.setdefault(r.headers["x-longvid-replica"], r.json()["id"])
    assert set(sessions) == {"0", "1"} and sessions["1"].startswith("sess-r1-")
    ref = bundled.session(video_path, method="evs", keep=0.5, fps=2).ask("Where was it?", max_new_tokens=4).text
    for replica, sid in sessions.items():
        for _ in range(3):  # always the replica holding it
            r = client.post(f"/v1/sessions/{sid}/messages", json=ask_body())
            assert r.status_code == 200, r.text
            assert r.headers["x-longvid-replica"] == replica and r.json()["choices"][0]["message"]["content"] == ref
    listed = client.get("/v1/sessions").json()
    assert set(sessions.values()) <= {s["id"] for s in listed["data"]} and listed["replicas"] == 2

    os.kill(replica_pids()[1], signal.SIGKILL)
    time.sleep(1)
    message = one_line_error(client.post(f"/v1/sessions/{sessions['1']}/messages", json=ask_body()), (404, 503))
    assert sessions["1"] in message and "replica" in message
    for _ in range(3):  # the other replica's session and stateless requests keep being served
        r = client.post(f"/v1/sessions/{sessions['0']}/messages", json=ask_body())
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == ref
        assert client.post("/v1/chat/completions", json=chat_body()).status_code == 200
    deadline = time.monotonic() + 120  # Ray Serve restarts the replica: new requests reach it, the old session
    while True:                        # stays gone with a message saying why
        r = client.post(f"/v1/sessions/{sessions['1']}/messages", json=ask_body())
        if r.status_code == 404:
            assert "restarted" in one_line_error(r, (404,))
            break
        one_line_error(r, (503,))
        assert time.monotonic() < deadline, "replica 1 did not come back"
        time.sleep(1)
    served = {client.post("/v1/chat/completions", json=chat_body()).headers["x-longvid-replica"] for _ in range(4)}
    assert served == {"0", "1"}
    assert "Traceback" not in "".join(server.stderr)


def test_bad_serve_options_are_one_line(tmp_path):
    import subprocess
    import sys

    for args, words in ((("--replicas", "2"), "--replicas 2 needs --ray"),
                        (("--replicas", "0", "--ray", "local"), "--replicas 0 is invalid"),
                        (("--upload-dir", str(tmp_path)), "--upload-dir needs --ray"),
                        (("--ray", "127.0.0.1:1"), "--ray 127.0.0.1:1: no Ray cluster could be joined")):
        r = subprocess.run([sys.executable, "-m", "longvid", "serve", "--model", "longvid-tiny", *args],
                           capture_output=True, text=True, timeout=120)
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert r.returncode == 2 and len(lines) == 1 and words in lines[0], r.stderr
