"""Golden tests: tailwise against the stored inputs and outputs of the official implementations.

Parametrizes over every ``*.npz`` in the goldens folder (``../shared/goldens`` relative to the
repository root, or ``$TAILWISE_GOLDENS``), dispatches on the file name's prefix (everything before
the final ``_<suffix>``) to a checker in :mod:`golden_checkers`, and fails for a prefix with no
checker. The whole module skips only when the folder is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from golden_checkers import all_checkers

REPO_ROOT = Path(__file__).resolve().parents[1]
GOLDENS = Path(os.environ.get("TAILWISE_GOLDENS", REPO_ROOT.parent / "shared" / "goldens"))
FILES = sorted(GOLDENS.glob("*.npz")) if GOLDENS.is_dir() else []
CHECKERS = all_checkers()


def golden_prefix(path: Path) -> str:
    """``ldam`` for ``ldam_3.npz``; ``lt_class_counts`` for ``lt_class_counts_1.npz``."""
    stem = path.stem
    return stem.rsplit("_", 1)[0] if "_" in stem else stem


def test_goldens_folder_present() -> None:
    if not GOLDENS.is_dir():
        pytest.skip(f"goldens folder not found at {GOLDENS}")
    assert FILES, f"no *.npz files in {GOLDENS}"


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_golden(path: Path) -> None:
    prefix = golden_prefix(path)
    checker = CHECKERS.get(prefix)
    if checker is None:
        pytest.fail(f"no golden checker for prefix {prefix!r} (file {path.name}); known: {sorted(CHECKERS)}")
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    checker(data)


def test_prefix_rule() -> None:
    assert golden_prefix(Path("ldam_3.npz")) == "ldam"
    assert golden_prefix(Path("ldam_h1.npz")) == "ldam"
    assert golden_prefix(Path("lt_class_counts_1.npz")) == "lt_class_counts"
    assert golden_prefix(Path("ldamrepo_focal_2.npz")) == "ldamrepo_focal"
