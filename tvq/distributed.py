"""Joining a multi-process run: who this process is, from the rendezvous environment alone.

The launcher and the Helm chart give every pod the variables of the rendezvous contract
(DESIGN.md): `JAX_COORDINATOR_ADDRESS`, `TVQ_NUM_PROCESSES`, and a process id, either
`TVQ_PROCESS_ID` or `JOB_COMPLETION_INDEX` + `TVQ_JOB_INDEX` x `TVQ_PODS_PER_JOB`.
`initialize` checks them (one-line `ConfigError` before any wait), says who this process is and
whom it waits for, and joins `jax.distributed` with a bounded wait. No Kubernetes API is used:
on CPU and GPU the identity is passed to JAX explicitly; on TPU JAX's own TPU detection runs and
our variables only cross-check it.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sys
import threading
from dataclasses import dataclass
from typing import Mapping

import jax

from tvq.config import ConfigError, RunConfig

COORDINATOR = "JAX_COORDINATOR_ADDRESS"
NUM_PROCESSES = "TVQ_NUM_PROCESSES"
PROCESS_ID = "TVQ_PROCESS_ID"
COMPLETION_INDEX = "JOB_COMPLETION_INDEX"
JOB_INDEX = "TVQ_JOB_INDEX"
PODS_PER_JOB = "TVQ_PODS_PER_JOB"
INIT_TIMEOUT = "TVQ_INIT_TIMEOUT_S"
TIMEOUT_EXIT_CODE = 1  # a failed rendezvous is worth a restart, unlike a config error (2)
_JAX_TIMEOUT_GRACE_S = 60  # JAX's own deadline, past ours, so that our message comes first


@dataclass(frozen=True)
class ProcessInfo:
    """This process's place in the run."""

    process_id: int
    num_processes: int
    coordinator: str  # "host:port" as given; "" when unset
    platform: str  # "cpu", "gpu" or "tpu"

    @property
    def is_leader(self) -> bool:
        """Process 0 logs metrics, talks to W&B and hosts the coordinator."""
        return self.process_id == 0

    def describe(self) -> str:
        """`process 1 of 2 (cpu)`, for log lines."""
        return f"process {self.process_id} of {self.num_processes} ({self.platform})"


def _integer(env: Mapping[str, str], name: str, minimum: int) -> int | None:
    """An optional integer variable, or ConfigError naming it and what is allowed."""
    text = env.get(name, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise ConfigError(f"{name}: got {text!r}; allowed: an integer >= {minimum}")
    return value


def _process_id(env: Mapping[str, str]) -> int | None:
    """TVQ_PROCESS_ID, or the id computed from the JobSet's job index and the Job's pod index."""
    explicit = _integer(env, PROCESS_ID, 0)
    completion = _integer(env, COMPLETION_INDEX, 0)
    job = _integer(env, JOB_INDEX, 0)
    pods = _integer(env, PODS_PER_JOB, 1)
    if completion is None:
        return explicit
    if job and pods is None:
        raise ConfigError(f"{PODS_PER_JOB}: required when {JOB_INDEX} is set ({job}); allowed: "
                          "an integer >= 1")
    if pods is not None and completion >= pods:
        raise ConfigError(f"{COMPLETION_INDEX}: got {completion}; allowed: below {PODS_PER_JOB} "
                          f"({pods})")
    computed = (job or 0) * (pods or 0) + completion
    if explicit is not None and explicit != computed:
        raise ConfigError(f"{PROCESS_ID}: got {explicit}; allowed: {computed} ({JOB_INDEX} x "
                          f"{PODS_PER_JOB} + {COMPLETION_INDEX}) or unset")
    return computed


def _check_coordinator(address: str) -> None:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{COORDINATOR}: got {address!r}; allowed: host:port with a port "
                          "from 1 to 65535")


