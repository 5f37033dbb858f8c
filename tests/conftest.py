"""Shared fixtures: where the real test data lives, and tiny ONNX model builders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
FOAMLIU = REAL_DATA / "mobilefacenet_foamliu.onnx"
FRIENDS = REAL_DATA / "friends"


def _need_real_data() -> None:
    if not FOAMLIU.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must have the real test data at {REAL_DATA}")
        pytest.skip(f"real test data not present at {REAL_DATA}")


@pytest.fixture(scope="session")
def foamliu() -> Path:
    _need_real_data()
    return FOAMLIU


@pytest.fixture(scope="session")
def friends() -> Path:
    _need_real_data()
    return FRIENDS


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Family models and tuning databases are cached per test session, never in the user's
    home. Downloads (the aarch64 TVM wheels, the emulated board's arm64 Python, the
    rknn-toolkit2 virtualenv) are kept in the repository's git-ignored .mfnc-cache/
    across sessions."""
    os.environ.setdefault("MFNC_CACHE_DIR", str(tmp_path_factory.mktemp("mfnc-cache")))
    downloads = Path(__file__).resolve().parents[1] / ".mfnc-cache"
    os.environ.setdefault("MFNC_TVM_RUNTIME_CACHE", str(downloads / "tvm-runtime"))
    os.environ.setdefault("MFNC_RKNN_VENV", str(downloads / "rknn-toolkit2-2.5.0"))
