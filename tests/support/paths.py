"""Where things are: the tests' data, the repository, pip's own cache."""

from __future__ import annotations

import os
from pathlib import Path

DATA = Path(__file__).parent.parent / "data"
ROOT = Path(__file__).parent.parent.parent
REAL_PIP_CACHE = Path(os.environ.get("PIP_CACHE_DIR") or Path.home() / ".cache" / "pip")
"""pip's cache, as it was before the tests made HOME a scratch dir."""
REAL_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
"""The user's cache, as it was before the tests made HOME a scratch dir: the Airflow
virtualenv and the Mermaid parser are kept under its ``runbook/``."""
