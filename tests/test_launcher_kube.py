"""The launcher's Kubernetes backend, through the real `kubernetes` client, against a stand-in
API server speaking the real REST paths (tests/fake_apiserver.py)."""

from __future__ import annotations

import threading
import time

import pytest

from launcher import kube
from launcher.cli import main
from launcher.render import render
from launcher.values import build
from tests.fake_apiserver import FakeApiServer

NS = "team"
TINY = ["--set", "hosts=2"]


@pytest.fixture()
def api(tmp_path, monkeypatch):
    monkeypatch.setattr(kube, "POLL_S", 0.05)
    with FakeApiServer(namespaces=("default", NS)) as server:
        monkeypatch.setenv("KUBECONFIG", str(server.write_kubeconfig(tmp_path / "kubeconfig",
                                                                     namespace=NS)))
        monkeypatch.delenv("TVQ_LAUNCHER_BACKEND", raising=False)
        yield server


def metrics(step: int) -> str:
    return f"tvq-metrics step={step} loss={3 - step / 100:.3f} bpb=1.5 tokens_per_s=900.0 lr=0.001"


def test_submit_creates_the_rendered_objects_and_status_reads_pods_and_leader_metrics(api, capsys):
    assert main(["submit", "--name", "r1", *TINY]) == 0
    values = build(sets=["hosts=2"])
    account, jobset = render(values, "r1")
    stored = api.jobsets[(NS, "r1")]
    assert stored["spec"] == jobset["spec"]
    assert stored["metadata"]["labels"] == jobset["metadata"]["labels"]
    assert api.accounts[(NS, "r1")]["metadata"]["labels"] == account["metadata"]["labels"]

    leader = api.add_pod(NS, "r1", 0, 0, node="node-a")
    api.add_pod(NS, "r1", 0, 1, node="node-b", phase="Pending")
    api.append_log(NS, leader, "starting", metrics(10), "noise line", metrics(20))
    capsys.readouterr()
    assert main(["status", "r1"]) == 0
    out = capsys.readouterr().out
    assert "run r1: Running" in out and "restarts 0/3" in out
    assert "step=20 loss=2.800" in out and "tokens_per_s=900.0" in out
    assert leader in out and "node-a" in out and "Pending" in out

    assert main(["list"]) == 0
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("r1 ")]
    assert row and row[0].split()[2:] == ["Running", "20"]


def test_submit_refuses_a_live_run_unless_replace_and_replaces_a_finished_one(api, capsys):
    assert main(["submit", "--name", "r2"]) == 0
    before = list(api.writes())
    assert main(["submit", "--name", "r2", "--set", "hosts=3"]) == 2
    assert "still live" in capsys.readouterr().err
    assert api.writes() == before
    assert main(["submit", "--name", "r2", "--set", "hosts=3", "--replace"]) == 0
    job = api.jobsets[(NS, "r2")]["spec"]["replicatedJobs"][0]["template"]["spec"]
    assert job["parallelism"] == 3
    api.set_condition(NS, "r2", "Completed")
    assert main(["submit", "--name", "r2"]) == 0  # a finished run is replaced without asking
    assert "status" not in api.jobsets[(NS, "r2")]


