"""Architecture rules that keep the web processes light."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ["torch", "transformers", "peft", "trl", "datasets", "accelerate"]

# Every module of the apps, tasks included: task modules are imported by the
# web process too (Celery's autodiscovery), so they must keep torch out of
# module level and load the ML package inside task bodies.
PROBE = """
import importlib, json, pkgutil, sys
import django
django.setup()
import config.urls  # noqa: F401
for app in ("labeling", "training", "models_hub", "core"):
    pkg = importlib.import_module(app)
    for mod in pkgutil.walk_packages(pkg.__path__, app + "."):
        if ".migrations" not in mod.name:
            importlib.import_module(mod.name)
print(json.dumps(sorted(m for m in %r if m in sys.modules)))
"""


def test_web_process_never_imports_the_training_stack() -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"}
    result = subprocess.run(
        [sys.executable, "-c", PROBE % HEAVY],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_import_contracts_hold() -> None:
    """import-linter's contracts in pyproject.toml hold: the ML package imports
    no Django and no app, the apps form layers, services never import tasks."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 kept, 0 broken" in result.stdout
