"""``longvid eval NAME ... --ray [ADDRESS|local] [--actors N]``: the sweep's units spread over Ray actors.

A unit is one video with all of its questions and every (method, keep) still to run, so each video is decoded once
and each query-agnostic method encodes it once (the same work `longvid.eval.runner.run_bench` does in one process).
Each actor holds one model on one device: ``num_gpus=1`` when the device is a GPU, else a share of the cluster's
CPUs (``num_cpus`` = CPUs // actors, which is also its torch thread count). The driver (this process) hands an idle
actor the next unit, writes the rows of each unit that comes back to the run's one ``samples.jsonl`` (the same
resumable file a local run writes, so either kind of run continues the other) and summarises at the end: the table
is the one a single process writes, because rows are tabulated in benchmark order whatever order units finish in.

Faults: an actor that dies (its process killed or out of memory) fails only the unit it was running; that unit goes
back to the front of the queue, a fresh actor replaces the dead one, and nothing of the unit was written (rows are
written only when a whole unit returns). A unit that kills ``MAX_ATTEMPTS`` actors stops the run with one line. A
stopped driver restarted with the same command continues from ``samples.jsonl``.
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass, field

MAX_ATTEMPTS = 3  # actors a unit may kill before the run stops


class EvalActor:
    """One model on one device, answering units (a Ray actor; plain class so it is importable without Ray)."""

    def __init__(self, model: str, device: str, dtype: str, threads: int | None, words=None):
        import torch

        import longvid
        from longvid.errors import PYTHON, interface

        if threads:
            torch.set_num_threads(threads)
        self.words = words or PYTHON  # the driver's interface: errors name what the user typed (--model, --set)
        with interface(self.words):
            self.lm = longvid.load(model, device=device, dtype=dtype)

    def describe(self) -> dict:
        import ray

        return dict(device=str(self.lm.adapter.device), node=ray.util.get_node_ip_address())

    def check(self, settings) -> str:
        from longvid.errors import interface
        from longvid.eval.runner import check_runs

        with interface(self.words):
            return check_runs(self.lm, settings)

    def run(self, settings, unit: dict) -> dict:
        """The unit's rows, per (method, keep), with the seconds spent inside the model and in all."""
        from longvid.errors import interface
        from longvid.eval.runner import _Timing, run_unit

        t0, timing = time.perf_counter(), _Timing()
        with interface(self.words):
            groups = [rows for _, _, rows in run_unit(self.lm, settings, unit, timing)]
        return dict(groups=groups, work=timing.work, wall=time.perf_counter() - t0)


@dataclass
class SweepStats:
    """What the driver saw: units done and retried, actors replaced, and its own cost per unit."""

    actors: int
    units: int = 0
    retried: int = 0  # each retry also started a replacement actor
    actor_seconds: list = field(default_factory=list)  # per unit: the actor's wall time inside ``run``
    round_trip: list = field(default_factory=list)  # per unit: submit to rows written, seen by the driver
    wall: float = 0.0

    def overhead(self) -> list[float]:
        """Per unit, the driver's and Ray's share: round trip minus the actor's own time."""
        return [rt - a for rt, a in zip(self.round_trip, self.actor_seconds)]

    def summary(self) -> dict:
        """The numbers of this driver's run (``ray.json`` in the results folder)."""
        import statistics

        over = self.overhead()
        unit = statistics.median(self.actor_seconds) if self.actor_seconds else None
        return dict(actors=self.actors, units=self.units, retried=self.retried,
                    wall_seconds=self.wall, unit_seconds_median=unit,
                    overhead_seconds_median=statistics.median(over) if over else None,
                    overhead_fraction=(statistics.median(over) / unit) if over and unit else None,
                    actor_seconds=self.actor_seconds, round_trip_seconds=self.round_trip)

    def line(self) -> str:
        """One status line for the terminal."""
        s = self.summary()
        text = f"ray: {self.units} units on {self.actors} actors in {self.wall:.1f} s, {self.retried} retried"
        if s["overhead_seconds_median"] is not None:
            text += (f"; driver overhead per unit {1000 * s['overhead_seconds_median']:.0f} ms (median), "
                     f"{100 * s['overhead_fraction']:.1f}% of a unit's {s['unit_seconds_median']:.2f} s")
        return text


