"""The tvq-train Helm chart, rendered by a real helm and validated against Kubernetes schemas."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from helm_tool import CHART_DIR, REPO_ROOT, HelmError, helm_template, run_helm

EXAMPLES = sorted((REPO_ROOT / "k8s" / "examples").glob("*.values.yaml"))
RENDERED_DIR = REPO_ROOT / "k8s" / "rendered"
JOBSET_SCHEMA = REPO_ROOT.parent / "shared" / "schemas" / "jobset.x-k8s.io_v1alpha2.openapi.json"
K8S_VERSION = kubernetes_validate.latest_version()


def _strict(schema: Any) -> Any:
    """The CRD schema with unknown fields rejected (kubectl's strict field validation)."""
    if isinstance(schema, dict):
        schema = {key: _strict(value) for key, value in schema.items()}
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


@pytest.fixture(scope="module")
def jobset_validator() -> jsonschema.Validator:
    if not JOBSET_SCHEMA.is_file():
        pytest.skip(f"JobSet CRD schema not found at {JOBSET_SCHEMA} (CI provides "
                    "../shared/schemas/); the JobSet's pod template is still checked as a Job")
    schema = _strict(json.loads(JOBSET_SCHEMA.read_text()))
    return jsonschema.Draft202012Validator(schema)


def validate_builtin(obj: dict[str, Any]) -> None:
    """Strict validation of a built-in kind against the Kubernetes OpenAPI schemas."""
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def job_of(jobset: dict[str, Any]) -> dict[str, Any]:
    """The JobSet's Job template as a batch/v1 Job, so the pod spec gets Kubernetes' own schema."""
    spec = jobset["spec"]["replicatedJobs"][0]["template"]["spec"]
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}, "spec": spec}


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [obj for obj in objects if obj["kind"] == kind]
    return found


def pod_spec(jobset: dict[str, Any]) -> dict[str, Any]:
    return jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]


def container(jobset: dict[str, Any]) -> dict[str, Any]:
    (tvq,) = pod_spec(jobset)["containers"]
    return tvq


def env_of(jobset: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container(jobset)["env"]}


def render(release: str = "run", **values: Any) -> list[dict[str, Any]]:
    return helm_template(values, release)


def test_lint_strict_with_defaults_and_every_example() -> None:
    run_helm("lint", "--strict", str(CHART_DIR))
    for example in EXAMPLES:
        run_helm("lint", "--strict", str(CHART_DIR), "--values", str(example))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.name)
def test_example_renders_valid_builtin_objects(example: Path) -> None:
    objects = helm_template(example, "example")
    assert [obj["kind"] for obj in objects] == ["ServiceAccount", "JobSet"]
    validate_builtin(by_kind(objects, "ServiceAccount"))
    validate_builtin(job_of(by_kind(objects, "JobSet")))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.name)
def test_example_jobset_matches_the_crd_schema(example: Path,
                                               jobset_validator: jsonschema.Validator) -> None:
    jobset = by_kind(helm_template(example, "example"), "JobSet")
    errors = sorted(jobset_validator.iter_errors(jobset), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.name)
def test_committed_rendering_is_current(example: Path) -> None:
    name = example.name.removesuffix(".values.yaml")
    rendered = run_helm("template", name, str(CHART_DIR), "--namespace", "default",
                        "--values", str(example))
    committed = RENDERED_DIR / f"{name}.yaml"
    assert committed.is_file() and committed.read_text() == rendered, (
        f"{committed} is stale: run k8s/render-examples.sh")


