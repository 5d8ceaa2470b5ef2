"""``python -m ml.runners``: JSON-lines events, exit codes, cancellation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ml.runners.__main__ import freeze_imports, main, warm_caches

ROOT = Path(__file__).resolve().parents[3]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "ml.runners", *args]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def test_cli_trains_end_to_end_with_json_lines_on_stdout(
    llama_dir: str, make_data: Callable[..., Path], tmp_path: Path
) -> None:
    """A subprocess run prints only JSON events, ends with the result and exits 0."""
    config = write_config(
        tmp_path / "cfg.json", {"base_model": llama_dir, "max_steps": 2}
    )
    proc = subprocess.run(
        cli(
            "sft",
            "--config",
            str(config),
            "--data",
            str(make_data("sft", 16, 8)),
            "--out",
            str(tmp_path / "out"),
        ),
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "status" and kinds[-1] == "result"
    assert {"progress", "metrics"} <= set(kinds)
    result = events[-1]
    assert (
        result["method"] == "sft" and result["steps"] == 2 and not result["cancelled"]
    )
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()


def test_cli_sigterm_cancels_within_a_step_and_exits_3(
    llama_dir: str, make_data: Callable[..., Path], tmp_path: Path
) -> None:
    """SIGTERM asks the run to stop; it returns cancelled, saves nothing, exits 3."""
    config = write_config(
        tmp_path / "cfg.json", {"base_model": llama_dir, "max_steps": 5000}
    )
    proc = subprocess.Popen(
        cli(
            "sft",
            "--config",
            str(config),
            "--data",
            str(make_data("sft", 64, 0)),
            "--out",
            str(tmp_path / "out"),
        ),
        cwd=ROOT,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    lines = []
    try:
        for line in proc.stdout:
            lines.append(json.loads(line))
            if lines[-1]["event"] == "progress":
                proc.send_signal(signal.SIGTERM)
                break
        lines += [json.loads(line) for line in proc.stdout]
        assert proc.wait(timeout=60) == 3
    finally:
        if proc.poll() is None:
            proc.kill()
    result = lines[-1]
    assert result["event"] == "result" and result["cancelled"]
    assert result["steps"] < 5000
    assert not (tmp_path / "out").exists()


def test_cli_bad_config_exits_2_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An invalid config never starts training; the message names the field."""
    config = write_config(tmp_path / "cfg.json", {"base_model": "x", "beta": -1})
    code = main(
        [
            "dpo",
            "--config",
            str(config),
            "--data",
            str(tmp_path),
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 2
    event = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert event == {"event": "error", "kind": "config", "message": "beta must be > 0"}

    (tmp_path / "broken.json").write_text("{not json")
    code = main(
        ["dpo", "--config", str(tmp_path / "broken.json"), "--data", ".", "--out", "."]
    )
    assert code == 2


def test_cli_failure_exits_1(
    llama_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run that fails (here: no train.jsonl) logs the traceback and exits 1."""
    config = write_config(tmp_path / "cfg.json", {"base_model": llama_dir})
    code = main(
        [
            "sft",
            "--config",
            str(config),
            "--data",
            str(tmp_path),
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 1
    event = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (
        event["kind"] == "failure" and "train.jsonl does not exist" in event["message"]
    )


def test_a_warm_spare_runs_the_job_it_is_given_like_a_cold_start(
    llama_dir: str, make_data: Callable[..., Path], tmp_path: Path
) -> None:
    """``--warm`` imports first and then waits: the job line it reads runs
    exactly as the same arguments would on the command line (events on
    stdout, exit code), and its logs go to the file the line names."""
    spare = subprocess.Popen(
        cli("--warm", "--parent-pid", str(os.getpid())),
        cwd=ROOT,
        env=env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    config = write_config(
        tmp_path / "cfg.json", {"base_model": llama_dir, "max_steps": 2}
    )
    log = tmp_path / "runner.log"
    argv = [
        "sft",
        "--config",
        str(config),
        "--data",
        str(make_data("sft", 16, 8)),
        "--out",
        str(tmp_path / "out"),
    ]
    out, _ = spare.communicate(
        json.dumps({"argv": argv, "stderr": str(log)}) + "\n", timeout=180
    )
    assert spare.returncode == 0, log.read_text()[-2000:]
    events = [json.loads(line) for line in out.splitlines()]
    assert events[0]["event"] == "status" and events[-1]["event"] == "result"
    assert events[-1]["steps"] == 2
    assert (tmp_path / "out" / "adapter_config.json").exists()
    assert "Starting sft run" in log.read_text()


def test_a_warm_spare_let_go_before_a_job_exits_without_running_one() -> None:
    spare = subprocess.run(
        cli("--warm"),
        cwd=ROOT,
        env=env(),
        input="",
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert spare.returncode == 0, spare.stderr[-2000:]
    assert spare.stdout == ""


def test_warm_caches_builds_the_conversion_mapping_a_first_load_would_build(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the spare warms is the cache transformers' first
    ``from_pretrained`` fills. If transformers renames it, this fails and
    the warm-up is to be revisited, not silently kept."""
    from transformers import conversion_mapping

    monkeypatch.setattr(
        conversion_mapping, "_checkpoint_conversion_mapping_cache", None
    )
    warm_caches()
    assert conversion_mapping._checkpoint_conversion_mapping_cache


def test_freeze_imports_takes_what_is_alive_out_of_the_collectors_reach() -> None:
    """A runner process freezes what its imports left, so the collections
    its run triggers no longer walk torch's and trl's ~450,000 objects.
    (In-process here: unfrozen again for the tests that follow.)"""
    import gc

    try:
        freeze_imports()
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
