"""Moved to :mod:`hybridpot.reference_data.nacl_clusters`; this name stays importable (and runnable with ``python -m``)."""

import sys

from .reference_data import nacl_clusters as _implementation

if __name__ == "__main__":  # pragma: no cover - python -m hybridpot.reference
    sys.exit(_implementation.main())
sys.modules[__name__] = _implementation
