"""Render a run's Kubernetes objects (a ServiceAccount and one JobSet) from checked run values.

The Helm chart `charts/tvq-train` renders the same objects from the same values; a parity test
holds the two equal.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

import yaml

from launcher.values import REPLICATED_JOB, TPU_ACCELERATORS, RunShape, run_shape

JOBSET_GROUP = "jobset.x-k8s.io"
JOBSET_VERSION = "v1alpha2"
JOBSET_PLURAL = "jobsets"
CONTAINER = "tvq"
APP_NAME = "tvq-train"
MANAGED_BY = "launcher"
JOB_INDEX_KEY = "jobset.sigs.k8s.io/job-index"
EXCLUSIVE_TOPOLOGY_KEY = "alpha.jobset.sigs.k8s.io/exclusive-topology"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
GCP_SA_ANNOTATION = "iam.gke.io/gcp-service-account"


def labels(values: Mapping[str, Any], name: str) -> dict[str, str]:
    """The labels every object and pod of run `name` carries."""
    own = {
        "app.kubernetes.io/name": APP_NAME,
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/version": str(values["image"]["tag"]),
        "app.kubernetes.io/component": "trainer",
    }
    common = {str(k): str(v) for k, v in values["commonLabels"].items()}
    return {**common, **own}  # commonLabels never replace the run's own labels


def service_account_name(values: Mapping[str, Any], name: str) -> str:
    """The pods' ServiceAccount: the created one (named after the run unless set), or given."""
    account = values["serviceAccount"]
    if account["create"]:
        return account["name"] or name
    return account["name"] or "default"


def coordinator_address(values: Mapping[str, Any], name: str) -> str:
    """JAX_COORDINATOR_ADDRESS: the first pod's stable hostname in the JobSet's subdomain."""
    return f"{name}-{REPLICATED_JOB}-0-0.{name}:{values['coordinatorPort']}"


def _env(values: Mapping[str, Any], name: str, shape: RunShape) -> list[dict[str, Any]]:
    wandb = values["wandb"]
    env: list[dict[str, Any]] = [
        {"name": "JAX_COORDINATOR_ADDRESS", "value": coordinator_address(values, name)},
        {"name": "TVQ_NUM_PROCESSES", "value": str(shape.num_processes)},
        {"name": "TVQ_PODS_PER_JOB", "value": str(shape.hosts_per_slice)},
        {"name": "TVQ_JOB_INDEX", "valueFrom": {"fieldRef": {
            "fieldPath": f"metadata.annotations['{JOB_INDEX_KEY}']"}}},
        {"name": "TVQ_INIT_TIMEOUT_S", "value": str(values["initTimeoutSeconds"])},
        {"name": "WANDB_MODE", "value": wandb["mode"]},
        {"name": "WANDB_PROJECT", "value": wandb["project"]},
    ]
    if wandb["runId"]:  # only when set: wandb rejects an empty WANDB_RUN_ID
        env.append({"name": "WANDB_RUN_ID", "value": wandb["runId"]})
    if wandb["secretName"]:
        env.append({"name": "WANDB_API_KEY", "valueFrom": {"secretKeyRef": {
            "name": wandb["secretName"], "key": wandb["secretKey"]}}})
    env.append({"name": "PYTHONUNBUFFERED", "value": "1"})
    return env + copy.deepcopy(values["env"])


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `base` with `over` merged in, mappings recursively."""
    merged = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _accelerator(values: Mapping[str, Any], shape: RunShape) -> tuple[dict, dict, list]:
    """The accelerator's own (resources, nodeSelector, tolerations)."""
    if values["accelerator"] == "tpu":
        chips = {"google.com/tpu": shape.chips_per_host}
        selector = {
            "cloud.google.com/gke-tpu-accelerator": TPU_ACCELERATORS[values["tpu"]["version"]],
            "cloud.google.com/gke-tpu-topology": str(values["tpu"]["topology"]),
        }
        return {"requests": dict(chips), "limits": dict(chips)}, selector, []
    if values["accelerator"] == "gpu":
        gpus = {"nvidia.com/gpu": values["gpu"]["perHost"]}
        selector = {"cloud.google.com/gke-accelerator": values["gpu"]["type"]}
        toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        return {"limits": gpus}, selector, [toleration]
    return {}, {}, []


