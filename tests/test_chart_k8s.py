"""k8s/: launcher RBAC and the kind setup, validated against the Kubernetes schemas."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import yaml

from helm_tool import REPO_ROOT

K8S = REPO_ROOT / "k8s"


def _documents(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]


def _allowed(rules: list[dict[str, Any]], group: str, resource: str) -> set[str]:
    verbs: set[str] = set()
    for rule in rules:
        if group in rule["apiGroups"] and resource in rule["resources"]:
            verbs |= set(rule["verbs"])
    return verbs


def test_rbac_is_valid_and_covers_the_launcher() -> None:
    docs = _documents("rbac.yaml")
    for doc in docs:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    role = next(doc for doc in docs if doc["kind"] == "Role")
    assert "namespace" not in role["metadata"]  # applied into the user's namespace with -n
    rules = role["rules"]
    assert {"get", "list", "watch", "create", "update", "patch", "delete"} <= _allowed(
        rules, "jobset.x-k8s.io", "jobsets")
    assert {"get", "list", "watch"} <= _allowed(rules, "", "pods")
    assert _allowed(rules, "", "pods/log") == {"get"}
    assert {"create", "delete", "get"} <= _allowed(rules, "", "serviceaccounts")
    assert _allowed(rules, "", "secrets") == {"get"}
    cluster = next(doc for doc in docs if doc["kind"] == "ClusterRole")
    assert _allowed(cluster["rules"], "apiextensions.k8s.io",
                    "customresourcedefinitions") == {"get"}
    assert _allowed(cluster["rules"], "", "namespaces") == {"get"}
    # Nothing cluster-wide beyond those two reads.
    assert all(set(rule["verbs"]) == {"get"} for rule in cluster["rules"])


def test_kind_cluster_shares_one_folder_with_every_worker() -> None:
    (config,) = _documents("kind-config.yaml")
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    workers = [node for node in config["nodes"] if node["role"] == "worker"]
    assert len(workers) >= 2
    for node in workers:
        assert node["extraMounts"] == [{"hostPath": "HOST_SHARED_DIR", "containerPath": "/shared"}]
    kind_values = yaml.safe_load((K8S / "examples" / "cpu-kind.values.yaml").read_text())
    assert kind_values["hosts"] == len(workers)
    assert kind_values["volumes"][0]["hostPath"]["path"] == "/shared"
