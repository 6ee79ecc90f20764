"""Load and reliability of ``longvid serve`` over loopback, with longvid-tiny and synthetic videos.

Four parts, each against a real server process on a free loopback port:

1. **Burst, queue large enough**: ``--requests`` chat completions sent at once (a mix of videos, methods, keep
   ratios, streamed and not). Every one must be answered, each answer equal to the same request sent alone
   (the sequential pass, run first on the same server), the server's completed-job counter must grow by exactly
   the number answered (nothing lost, nothing run twice). p50/p99 latency and throughput.
2. **Burst, default queue** (``--queue 16``): the same burst; every request is answered or refused with 429 (and
   ``Retry-After``), answered + refused == sent, answers equal the sequential ones.
3. **Session cycles**: ``--cycles`` create (encode) / ask / delete cycles; the server's resident memory (VmRSS)
   sampled ten times must end within 5% of its level after a warm-up.
4. **Bad requests**: every bad request of the server issue (unknown method, bad ratios, corrupt / unreadable /
   oversized uploads, paths outside the media directory, unknown / expired session, query-aware method in a
   session, wrong API key) gets a one-line 4xx; the process is still alive and answers a good request after.

    python benchmarks/bench_serve.py                # the full run (~3 min here); results/serve_load.md
    python benchmarks/bench_serve.py --requests 20 --cycles 100   # a quick look

Prints a table per part and a JSON line last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import git_state  # noqa: E402
from serving import start_server  # noqa: E402

KEY = "sk-bench"
MIX = [  # (method, keep, streamed): query-agnostic and query-aware, every stage
    ("full", None, False), ("evs", 0.5, True), ("knorm", 0.5, False), ("fastv", 0.3, True),
    ("dpselect", 0.25, False), ("uniform", 0.5, True), ("random", 0.25, False), ("pivotkv", 0.5, False),
]


def make_media(folder: Path, n_videos: int, seconds: float) -> list[tuple[str, str]]:
    """``n_videos`` synthetic videos in ``folder`` and one multiple-choice question each: [(name, question)]."""
    from longvid.synth import eval_seed, make_questions, make_video_spec, write_video

    out = []
    for i in range(n_videos):
        spec = make_video_spec(eval_seed(100 + i), seconds=seconds)
        write_video(spec, folder / f"v{i}.mp4")
        questions = make_questions(spec)
        out.append((f"v{i}.mp4", questions[0].text))
    return out


def requests_for(n: int, media: list[tuple[str, str]]) -> list[dict]:
    bodies = []
    for i in range(n):
        video, question = media[i % len(media)]
        method, keep, stream = MIX[i % len(MIX)]
        body = {"model": "longvid-tiny", "max_tokens": 8, "seed": i, "fps": 1, "method": method,
                "messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": video}},
                                                          {"type": "text", "text": question}]}]}
        if keep is not None:
            body["keep"] = keep
        if stream:
            body["stream"] = True
        bodies.append(body)
    return bodies


async def send(client: httpx.AsyncClient, body: dict) -> dict:
    """One request: its status, answer text, completion id, Retry-After and seconds from send to last byte."""
    t0 = time.perf_counter()
    response = await client.post("/v1/chat/completions", json=body)
    seconds = time.perf_counter() - t0
    out = {"status": response.status_code, "seconds": seconds, "retry_after": response.headers.get("retry-after")}
    if response.status_code != 200:
        out["error"] = response.json()["error"]["message"]
        return out
    if body.get("stream"):
        events = [line[6:] for line in response.text.split("\n\n") if line.startswith("data: ")]
        assert events[-1] == "[DONE]", events[-3:]
        chunks = [json.loads(e) for e in events[:-1]]
        out["text"] = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        out["id"] = chunks[0]["id"]
    else:
        data = response.json()
        out["text"], out["id"] = data["choices"][0]["message"]["content"], data["id"]
    return out


async def burst(url: str, bodies: list[dict]) -> tuple[list[dict], float]:
    limits = httpx.Limits(max_connections=len(bodies) + 8, max_keepalive_connections=len(bodies) + 8)
    async with httpx.AsyncClient(base_url=url, timeout=1800, limits=limits,
                                 headers={"Authorization": f"Bearer {KEY}"}) as client:
        t0 = time.perf_counter()
        results = await asyncio.gather(*(send(client, b) for b in bodies))
        return list(results), time.perf_counter() - t0


async def one_at_a_time(url: str, bodies: list[dict]) -> list[dict]:
    async with httpx.AsyncClient(base_url=url, timeout=600, headers={"Authorization": f"Bearer {KEY}"}) as client:
        return [await send(client, b) for b in bodies]


def completed(client: httpx.Client) -> int:
    return client.get("/health").json()["completed"]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def check_burst(name: str, results: list[dict], reference: list[dict], wall: float, before: int, after: int) -> dict:
    answered = [r for r in results if r["status"] == 200]
    refused = [r for r in results if r["status"] == 429]
    other = [r for r in results if r["status"] not in (200, 429)]
    mismatched = [i for i, (r, ref) in enumerate(zip(results, reference))
                  if r["status"] == 200 and r["text"] != ref["text"]]
    ids = [r["id"] for r in answered]
    latencies = [r["seconds"] for r in answered]
    row = {"part": name, "sent": len(results), "answered": len(answered), "refused_429": len(refused),
           "other": len(other), "lost": len(results) - len(answered) - len(refused) - len(other),
           "jobs_run": after - before, "duplicate_ids": len(ids) - len(set(ids)), "mismatched": len(mismatched),
           "retry_after_on_every_429": all(r["retry_after"] for r in refused),
           "p50_s": round(pct(latencies, 0.5), 3) if latencies else None,
           "p99_s": round(pct(latencies, 0.99), 3) if latencies else None,
           "wall_s": round(wall, 2), "answered_per_s": round(len(answered) / wall, 2)}
    row["ok"] = (not other and row["lost"] == 0 and not mismatched and row["duplicate_ids"] == 0
                 and row["jobs_run"] == len(answered) and row["retry_after_on_every_429"])
    if other:
        row["other_errors"] = sorted({f"{r['status']}: {r.get('error')}" for r in other})[:5]
    return row


def session_cycles(url: str, pid: int, cycles: int, video: str, question: str, warmup: int) -> dict:
    samples, every = [], max(1, cycles // 10)
    with httpx.Client(base_url=url, timeout=600, headers={"Authorization": f"Bearer {KEY}"}) as client:
        failures = 0
        t0 = time.perf_counter()
        base = None
        for i in range(cycles):
            if i == warmup:
                base = rss_bytes(pid)
            created = client.post("/v1/sessions", json={"video": video, "method": "knorm", "keep": 0.5, "fps": 1})
            if created.status_code != 200:
                failures += 1
                continue
            sid = created.json()["id"]
            asked = client.post(f"/v1/sessions/{sid}/messages", json={"messages": [{"role": "user", "content": question}],
                                                                        "max_tokens": 4})
            deleted = client.delete(f"/v1/sessions/{sid}")
            failures += asked.status_code != 200 or deleted.status_code != 200
            if (i + 1) % every == 0:
                samples.append((i + 1, rss_bytes(pid)))
        wall = time.perf_counter() - t0
        left = client.get("/v1/sessions").json()["data"]
    end = rss_bytes(pid)
    change = (end - base) / base
    return {"part": "session cycles", "cycles": cycles, "failures": failures, "sessions_left": len(left),
            "rss_after_warmup_mib": round(base / 2**20, 1), "rss_end_mib": round(end / 2**20, 1),
            "rss_change_pct": round(100 * change, 2), "rss_max_mib": round(max(s for _, s in samples) / 2**20, 1),
            "samples_mib": [(c, round(s / 2**20, 1)) for c, s in samples], "cycle_ms_mean": round(1e3 * wall / cycles),
            "ok": failures == 0 and not left and abs(change) <= 0.05}


def bad_requests(url: str, media_dir: Path, video: str, question: str) -> dict:
    """Every bad request of the issue, each expected to be a one-line 4xx; then a good one still answers."""
    import os

    outside = media_dir.parent / "outside.mp4"
    outside.write_bytes((media_dir / video).read_bytes())
    link = media_dir / "link.mp4"
    if not link.exists():
        link.symlink_to(outside)
    auth = {"Authorization": f"Bearer {KEY}"}

    def chat(url_=video, **extra):
        return {"model": "longvid-tiny", "max_tokens": 4, **extra, "messages": [{"role": "user", "content": [
            {"type": "video_url", "video_url": {"url": url_}}, {"type": "text", "text": question}]}]}

    rows = []
    HI = {"messages": [{"role": "user", "content": "hi"}]}  # noqa: N806
    with httpx.Client(base_url=url, timeout=600, headers=auth) as c:
        expired = c.post("/v1/sessions", json={"video": video, "method": "knorm", "fps": 1}).json()["id"]
        cases = [
            ("unknown method", lambda: c.post("/v1/chat/completions", json=chat(method="fastvv"))),
            ("keep 1.5", lambda: c.post("/v1/chat/completions", json=chat(method="evs", keep=1.5))),
            ("keep 0", lambda: c.post("/v1/chat/completions", json=chat(method="evs", keep=0))),
            ("budget -3", lambda: c.post("/v1/chat/completions", json=chat(method="evs", budget=-3))),
            ("corrupt upload", lambda: c.post("/v1/files", files={"file": ("x.mp4", os.urandom(50_000))})),
            ("empty upload", lambda: c.post("/v1/files", files={"file": ("x.mp4", b"")})),
            ("text upload", lambda: c.post("/v1/files", files={"file": ("x.mp4", b"hello " * 100)})),
            ("oversized upload", lambda: c.post("/v1/files", files={"file": ("big.mp4", os.urandom(3 * 2**20))})),
            ("../ path", lambda: c.post("/v1/chat/completions", json=chat("../outside.mp4"))),
            ("absolute path", lambda: c.post("/v1/chat/completions", json=chat(str(outside)))),
            ("file:// outside", lambda: c.post("/v1/chat/completions", json=chat(outside.as_uri()))),
            ("symlink out", lambda: c.post("/v1/chat/completions", json=chat("link.mp4"))),
            ("http url", lambda: c.post("/v1/chat/completions", json=chat("http://127.0.0.1:9/v.mp4"))),
            ("missing file", lambda: c.post("/v1/chat/completions", json=chat("nope.mp4"))),
            ("unknown session", lambda: c.post("/v1/sessions/sess-0000/messages", json=HI)),
            ("expired session", lambda: (time.sleep(3.5), c.post(f"/v1/sessions/{expired}/messages",
                                                                  json=HI))[1]),
            ("query-aware in session", lambda: c.post("/v1/sessions", json={"video": video, "method": "fastv"})),
            ("wrong API key", lambda: c.get("/v1/models", headers={"Authorization": "Bearer sk-wrong"})),
            ("no API key", lambda: httpx.get(url + "/v1/models")),
            ("max_tokens too big", lambda: c.post("/v1/chat/completions", json=chat(max_tokens=10**6))),
            ("not JSON", lambda: c.post("/v1/chat/completions", content=b"{", headers={"content-type":
                                                                                      "application/json"})),
        ]
        for name, call in cases:
            response = call()
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = None
            rows.append({"case": name, "status": response.status_code, "message": message,
                         "ok": 400 <= response.status_code < 500 and message is not None and "\n" not in message})
        alive = c.post("/v1/chat/completions", json=chat(method="evs", keep=0.5))
    return {"part": "bad requests", "cases": rows, "all_4xx_one_line": all(r["ok"] for r in rows),
            "good_request_after": alive.status_code, "ok": all(r["ok"] for r in rows) and alive.status_code == 200}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=50, help="cycles before the starting memory is read")
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()

    out = {"benchmark": "serve_load", **git_state(), "requests": args.requests, "cycles": args.cycles}
    with tempfile.TemporaryDirectory() as tmp:
        media_dir = Path(tmp) / "media"
        media_dir.mkdir()
        media = make_media(media_dir, args.videos, args.seconds)
        bodies = requests_for(args.requests, media)
        parts = []
        common_args = ["--model", "longvid-tiny", "--media-dir", media_dir, "--api-key", KEY, "--max-tokens", 64]

        server = start_server(*common_args, "--queue", args.requests + 8, "--session-idle", 3,
                              "--max-upload-mb", 2)
        try:
            with httpx.Client(base_url=server.url, timeout=60) as health:
                t0 = time.perf_counter()
                reference = asyncio.run(one_at_a_time(server.url, bodies))
                sequential_wall = time.perf_counter() - t0
                assert all(r["status"] == 200 for r in reference), [r for r in reference if r["status"] != 200][:3]
                seq = [r["seconds"] for r in reference]
                parts.append({"part": "one at a time", "sent": len(bodies), "answered": len(bodies),
                              "p50_s": round(pct(seq, 0.5), 3), "p99_s": round(pct(seq, 0.99), 3),
                              "wall_s": round(sequential_wall, 2),
                              "answered_per_s": round(len(bodies) / sequential_wall, 2), "ok": True})
                before = completed(health)
                results, wall = asyncio.run(burst(server.url, bodies))
                parts.append(check_burst(f"{len(bodies)} at once, queue {len(bodies) + 8}", results, reference,
                                         wall, before, completed(health)))
            parts.append(session_cycles(server.url, server.process.pid, args.cycles, media[0][0], media[0][1],
                                        min(args.warmup, args.cycles - 1)))
            parts.append(bad_requests(server.url, media_dir, media[0][0], media[0][1]))
            parts[-1]["alive"] = server.process.poll() is None
        finally:
            code = server.stop()
        out["exit_code_after_sigterm"] = code

        server = start_server(*common_args)  # the default --queue 16
        try:
            with httpx.Client(base_url=server.url, timeout=60) as health:
                before = completed(health)
                results, wall = asyncio.run(burst(server.url, bodies))
                parts.append(check_burst(f"{len(bodies)} at once, queue 16", results, reference, wall, before,
                                         completed(health)))
        finally:
            server.stop()

    print(f"{'part':34} {'sent':>5} {'200':>4} {'429':>4} {'lost':>4} {'dup':>4} {'diff':>4} {'p50 s':>7} "
          f"{'p99 s':>7} {'req/s':>6}")
    for p in parts:
        if "sent" in p:
            print(f"{p['part']:34} {p['sent']:5} {p['answered']:4} {p.get('refused_429', 0):4} {p.get('lost', 0):4} "
                  f"{p.get('duplicate_ids', 0):4} {p.get('mismatched', 0):4} {p['p50_s']:7} {p['p99_s']:7} "
                  f"{p['answered_per_s']:6}")
    cycles = next(p for p in parts if p["part"] == "session cycles")
    print(f"\nsession cycles: {cycles['cycles']} create/ask/delete, {cycles['failures']} failed, "
          f"{cycles['cycle_ms_mean']} ms each; RSS {cycles['rss_after_warmup_mib']} MiB after {args.warmup} -> "
          f"{cycles['rss_end_mib']} MiB at the end ({cycles['rss_change_pct']:+.2f}%), max {cycles['rss_max_mib']} MiB")
    bad = next(p for p in parts if p["part"] == "bad requests")
    print(f"\nbad requests (status: message):")
    for row in bad["cases"]:
        print(f"  {row['case']:24} {row['status']}  {row['message']}")
    print(f"  then a good request: {bad['good_request_after']}; process alive: {bad['alive']}; "
          f"SIGTERM exit code {out['exit_code_after_sigterm']}")
    out["parts"] = parts
    out["ok"] = all(p["ok"] for p in parts) and out["exit_code_after_sigterm"] == 0
    print(json.dumps(out))


if __name__ == "__main__":
    main()
