"""Run values: load a YAML file, apply `--set key=value`, check everything, derive the run's shape.

The keys are the Helm chart's values keys with the same meaning (see DESIGN.md). Every problem
raises `ValuesError` with one line naming the key and what is allowed.
"""

from __future__ import annotations

import copy
import math
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import yaml

ACCELERATORS = ("cpu", "gpu", "tpu")
COMMANDS = ("train", "val", "test", "sample", "train-vocab")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
WANDB_MODES = ("online", "offline", "disabled")
TPU_ACCELERATORS = {
    "v4": "tpu-v4-podslice",
    "v5e": "tpu-v5-lite-podslice",
    "v5p": "tpu-v5p-slice",
    "v6e": "tpu-v6e-slice",
}
# GKE's TPU slice shapes: v5e and v6e are 2D with fixed shapes; v4 and v5p are 3D, 4 chips a host.
TPU_2D_TOPOLOGIES = ("1x1", "2x2", "2x4", "4x4", "4x8", "8x8", "8x16", "16x16")
TPU_3D_VERSIONS = ("v4", "v5p")
CHIPS_PER_HOST = 4
REPLICATED_JOB = "workers"
MAX_DNS_LABEL = 63
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")

DEFAULTS: dict[str, Any] = {
    "nameOverride": "",
    "image": {"repository": "ghcr.io/tvq/tvq", "tag": "0.1.0", "pullPolicy": "IfNotPresent"},
    "accelerator": "cpu",
    "hosts": 1,
    "tpu": {"version": "v5e", "topology": "2x2", "slices": 1},
    "gpu": {"type": "nvidia-h100-80gb", "perHost": 8},
    "command": "train",
    "args": [],
    "coordinatorPort": 8476,
    "initTimeoutSeconds": 300,
    "maxRestarts": 3,
    "ttlSecondsAfterFinished": 86400,
    "wandb": {"mode": "disabled", "project": "tvq", "runId": "", "secretName": "",
              "secretKey": "api-key"},
    "serviceAccount": {"create": True, "name": "", "annotations": {}, "gcpServiceAccount": ""},
    "kueue": {"queueName": ""},
    "priorityClassName": "",
    "resources": {},
    "nodeSelector": {},
    "tolerations": [],
    "env": [],
    "volumes": [],  # pod volumes (e.g. a shared checkpoint folder); ignored by the local backend
    "volumeMounts": [],  # the tvq container's mounts of those volumes
    "commonLabels": {},
    "podAnnotations": {},
}
# Mappings whose own keys are free (Kubernetes objects), not nested values.
FREE_MAPPINGS = ("resources", "nodeSelector", "commonLabels", "podAnnotations",
                 "serviceAccount.annotations")


class ValuesError(ValueError):
    """A run value is invalid; the message is one line naming the key and what is allowed."""


@dataclass(frozen=True)
class RunShape:
    """How many pods a run has and how they are grouped."""

    slices: int  # replicatedJob replicas (TPU multislice), else 1
    hosts_per_slice: int  # Job parallelism = completions
    chips_per_host: int  # google.com/tpu per pod (TPU only, else 0)

    @property
    def num_processes(self) -> int:
        """All pods of the run: one JAX process each."""
        return self.slices * self.hosts_per_slice


def _deep_merge(base: dict[str, Any], layer: Mapping[str, Any], prefix: str = "") -> None:
    """Merge `layer` into `base` in place, checking keys against DEFAULTS' nested mappings."""
    for key, value in layer.items():
        path = f"{prefix}{key}"
        if not prefix and key not in DEFAULTS:
            raise ValuesError(f"{path}: unknown key; allowed: {', '.join(DEFAULTS)}")
        current = base.get(key)
        nested = isinstance(current, dict) and path not in FREE_MAPPINGS
        if nested and not isinstance(value, Mapping):
            raise ValuesError(f"{path}: got {value!r}; allowed: a mapping with keys "
                              f"{', '.join(current)}")
        if nested:
            for sub in value:
                if sub not in current:
                    raise ValuesError(f"{path}.{sub}: unknown key; allowed: {', '.join(current)}")
            _deep_merge(current, value, f"{path}.")
        else:
            base[key] = copy.deepcopy(value)