@pytest.mark.parametrize("setup, argv, message", [
    (lambda s: setattr(s, "crd_installed", False), [], "kubectl apply --server-side"),
    (lambda s: None, ["-n", "nowhere"], "namespace 'nowhere' does not exist"),
    (lambda s: None, ["--set", "wandb.secretName=wandb"], "secret 'wandb' not found"),
    (lambda s: s.add_secret(NS, "wandb", {"token": "x"}), ["--set", "wandb.secretName=wandb"],
     "has no key 'api-key'"),
])
def test_preflight_failures_are_one_line_exit_2_and_create_nothing(api, capsys, setup, argv,
                                                                   message):
    setup(api)
    assert main(["submit", "--name", "r3", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert api.writes() == []


def test_cluster_scoped_checks_forbidden_by_rbac_are_skipped_with_a_note(api, capsys):
    api.forbidden |= {"/api/v1/namespaces/team",
                      "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                      "jobsets.jobset.x-k8s.io"}
    assert main(["submit", "--name", "r10"]) == 0
    err = capsys.readouterr().err
    assert "check JobSet CRD: forbidden by RBAC, not checked" in err
    assert "check namespace: forbidden by RBAC, not checked" in err
    assert (NS, "r10") in api.jobsets


def test_secret_present_is_referenced_never_copied(api):
    api.add_secret(NS, "wandb", {"api-key": "s3cret"})
    assert main(["submit", "--name", "r4", "--set", "wandb.secretName=wandb"]) == 0
    env = api.jobsets[(NS, "r4")]["spec"]["replicatedJobs"][0]["template"]["spec"][
        "template"]["spec"]["containers"][0]["env"]
    key = next(e for e in env if e["name"] == "WANDB_API_KEY")
    assert key == {"name": "WANDB_API_KEY",
                   "valueFrom": {"secretKeyRef": {"name": "wandb", "key": "api-key"}}}
    assert "s3cret" not in str(api.jobsets)


def _play_restart_then_success(api: FakeApiServer, name: str) -> None:
    """Act as the JobSet controller: attempt 0 fails on worker 1, attempt 1 completes."""
    first = [api.add_pod(NS, name, 0, i) for i in range(2)]
    api.append_log(NS, first[0], "leader attempt 0", metrics(5))
    api.append_log(NS, first[1], "worker1 attempt 0 crashing")
    time.sleep(0.3)
    api.finish_pod(NS, first[1], exit_code=1)
    api.finish_pod(NS, first[0], exit_code=143)
    second = [api.add_pod(NS, name, 0, i, attempt=1) for i in range(2)]
    api.append_log(NS, second[0], "leader attempt 1 resumed", metrics(10))
    api.append_log(NS, second[1], "worker1 attempt 1 fine")
    time.sleep(0.3)
    for pod in second:
        api.finish_pod(NS, pod)
    api.set_condition(NS, name, "Completed", restarts=1)


def test_submit_follow_streams_all_workers_across_a_restart_and_exits_0(api, capsys):
    driver = threading.Thread(target=lambda: (time.sleep(0.5),
                                              _play_restart_then_success(api, "r5")))
    driver.start()
    code = main(["submit", "--name", "r5", *TINY, "--follow", "--timeout", "30s"])
    driver.join()
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert "[worker 0] leader attempt 0" in out
    assert "[worker 1] worker1 attempt 0 crashing" in out
    assert "[worker 0 restart 1] leader attempt 1 resumed" in out
    assert "[worker 1 restart 1] worker1 attempt 1 fine" in out


def test_submit_follow_exit_codes_for_failed_and_timed_out(api, capsys):
    def fail() -> None:
        time.sleep(0.3)
        pod = api.add_pod(NS, "r6", 0, 0)
        api.finish_pod(NS, pod, exit_code=1)
        api.set_condition(NS, "r6", "Failed", restarts=3)

    driver = threading.Thread(target=fail)
    driver.start()
    assert main(["submit", "--name", "r6", "--follow", "--timeout", "30"]) == 3
    driver.join()
    assert "run r6: Failed" in capsys.readouterr().err
    assert main(["submit", "--name", "r7", "--follow", "--timeout", "1s"]) == 4
    assert "still Pending after --timeout" in capsys.readouterr().err


def test_logs_of_one_worker_and_latest_attempt_only(api, capsys):
    assert main(["submit", "--name", "r8", *TINY]) == 0
    old = api.add_pod(NS, "r8", 0, 1)
    api.append_log(NS, old, "old attempt")
    api.finish_pod(NS, old, 1)
    for index in range(2):
        pod = api.add_pod(NS, "r8", 0, index, attempt=2)
        api.append_log(NS, pod, f"hello from {index}")
    capsys.readouterr()
    assert main(["logs", "r8"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "[worker 0 restart 2] hello from 0", "[worker 1 restart 2] hello from 1"]
    assert main(["logs", "r8", "--worker", "1", "--since", "5m"]) == 0
    assert capsys.readouterr().out.splitlines() == ["[worker 1 restart 2] hello from 1"]


def test_kill_asks_then_deletes_the_jobset_and_its_service_account(api, capsys, monkeypatch):
    assert main(["submit", "--name", "r9"]) == 0
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("n\n"))
    assert main(["kill", "r9"]) == 1
    assert (NS, "r9") in api.jobsets
    assert main(["kill", "r9", "--yes"]) == 0
    assert (NS, "r9") not in api.jobsets and (NS, "r9") not in api.accounts
    assert main(["status", "r9"]) == 1
    assert "no such run" in capsys.readouterr().err
