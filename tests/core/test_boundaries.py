"""Architecture rules that keep the web processes light."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ["torch", "transformers", "peft", "trl", "datasets", "accelerate"]

PROBE = """
import importlib, json, pkgutil, sys
import django
django.setup()
import config.urls  # noqa: F401
for app in ("labeling", "training", "models_hub", "core"):
    pkg = importlib.import_module(app)
    for mod in pkgutil.walk_packages(pkg.__path__, app + "."):
        name = mod.name
        if ".runners" in name or name.endswith(".generation") or ".migrations" in name:
            continue
        if name.rsplit(".", 1)[-1] in ("views", "api", "urls", "admin", "selectors", "forms", "services") or ".api." in name or ".services." in name:
            importlib.import_module(name)
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


def test_import_contract_keeps_django_out_of_the_training_runners() -> None:
    """import-linter's `forbidden` contract in pyproject.toml holds."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout
