"""The Kubernetes backend: JobSets and their pods through the official `kubernetes` client."""

from __future__ import annotations

import calendar
import os
import sys
import threading
import time
from typing import Any, Callable, Mapping, TextIO

import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException

from launcher.errors import LauncherError, PreflightError
from launcher.logs import PrefixedWriter, last_metrics, prefix
from launcher.render import (APP_NAME, CONTAINER, JOB_INDEX_KEY, JOBSET_GROUP, JOBSET_PLURAL,
                             JOBSET_VERSION, MANAGED_BY)
from launcher.status import PodStatus, RunStatus, RunSummary
from launcher.values import ValuesError

JOBSET_CRD = f"{JOBSET_PLURAL}.{JOBSET_GROUP}"
JOBSET_INSTALL_HINT = ("install it with: kubectl apply --server-side -f https://github.com/"
                       "kubernetes-sigs/jobset/releases/download/v0.8.1/manifests.yaml")
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
RESTART_ATTEMPT_LABEL = "jobset.sigs.k8s.io/restart-attempt"
COMPLETION_INDEX_KEY = "batch.kubernetes.io/job-completion-index"
TIMEOUT_S = 30  # per API request (streams excepted)
POLL_S = 1.0
DELETE_WAIT_S = 120.0
METRICS_TAIL_LINES = 200
FORBIDDEN = object()  # what a preflight check returns when RBAC does not allow it


