# First, before anything loads numpy: the same math kernels on every machine (config/math_kernels.py).
from .math_kernels import pin as _pin_math_kernels

_pin_math_kernels()

from .celery import app as celery_app  # noqa: E402

__all__ = ("celery_app",)