def test_default_cpu_run_follows_the_contract() -> None:
    objects = render("demo")
    validate_builtin(job_of(by_kind(objects, "JobSet")))
    jobset = by_kind(objects, "JobSet")
    spec = jobset["spec"]
    assert jobset["metadata"]["name"] == "demo"
    assert spec["network"] == {"enableDNSHostnames": True, "publishNotReadyAddresses": True,
                               "subdomain": "demo"}
    assert spec["failurePolicy"] == {"maxRestarts": 3, "rules": [{
        "name": "preemption", "action": "RestartJobSetAndIgnoreMaxRestarts",
        "onJobFailureReasons": ["PodFailurePolicy"]}]}
    assert spec["ttlSecondsAfterFinished"] == 86400
    (workers,) = spec["replicatedJobs"]
    assert workers["name"] == "workers" and workers["replicas"] == 1
    job = workers["template"]["spec"]
    assert (job["parallelism"], job["completions"], job["completionMode"], job["backoffLimit"]) \
        == (1, 1, "Indexed", 0)
    assert job["podFailurePolicy"] == {"rules": [{"action": "FailJob", "onPodConditions": [
        {"type": "DisruptionTarget", "status": "True"}]}]}
    pod = pod_spec(jobset)
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 1000,
                                      "seccompProfile": {"type": "RuntimeDefault"}}
    assert container(jobset)["securityContext"] == {"allowPrivilegeEscalation": False,
                                                    "capabilities": {"drop": ["ALL"]}}
    assert "nodeSelector" not in pod and "tolerations" not in pod
    assert "resources" not in container(jobset)
    assert "annotations" not in jobset["metadata"]
    assert container(jobset)["image"] == "ghcr.io/tvq/tvq:0.1.0"
    assert container(jobset)["args"] == ["train"]


def test_rendezvous_environment_names_the_first_pod() -> None:
    jobset = by_kind(render("enwik8", nameOverride="big-run", hosts=3, coordinatorPort=1234,
                            initTimeoutSeconds=42), "JobSet")
    env = env_of(jobset)
    assert env["JAX_COORDINATOR_ADDRESS"]["value"] == "big-run-workers-0-0.big-run:1234"
    assert jobset["spec"]["network"]["subdomain"] == "big-run"
    assert env["TVQ_NUM_PROCESSES"]["value"] == "3"
    assert env["TVQ_PODS_PER_JOB"]["value"] == "3"
    assert env["TVQ_INIT_TIMEOUT_S"]["value"] == "42"
    assert env["TVQ_JOB_INDEX"]["valueFrom"] == {"fieldRef": {
        "fieldPath": "metadata.annotations['jobset.sigs.k8s.io/job-index']"}}
    assert env["PYTHONUNBUFFERED"]["value"] == "1"
    names = [entry["name"] for entry in container(jobset)["env"]]
    assert names[:5] == ["JAX_COORDINATOR_ADDRESS", "TVQ_NUM_PROCESSES", "TVQ_PODS_PER_JOB",
                         "TVQ_JOB_INDEX", "TVQ_INIT_TIMEOUT_S"]


# (version, topology, slices) -> (replicas, hosts per slice, chips per host, accelerator label)
TPU_SHAPES = [
    ("v5e", "1x1", 1, 1, 1, 1, "tpu-v5-lite-podslice"),
    ("v5e", "2x4", 1, 1, 1, 8, "tpu-v5-lite-podslice"),
    ("v5e", "4x4", 1, 1, 4, 4, "tpu-v5-lite-podslice"),
    ("v6e", "16x16", 1, 1, 64, 4, "tpu-v6e-slice"),
    ("v4", "2x2x1", 1, 1, 1, 4, "tpu-v4-podslice"),
    ("v4", "2x2x4", 1, 1, 4, 4, "tpu-v4-podslice"),
    ("v5p", "4x4x4", 2, 2, 16, 4, "tpu-v5p-slice"),
]


@pytest.mark.parametrize("version,topology,slices,replicas,hosts,chips,label", TPU_SHAPES)
def test_tpu_profile_shapes(version: str, topology: str, slices: int, replicas: int, hosts: int,
                            chips: int, label: str) -> None:
    jobset = by_kind(render("tpu", accelerator="tpu", hosts=99,
                            tpu={"version": version, "topology": topology, "slices": slices}),
                     "JobSet")
    (workers,) = jobset["spec"]["replicatedJobs"]
    job = workers["template"]["spec"]
    assert workers["replicas"] == replicas
    assert job["parallelism"] == job["completions"] == hosts
    assert container(jobset)["resources"] == {"requests": {"google.com/tpu": chips},
                                              "limits": {"google.com/tpu": chips}}
    assert pod_spec(jobset)["nodeSelector"] == {"cloud.google.com/gke-tpu-accelerator": label,
                                                "cloud.google.com/gke-tpu-topology": topology}
    assert jobset["metadata"]["annotations"] == {
        "alpha.jobset.sigs.k8s.io/exclusive-topology": "cloud.google.com/gke-nodepool"}
    env = env_of(jobset)
    assert env["TVQ_NUM_PROCESSES"]["value"] == str(replicas * hosts)
    assert env["TVQ_PODS_PER_JOB"]["value"] == str(hosts)


