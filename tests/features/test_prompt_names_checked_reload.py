"""A missing prompt at check-config, at reload and at start (issue 5 follow-up).

`minipbx check-config` refuses a menu greeting no library has, naming node, key and name;
with `--data-dir` an upload there counts. A reload of such a file is refused and the
running config stays; once the prompt is uploaded the same file is taken. At start the
appliance logs the missing name and runs (refusing would stop every call).
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from firmware.media.prompts import PromptKey, store
from tests.conftest import Pbx, start_pbx
from tests.features.feature_tools import office_with_routing

REPO_ROOT = Path(__file__).resolve().parents[2]

ROUTING = """
[[routing.nodes]]
name = "main"
kind = "menu"
greeting = "{greeting}"
keys = {{ "1" = "202" }}
"""
GOOD = office_with_routing(ROUTING.format(greeting="enter_extension"))
MISSING = office_with_routing(ROUTING.format(greeting="welcome_to_acme"))


def check_config(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "firmware", "check-config", str(path), *extra],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def upload_welcome(data_dir: Path) -> None:
    store(data_dir / "prompts", PromptKey("welcome_to_acme"), np.full(800, 1000, dtype=np.int16))


def test_check_config_refuses_a_greeting_no_library_has(tmp_path: Path) -> None:
    path = tmp_path / "office.toml"
    path.write_text(MISSING)
    result = check_config(path)
    assert result.returncode == 1
    assert "1 error(s)" in result.stdout
    assert "routing.nodes[0] (main).greeting: no prompt 'welcome_to_acme'" in result.stdout
    assert "no data folder given" in result.stdout


def test_check_config_with_the_data_folder_counts_its_uploads(tmp_path: Path) -> None:
    path = tmp_path / "office.toml"
    path.write_text(MISSING)
    data = tmp_path / "data"
    result = check_config(path, "--data-dir", str(data))
    assert result.returncode == 1
    assert f"uploaded to {data / 'prompts'}" in result.stdout
    upload_welcome(data)
    result = check_config(path, "--data-dir", str(data))
    assert result.returncode == 0, result.stdout
    assert "shipped library only" not in result.stdout


def test_check_config_without_a_data_folder_says_uploads_were_not_looked_at(
    tmp_path: Path,
) -> None:
    path = tmp_path / "office.toml"
    path.write_text(GOOD)
    result = check_config(path)
    assert result.returncode == 0, result.stdout
    assert "prompt names checked against the shipped library only" in result.stdout


@pytest.fixture
async def pbx(data_dir: Path) -> AsyncIterator[Pbx]:
    path = data_dir / "minipbx.toml"
    path.write_text(GOOD)
    handle = await start_pbx(GOOD, data_dir, config_path=str(path), with_api=False)
    try:
        yield handle
    finally:
        await handle.app.stop()


async def test_reload_with_a_missing_prompt_is_refused_and_the_running_config_stays(
    pbx: Pbx, data_dir: Path
) -> None:
    running = pbx.app.config
    (data_dir / "minipbx.toml").write_text(MISSING)
    result = await pbx.app.reload()
    assert result["ok"] is False and "running config stays" in result["error"]
    (problem,) = result["errors"]
    assert problem.startswith("routing.nodes[0] (main).greeting: no prompt 'welcome_to_acme'")
    assert f"uploaded to {data_dir / 'prompts'}" in problem
    assert pbx.app.config is running
    upload_welcome(data_dir)  # `minipbx prompt add`, then reload again: taken
    result = await pbx.app.reload()
    assert result["ok"] is True, result
    assert pbx.app.config.routing.nodes[0].greeting == "welcome_to_acme"
    assert "prompt:welcome_to_acme" in pbx.app.mixer.sounds


async def test_start_with_a_missing_prompt_logs_it_and_runs(
    data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="firmware.app"):
        handle = await start_pbx(MISSING, data_dir, with_api=False)
    try:
        missing = [r.getMessage() for r in caplog.records if "event=prompt_missing" in r.getMessage()]
        assert len(missing) == 1 and "'welcome_to_acme'" in missing[0]
        assert handle.app.calls is not None
    finally:
        await handle.app.stop()
