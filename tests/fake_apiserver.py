"""A stand-in Kubernetes API server on 127.0.0.1 for testing the launcher's Kubernetes backend.

It is a real HTTP/1.1 server speaking the real REST paths and JSON shapes the launcher uses, so
the official `kubernetes` client reaches it through a generated kubeconfig exactly as it would
reach a cluster:

- GET    /apis/apiextensions.k8s.io/v1/customresourcedefinitions/jobsets.jobset.x-k8s.io
- GET    /api/v1/namespaces/{ns}
- GET    /api/v1/namespaces/{ns}/secrets/{name}
- POST   /apis/jobset.x-k8s.io/v1alpha2/namespaces/{ns}/jobsets            (409 if it exists)
- GET    /apis/jobset.x-k8s.io/v1alpha2/namespaces/{ns}/jobsets[/{name}]   (labelSelector)
- DELETE /apis/jobset.x-k8s.io/v1alpha2/namespaces/{ns}/jobsets/{name}
- POST, GET (list, labelSelector), PUT, DELETE /api/v1/namespaces/{ns}/serviceaccounts[/{name}]
- GET    /api/v1/namespaces/{ns}/pods?labelSelector=...
- GET    /api/v1/namespaces/{ns}/pods/{pod}/log?container=&follow=&tailLines=&sinceSeconds=
  (follow streams chunked, one chunk per line, until the test calls `finish_pod`)

What it does not model: no JobSet or Job controller (tests put pods, logs, conditions and
restarts in with `add_pod`, `append_log`, `finish_pod`, `set_condition`); no schema validation,
admission or authentication (any bearer token is accepted; RBAC only as a set of paths
answered 403); deletion is immediate (no
finalizers, no foreground cascade, no pods removed with their JobSet); sinceSeconds is accepted
but not applied (lines carry no timestamps); label selectors support `k=v`, `k!=v` and `k` only;
no watch, resourceVersion or pagination.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

JOBSETS = re.compile(r"^/apis/jobset\.x-k8s\.io/v1alpha2/namespaces/([^/]+)/jobsets(?:/([^/]+))?$")
ACCOUNTS = re.compile(r"^/api/v1/namespaces/([^/]+)/serviceaccounts(?:/([^/]+))?$")
PODS = re.compile(r"^/api/v1/namespaces/([^/]+)/pods$")
POD_LOG = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/log$")
SECRET = re.compile(r"^/api/v1/namespaces/([^/]+)/secrets/([^/]+)$")
NAMESPACE = re.compile(r"^/api/v1/namespaces/([^/]+)$")
CRD = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/jobsets.jobset.x-k8s.io"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def matches(labels: dict[str, str], selector: str) -> bool:
    """Whether `labels` satisfy a label selector of k=v, k!=v and k terms."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.split("=", 1)
            if labels.get(key) != value.lstrip("="):
                return False
        elif term not in labels:
            return False
    return True


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
            "reason": reason, "message": message}