def parse_set(assignment: str) -> dict[str, Any]:
    """Turn one `a.b.c=value` into a nested layer. The value is read as YAML, except for keys
    whose default is text (image.tag=1.10 stays "1.10")."""
    key, sep, text = assignment.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise ValuesError(f"--set: got {assignment!r}; expected key=value with a dotted key, "
                          "e.g. tpu.topology=4x4")
    default: Any = DEFAULTS
    for part in parts:
        default = default.get(part) if isinstance(default, dict) else None
    try:
        value = text if isinstance(default, str) else yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    layer: dict[str, Any] = {parts[-1]: value}
    for part in reversed(parts[:-1]):
        layer = {part: layer}
    return layer


def load_file(path: str) -> dict[str, Any]:
    """Read a values YAML file (a mapping)."""
    if not os.path.isfile(path):
        raise ValuesError(f"--values: no such file {path!r}")
    with open(path, encoding="utf-8") as handle:
        try:
            data = yaml.safe_load(handle) or {}
        except yaml.YAMLError as error:
            raise ValuesError(f"--values: {path} is not valid YAML "
                              f"({str(error).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ValuesError(f"--values: {path} must hold a mapping of values keys")
    return data


def build(files: Sequence[str] = (), sets: Sequence[str] = (),
          extra_args: Sequence[str] = ()) -> dict[str, Any]:
    """Defaults, then each values file, then each --set, then extra tvq args; checked."""
    values = copy.deepcopy(DEFAULTS)
    for path in files:
        _deep_merge(values, load_file(path))
    for assignment in sets:
        _deep_merge(values, parse_set(assignment))
    _coerce_strings(values)
    if extra_args:
        values["args"] = [*values["args"], *extra_args]
    check(values)
    return values


def _coerce_strings(values: dict[str, Any]) -> None:
    """Text fields that a YAML file gave as numbers (tag: 1.0, topology) become text again."""
    for section, key in (("image", "tag"), ("image", "repository"), ("tpu", "topology"),
                         ("wandb", "runId"), ("wandb", "project")):
        value = values[section][key]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values[section][key] = str(value)
    if isinstance(values["args"], list):
        values["args"] = [str(arg) for arg in values["args"]]


def _one_of(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValuesError(f"{key}: got {value!r}; allowed: {', '.join(allowed)}")


def _int_at_least(key: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValuesError(f"{key}: got {value!r}; allowed: an integer >= {low}")


def _kind(key: str, value: Any, kind: type, what: str) -> None:
    if not isinstance(value, kind):
        raise ValuesError(f"{key}: got {value!r}; allowed: {what}")


def check(values: Mapping[str, Any]) -> None:
    """Check every key of a merged values mapping; raise ValuesError on the first problem."""
    _one_of("accelerator", values["accelerator"], ACCELERATORS)
    _one_of("command", values["command"], COMMANDS)
    _one_of("image.pullPolicy", values["image"]["pullPolicy"], PULL_POLICIES)
    _one_of("wandb.mode", values["wandb"]["mode"], WANDB_MODES)
    _one_of("tpu.version", values["tpu"]["version"], tuple(TPU_ACCELERATORS))
    _int_at_least("hosts", values["hosts"], 1)
    _int_at_least("tpu.slices", values["tpu"]["slices"], 1)
    _int_at_least("gpu.perHost", values["gpu"]["perHost"], 1)
    _int_at_least("maxRestarts", values["maxRestarts"], 0)
    _int_at_least("ttlSecondsAfterFinished", values["ttlSecondsAfterFinished"], 0)
    _int_at_least("initTimeoutSeconds", values["initTimeoutSeconds"], 1)
    _int_at_least("coordinatorPort", values["coordinatorPort"], 1)
    if values["coordinatorPort"] > 65535:
        raise ValuesError(f"coordinatorPort: got {values['coordinatorPort']}; allowed: 1..65535")
    for key in ("args", "env", "tolerations", "volumes", "volumeMounts"):
        _kind(key, values[key], list, "a list")
    for key in ("resources", "nodeSelector", "commonLabels", "podAnnotations"):
        _kind(key, values[key], dict, "a mapping")
    _kind("serviceAccount.create", values["serviceAccount"]["create"], bool, "true or false")
    for key in values["commonLabels"]:
        if str(key).startswith("app.kubernetes.io/"):
            raise ValuesError(f"commonLabels: got {key!r}; allowed: keys outside "
                              "app.kubernetes.io/ (the run's own labels)")
    for index, entry in enumerate(values["env"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ValuesError(f"env[{index}]: got {entry!r}; allowed: a container env entry "
                              "with a name")
    if values["accelerator"] == "tpu":
        run_shape(values)  # checks tpu.topology against tpu.version


def _topology_dims(values: Mapping[str, Any]) -> list[int]:
    version, topology = values["tpu"]["version"], values["tpu"]["topology"]
    three_d = version in TPU_3D_VERSIONS
    allowed = ("three dimensions AxBxC with a multiple of 4 chips, e.g. 2x2x1, 2x2x4"
               if three_d else ", ".join(TPU_2D_TOPOLOGIES))
    error = ValuesError(f"tpu.topology: got {topology!r}; allowed for tpu.version {version}: "
                        f"{allowed}")
    try:
        dims = [int(part) for part in str(topology).split("x")]
    except ValueError:
        raise error from None
    if three_d and (len(dims) != 3 or min(dims) < 1 or math.prod(dims) % CHIPS_PER_HOST):
        raise error
    if not three_d and str(topology) not in TPU_2D_TOPOLOGIES:
        raise error
    return dims


def run_shape(values: Mapping[str, Any]) -> RunShape:
    """The run's slices, hosts per slice and TPU chips per host."""
    if values["accelerator"] != "tpu":
        return RunShape(slices=1, hosts_per_slice=values["hosts"], chips_per_host=0)
    chips = math.prod(_topology_dims(values))
    if values["tpu"]["version"] not in TPU_3D_VERSIONS and chips <= 8:
        per_host = chips  # single-host v5e/v6e slices: 1x1, 2x2, 2x4
    else:
        per_host = CHIPS_PER_HOST
    return RunShape(slices=values["tpu"]["slices"], hosts_per_slice=chips // per_host,
                    chips_per_host=per_host)


def check_name(name: str, shape: RunShape) -> None:
    """The run name must be a DNS label short enough for every pod hostname N-workers-<j>-<i>."""
    if not name:
        raise ValuesError("--name: required (or set nameOverride); allowed: a DNS label")
    if not _DNS_LABEL.match(name):
        raise ValuesError(f"--name: got {name!r}; allowed: a DNS label (lowercase letters, "
                          "digits and '-', starting with a letter, ending with a letter or digit)")
    longest = f"{name}-{REPLICATED_JOB}-{shape.slices - 1}-{shape.hosts_per_slice - 1}"
    if len(longest) > MAX_DNS_LABEL:
        room = MAX_DNS_LABEL - (len(longest) - len(name))
        raise ValuesError(f"--name: got {name!r} ({len(name)} characters); allowed: at most "
                          f"{room} characters so pod hostname {longest!r} fits in "
                          f"{MAX_DNS_LABEL}")


def run_name(values: Mapping[str, Any], name: str | None) -> str:
    """The run (JobSet) name: --name, else nameOverride; checked against the run's shape."""
    chosen = name or values["nameOverride"]
    check_name(chosen, run_shape(values))
    return chosen
