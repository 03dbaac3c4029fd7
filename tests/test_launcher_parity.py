"""One JobSet, two renderers: the launcher (Python) and the chart (Helm) render equal objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from launcher.render import render
from launcher.values import build
from tests.helm_tool import helm_template

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "k8s" / "examples").glob("*.yaml"))
BOOKKEEPING = ("helm.sh/chart", "app.kubernetes.io/managed-by")
# Values beyond the examples that exercise every other key of the contract.
EXTRA_CASES = {
    "everything-else": {
        "accelerator": "tpu", "tpu": {"version": "v6e", "topology": "2x4"},
        "commonLabels": {"team": "lm", "example.com/cost-center": "research"},
        "podAnnotations": {"example.com/note": "x"}, "priorityClassName": "high",
        "nodeSelector": {"pool": "a"}, "tolerations": [{"key": "k", "operator": "Exists"}],
        "resources": {"limits": {"google.com/tpu": 8, "memory": "100Gi"}},
        "env": [{"name": "EXTRA", "value": "1"}], "kueue": {"queueName": "q"},
        "wandb": {"mode": "offline", "runId": "abc", "secretName": "s", "secretKey": "k"},
        "serviceAccount": {"create": True, "name": "sa", "annotations": {"a": "b"}},
    },
    "no-service-account": {"serviceAccount": {"create": False}, "hosts": 3,
                           "nameOverride": "other-name"},
    "v4-3d": {"accelerator": "tpu", "tpu": {"version": "v4", "topology": "2x2x2"}},
}


def _without_bookkeeping(obj: Any) -> Any:
    """The object with Helm's and the launcher's own bookkeeping labels removed."""
    if isinstance(obj, dict):
        return {k: _without_bookkeeping(v) for k, v in obj.items() if k not in BOOKKEEPING}
    if isinstance(obj, list):
        return [_without_bookkeeping(v) for v in obj]
    return obj


def _both(values_file: Path) -> tuple[list[dict], list[dict]]:
    data = yaml.safe_load(values_file.read_text()) or {}
    run = build(files=[str(values_file)])
    name = data.get("nameOverride") or "parity-run"
    return render(run, name), helm_template(values_file, "parity-run")


def _case_file(tmp_path: Path, case: str) -> Path:
    path = tmp_path / f"{case}.yaml"
    path.write_text(yaml.safe_dump(EXTRA_CASES[case]))
    return path


@pytest.mark.parametrize("case", [p.name for p in EXAMPLES] + sorted(EXTRA_CASES))
def test_launcher_and_chart_render_the_same_objects(case, tmp_path):
    path = next((p for p in EXAMPLES if p.name == case), None) or _case_file(tmp_path, case)
    ours, helms = _both(path)
    assert [o["kind"] for o in ours] == [o["kind"] for o in helms]
    for mine, theirs in zip(ours, helms):
        assert _without_bookkeeping(mine) == _without_bookkeeping(theirs)
    assert all(o["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm" for o in helms)


def test_examples_exist():
    assert len(EXAMPLES) >= 3  # cpu, gpu and tpu examples are what the parity test covers
