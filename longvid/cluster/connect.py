"""Joining a Ray cluster from ``--ray ADDRESS``: ``local`` starts a private one on this machine, ``auto`` joins the one
``ray start --head`` runs here (or ``RAY_ADDRESS``), ``HOST:PORT`` / ``ray://HOST:10001`` a remote head; a bare
``--ray`` joins a running cluster if there is one, else starts a local one (Ray's own rule for ``ray.init()``)."""

from __future__ import annotations

import logging
import os

DEFAULT = "default"  # what a bare --ray means


def import_ray(flag: str = "--ray"):
    """``ray``, or a one-line ValueError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ValueError(f"{flag} needs Ray, which is not installed: pip install 'longvid[ray]' (on every node of the "
                         "cluster)") from None
    return ray


def connect(address: str, *, flag: str = "--ray", num_cpus: int | None = None):
    """Initialise Ray for this process (once) and return the module; one-line ValueError if no cluster answers."""
    ray = import_ray(flag)
    if ray.is_initialized():
        return ray
    kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                  configure_logging=True)
    if address == "local":
        kwargs.update(address="local", num_cpus=num_cpus)
    elif address != DEFAULT:
        kwargs.update(address=address)
    elif "RAY_ADDRESS" not in os.environ:
        kwargs.update(num_cpus=num_cpus)  # ray.init() joins a running local cluster, else starts one
    if address not in ("local", "auto", DEFAULT):
        _probe(address, flag)  # Ray itself would retry an unreachable head for minutes
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{flag} {address}: no Ray cluster could be joined ({first}); start one with `ray start "
                         f"--head` and pass {flag} auto, or pass {flag} local for a private one") from None
    return ray


def _probe(address: str, flag: str) -> None:
    """A one-line ValueError unless something listens at the head's HOST:PORT (``ray://`` too)."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{flag} {address} is not a cluster address: pass HOST:PORT (the head's GCS port, 6379 by "
                         f"default), ray://HOST:10001, auto, or local")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as err:
        raise ValueError(f"{flag} {address}: no Ray cluster could be joined (nothing answers there: "
                         f"{err.strerror or err}); start one with `ray start --head` and pass {flag} auto, or pass "
                         f"{flag} local for a private one") from None


def died(err: BaseException) -> bool:
    """Whether a Ray call failed because its actor (process or node) died, rather than by the code raising."""
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, WorkerCrashedError

    return isinstance(err, (RayActorError, ActorDiedError, ActorUnavailableError, WorkerCrashedError))


def remote_value_error(err: BaseException) -> str | None:
    """The message of the last ValueError a remote process raised inside ``err`` (an actor or replica that failed to
    start shows its error only as text), or None."""
    import re

    found = re.findall(r"ValueError: (.+)", str(err))
    return found[-1].strip() if found else None


def cause(err: BaseException) -> BaseException:
    """The exception the remote code raised (a RayTaskError wraps it), or ``err``."""
    from ray.exceptions import RayTaskError

    if isinstance(err, RayTaskError):
        inner = getattr(err, "cause", None)
        if isinstance(inner, BaseException):
            return inner
    return err
