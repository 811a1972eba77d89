"""Atom-centred symmetry functions (Behler-Parrinello), n2p2 conventions.

Supported types (n2p2 numbering; lengths in Å, eta in 1/Å^2):

* 2, radial:  ``G_i = sum_{j in e1} exp(-eta (r_ij - r_s)^2) f_c(r_ij)``
* 3, angular narrow: ``G_i = 2^(1-zeta) sum_{j<k, {e1,e2}} (1 + lambda cos theta_ijk)^zeta
  exp(-eta [(r_ij-r_s)^2 + (r_ik-r_s)^2 + (r_jk-r_s)^2]) f_c(r_ij) f_c(r_ik) f_c(r_jk)``
* 9, angular wide: as type 3 without the ``r_jk`` terms and without ``f_c(r_jk)``.

  For 3 and 9, as in n2p2, a triplet with ``1 + lambda cos theta <= 0`` contributes 0 and
  any real zeta is accepted (n2p2's AlAuMgO_4G potential uses zeta = -1 and -2).

n2p2's polynomial ("compact") functions (Bircher, Singraber, Dellago, arXiv:2010.14414),
built on a compact function ``c(a) = core(|a - center| / half_width)`` that is non-zero
only on ``(left, right)``; ``core`` is one of ``p1``-``p4`` (the step polynomials of
:mod:`hybridpot.polynomials`, also cutoff types 5-8), ``p1a``-``p4a`` (the same of
``(2 - x) x``, radial parts only) or ``e`` (``e * exp(1 / (x^2 - 1))``):

* 20, radial: ``G_i = sum_{j in e1, r_l < r_ij < r_c} c_r(r_ij)`` with ``c_r`` on ``(r_l, r_c)``
* 21, angular narrow: ``G_i = sum_{j<k, {e1,e2}} c_r(r_ij) c_r(r_ik) c_r(r_jk) c_a(theta_ijk)``
  with all three distances in ``(r_l, r_c)`` (``r_jk > max(r_l, 0)``) and ``c_a`` on
  ``(angle_left, angle_right)`` (degrees in the file, radians inside), same core, never asymmetric;
  exactly collinear triplets (``|cos theta| = 1``) contribute 0, as in n2p2.
* 22, angular wide: as type 21 without the ``c_r(r_jk)`` factor.
* 23, 24, 25: element-weighted versions of 20, 21, 22: all neighbours (no element
  selection), each term weighted by ``Z_j`` (radial) or ``Z_j Z_k`` (angular).

Each function is written as an n2p2 ``symfunction_short`` line::

    symfunction_short <center> 2 <e1> <eta> <r_shift> <r_cut>
    symfunction_short <center> 3 <e1> <e2> <eta> <lambda> <zeta> <r_cut> [<r_shift>]
    symfunction_short <center> 9 <e1> <e2> <eta> <lambda> <zeta> <r_cut> [<r_shift>]
    symfunction_short <center> 20 <e1> <r_left> <r_cut> <subtype>
    symfunction_short <center> 21 <e1> <e2> <r_left> <r_cut> <angle_left> <angle_right> <subtype>
    symfunction_short <center> 22 <e1> <e2> <r_left> <r_cut> <angle_left> <angle_right> <subtype>
    symfunction_short <center> 23 <r_left> <r_cut> <subtype>
    symfunction_short <center> 24 <r_left> <r_cut> <angle_left> <angle_right> <subtype>
    symfunction_short <center> 25 <r_left> <r_cut> <angle_left> <angle_right> <subtype>

Modules:

* :mod:`~hybridpot.descriptors.families`: one class per function family (parser, writer,
  n2p2 sort key, validation, kernel parameter row) and the :class:`SymmetryFunction` record;
* :mod:`~hybridpot.descriptors.symmetry_functions`: the :class:`SymmetryFunctions` module
  (set, scaling, dispatch) and the torch reference implementation;
* :mod:`~hybridpot.descriptors.kernels` / :mod:`~hybridpot.descriptors.cuda_kernels`:
  compiled numba kernels, G and dG/dr_ij in one pass, triplets looped inside, memory
  linear in the pairs;
* :mod:`~hybridpot.descriptors.engine`: kernel plan, ``torch.autograd.Function`` and the
  reasons for numba.

The engine is chosen by :attr:`SymmetryFunctions.engine` (``"auto"``: compiled kernels;
``"reference"``: the vectorised torch implementation, kept as what tests compare against
and used under ``torch.jit.trace``). Features are padded to the longest element's length;
``feature_mask`` says which entries are real.
"""

from .families import FAMILIES, SymmetryFunction, element_number, family_of
from .symmetry_functions import ENGINES, SymmetryFunctions, compact_core, triplet_indices

__all__ = ["SymmetryFunction", "SymmetryFunctions", "triplet_indices", "element_number", "compact_core", "FAMILIES",
           "family_of", "ENGINES"]