def test_gpu_profile() -> None:
    jobset = by_kind(render("gpu", accelerator="gpu", hosts=2,
                            gpu={"type": "nvidia-l4", "perHost": 4},
                            tolerations=[{"key": "spot", "operator": "Exists"}],
                            nodeSelector={"pool": "a"}), "JobSet")
    validate_builtin(job_of(jobset))
    pod = pod_spec(jobset)
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4", "pool": "a"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "spot", "operator": "Exists"}]
    assert container(jobset)["resources"] == {"limits": {"nvidia.com/gpu": 4}}
    job = jobset["spec"]["replicatedJobs"][0]
    assert job["replicas"] == 1 and job["template"]["spec"]["parallelism"] == 2
    assert "annotations" not in jobset["metadata"]


def test_resources_merge_over_the_accelerators_own() -> None:
    jobset = by_kind(render("tpu", accelerator="tpu", tpu={"topology": "4x4"},
                            resources={"limits": {"memory": "200Gi"},
                                       "requests": {"cpu": "8"}}), "JobSet")
    assert container(jobset)["resources"] == {
        "limits": {"google.com/tpu": 4, "memory": "200Gi"},
        "requests": {"google.com/tpu": 4, "cpu": "8"}}


def test_optional_pass_throughs() -> None:
    objects = render("opts", command="sample", args=["--preset", "enwik8", "-o", "gs://b/x"],
                     kueue={"queueName": "team-a"}, priorityClassName="high",
                     commonLabels={"team": "ml"}, podAnnotations={"note": "hi"},
                     env=[{"name": "XLA_FLAGS", "value": "--xla_dump_to=/tmp"}],
                     volumes=[{"name": "dshm", "emptyDir": {"medium": "Memory"}}],
                     volumeMounts=[{"name": "dshm", "mountPath": "/dev/shm"}],
                     wandb={"mode": "offline", "project": "p", "runId": "abc123"})
    jobset = by_kind(objects, "JobSet")
    validate_builtin(job_of(jobset))
    tvq = container(jobset)
    assert tvq["args"] == ["sample", "--preset", "enwik8", "-o", "gs://b/x"]
    assert jobset["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert pod_spec(jobset)["priorityClassName"] == "high"
    template = jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]
    assert template["metadata"]["annotations"] == {"note": "hi"}
    for labels in (template["metadata"]["labels"], jobset["metadata"]["labels"],
                   by_kind(objects, "ServiceAccount")["metadata"]["labels"]):
        assert labels["team"] == "ml"
        assert labels["app.kubernetes.io/instance"] == "opts"
        assert labels["app.kubernetes.io/name"] == "tvq-train"
        assert labels["app.kubernetes.io/component"] == "trainer"
        assert labels["app.kubernetes.io/version"] == "0.1.0"
    env = env_of(jobset)
    assert [e["name"] for e in tvq["env"]][-1] == "XLA_FLAGS"
    assert (env["WANDB_MODE"]["value"], env["WANDB_PROJECT"]["value"],
            env["WANDB_RUN_ID"]["value"]) == ("offline", "p", "abc123")
    assert pod_spec(jobset)["volumes"] == [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]
    assert tvq["volumeMounts"] == [{"name": "dshm", "mountPath": "/dev/shm"}]


def test_wandb_run_id_is_left_out_when_empty() -> None:
    # wandb.init raises "Run ID cannot be empty" when WANDB_RUN_ID is set to "".
    assert "WANDB_RUN_ID" not in env_of(by_kind(render("w"), "JobSet"))