def read_rendezvous(env: Mapping[str, str], platform: str) -> ProcessInfo:
    """Check the rendezvous variables and say who this process is; raise ConfigError if wrong.

    On TPU, a count or id left unset is filled in by JAX's detection later (shown here as 1/0).
    """
    count = _integer(env, NUM_PROCESSES, 1)
    process_id = _process_id(env)
    coordinator = env.get(COORDINATOR, "").strip()
    if coordinator:
        _check_coordinator(coordinator)
    if platform != "tpu":
        if count is None and (coordinator or process_id is not None):
            given = COORDINATOR if coordinator else f"{PROCESS_ID} or {COMPLETION_INDEX}"
            raise ConfigError(f"{NUM_PROCESSES}: required when {given} is set; allowed: an "
                              "integer >= 1")
        if (count or 1) > 1 and not coordinator:
            raise ConfigError(f"{COORDINATOR}: required when {NUM_PROCESSES} is {count}; "
                              "allowed: host:port of process 0")
        if (count or 1) > 1 and process_id is None:
            raise ConfigError(f"{PROCESS_ID}: required when {NUM_PROCESSES} is {count} (or set "
                              f"{COMPLETION_INDEX}); allowed: 0 to {count - 1}")
    if count is not None and process_id is not None and process_id >= count:
        raise ConfigError(f"{PROCESS_ID}: got {process_id}; allowed: 0 to {count - 1} "
                          f"({NUM_PROCESSES} is {count})")
    return ProcessInfo(process_id=process_id or 0, num_processes=count or 1,
                       coordinator=coordinator, platform=platform)


def init_timeout_s(env: Mapping[str, str], run: RunConfig) -> int:
    """Seconds to wait for the rendezvous: TVQ_INIT_TIMEOUT_S, else run.init_timeout_s."""
    override = _integer(env, INIT_TIMEOUT, 1)
    return run.init_timeout_s if override is None else override


def detect_platform(env: Mapping[str, str]) -> str:
    """The accelerator this process will use, decided without starting a JAX backend.

    JAX_PLATFORMS decides when set; otherwise TPU chips with libtpu, then NVIDIA GPUs with the
    CUDA plugin, else CPU.
    """
    chosen = env.get("JAX_PLATFORMS", "").split(",")[0].strip().lower()
    if chosen:
        return chosen if chosen in ("cpu", "tpu") else "gpu"
    if importlib.util.find_spec("libtpu") and (glob.glob("/dev/accel*")
                                               or glob.glob("/dev/vfio/[0-9]*")):
        return "tpu"
    cuda_plugin = any(importlib.util.find_spec(name)
                      for name in ("jax_cuda12_plugin", "jax_cuda13_plugin"))
    if cuda_plugin and glob.glob("/dev/nvidia[0-9]*"):
        return "gpu"
    return "cpu"


def _tpu_hosts(env: Mapping[str, str]) -> list[str]:
    """The slice's hosts as GKE tells a TPU pod (TPU_PROCESS_ADDRESSES or TPU_WORKER_HOSTNAMES)."""
    listed = env.get("TPU_PROCESS_ADDRESSES") or env.get("TPU_WORKER_HOSTNAMES") or ""
    return [name for name in listed.split(",") if name.strip()]


def _tpu_multihost(env: Mapping[str, str], info: ProcessInfo) -> bool:
    """Whether a TPU process is one of several (our count, or the TPU/Megascale variables)."""
    hosts = _tpu_hosts(env)
    slices = env.get("MEGASCALE_NUM_SLICES", "1").strip() or "1"
    return info.num_processes > 1 or len(hosts) > 1 or slices != "1"


def _say(message: str) -> None:
    """One line on stderr, which every process has (and `kubectl logs` shows)."""
    print(f"tvq: {message}", file=sys.stderr, flush=True)


def _waiting_for(info: ProcessInfo) -> str:
    others = info.num_processes - 1
    peers = f"{others} other process{'es' if others != 1 else ''}"
    if info.platform == "tpu" and not info.coordinator:
        return "the other TPU hosts that JAX finds"
    if info.is_leader:
        return f"{peers} to join the coordinator it hosts on {info.coordinator}"
    return f"the coordinator at {info.coordinator} (process 0) and {peers}"