def _created(obj: Mapping[str, Any]) -> float:
    stamp = obj.get("metadata", {}).get("creationTimestamp")
    if not stamp:
        return time.time()
    return float(calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")))


def jobset_state(jobset: Mapping[str, Any], pods: list[PodStatus]) -> str:
    """Succeeded, Failed or Suspended from the JobSet's conditions; else Running or Pending."""
    for condition in jobset.get("status", {}).get("conditions", []):
        if condition.get("status") == "True":
            named = {"Completed": "Succeeded", "Failed": "Failed", "Suspended": "Suspended"}
            if condition.get("type") in named:
                return named[condition["type"]]
    return "Running" if any(p.phase == "Running" for p in pods) else "Pending"


class KubeBackend:
    """Submits, inspects, follows and deletes runs (JobSets) in one namespace."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None,
                 namespace: str | None = None) -> None:
        path = kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser(
            "~/.kube/config")
        if not any(os.path.isfile(p) for p in path.split(os.pathsep) if p):
            raise ValuesError(f"--kubeconfig: no kubeconfig at {path!r}; pass --kubeconfig, "
                              "set KUBECONFIG or create ~/.kube/config")
        try:
            self.api = config.new_client_from_config(config_file=path, context=context)
            contexts, active = config.list_kube_config_contexts(config_file=path)
        except ConfigException as error:
            raise ValuesError(f"--context: {str(error).splitlines()[0]}") from None
        chosen = next((c for c in contexts if c["name"] == context), active) if context else active
        self.namespace = namespace or (chosen or {}).get("context", {}).get(
            "namespace") or "default"
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.extensions = client.ApiextensionsV1Api(self.api)

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One API call; errors become one-line LauncherErrors (404 returns None)."""
        try:
            return fn(*args, **kwargs)
        except ApiException as error:
            if error.status == 404:
                return None
            if error.status == 403 and what.startswith("check "):
                print(f"launcher: {what}: forbidden by RBAC, not checked (k8s/rbac.yaml grants "
                      "it)", file=sys.stderr)
                return FORBIDDEN
            raise LauncherError(f"{what}: kubernetes API answered {error.status} "
                                f"{error.reason}") from None
        except urllib3.exceptions.HTTPError as error:
            raise LauncherError(f"{what}: kubernetes API at {self.api.configuration.host} "
                                f"unreachable ({type(error).__name__})") from None

    # ---- objects -------------------------------------------------------------------------

    def _jobset(self, name: str) -> dict[str, Any] | None:
        return self._call(f"get jobset {name}", self.custom.get_namespaced_custom_object,
                          JOBSET_GROUP, JOBSET_VERSION, self.namespace, JOBSET_PLURAL, name,
                          _request_timeout=TIMEOUT_S)

    def _require_jobset(self, name: str) -> dict[str, Any]:
        jobset = self._jobset(name)
        if jobset is None:
            raise LauncherError(f"{name}: no such run (JobSet) in namespace {self.namespace}")
        return jobset

    def _pods(self, name: str) -> list[Any]:
        found = self._call(f"list pods of {name}", self.core.list_namespaced_pod,
                           self.namespace, label_selector=f"{JOBSET_NAME_LABEL}={name}",
                           _request_timeout=TIMEOUT_S)
        return list(found.items) if found else []

    @staticmethod
    def _pod_status(pod: Any, pods_per_job: int) -> PodStatus:
        meta = pod.metadata
        marks = {**(meta.annotations or {}), **(meta.labels or {})}
        worker = int(marks.get(JOB_INDEX_KEY, 0)) * pods_per_job + int(
            marks.get(COMPLETION_INDEX_KEY, 0))
        statuses = [s for s in (pod.status.container_statuses or []) if s.name == CONTAINER]
        terminated = statuses[0].state.terminated if statuses and statuses[0].state else None
        return PodStatus(worker=worker, attempt=int(marks.get(RESTART_ATTEMPT_LABEL, 0)),
                         name=meta.name, phase=pod.status.phase or "Pending",
                         node=pod.spec.node_name or "",
                         restarts=sum(s.restart_count or 0 for s in statuses),
                         exit_code=terminated.exit_code if terminated else None)

    @staticmethod
    def _pods_per_job(jobset: Mapping[str, Any]) -> int:
        return jobset["spec"]["replicatedJobs"][0]["template"]["spec"].get("parallelism", 1)

    def _log(self, pod: str, **kwargs: Any) -> str:
        text = self._call(f"logs of {pod}", self.core.read_namespaced_pod_log, pod,
                          self.namespace, container=CONTAINER, _request_timeout=TIMEOUT_S,
                          **kwargs)
        return text or ""

    # ---- submit --------------------------------------------------------------------------

    def preflight(self, values: Mapping[str, Any], name: str, replace: bool) -> None:
        """Check image, JobSet CRD, namespace, secret and name clash; raise before creating."""
        image = values["image"]
        if not image["repository"] or not image["tag"]:
            raise ValuesError("image.repository: required (with image.tag) for the kubernetes "
                              "backend; allowed: an image reference such as ghcr.io/tvq/tvq")
        crd = self._call("check JobSet CRD", self.extensions.read_custom_resource_definition,
                         JOBSET_CRD, _request_timeout=TIMEOUT_S)
        if crd is None:
            raise PreflightError(f"JobSet CRD {JOBSET_CRD} is not installed; "
                                 f"{JOBSET_INSTALL_HINT}")
        if self._call("check namespace", self.core.read_namespace, self.namespace,
                      _request_timeout=TIMEOUT_S) is None:
            raise PreflightError(f"--namespace: namespace {self.namespace!r} does not exist")
        secret_name, key = values["wandb"]["secretName"], values["wandb"]["secretKey"]
        if secret_name:
            secret = self._call("check secret", self.core.read_namespaced_secret, secret_name,
                                self.namespace, _request_timeout=TIMEOUT_S)
            if secret is None:
                raise PreflightError(f"wandb.secretName: secret {secret_name!r} not found in "
                                     f"namespace {self.namespace}")
            if secret is not FORBIDDEN and key not in (secret.data or {}):
                raise PreflightError(f"wandb.secretKey: secret {secret_name!r} has no key "
                                     f"{key!r}")
        existing = self._jobset(name)
        if existing is not None and not replace and jobset_state(existing, []) not in (
                "Succeeded", "Failed"):
            raise PreflightError(f"{name}: a run of this name is still live in namespace "
                                 f"{self.namespace}; kill it first or pass --replace")

    def submit(self, values: Mapping[str, Any], name: str, objects: list[dict[str, Any]],
               replace: bool) -> None:
        """Check, delete a finished (or, with replace, live) run of the same name, create."""
        self.preflight(values, name, replace)
        if self._jobset(name) is not None:
            self._delete_jobset(name)
        for obj in objects:
            if obj["kind"] == "ServiceAccount":
                self._apply_service_account(obj)
            else:
                self._call(f"create jobset {name}", self.custom.create_namespaced_custom_object,
                           JOBSET_GROUP, JOBSET_VERSION, self.namespace, JOBSET_PLURAL, obj,
                           _request_timeout=TIMEOUT_S)

    def _apply_service_account(self, account: dict[str, Any]) -> None:
        name = account["metadata"]["name"]
        try:
            self.core.create_namespaced_service_account(self.namespace, account,
                                                        _request_timeout=TIMEOUT_S)
        except ApiException as error:
            if error.status != 409:
                raise LauncherError(f"create serviceaccount {name}: kubernetes API answered "
                                    f"{error.status} {error.reason}") from None
            self._call(f"replace serviceaccount {name}",
                       self.core.replace_namespaced_service_account, name, self.namespace,
                       account, _request_timeout=TIMEOUT_S)

    def _delete_jobset(self, name: str) -> None:
        self._call(f"delete jobset {name}", self.custom.delete_namespaced_custom_object,
                   JOBSET_GROUP, JOBSET_VERSION, self.namespace, JOBSET_PLURAL, name,
                   body=client.V1DeleteOptions(propagation_policy="Foreground"),
                   _request_timeout=TIMEOUT_S)
        end = time.time() + DELETE_WAIT_S
        while self._jobset(name) is not None:
            if time.time() > end:
                raise LauncherError(f"{name}: still being deleted after {DELETE_WAIT_S:.0f}s")
            time.sleep(POLL_S)

    # ---- inspect -------------------------------------------------------------------------

    def status(self, name: str) -> RunStatus:
        """The JobSet's state, conditions and restarts, every pod, the leader's metrics."""
        jobset = self._require_jobset(name)
        per_job = self._pods_per_job(jobset)
        pods = [self._pod_status(p, per_job) for p in self._pods(name)]
        js_status = jobset.get("status", {})
        conditions = [f"{c['type']}={c['status']}" + (f" ({c['reason']})" if c.get("reason")
                                                       else "")
                      for c in js_status.get("conditions", [])]
        return RunStatus(name=name, state=jobset_state(jobset, pods),
                         restarts=js_status.get("restarts", 0),
                         max_restarts=jobset["spec"].get("failurePolicy", {}).get(
                             "maxRestarts", 0),
                         created=_created(jobset), conditions=conditions, pods=pods,
                         metrics=self._leader_metrics(pods))

    def _leader_metrics(self, pods: list[PodStatus]) -> dict[str, str] | None:
        started = [p for p in pods if p.worker == 0 and p.phase != "Pending"]
        if not started:
            return None
        leader = max(started, key=lambda p: p.attempt)
        return last_metrics(self._log(leader.name, tail_lines=METRICS_TAIL_LINES).splitlines())

    def list_runs(self) -> list[RunSummary]:
        """Every tvq run (JobSet labelled app.kubernetes.io/name=tvq-train) in the namespace."""
        found = self._call("list jobsets", self.custom.list_namespaced_custom_object,
                           JOBSET_GROUP, JOBSET_VERSION, self.namespace, JOBSET_PLURAL,
                           label_selector=f"app.kubernetes.io/name={APP_NAME}",
                           _request_timeout=TIMEOUT_S) or {"items": []}
        runs = []
        for jobset in found["items"]:
            name = jobset["metadata"]["name"]
            pods = [self._pod_status(p, self._pods_per_job(jobset)) for p in self._pods(name)]
            metrics = self._leader_metrics(pods)
            runs.append(RunSummary(name=name, created=_created(jobset),
                                   state=jobset_state(jobset, pods),
                                   step=metrics.get("step", "") if metrics else ""))
        return runs

    def kill(self, name: str) -> None:
        """Delete the JobSet (its Jobs and pods go with it) and the ServiceAccount made for it."""
        self._require_jobset(name)
        self._delete_jobset(name)
        accounts = self._call("list serviceaccounts", self.core.list_namespaced_service_account,
                              self.namespace, label_selector=(
                                  f"app.kubernetes.io/instance={name},"
                                  f"app.kubernetes.io/managed-by={MANAGED_BY}"),
                              _request_timeout=TIMEOUT_S)
        for account in accounts.items if accounts else []:
            self._call("delete serviceaccount", self.core.delete_namespaced_service_account,
                       account.metadata.name, self.namespace, _request_timeout=TIMEOUT_S)

    # ---- logs ----------------------------------------------------------------------------

    def logs(self, name: str, out: TextIO, worker: int | None = None, follow: bool = False,
             since_s: int | None = None, deadline: float | None = None) -> None:
        """Every worker's log lines with prefixes; with follow, across restarts until the end."""
        jobset = self._require_jobset(name)
        per_job = self._pods_per_job(jobset)
        writer = PrefixedWriter(out)
        pods = [self._pod_status(p, per_job) for p in self._pods(name)]
        first_attempt = max((p.attempt for p in pods), default=0)
        if not follow:
            for pod in sorted(pods, key=lambda p: p.worker):
                if pod.attempt == first_attempt and pod.phase != "Pending" and (
                        worker is None or pod.worker == worker):
                    for line in self._log(pod.name, since_seconds=since_s).splitlines():
                        writer.write(prefix(pod.worker, pod.attempt), line)
            return
        streams: dict[tuple[str, int], threading.Thread] = {}
        while deadline is None or time.time() < deadline:
            jobset = self._jobset(name)
            pods = [self._pod_status(p, per_job) for p in self._pods(name)]
            for pod in pods:
                if (pod.name, pod.attempt) in streams or pod.phase == "Pending" or (
                        pod.attempt < first_attempt) or (worker is not None and
                                                         pod.worker != worker):
                    continue
                thread = threading.Thread(target=self._stream, args=(pod, writer, since_s),
                                          daemon=True)
                streams[(pod.name, pod.attempt)] = thread
                thread.start()
            ended = jobset is None or jobset_state(jobset, pods) in ("Succeeded", "Failed")
            if ended and not any(t.is_alive() for t in streams.values()):
                return
            time.sleep(POLL_S)

    def _stream(self, pod: PodStatus, writer: PrefixedWriter, since_s: int | None) -> None:
        """Copy one pod's followed log to the writer, line by line, until the stream ends."""
        try:
            response = self._call(f"logs of {pod.name}", self.core.read_namespaced_pod_log,
                                  pod.name, self.namespace, container=CONTAINER, follow=True,
                                  since_seconds=since_s, _preload_content=False)
        except LauncherError:
            return  # a pod whose container never started has no log to follow
        if response is None:
            return
        tag, pending = prefix(pod.worker, pod.attempt), b""
        try:
            for chunk in response.stream(decode_content=True):
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    writer.write(tag, line.decode("utf-8", errors="replace"))
        except urllib3.exceptions.HTTPError:
            pass  # the pod went away mid-stream (restart or deletion)
        finally:
            response.release_conn()
        if pending:
            writer.write(tag, pending.decode("utf-8", errors="replace"))
