"""The mesh: the fsdp sharding rule, and training sharded over fsdp=2 equal to one device."""

import json
import re

import pytest
from jax.sharding import PartitionSpec
from trainkit import (TINY_FLAGS, compile_cache, compile_cache_env,  # noqa: F401 (fixtures)
                      run_tvq, trained_run)

from tvq.sharding import fsdp_spec


@pytest.mark.parametrize("shape, fsdp, expected", [
    ((64, 32), 2, PartitionSpec("fsdp", None)),
    ((3, 32), 2, PartitionSpec(None, "fsdp")),
    ((32, 64), 4, PartitionSpec(None, "fsdp")),
    ((7,), 2, PartitionSpec()),
    ((), 2, PartitionSpec()),
    ((64, 32), 1, PartitionSpec()),
])
def test_fsdp_shards_the_largest_divisible_dimension(shape, fsdp, expected):
    assert fsdp_spec(shape, fsdp) == expected


def test_fsdp_2_on_two_devices_trains_like_one_device(trained_run, tmp_path, compile_cache):
    """Same config, data and seed as `trained_run`; params and optimizer state split in two."""
    metrics = tmp_path / "metrics.jsonl"
    done = run_tvq(["train", *TINY_FLAGS, "--steps", "8", "--set", "run.mesh_fsdp=2",
                    "-o", str(tmp_path / "run"), "--metrics-file", str(metrics)], compile_cache,
                   env={**compile_cache_env(compile_cache),
                        "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "mesh data=1 fsdp=2" in done.stdout
    described = next(line for line in done.stdout.splitlines() if "sharded over" in line)
    arrays, sharded = map(int, re.search(r"in (\d+) arrays, (\d+) of them", described).groups())
    assert sharded > arrays // 2, described
    sharded_losses = [json.loads(line)["loss"] for line in metrics.read_text().splitlines()]
    plain_losses = [json.loads(line)["loss"] for line in open(trained_run.run.metrics_file)]
    assert len(plain_losses) == 4
    assert sharded_losses == pytest.approx(plain_losses, rel=1e-5)
