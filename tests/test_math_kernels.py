"""The same math kernels on every x86-64 machine (config/math_kernels.py)."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from config import math_kernels

ROOT = Path(__file__).resolve().parents[1]

x86_64 = pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"), reason="pinned on x86-64 only"
)


def kernels_of(before: str = "", **env) -> str:
    """What a fresh Django process computes with (``describe``), from an environment without the
    pins this test process inherited."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in (*math_kernels.PORTABLE_ENV, "CONCORDE_PORTABLE_MATH")
    }
    code = (
        f"{before}import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', "
        "'config.settings'); django.setup(); import numpy, scipy.linalg; "
        "from config.math_kernels import describe; print(describe())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


@x86_64
def test_every_django_process_computes_with_the_avx2_kernels_whatever_its_processor():
    # numpy's and scipy's OpenBLAS both, and numpy's own loops at their AVX2 level
    assert kernels_of() == "openblas Haswell, numpy X86_V3"


@x86_64
def test_turned_off_or_too_late_a_process_keeps_its_machines_own_kernels():
    own = kernels_of("import numpy; ")  # numpy loaded before config: nothing can be pinned
    assert kernels_of(CONCORDE_PORTABLE_MATH="off") == own
    # an explicit choice in the environment is kept
    assert kernels_of(OPENBLAS_CORETYPE="Sandybridge").startswith("openblas Sandybridge, ")


def test_pin_leaves_the_environment_alone_once_numpy_is_loaded():
    assert "numpy" in sys.modules
    environ = {}
    assert math_kernels.pin(environ) is False and environ == {}
