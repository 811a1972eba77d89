"""Moved to :mod:`hybridpot.reference_data.molten_salt`; this name stays importable (and runnable with ``python -m``)."""

import sys

from .reference_data import molten_salt as _implementation

if __name__ == "__main__":  # pragma: no cover - python -m hybridpot.molten_salt
    sys.exit(_implementation.main())
sys.modules[__name__] = _implementation
