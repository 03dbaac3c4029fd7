"""The launcher's command line: bad input, rendering, the run shape, and staying light (no JAX)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from launcher import kube
from launcher.cli import main
from launcher.local import plan_pods
from launcher.render import render
from launcher.values import ValuesError, build, run_shape
from tests.fake_apiserver import FakeApiServer


@pytest.fixture()
def api(tmp_path, monkeypatch):
    with FakeApiServer() as server:
        monkeypatch.setenv("KUBECONFIG", str(server.write_kubeconfig(tmp_path / "kubeconfig")))
        monkeypatch.setenv("TVQ_LAUNCHER_STATE", str(tmp_path / "state"))
        monkeypatch.delenv("TVQ_LAUNCHER_BACKEND", raising=False)
        yield server


BAD_INPUT = [
    (["--set", "accelerator=fpga"], "accelerator: got 'fpga'; allowed: cpu, gpu, tpu"),
    (["--set", "accelerator=tpu", "--set", "tpu.topology=2x2x2"],
     "tpu.topology: got '2x2x2'; allowed for tpu.version v5e: 1x1, 2x2"),
    (["--set", "accelerator=tpu", "--set", "tpu.version=v4", "--set", "tpu.topology=4x4"],
     "tpu.topology: got '4x4'; allowed for tpu.version v4: three dimensions"),
    (["--set", "accelerator=tpu", "--set", "tpu.version=v5p", "--set", "tpu.topology=1x1x3"],
     "tpu.topology: got '1x1x3'; allowed for tpu.version v5p"),
    (["--set", "hosts=0"], "hosts: got 0; allowed: an integer >= 1"),
    (["--set", "acelerator=tpu"], "acelerator: unknown key; allowed: nameOverride, image"),
    (["--set", "tpu.slice=2"], "tpu.slice: unknown key; allowed: version, topology, slices"),
    (["--name", "Bad_Name"], "--name: got 'Bad_Name'; allowed: a DNS label"),
    (["--name", "r" * 52, "--set", "hosts=2"],
     "--name: got '" + "r" * 52 + "' (52 characters); allowed: at most 51 characters so pod "
     "hostname '" + "r" * 52 + "-workers-0-1' fits in 63"),
    (["--set", "commonLabels.app.kubernetes.io/name=x"], None),  # nested key: free mapping
]


@pytest.mark.parametrize("backend", ["kubernetes", "local"])
@pytest.mark.parametrize("argv, message", [case for case in BAD_INPUT if case[1]])
def test_bad_input_is_one_line_exit_2_and_creates_nothing(api, tmp_path, capsys, backend, argv,
                                                          message):
    if "--name" not in argv:
        argv = [*argv, "--name", "ok"]
    assert main(["submit", "--backend", backend, *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"launcher: {message}") and err.count("\n") == 1
    assert api.requests == [] and not (tmp_path / "state").exists()


def test_no_image_for_kubernetes_is_bad_input_but_fine_locally(api, tmp_path, capsys):
    assert main(["submit", "--name", "ok", "--set", "image.repository="]) == 2
    err = capsys.readouterr().err
    assert err.startswith("launcher: image.repository: required") and err.count("\n") == 1
    assert api.writes() == []
    assert main(["render", "--name", "ok", "--set", "image.repository="]) == 0


def test_no_kubeconfig_is_bad_input(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.setenv("HOME", str(tmp_path))
    for argv in (["submit", "--name", "ok"], ["status", "ok"], ["list"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("launcher: --kubeconfig: no kubeconfig at") and err.count("\n") == 1


def test_unknown_context_is_bad_input(api, capsys):
    assert main(["list", "--context", "nope"]) == 2
    assert capsys.readouterr().err.startswith("launcher: --context:")


def test_render_prints_the_service_account_and_jobset_with_extra_tvq_args(capsys, tmp_path):
    values = tmp_path / "run.yaml"
    values.write_text(yaml.safe_dump({"accelerator": "gpu", "hosts": 2,
                                      "args": ["--preset", "enwik8"]}))
    assert main(["render", "-f", str(values), "--name", "g", "--set", "image.tag=1.10",
                 "--", "-o", "gs://b/ckpt"]) == 0
    account, jobset = yaml.safe_load_all(capsys.readouterr().out)
    assert account["kind"] == "ServiceAccount" and jobset["kind"] == "JobSet"
    pod = jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "ghcr.io/tvq/tvq:1.10"
    assert container["args"] == ["train", "--preset", "enwik8", "-o", "gs://b/ckpt"]
    assert container["resources"] == {"limits": {"nvidia.com/gpu": 8}}
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["JAX_COORDINATOR_ADDRESS"] == "g-workers-0-0.g:8476"
    assert env["TVQ_NUM_PROCESSES"] == "2" and env["TVQ_PODS_PER_JOB"] == "2"


@pytest.mark.parametrize("version, topology, slices, hosts, chips", [
    ("v5e", "1x1", 1, 1, 1), ("v5e", "2x4", 1, 1, 8), ("v5e", "4x4", 1, 4, 4),
    ("v6e", "16x16", 1, 64, 4), ("v4", "2x2x1", 1, 1, 4), ("v5p", "2x2x4", 2, 4, 4),
])
def test_tpu_shape_follows_version_and_topology(version, topology, slices, hosts, chips):
    values = build(sets=["accelerator=tpu", f"tpu.version={version}",
                         f"tpu.topology={topology}", f"tpu.slices={slices}"])
    shape = run_shape(values)
    assert (shape.slices, shape.hosts_per_slice, shape.chips_per_host) == (slices, hosts, chips)
    jobset = render(values, "t")[-1]
    job = jobset["spec"]["replicatedJobs"][0]
    assert job["replicas"] == slices and job["template"]["spec"]["parallelism"] == hosts
    limits = job["template"]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {"google.com/tpu": chips}


def test_local_plan_resolves_each_pods_identity_like_kubernetes():
    values = build(sets=["accelerator=tpu", "tpu.version=v5p", "tpu.topology=2x2x2",
                         "tpu.slices=2", "wandb.secretName=w"])
    pods = plan_pods(render(values, "m"))
    assert [p["worker"] for p in pods] == [0, 1, 2, 3]
    assert [(p["env"]["TVQ_JOB_INDEX"], p["env"]["JOB_COMPLETION_INDEX"]) for p in pods] == [
        ("0", "0"), ("0", "1"), ("1", "0"), ("1", "1")]
    assert all(p["env"]["TVQ_NUM_PROCESSES"] == "4" and p["args"] == ["train"] for p in pods)
    assert all("WANDB_API_KEY" not in p["env"] for p in pods)  # no secret in this shell's env


def test_values_errors_name_the_file_problem(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("hosts: [1,\n")
    with pytest.raises(ValuesError, match="is not valid YAML"):
        build(files=[str(broken)])
    with pytest.raises(ValuesError, match="no such file"):
        build(files=[str(tmp_path / "absent.yaml")])


def test_the_launcher_never_imports_jax_or_the_kubernetes_client_for_help():
    probe = ("import sys, launcher.cli\n"
             "try:\n    launcher.cli.main(['--help'])\nexcept SystemExit as e:\n"
             "    assert e.code == 0\n"
             "print(sorted(m for m in ('jax', 'kubernetes', 'tvq') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True)
    assert "submit" in result.stdout and result.stdout.strip().endswith("[]")


def test_kube_backend_module_does_not_import_jax():
    result = subprocess.run([sys.executable, "-c", "import sys, launcher.kube, launcher.local; "
                             "print('jax' in sys.modules)"], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"
    assert kube.JOBSET_CRD == "jobsets.jobset.x-k8s.io"