class _Watchdog:
    """Ends the process with one clear line if the rendezvous outlasts its deadline.

    JAX's own deadline (set later than ours) aborts with a stack trace that names no peer, so
    ours fires first and exits with TIMEOUT_EXIT_CODE.
    """

    def __init__(self, info: ProcessInfo, timeout_s: int) -> None:
        self._timer = threading.Timer(timeout_s, self._give_up, args=(info, timeout_s))
        self._timer.daemon = True

    @staticmethod
    def _give_up(info: ProcessInfo, timeout_s: int) -> None:
        _say(f"{info.describe()} gave up after {timeout_s} s waiting for {_waiting_for(info)}; "
             "check that every process started and the coordinator address resolves and is "
             f"reachable (wait longer with {INIT_TIMEOUT} or run.init_timeout_s)")
        os._exit(TIMEOUT_EXIT_CODE)

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()


def _cross_check(info: ProcessInfo, env: Mapping[str, str]) -> ProcessInfo:
    """The identity JAX ended up with; a mismatch with the variables we were given is an error."""
    joined = ProcessInfo(process_id=jax.process_index(), num_processes=jax.process_count(),
                         coordinator=info.coordinator, platform=info.platform)
    given = ((NUM_PROCESSES, _integer(env, NUM_PROCESSES, 1), joined.num_processes),
             (PROCESS_ID, _process_id(env), joined.process_id))
    for name, ours, theirs in given:
        if ours is not None and ours != theirs:
            raise ConfigError(f"{name}: got {ours}; allowed: {theirs} (what JAX found on "
                              f"{info.platform})")
    return joined


def _no_shared_cpu_executables() -> None:
    """Turn off JAX's persistent compilation cache for multi-process CPU runs.

    With gloo, processes that load executables cached by process 0 can compute wrong results
    (seen with jax 0.10.2: a 2-process run resumed from a checkpoint gave another, repeatable
    loss in 6 of 7 tries with identical inputs; 7 of 7 right without the cache).
    """
    if jax.config.jax_compilation_cache_dir:
        _say("the JAX compilation cache is off: cached CPU executables are not safe to share "
             "between processes")
    jax.config.update("jax_enable_compilation_cache", False)


def _join(info: ProcessInfo, env: Mapping[str, str], timeout_s: int) -> None:
    """jax.distributed.initialize under our deadline: explicit identity, except on TPU."""
    if info.platform == "tpu":  # JAX's TPU detection (never its Kubernetes API detection)
        identity = dict(cluster_detection_method="gketpu" if _tpu_hosts(env)
                        else "gcetpu")
    else:
        identity = dict(coordinator_address=info.coordinator, num_processes=info.num_processes,
                        process_id=info.process_id, cluster_detection_method="deactivate")
    if info.platform == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        _no_shared_cpu_executables()
    _say(f"{info.describe()}: waiting up to {timeout_s} s for {_waiting_for(info)}")
    with _Watchdog(info, timeout_s):
        jax.distributed.initialize(initialization_timeout=timeout_s + _JAX_TIMEOUT_GRACE_S,
                                   **identity)
        jax.devices()  # the backends exchange topology with every process here


def initialize(run: RunConfig) -> ProcessInfo:
    """Join the run described by the environment (once per process) and return who we are.

    Nothing set: a single process, no `jax.distributed` call. Bad variables: ConfigError (one
    line) before any wait. A rendezvous that does not complete within the timeout: one line on
    stderr and exit code TIMEOUT_EXIT_CODE.
    """
    env = os.environ
    info = read_rendezvous(env, detect_platform(env))
    timeout_s = init_timeout_s(env, run)
    if jax.distributed.is_initialized():
        return _cross_check(info, env)
    multihost = _tpu_multihost(env, info) if info.platform == "tpu" else info.num_processes > 1
    if not multihost:
        return info
    _join(info, env, timeout_s)
    joined = _cross_check(info, env)
    _say(f"{joined.describe()} joined: {joined.num_processes} processes, "
         f"{jax.device_count()} devices ({jax.local_device_count()} local)")
    return joined


__all__ = ["ProcessInfo", "detect_platform", "init_timeout_s", "initialize", "read_rendezvous"]
