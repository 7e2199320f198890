"""The same floats on every x86-64 machine: one set of math kernels for numpy and OpenBLAS.

OpenBLAS (numpy's and scipy's) and numpy each pick their kernels by the processor they load on:
AVX-512 ones on a recent Xeon or AMD EPYC, AVX2 ones elsewhere. The results differ in their
last bits, the engine's randomized SVDs and near-ties in its kNN graph amplify that, and the
same stored vectors then give other ideas on another machine (18,690 Make.org proposals: 68, 69
or 70 ideas with the kernel mixes three kinds of processor pick, forced on one machine;
docs/bench_engine_quality.md). ``pin`` asks both
libraries for their AVX2 kernels, which every x86-64 server since 2013 (Intel Haswell, AMD Zen)
has, so that a run gives the same ideas on whichever worker computes it. It must run before
numpy is imported: ``config/__init__.py`` calls it first thing in every process (Celery
workers, web, manage.py). Each run records what its final step used (``describe``).

Set ``CONCORDE_PORTABLE_MATH=0`` to keep each machine's fastest kernels (a one-machine
deployment; the same results then hold on that machine only). An explicit
``OPENBLAS_CORETYPE`` or ``NPY_DISABLE_CPU_FEATURES`` in the environment is kept as set.
"""

from __future__ import annotations

import os
import platform
import sys

FALSE = ("0", "false", "no", "off")

PORTABLE_ENV = {
    # OpenBLAS's AVX2 + FMA kernels (numpy's and scipy's builds read it when they load)
    "OPENBLAS_CORETYPE": "Haswell",
    # numpy's dispatch targets above AVX2 (X86_V4 is AVX-512; the others are for older numpy)
    "NPY_DISABLE_CPU_FEATURES": (
        "X86_V4 AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX512_SPR"
    ),
}


def pin(environ=os.environ) -> bool:
    """Set the portable kernels in ``environ`` for the libraries about to load; True if set.

    Nothing is set off x86-64, with ``CONCORDE_PORTABLE_MATH=0``, or once numpy is loaded (its
    kernels are chosen by then: ``describe`` shows which)."""
    if environ.get("CONCORDE_PORTABLE_MATH", "1").strip().lower() in FALSE:
        return False
    if platform.machine().lower() not in ("x86_64", "amd64") or "numpy" in sys.modules:
        return False
    for name, value in PORTABLE_ENV.items():
        environ.setdefault(name, value)
    return True


def describe() -> str:
    """The kernels this process computes with, e.g. "openblas Haswell, numpy X86_V3"."""
    from threadpoolctl import threadpool_info

    try:  # numpy 2
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:  # numpy 1.26
        from numpy.core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    blas = sorted(
        {
            f"{info.get('internal_api')} {info.get('architecture')}"
            for info in threadpool_info()
            if info.get("user_api") == "blas"
        }
    )
    # numpy's dispatch targets come in increasing order; the last one enabled is what it uses
    enabled = [target for target in __cpu_dispatch__ if __cpu_features__.get(target)]
    numpy_target = enabled[-1] if enabled else "baseline"
    return ", ".join([*blas, f"numpy {numpy_target}"])