class Sweep:
    """The actor pool of one run; ``check`` tries the settings on the first actor before anything is written."""

    def __init__(self, address: str, actors: int | None, model: str, device: str, dtype: str, log=print):
        from longvid.cluster.connect import connect

        ray = connect(address)
        gpus = int(ray.cluster_resources().get("GPU", 0))
        cpus = int(ray.cluster_resources().get("CPU", 1))
        if device == "auto":
            device = "cuda" if gpus else "cpu"
        on_gpu = device.startswith("cuda")
        if on_gpu and not gpus:
            raise ValueError(f"--device {device}: the Ray cluster has no GPU; pass --device cpu for CPU actors")
        n = actors or (gpus if on_gpu else 1)
        if on_gpu and n > gpus:
            raise ValueError(f"--actors {n} is more than the cluster's {gpus} GPUs (one model per GPU); pass --actors "
                             f"{gpus} or fewer")
        if not on_gpu and n > cpus:
            raise ValueError(f"--actors {n} is more than the cluster's {cpus} CPUs (each CPU actor needs one); pass "
                             f"--actors {cpus} or fewer")
        threads = None if on_gpu else max(1, cpus // n)
        resources = dict(num_gpus=1, num_cpus=1) if on_gpu else dict(num_cpus=threads)
        self.ray, self.n, self.log = ray, n, log
        self.factory = ray.remote(max_restarts=0, max_task_retries=0, **resources)(EvalActor)
        from longvid.errors import active_interface

        self.args = (model, "cuda" if on_gpu else device, dtype, threads, active_interface())
        self.actors = [self._new() for _ in range(n)]
        self.stats = SweepStats(actors=n)

    def _new(self):
        return self.factory.remote(*self.args)

    def check(self, settings) -> str:
        """The settings checked against the first actor's model (a one-line ValueError), and the devices used."""
        from longvid.cluster.connect import cause, remote_value_error

        try:
            self.ray.get(self.actors[0].check.remote(settings))
            about = self.ray.get([a.describe.remote() for a in self.actors])
        except Exception as err:  # noqa: BLE001 - re-raised as what the actor raised
            inner = cause(err)
            if isinstance(inner, ValueError):
                raise ValueError(str(inner).splitlines()[0]) from None
            message = remote_value_error(err)  # an actor that failed to start (its model)
            if message:
                raise ValueError(message) from None
            raise inner from None
        devices = sorted({f"{a['device']}@{a['node']}" for a in about})
        return f"ray: {self.n} actors ({', '.join(devices)})"

    def run(self, prepared, *, progress=None) -> SweepStats:
        """Answer every unit left; rows are appended to samples.jsonl as units return; summarise at the end."""
        from longvid.cluster.connect import cause, died
        from longvid.eval.runner import _Timing, answers_in, summarize_bench, units

        ray, stats, folder = self.ray, self.stats, prepared.folder
        queue = deque(units(prepared))
        total_units = len(queue)
        answered = prepared.total - answers_in(queue)
        attempts: dict[str, int] = {}
        idle, running = list(self.actors), {}  # running: ref -> (actor, unit, submitted at)
        timing = _Timing.load(folder)
        t_start = time.perf_counter()

        def show():
            if progress is not None:
                progress(stats.units, total_units, len(running), stats.retried, answered, prepared.total)

        settings_ref = ray.put(prepared.settings)
        with open(folder / "samples.jsonl", "a") as samples:
            show()
            while queue or running:
                while idle and queue:
                    actor, unit = idle.pop(), queue.popleft()
                    running[actor.run.remote(settings_ref, unit)] = (actor, unit, time.perf_counter())
                show()
                ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
                for ref in ready:
                    actor, unit, submitted = running.pop(ref)
                    try:
                        out = ray.get(ref)
                    except Exception as err:  # noqa: BLE001
                        if not died(err):
                            inner = cause(err)
                            raise inner from None  # the unit itself failed (a bug, a broken video): stop here
                        attempts[unit["video"]] = attempts.get(unit["video"], 0) + 1
                        if attempts[unit["video"]] >= MAX_ATTEMPTS:
                            raise ValueError(f"{unit['video']} was running on {MAX_ATTEMPTS} actors when they died; "
                                             "the rows of every other finished video are kept: check the nodes' "
                                             "memory (a video too long for one device?), or leave it out (move "
                                             "the file away and pass --skip-missing), then run the same command")
                        self.log(f"an actor died while answering {unit['video']}; retrying it (retry "
                                 f"{attempts[unit['video']]}) and starting a replacement actor")
                        stats.retried += 1
                        queue.appendleft(unit)
                        self.actors = [a for a in self.actors if a is not actor] + [self._new()]
                        idle.append(self.actors[-1])
                        continue
                    for rows in out["groups"]:
                        samples.write("".join(json.dumps(r) + "\n" for r in rows))
                    samples.flush()
                    now = time.perf_counter()
                    stats.units += 1
                    stats.actor_seconds.append(out["wall"])
                    stats.round_trip.append(now - submitted)
                    timing.work += out["work"]
                    timing.wall += now - submitted
                    answered += sum(len(rows) for rows in out["groups"])
                    idle.append(actor)
                show()
        stats.wall = time.perf_counter() - t_start
        (folder / "ray.json").write_text(json.dumps(stats.summary()) + "\n")
        timing.save(folder)
        summarize_bench(folder)
        return stats

    def close(self) -> None:
        """End the actors and leave the cluster (a local one started for this run stops with it)."""
        for actor in self.actors:
            try:
                self.ray.kill(actor)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.ray.shutdown()
