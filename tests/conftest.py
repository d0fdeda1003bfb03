"""Two test tiers: core tests (no ComfyUI) always run; tests marked ``host`` need a real ComfyUI.

Host tests skip with one line naming COMFYUI_PATH when no ComfyUI checkout is found, except under CI
(``CI=true``): there every tier must really run, so a run that skipped anything ends as a failure.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # `cogniedit` and `training` importable without installing

from cogniedit.host import find_comfyui  # noqa: E402

HOST = find_comfyui()
UNDER_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_report_header(config):
    if HOST.root:
        return f"ComfyUI host: {HOST.root} ({HOST.reason})"
    return f"ComfyUI host: none; host tier skipped ({HOST.reason})"


def pytest_collection_modifyitems(config, items):
    if HOST.root:
        return
    skip = pytest.mark.skip(reason=f"host tier: {HOST.reason}")
    for item in items:
        if "host" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def comfyui_root() -> Path:
    if not HOST.root:
        pytest.skip(f"host tier: {HOST.reason}")
    return HOST.root


def pytest_sessionfinish(session, exitstatus):
    """Under CI a skip hides an untested tier (no host, no browser): count skips as a failure."""
    if not UNDER_CI or exitstatus != 0:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if skipped:
        reporter.write_line(f"CI: {skipped} test(s) skipped; under CI nothing may skip (see the reasons above)",
                            red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