def _pod_spec(values: Mapping[str, Any], name: str, shape: RunShape) -> dict[str, Any]:
    resources, selector, tolerations = _accelerator(values, shape)
    image = values["image"]
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": f"{image['repository']}:{image['tag']}",
        "imagePullPolicy": image["pullPolicy"],
        "args": [values["command"], *values["args"]],
        "env": _env(values, name, shape),
        "securityContext": {"allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]}},
    }
    if values["volumeMounts"]:
        container["volumeMounts"] = copy.deepcopy(values["volumeMounts"])
    resources = _merge(resources, values["resources"])
    if resources:
        container["resources"] = resources
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": service_account_name(values, name),
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
    }
    if values["volumes"]:
        spec["volumes"] = copy.deepcopy(values["volumes"])
    if values["priorityClassName"]:
        spec["priorityClassName"] = values["priorityClassName"]
    selector = {**selector, **values["nodeSelector"]}
    if selector:
        spec["nodeSelector"] = selector
    tolerations = tolerations + copy.deepcopy(values["tolerations"])
    if tolerations:
        spec["tolerations"] = tolerations
    return spec


def jobset(values: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The run's JobSet."""
    shape = run_shape(values)
    metadata: dict[str, Any] = {"name": name, "labels": labels(values, name)}
    if values["kueue"]["queueName"]:
        metadata["labels"][QUEUE_LABEL] = values["kueue"]["queueName"]
    if values["accelerator"] == "tpu":
        metadata["annotations"] = {EXCLUSIVE_TOPOLOGY_KEY: "cloud.google.com/gke-nodepool"}
    pod_metadata: dict[str, Any] = {"labels": labels(values, name)}
    if values["podAnnotations"]:
        pod_metadata["annotations"] = {str(k): str(v) for k, v in values["podAnnotations"].items()}
    job_spec = {
        "parallelism": shape.hosts_per_slice,
        "completions": shape.hosts_per_slice,
        "completionMode": "Indexed",
        "backoffLimit": 0,
        "podFailurePolicy": {"rules": [{"action": "FailJob", "onPodConditions": [
            {"type": "DisruptionTarget", "status": "True"}]}]},
        "template": {"metadata": pod_metadata, "spec": _pod_spec(values, name, shape)},
    }
    return {
        "apiVersion": f"{JOBSET_GROUP}/{JOBSET_VERSION}",
        "kind": "JobSet",
        "metadata": metadata,
        "spec": {
            "ttlSecondsAfterFinished": values["ttlSecondsAfterFinished"],
            "network": {"enableDNSHostnames": True, "publishNotReadyAddresses": True,
                        "subdomain": name},
            "failurePolicy": {"maxRestarts": values["maxRestarts"], "rules": [{
                "name": "preemption", "action": "RestartJobSetAndIgnoreMaxRestarts",
                "onJobFailureReasons": ["PodFailurePolicy"]}]},
            "replicatedJobs": [{"name": REPLICATED_JOB, "replicas": shape.slices,
                                "template": {"spec": job_spec}}],
        },
    }


def service_account(values: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The run's ServiceAccount (Workload Identity annotation when a GCP account is given)."""
    account = values["serviceAccount"]
    annotations = {str(k): str(v) for k, v in account["annotations"].items()}
    if account["gcpServiceAccount"]:
        annotations[GCP_SA_ANNOTATION] = account["gcpServiceAccount"]
    metadata: dict[str, Any] = {"name": service_account_name(values, name),
                                "labels": labels(values, name)}
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata}


def render(values: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    """All objects of the run: the ServiceAccount (when created), then the JobSet."""
    objects = [service_account(values, name)] if values["serviceAccount"]["create"] else []
    return objects + [jobset(values, name)]


def to_yaml(objects: list[dict[str, Any]]) -> str:
    """Objects as a multi-document YAML stream."""
    return yaml.safe_dump_all(objects, sort_keys=False, default_flow_style=False)
