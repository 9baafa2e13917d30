"""The one door to a Dask cluster: ``scheduler=`` (an address, ``local:N`` or a ``distributed.Client``) -> a client.

Dask is optional (``pip install "deepfeat[dask]"``); nothing in deepfeat imports it at module level, so every
command works without it, and asking for a scheduler without it is a :class:`DaskUnavailableError` that names the
extra. Only two places use a client: the cross-validation task map (:mod:`deepfeat.evaluation.distributed`) and
the extraction shard map (:mod:`deepfeat.extraction.distributed`).
"""
from __future__ import annotations

import contextlib
import logging
import re

from deepfeat.errors import DeepfeatError

__all__ = ["DaskUnavailableError", "check_scheduler", "connect", "is_client", "parse_resources"]

log = logging.getLogger("deepfeat.dask")
_LOCAL = re.compile(r"^local:(\d+)$")
_ADDRESS = re.compile(r"^(tcp|tls|inproc|ucx|ws|wss)://\S+$")
#: Seconds to wait for a remote scheduler before giving up with a clear error (an address that does not answer
#: fails in this time, naming the address; a scheduler that answers connects in well under a second).
CONNECT_TIMEOUT_S = 5


class DaskUnavailableError(DeepfeatError):
    """``scheduler=`` was given but ``dask[distributed]`` is not installed."""


def _import_distributed():
    try:
        import dask  # noqa: F401
        import distributed
    except ImportError as exc:
        raise DaskUnavailableError(
            f"a scheduler was asked for, but Dask is not installed ({exc}); install the extra: "
            "pip install \"deepfeat[dask]\" (or run without a scheduler)") from None
    return distributed


def check_scheduler(scheduler) -> None:
    """Validate ``scheduler`` before any work: None, ``local:N`` (N >= 1), ``tcp://HOST:PORT`` or a Client."""
    if scheduler is None:
        return
    if isinstance(scheduler, str):
        spec = scheduler.strip()
        m = _LOCAL.match(spec)
        if (m and int(m.group(1)) >= 1) or _ADDRESS.match(spec):
            return
        raise DeepfeatError(f"The 'scheduler' parameter must be 'local:N' (N >= 1 worker processes on this machine), "
                            f"a scheduler address such as 'tcp://HOST:8786', or a distributed.Client. "
                            f"Got {scheduler!r} instead.")
    if is_client(scheduler):
        return
    raise DeepfeatError(f"The 'scheduler' parameter must be a string ('local:N' or 'tcp://HOST:PORT') or a "
                        f"distributed.Client. Got {type(scheduler).__name__} instead.")


def is_client(scheduler) -> bool:
    """True for a ``distributed.Client`` (checked without importing distributed)."""
    return type(scheduler).__name__ == "Client" and hasattr(scheduler, "submit")


def parse_resources(resources) -> dict | None:
    """``"GPU=1"`` / ``"GPU=1,MEM=2"`` / a dict -> ``{"GPU": 1.0}`` (Dask worker resources each task needs)."""
    if resources is None or resources == {} or resources == "":
        return None
    if isinstance(resources, dict):
        items = list(resources.items())
    else:
        items = []
        for part in str(resources).split(","):
            name, sep, amount = part.partition("=")
            if not sep or not name.strip():
                raise DeepfeatError(f"The 'resources' parameter must look like 'GPU=1' (NAME=AMOUNT, comma-separated). "
                                    f"Got {resources!r} instead.")
            items.append((name.strip(), amount.strip()))
    out = {}
    for name, amount in items:
        try:
            value = float(amount)
        except (TypeError, ValueError):
            value = -1.0
        if value <= 0:
            raise DeepfeatError(f"resource {name!r} needs a positive amount (e.g. GPU=1). Got {amount!r} instead.")
        out[str(name)] = value
    return out


@contextlib.contextmanager
def connect(scheduler, *, threads_per_worker: int = 1, processes: bool = True):
    """A ``distributed.Client`` for ``scheduler`` for the duration of the ``with`` block.

    ``local:N`` starts a LocalCluster of N worker processes (``threads_per_worker`` threads each) and closes it on
    exit; an address connects to a running scheduler (closed on exit, the cluster stays up); a Client is used as
    it is and left open.
    """
    check_scheduler(scheduler)
    distributed = _import_distributed()
    if not isinstance(scheduler, str):
        yield scheduler
        return
    spec = scheduler.strip()
    m = _LOCAL.match(spec)
    if m:
        n = int(m.group(1))
        log.info(f"dask: starting a LocalCluster of {n} worker(s) x {threads_per_worker} thread(s)"
                 f"{'' if processes else ' (threads mode)'}")
        import dask

        # Dask's default pre-spawn environment sets MALLOC_TRIM_THRESHOLD_, which also fixes glibc's mmap
        # threshold: every array >= 128 KiB is then mmap'ed, zeroed and unmapped again. Measured here: the ann
        # preset's fits took 2-4x longer in such workers (43-60 s vs 15.5 s for 4 folds); without it, 22.9 s.
        environ = {k: v for k, v in dask.config.get("distributed.nanny.pre-spawn-environ", {}).items()
                   if k != "MALLOC_TRIM_THRESHOLD_"}
        with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}), \
                distributed.LocalCluster(n_workers=n, threads_per_worker=threads_per_worker, processes=processes,
                                         dashboard_address=":0", silence_logs=logging.ERROR) as cluster, \
                distributed.Client(cluster) as client:
            yield client
        return
    try:
        client = distributed.Client(spec, timeout=CONNECT_TIMEOUT_S)
    except OSError as exc:  # refused, unreachable, no answer in time
        raise DeepfeatError(f"cannot reach the Dask scheduler at {spec} within {CONNECT_TIMEOUT_S} s ({exc}); start "
                            "one with `dask scheduler` and workers with `dask worker "
                            f"{spec}`, or use scheduler='local:N'") from None
    except Exception as exc:  # something else answers there (its bytes are not Dask's: any error of the decoder)
        raise DeepfeatError(f"the service at {spec} did not answer as a Dask scheduler ({type(exc).__name__}: "
                            f"{str(exc)[:160]}); check the address, or use scheduler='local:N'") from None
    log.info(f"dask: connected to {spec} ({len(client.scheduler_info().get('workers', {}))} worker(s))")
    try:
        yield client
    finally:
        client.close()
