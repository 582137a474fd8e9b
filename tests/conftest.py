"""Shared test fixtures: where ../shared is, a private weights cache, deterministic torch."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _shared() -> Path:
    env = os.environ.get("FSVIDEO_SHARED")
    return Path(env) if env else REPO.parent / "shared"


SHARED = _shared()
MEDIA = SHARED / "media"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared test material not found at {SHARED} (set FSVIDEO_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def media_dir(shared_dir) -> Path:
    return shared_dir / "media"


@pytest.fixture(autouse=True)
def _private_weights_home(tmp_path_factory, monkeypatch):
    """Every test gets an empty weights cache unless it sets FSVIDEO_HOME itself, and is offline: the CLI's
    first-run downloads never reach the real network (tests/test_first_run.py serves them on 127.0.0.1)."""
    if "FSVIDEO_HOME_KEEP" not in os.environ:
        monkeypatch.setenv("FSVIDEO_HOME", str(tmp_path_factory.mktemp("fsvideo_home")))
    monkeypatch.setenv("FSVIDEO_OFFLINE", "1")
