"""The device mesh ("data", "fsdp") and the shardings of batches, parameters and optimizer state.

Batches are split over both axes (fsdp is data parallel too); every parameter and optimizer-state
array is split over "fsdp" on its largest dimension that the axis size divides, else replicated.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from tvq.config import Config, ConfigError

BATCH_AXES = ("data", "fsdp")


def make_mesh(config: Config, devices: list[jax.Device] | None = None) -> Mesh:
    """Build the ("data", "fsdp") mesh from run.mesh_data / run.mesh_fsdp over all devices."""
    devices = list(devices if devices is not None else jax.devices())
    fsdp = config.run.mesh_fsdp
    data = config.run.mesh_data if config.run.mesh_data != -1 else len(devices) // fsdp
    if data < 1 or data * fsdp != len(devices):
        raise ConfigError(f"run.mesh_data x run.mesh_fsdp: got {config.run.mesh_data} x {fsdp}; "
                          f"allowed: a product equal to the {len(devices)} devices "
                          "(mesh_data -1 fills the rest)")
    batch = config.data.global_batch_size
    if batch % (data * fsdp) or batch % jax.process_count():
        raise ConfigError(f"data.global_batch_size: got {batch}; allowed: a multiple of the "
                          f"{data * fsdp} devices and of the {jax.process_count()} processes")
    return Mesh(np.asarray(devices).reshape(data, fsdp), BATCH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding of a [batch, length] array: batch over every mesh axis."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES, None))


def replicated(mesh: Mesh) -> NamedSharding:
    """A sharding that keeps a full copy on every device."""
    return NamedSharding(mesh, PartitionSpec())


def fsdp_spec(shape: tuple[int, ...], fsdp: int) -> PartitionSpec:
    """Shard the largest dimension divisible by `fsdp` over "fsdp"; replicate when none is."""
    if fsdp == 1:
        return PartitionSpec()
    candidates = [(size, -axis) for axis, size in enumerate(shape) if size % fsdp == 0]
    if not candidates:
        return PartitionSpec()
    axis = -max(candidates)[1]
    return PartitionSpec(*[("fsdp" if i == axis else None) for i in range(len(shape))])


def state_shardings(mesh: Mesh, abstract_state: Any) -> Any:
    """Shardings for a pytree of arrays (e.g. from jax.eval_shape), by the fsdp rule."""
    fsdp = mesh.shape["fsdp"]
    return jax.tree.map(lambda x: NamedSharding(mesh, fsdp_spec(tuple(x.shape), fsdp)),
                        abstract_state)


def global_batch(mesh: Mesh, local_tokens: np.ndarray) -> jax.Array:
    """Assemble the global [batch, length] array from this process's rows."""
    return jax.make_array_from_process_local_data(batch_sharding(mesh), local_tokens)


__all__ = ["BATCH_AXES", "batch_sharding", "fsdp_spec", "global_batch", "make_mesh",
           "replicated", "state_shardings"]
