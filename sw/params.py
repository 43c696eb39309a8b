"""Hardware parameters and stream layouts, re-exported for existing imports.

The truth lives in :mod:`zeroskip.spec` (``zeroskip/spec.py``), the neutral module that both
the software and the RTL import: :class:`HwParams` and every word that crosses the
software/hardware boundary are defined there once. Import from there in new code.
"""

from __future__ import annotations

from ..spec import *  # noqa: F403
from ..spec import __all__ as __all__