def test_wandb_key_only_through_a_secret_reference() -> None:
    objects = render("wb", wandb={"mode": "online", "secretName": "wandb-key",
                                  "secretKey": "token"})
    key = env_of(by_kind(objects, "JobSet"))["WANDB_API_KEY"]
    assert key == {"name": "WANDB_API_KEY",
                   "valueFrom": {"secretKeyRef": {"name": "wandb-key", "key": "token"}}}
    assert "Secret" not in [obj["kind"] for obj in objects]


def _literal_secret_env(objects: list[dict[str, Any]]) -> list[str]:
    """Env entries whose name looks secret and whose value is written out in the manifest."""
    found = []
    for obj in objects:
        if obj["kind"] != "JobSet":
            continue
        for entry in container(obj)["env"]:
            if re.search(r"KEY|TOKEN|SECRET|PASSWORD", entry["name"]) and "value" in entry:
                found.append(entry["name"])
    return found


def test_no_secret_value_in_any_rendering() -> None:
    renderings = [helm_template(example, "example") for example in EXAMPLES]
    renderings.append(render("wb", wandb={"mode": "online", "secretName": "wandb"}))
    for objects in renderings:
        assert _literal_secret_env(objects) == []
        assert all(obj["kind"] in ("ServiceAccount", "JobSet") for obj in objects)


def test_service_account_and_workload_identity() -> None:
    objects = render("wi", serviceAccount={
        "gcpServiceAccount": "tvq@proj.iam.gserviceaccount.com", "annotations": {"a": "b"}})
    account = by_kind(objects, "ServiceAccount")
    validate_builtin(account)
    assert account["metadata"]["name"] == "wi"
    assert account["metadata"]["annotations"] == {
        "a": "b", "iam.gke.io/gcp-service-account": "tvq@proj.iam.gserviceaccount.com"}
    assert pod_spec(by_kind(objects, "JobSet"))["serviceAccountName"] == "wi"

    named = render("wi", serviceAccount={"create": True, "name": "trainer"})
    assert by_kind(named, "ServiceAccount")["metadata"]["name"] == "trainer"
    existing = render("wi", serviceAccount={"create": False, "name": "shared"})
    assert [obj["kind"] for obj in existing] == ["JobSet"]
    assert pod_spec(existing[0])["serviceAccountName"] == "shared"
    assert pod_spec(render("wi", serviceAccount={"create": False})[0])[
        "serviceAccountName"] == "default"


def test_name_length_limit_is_exact() -> None:
    # 4 hosts: the longest hostname is N-workers-0-3, 12 characters more than N.
    fits = "a" * 51
    assert by_kind(render(fits, hosts=4), "JobSet")["metadata"]["name"] == fits
    with pytest.raises(HelmError) as error:
        render("a" * 52, hosts=4)
    assert "at most 51" in str(error.value) and f"{'a' * 52}-workers-0-3" in str(error.value)
    tpu = {"version": "v5p", "topology": "4x4x4", "slices": 2}  # longest: N-workers-1-15
    assert by_kind(render("run", nameOverride="b" * 50, accelerator="tpu", tpu=tpu),
                   "JobSet")["metadata"]["name"] == "b" * 50
    with pytest.raises(HelmError, match="at most 50"):
        render("run", nameOverride="b" * 51, accelerator="tpu", tpu=tpu)


def test_name_that_is_not_a_dns_label_is_rejected() -> None:
    with pytest.raises(HelmError, match="starting with a letter"):
        render("1run")


def test_tpu_topology_with_chips_not_filling_hosts_is_rejected() -> None:
    with pytest.raises(HelmError, match=r"tpu.topology: got \"1x1x2\" \(2 chips\)"):
        render("t", accelerator="tpu", tpu={"version": "v4", "topology": "1x1x2"})