class FakeApiServer:
    """The server's state, its HTTP thread, and helpers that play the JobSet controller."""

    def __init__(self, namespaces: tuple[str, ...] = ("default",), crd_installed: bool = True):
        self.namespaces = set(namespaces)
        self.crd_installed = crd_installed
        self.jobsets: dict[tuple[str, str], dict[str, Any]] = {}
        self.accounts: dict[tuple[str, str], dict[str, Any]] = {}
        self.secrets: dict[tuple[str, str], dict[str, str]] = {}
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.logs: dict[tuple[str, str], list[str]] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request
        self.forbidden: set[str] = set()  # paths answered 403, as RBAC would
        self.lock = threading.Condition()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> "FakeApiServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        with self.lock:
            for key in self.pods:
                self.pods[key]["status"]["phase"] = "Succeeded"
            self.lock.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        """A kubeconfig whose current context points at this server."""
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "not-checked"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "tester",
                                                     "namespace": namespace}}],
        }), encoding="utf-8")
        return path

    def writes(self) -> list[tuple[str, str]]:
        """Every request that would change something (POST, PUT, PATCH, DELETE)."""
        return [r for r in self.requests if r[0] in ("POST", "PUT", "PATCH", "DELETE")]

    # ---- playing the controller ----------------------------------------------------------

    def add_secret(self, namespace: str, name: str, data: dict[str, str]) -> None:
        """Store a secret (values given in plain text)."""
        self.secrets[(namespace, name)] = {
            k: base64.b64encode(v.encode()).decode() for k, v in data.items()}

    def add_pod(self, namespace: str, jobset: str, job_index: int, completion_index: int,
                attempt: int = 0, phase: str = "Running", node: str = "node-a") -> str:
        """Create the pod JobSet would create for one worker; returns its name."""
        name = f"{jobset}-workers-{job_index}-{completion_index}-a{attempt}"
        marks = {"jobset.sigs.k8s.io/jobset-name": jobset,
                 "jobset.sigs.k8s.io/replicatedjob-name": "workers",
                 "jobset.sigs.k8s.io/job-index": str(job_index),
                 "jobset.sigs.k8s.io/restart-attempt": str(attempt),
                 "batch.kubernetes.io/job-completion-index": str(completion_index)}
        with self.lock:
            self.pods[(namespace, name)] = {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace, "labels": dict(marks),
                             "annotations": dict(marks), "creationTimestamp": _now(),
                             "uid": f"uid-{name}"},
                "spec": {"nodeName": node, "containers": [{"name": "tvq", "image": "x"}]},
                "status": {"phase": phase, "containerStatuses": [{
                    "name": "tvq", "ready": phase == "Running", "restartCount": 0,
                    "image": "x", "imageID": "", "state": {"running": {}}}]},
            }
            self.logs[(namespace, name)] = []
        return name

    def append_log(self, namespace: str, pod: str, *lines: str) -> None:
        """Add lines to a pod's log (followers receive them at once)."""
        with self.lock:
            self.logs[(namespace, pod)].extend(lines)
            self.lock.notify_all()

    def finish_pod(self, namespace: str, pod: str, exit_code: int = 0) -> None:
        """End a pod's container with `exit_code` (its log streams end)."""
        with self.lock:
            status = self.pods[(namespace, pod)]["status"]
            status["phase"] = "Succeeded" if exit_code == 0 else "Failed"
            status["containerStatuses"][0]["state"] = {"terminated": {"exitCode": exit_code}}
            self.lock.notify_all()

    def set_condition(self, namespace: str, jobset: str, kind: str, restarts: int = 0) -> None:
        """Give a JobSet a True condition (Completed, Failed, Suspended) and a restart count."""
        with self.lock:
            status = self.jobsets[(namespace, jobset)].setdefault("status", {})
            status["restarts"] = restarts
            status.setdefault("conditions", []).append({
                "type": kind, "status": "True", "reason": f"{kind}Reason", "message": "",
                "lastTransitionTime": _now()})
            self.lock.notify_all()


