"""Generators of the shipped reference data (not needed to use or train models).

* :mod:`hybridpot.reference_data.nacl_clusters`: NaCl clusters and dimers labelled with
  GFN1-xTB through tblite (``pip install "hybridpot[reference]"``); ``compute_reference``
  labels any structure.
* :mod:`hybridpot.reference_data.molten_salt`: the Tosi–Fumi rigid-ion NaCl potential that
  samples melt geometries, and the molten-NaCl dataset generator.

The old module names ``hybridpot.reference`` and ``hybridpot.molten_salt`` (imports and
``python -m``) still work.
"""