# (values, text helm's schema error must contain)
BAD_VALUES = [
    ({"accelerator": "fpga"}, "/accelerator"),
    ({"hosts": 0}, "/hosts"),
    ({"hosts": "2"}, "/hosts"),
    ({"replicas": 2}, "'replicas' not allowed"),
    ({"tpu": {"version": "v3"}}, "/tpu/version"),
    ({"tpu": {"slices": 0}}, "/tpu/slices"),
    ({"accelerator": "tpu", "tpu": {"version": "v5e", "topology": "2x2x2"}}, "/tpu/topology"),
    ({"accelerator": "tpu", "tpu": {"version": "v5e", "topology": "3x3"}}, "/tpu/topology"),
    ({"accelerator": "tpu", "tpu": {"version": "v5p", "topology": "4x4"}}, "/tpu/topology"),
    ({"tpu": {"chips": 4}}, "'chips' not allowed"),
    ({"gpu": {"perHost": 3}}, "/gpu/perHost"),
    ({"gpu": {"type": "h100"}}, "/gpu/type"),
    ({"command": "serve"}, "/command"),
    ({"args": "--preset enwik8"}, "/args"),
    ({"args": [1]}, "/args/0"),
    ({"coordinatorPort": 70000}, "/coordinatorPort"),
    ({"initTimeoutSeconds": 0}, "/initTimeoutSeconds"),
    ({"maxRestarts": -1}, "/maxRestarts"),
    ({"ttlSecondsAfterFinished": -5}, "/ttlSecondsAfterFinished"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"image": {"tag": ""}}, "/image/tag"),
    ({"image": {"repository": "Has Space/x"}}, "/image/repository"),
    ({"nameOverride": "Bad_Name"}, "/nameOverride"),
    ({"wandb": {"mode": "on"}}, "/wandb/mode"),
    ({"wandb": {"apiKey": "abc"}}, "'apiKey' not allowed"),
    ({"wandb": {"secretName": "Bad_Name"}}, "/wandb/secretName"),
    ({"wandb": {"runId": "a b"}}, "/wandb/runId"),
    ({"env": [{"name": "WANDB_API_KEY", "value": "abc"}]}, "/env/0/name"),
    ({"env": [{"name": "JAX_COORDINATOR_ADDRESS", "value": "x:1"}]}, "/env/0/name"),
    ({"env": [{"value": "x"}]}, "/env/0"),
    ({"env": [{"name": "A", "value": "x", "valueFrom": {}}]}, "/env/0"),
    ({"serviceAccount": {"gcpServiceAccount": "not-an-email"}},
     "/serviceAccount/gcpServiceAccount"),
    ({"serviceAccount": {"create": "yes"}}, "/serviceAccount/create"),
    ({"kueue": {"queueName": "Queue"}}, "/kueue/queueName"),
    ({"priorityClassName": "High"}, "/priorityClassName"),
    ({"resources": {"limits": {"memory": "lots"}}}, "/resources/limits/memory"),
    ({"resources": {"claims": []}}, "'claims' not allowed"),
    ({"nodeSelector": {"pool": 1}}, "/nodeSelector/pool"),
    ({"tolerations": [{"operator": "Maybe"}]}, "/tolerations/0/operator"),
    ({"commonLabels": {"app.kubernetes.io/instance": "other"}}, "app.kubernetes.io/instance"),
    ({"commonLabels": {"team": "has space"}}, "/commonLabels/team"),
    ({"volumeMounts": [{"name": "x", "mountPath": "relative"}]}, "/volumeMounts/0/mountPath"),
]


@pytest.mark.parametrize("values,where", BAD_VALUES, ids=[w for _, w in BAD_VALUES])
def test_schema_rejects_bad_values(values: dict[str, Any], where: str) -> None:
    with pytest.raises(HelmError) as error:
        helm_template(copy.deepcopy(values), "bad")
    message = str(error.value)
    assert "values don't meet the specifications of the schema" in message
    assert where in message


def test_schema_lists_every_default_value() -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == set(defaults) == set(schema["required"])
    for key, value in defaults.items():
        if isinstance(value, dict) and value and "properties" in schema["properties"][key]:
            assert set(schema["properties"][key]["properties"]) == set(value), key
            assert schema["properties"][key]["additionalProperties"] is False, key


def test_notes_tell_how_to_follow_logs() -> None:
    notes = run_helm("install", "demo", str(CHART_DIR), "--dry-run=client", "--namespace", "ml")
    assert "kubectl logs -n ml -f --prefix" in notes
    assert "jobset.sigs.k8s.io/jobset-name=demo" in notes
    assert "launcher logs demo -n ml --follow" in notes
