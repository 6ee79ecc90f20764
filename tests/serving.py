"""Start and stop a real ``longvid serve`` process on a free loopback port, for the server tests and benchmarks.

    with running_server("--model", "longvid-tiny") as server:
        httpx.get(server.url + "/health")
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    stderr: list = field(default_factory=list)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM (what a service manager sends), then wait: the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


def start_server(*args: str, timeout: float = 120) -> Server:
    """``python -m longvid serve --port 0 ARGS``: waits until ``/health`` answers; raises with its stderr if not."""
    cmd = [sys.executable, "-m", "longvid", "serve", "--port", "0", *map(str, args)]
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, COLUMNS="200"))
    lines: list[str] = []
    found = threading.Event()
    url: list[str] = []

    def read():
        for line in process.stderr:
            lines.append(line)
            if line.startswith("serving ") and " on http://" in line:
                url.append(line.split(" on ", 1)[1].split()[0])
                found.set()

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not found.is_set():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"longvid serve did not start (exit {process.poll()}): {''.join(lines)}")
        found.wait(0.1)
    server = Server(process, url[0], lines)
    while True:
        try:
            if httpx.get(server.url + "/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"longvid serve did not answer /health: {''.join(lines)}")
        time.sleep(0.1)


@contextmanager
def running_server(*args: str):
    server = start_server(*args)
    try:
        yield server
    finally:
        server.stop()