def _handler(server: FakeApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

        def _send(self, code: int, body: dict[str, Any] | str) -> None:
            data = (body if isinstance(body, str) else json.dumps(body)).encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain" if isinstance(body, str)
                             else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length) or b"{}")

        def _route(self, method: str) -> None:
            url = urlparse(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            server.requests.append((method, url.path))
            path = url.path
            if path in server.forbidden:
                return self._send(403, _status(403, "Forbidden", f"{path} is forbidden"))
            for pattern, handler in ((JOBSETS, self._collection), (ACCOUNTS, self._collection),
                                     (POD_LOG, self._log), (PODS, self._pods),
                                     (SECRET, self._secret), (NAMESPACE, self._namespace)):
                found = pattern.match(path)
                if found:
                    if pattern in (JOBSETS, ACCOUNTS):
                        store = server.jobsets if pattern is JOBSETS else server.accounts
                        return handler(method, store, query, *found.groups())
                    return handler(method, query, *found.groups())
            if path == CRD and method == "GET" and server.crd_installed:
                return self._send(200, {
                    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                    "metadata": {"name": "jobsets.jobset.x-k8s.io"},
                    "spec": {"group": "jobset.x-k8s.io", "scope": "Namespaced",
                             "names": {"kind": "JobSet", "plural": "jobsets"},
                             "versions": [{"name": "v1alpha2", "served": True,
                                           "storage": True}]}})
            self._send(404, _status(404, "NotFound", f"{path} not found"))

        def _collection(self, method: str, store: dict, query: dict, namespace: str,
                        name: str | None) -> None:
            if namespace not in server.namespaces:
                return self._send(404, _status(404, "NotFound", f"namespace {namespace}"))
            with server.lock:
                if method == "POST" and name is None:
                    obj = self._body()
                    key = (namespace, obj["metadata"]["name"])
                    if key in store:
                        return self._send(409, _status(409, "AlreadyExists", key[1]))
                    obj["metadata"].update(namespace=namespace, creationTimestamp=_now(),
                                           uid=f"uid-{key[1]}")
                    store[key] = obj
                    return self._send(201, obj)
                if method == "GET" and name is None:
                    items = [o for (ns, _), o in store.items() if ns == namespace and matches(
                        o["metadata"].get("labels", {}), query.get("labelSelector", ""))]
                    return self._send(200, {"kind": "List", "apiVersion": "v1",
                                            "metadata": {}, "items": items})
                if (namespace, name) not in store:
                    return self._send(404, _status(404, "NotFound", f"{name} not found"))
                if method == "GET":
                    return self._send(200, store[(namespace, name)])
                if method == "PUT":
                    store[(namespace, name)] = self._body()
                    return self._send(200, store[(namespace, name)])
                if method == "DELETE":
                    self._body()
                    return self._send(200, store.pop((namespace, name)))
            self._send(405, _status(405, "MethodNotAllowed", method))

        def _pods(self, method: str, query: dict, namespace: str) -> None:
            with server.lock:
                items = [p for (ns, _), p in server.pods.items() if ns == namespace and matches(
                    p["metadata"]["labels"], query.get("labelSelector", ""))]
                self._send(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {},
                                 "items": json.loads(json.dumps(items))})

        def _log(self, method: str, query: dict, namespace: str, pod: str) -> None:
            key = (namespace, pod)
            if key not in server.pods:
                return self._send(404, _status(404, "NotFound", f"pod {pod}"))
            if query.get("follow") != "true":
                with server.lock:
                    lines = server.logs[key]
                    if "tailLines" in query:
                        lines = lines[-int(query["tailLines"]):]
                    return self._send(200, "".join(f"{line}\n" for line in lines))
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            sent = 0
            while True:
                with server.lock:
                    lines = server.logs[key][sent:]
                    done = server.pods[key]["status"]["phase"] in ("Succeeded", "Failed")
                    if not lines and not done:
                        server.lock.wait(timeout=0.5)
                        continue
                for line in lines:
                    data = f"{line}\n".encode()
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
                sent += len(lines)
                if done and not lines:
                    break
            self.wfile.write(b"0\r\n\r\n")

        def _secret(self, method: str, query: dict, namespace: str, name: str) -> None:
            data = server.secrets.get((namespace, name))
            if data is None:
                return self._send(404, _status(404, "NotFound", f"secret {name}"))
            self._send(200, {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                             "metadata": {"name": name, "namespace": namespace}, "data": data})

        def _namespace(self, method: str, query: dict, namespace: str) -> None:
            if namespace not in server.namespaces:
                return self._send(404, _status(404, "NotFound", f"namespace {namespace}"))
            self._send(200, {"apiVersion": "v1", "kind": "Namespace",
                             "metadata": {"name": namespace}, "status": {"phase": "Active"}})

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self._route("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._route("POST")

        def do_PUT(self) -> None:  # noqa: N802
            self._route("PUT")

        def do_DELETE(self) -> None:  # noqa: N802
            self._route("DELETE")

    return Handler
