"""Two test tiers: core tests (no ComfyUI) always run; tests marked ``host`` need a real ComfyUI.

Host tests skip with one line naming COMFYUI_PATH when no ComfyUI checkout is found.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # `cogniedit` and `training` importable without installing

from cogniedit.host import find_comfyui  # noqa: E402

HOST = find_comfyui()


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
