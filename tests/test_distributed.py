"""The rendezvous contract: identity from the environment, one-line errors before any wait."""

import jax
import pytest

from tvq import config, distributed
from tvq.config import ConfigError

RUN = config.build().run


@pytest.mark.parametrize("env, expected", [
    ({}, (0, 1, "")),
    ({"TVQ_NUM_PROCESSES": "1"}, (0, 1, "")),
    ({"TVQ_NUM_PROCESSES": "4", "TVQ_PROCESS_ID": "3", "JAX_COORDINATOR_ADDRESS": "h:1"},
     (3, 4, "h:1")),
    # JobSet: job index x pods per job + the indexed Job's completion index
    ({"TVQ_NUM_PROCESSES": "6", "JOB_COMPLETION_INDEX": "1", "TVQ_JOB_INDEX": "2",
      "TVQ_PODS_PER_JOB": "2", "JAX_COORDINATOR_ADDRESS": "run-w-0-0.run:8476"},
     (5, 6, "run-w-0-0.run:8476")),
    ({"TVQ_NUM_PROCESSES": "2", "JOB_COMPLETION_INDEX": "1", "TVQ_PROCESS_ID": "1",
      "JAX_COORDINATOR_ADDRESS": "h:1"}, (1, 2, "h:1")),
])
def test_identity_from_environment(env, expected):
    info = distributed.read_rendezvous(env, "cpu")
    assert (info.process_id, info.num_processes, info.coordinator) == expected
    assert info.is_leader == (expected[0] == 0)


@pytest.mark.parametrize("env, named", [
    ({"TVQ_NUM_PROCESSES": "2", "TVQ_PROCESS_ID": "2", "JAX_COORDINATOR_ADDRESS": "h:1"},
     "TVQ_PROCESS_ID: got 2; allowed: 0 to 1"),
    ({"TVQ_NUM_PROCESSES": "2", "TVQ_PROCESS_ID": "0"}, "JAX_COORDINATOR_ADDRESS: required"),
    ({"TVQ_NUM_PROCESSES": "two"}, "TVQ_NUM_PROCESSES: got 'two'"),
    ({"TVQ_NUM_PROCESSES": "0"}, "TVQ_NUM_PROCESSES: got '0'; allowed: an integer >= 1"),
    ({"TVQ_NUM_PROCESSES": "2", "TVQ_PROCESS_ID": "-1", "JAX_COORDINATOR_ADDRESS": "h:1"},
     "TVQ_PROCESS_ID: got '-1'; allowed: an integer >= 0"),
    ({"TVQ_NUM_PROCESSES": "2", "JAX_COORDINATOR_ADDRESS": "h:1"}, "TVQ_PROCESS_ID: required"),
    ({"TVQ_PROCESS_ID": "0"}, "TVQ_NUM_PROCESSES: required"),
    ({"JAX_COORDINATOR_ADDRESS": "h:1"}, "TVQ_NUM_PROCESSES: required"),
    ({"TVQ_NUM_PROCESSES": "2", "TVQ_PROCESS_ID": "0", "JAX_COORDINATOR_ADDRESS": "h"},
     "JAX_COORDINATOR_ADDRESS: got 'h'; allowed: host:port"),
    ({"TVQ_NUM_PROCESSES": "4", "JOB_COMPLETION_INDEX": "1", "TVQ_JOB_INDEX": "1",
      "JAX_COORDINATOR_ADDRESS": "h:1"}, "TVQ_PODS_PER_JOB: required"),
    ({"TVQ_NUM_PROCESSES": "4", "JOB_COMPLETION_INDEX": "2", "TVQ_PODS_PER_JOB": "2",
      "JAX_COORDINATOR_ADDRESS": "h:1"}, "JOB_COMPLETION_INDEX: got 2; allowed: below"),
    ({"TVQ_NUM_PROCESSES": "4", "JOB_COMPLETION_INDEX": "1", "TVQ_PROCESS_ID": "0",
      "JAX_COORDINATOR_ADDRESS": "h:1"}, "TVQ_PROCESS_ID: got 0; allowed: 1"),
])
def test_inconsistent_variables_fail_with_one_line(env, named):
    with pytest.raises(ConfigError) as error:
        distributed.read_rendezvous(env, "cpu")
    assert str(error.value).startswith(named)
    assert "\n" not in str(error.value)


def test_tpu_leaves_the_identity_to_jax_detection():
    info = distributed.read_rendezvous({"TVQ_NUM_PROCESSES": "4"}, "tpu")
    assert (info.num_processes, info.coordinator) == (4, "")
    with pytest.raises(ConfigError, match="TVQ_PROCESS_ID: got 4; allowed: 0 to 3"):
        distributed.read_rendezvous({"TVQ_NUM_PROCESSES": "4", "TVQ_PROCESS_ID": "4"}, "tpu")


def test_timeout_variable_overrides_the_config():
    assert distributed.init_timeout_s({}, RUN) == RUN.init_timeout_s
    assert distributed.init_timeout_s({"TVQ_INIT_TIMEOUT_S": "7"}, RUN) == 7
    with pytest.raises(ConfigError, match="^TVQ_INIT_TIMEOUT_S: got '0'; allowed"):
        distributed.init_timeout_s({"TVQ_INIT_TIMEOUT_S": "0"}, RUN)


@pytest.mark.parametrize("platforms, expected", [("cpu", "cpu"), ("cuda", "gpu"),
                                                 ("tpu,cpu", "tpu")])
def test_jax_platforms_decides_the_platform(platforms, expected):
    assert distributed.detect_platform({"JAX_PLATFORMS": platforms}) == expected


def test_bad_variables_fail_before_joining(monkeypatch):
    monkeypatch.setenv("TVQ_NUM_PROCESSES", "2")
    monkeypatch.setenv("TVQ_PROCESS_ID", "5")
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:1")
    with pytest.raises(ConfigError, match="^TVQ_PROCESS_ID: got 5"):
        distributed.initialize(RUN)
    assert not jax.distributed.is_initialized()


def test_single_process_needs_no_rendezvous(monkeypatch):
    for name in ("TVQ_NUM_PROCESSES", "TVQ_PROCESS_ID", "JAX_COORDINATOR_ADDRESS",
                 "JOB_COMPLETION_INDEX"):
        monkeypatch.delenv(name, raising=False)
    info = distributed.initialize(RUN)
    assert (info.process_id, info.num_processes) == (0, 1)
    assert not jax.distributed.is_initialized()
