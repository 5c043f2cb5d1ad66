"""Where things are in the repository, for tests and bench scripts wherever they sit."""

from __future__ import annotations

from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parents[2]
DEPLOY: Final = REPO / "deploy"
BENCH: Final = REPO / "bench"
