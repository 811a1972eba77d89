"""The global extended Kalman filter of RuNNer/n2p2 as a weight updater.

All trainable parameters form one state vector ``w`` (``n`` weights). One update takes a
set of ``m`` observations (energy or force-component errors, grouped as n2p2 groups them),
their errors ``xi = reference - prediction`` ``[m]`` and the Jacobian of the predictions
with respect to the weights ``H = d prediction / d w`` ``[n, m]``:

* standard filter (n2p2 ``kalman_type 0``)::

      eta  <- min(eta * exp(eta_tau), eta_max)          (before the update, as n2p2)
      X     = P H                                       [n, m]
      A     = H^T X + (1 / eta) I                       [m, m]   (measurement noise R = 1/eta)
      K     = X A^-1                                    [n, m]   Kalman gain (through a Cholesky factor of A)
      P    <- P - K X^T + q I                           (process noise q)
      w    <- w + K xi
      q    <- max(q * exp(-q_tau), q_min)

* fading-memory filter (``kalman_type 1``): ``A = H^T X + lambda I``,
  ``P <- (P - K X^T) / lambda + q I``, ``lambda <- nu lambda + 1 - nu``.

``P`` starts as ``I / epsilon``. n2p2 divides ``qtau`` and ``etatau`` (given per epoch in
input.nn) by the number of updates per epoch; :class:`KalmanFilter` takes them per epoch too
and needs ``updates_per_epoch``. n2p2's defaults of its examples: epsilon 1e-2, q0 1e-2,
qtau 2.302 (one decade per epoch), qmin 1e-6, eta 1e-3 (etatau 2.302, etamax 1).

Cost: ``P`` is dense, ``n^2`` float64 numbers (n = 1000 weights: 8 MB; 10^4: 800 MB) and an
update costs ``O(n^2 m)``: the filter is for the small networks of Behler-Parrinello
potentials, as in n2p2. The state (P, q, eta, lambda, counters) is in :meth:`state_dict`
so that a resumed run continues bit for bit.

On the CPU, ``P`` is kept as the upper triangle of a Fortran-ordered float64 array and updated with
LAPACK's symmetric level-2/3 BLAS (``dsymv``/``dsymm`` for ``P H``, ``dsyr``/``dsyrk`` for the rank-m
downdate), which read and write half of what the dense products do. Measured for n = 1472, m = 1 on the
2-core machine, one BLAS thread: 0.84 ms per update against 1.9-2.5 ms for torch's dense ``P @ H`` and
``addmm_``. SciPy's OpenBLAS must run on one thread for this (with its default two it took 15 ms:
its threads spin against the training's), which :meth:`one_blas_thread` arranges around a loop of updates.
"""

from __future__ import annotations

import contextlib
import math
from typing import Dict, Iterable, List, Optional

import numpy as np
import torch
from scipy.linalg import blas, solve_triangular

__all__ = ["KalmanFilter"]


class KalmanFilter:
    """Global extended Kalman filter over a list of parameters (n2p2 ``KalmanFilter``).

    Parameters
    ----------
    params : iterable of torch.Tensor
        The trainable parameters (updated in place); their concatenation is the state ``w``.
    updates_per_epoch : int
        Updates the caller performs per epoch (n2p2 divides ``q_tau`` and ``eta_tau`` by it).
    state_scale : torch.Tensor, optional
        ``s`` ``[n]``: the filter runs on ``w' = w / s`` (Jacobian ``s H``, update ``s K xi``), so that
        ``P = I / epsilon`` and ``q I`` are isotropic in ``w'``. A network whose output is multiplied
        by ``c`` after its last layer is the network with its output layer's weights and bias
        multiplied by ``c``: ``s = 1 / c`` on them gives the filter of that folded network (n2p2's
        networks output energies in its training units). Default: ones.
    kind : {"standard", "fading_memory"}
        n2p2 ``kalman_type`` 0 or 1.
    epsilon : float
        ``P`` starts as ``I / epsilon`` (n2p2 ``kalman_epsilon``).
    q0, q_tau, q_min : float
        Process noise: ``q`` starts at ``q0`` and decays by ``exp(-q_tau)`` per epoch down to
        ``q_min`` (n2p2 ``kalman_q0``, ``kalman_qtau``, ``kalman_qmin``).
    eta, eta_tau, eta_max : float
        Standard filter: learning rate (measurement noise ``1 / eta``), growing by
        ``exp(eta_tau)`` per epoch up to ``eta_max`` (n2p2 ``kalman_eta``, ``kalman_etatau``,
        ``kalman_etamax``; without ``eta_tau`` and ``eta_max`` eta stays constant).
    lam, nu : float
        Fading-memory filter: forgetting factor and its relaxation (n2p2
        ``kalman_lambda_short``, ``kalman_nue_short``).
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        updates_per_epoch: int = 1,
        kind: str = "standard",
        epsilon: float = 1e-2,
        q0: float = 1e-2,
        q_tau: float = 2.302,
        q_min: float = 1e-6,
        eta: float = 1e-3,
        eta_tau: Optional[float] = None,
        eta_max: Optional[float] = None,
        lam: float = 0.99,
        nu: float = 0.99,
        state_scale: Optional[torch.Tensor] = None,
    ):
        self.params: List[torch.Tensor] = [p for p in params]
        if not self.params:
            raise ValueError("KalmanFilter got no parameters to update")
        if kind not in ("standard", "fading_memory"):
            raise ValueError(f"kind must be 'standard' or 'fading_memory' (n2p2 kalman_type 0 or 1), got {kind!r}")
        if updates_per_epoch < 1:
            raise ValueError(f"updates_per_epoch must be >= 1, got {updates_per_epoch}")
        for name, value in (("epsilon", epsilon), ("eta", eta), ("lam", lam)):
            if not value > 0:
                raise ValueError(f"Kalman filter parameter {name} must be positive, got {value}")
        if (eta_tau is None) != (eta_max is None):
            raise ValueError("give both eta_tau and eta_max (n2p2 kalman_etatau, kalman_etamax) or neither")
        self.kind = kind
        self.n = sum(p.numel() for p in self.params)
        device = self.params[0].device
        # CPU: the upper triangle of a Fortran-ordered array for the symmetric BLAS (module docstring)
        self._upper: Optional[np.ndarray] = None
        if device.type == "cpu":
            self._upper = np.asfortranarray(np.eye(self.n) / epsilon)
        else:
            self._dense = torch.eye(self.n, dtype=torch.float64, device=device) / epsilon
        self.q, self.q_min = float(q0), float(q_min)
        self.q_decay = math.exp(-float(q_tau) / updates_per_epoch)
        self.eta = float(eta)
        if eta_tau is None:
            self.eta_growth, self.eta_max = 1.0, float(eta)  # n2p2: etamax = eta0, eta never grows
        else:
            self.eta_growth, self.eta_max = math.exp(float(eta_tau) / updates_per_epoch), float(eta_max)
        self.lam, self.nu = float(lam), float(nu)
        self.n_updates = 0
        self.state_scale: Optional[torch.Tensor] = None
        if state_scale is not None:
            scale = torch.as_tensor(state_scale, dtype=torch.float64).reshape(-1)
            if scale.shape[0] != self.n or not bool((scale > 0).all()):
                raise ValueError(f"state_scale must hold {self.n} positive numbers, one per weight")
            self.state_scale = None if bool((scale == 1).all()) else scale.to(device)

    # ----------------------------------------------------------------------------- P
    @property
    def P(self) -> torch.Tensor:
        """The covariance ``P`` ``[n, n]`` (a full symmetric float64 copy on the CPU)."""
        if self._upper is None:
            return self._dense
        upper = np.triu(self._upper)
        return torch.from_numpy(upper + np.triu(upper, 1).T)

    @P.setter
    def P(self, value: torch.Tensor) -> None:
        if self._upper is None:
            self._dense = value.to(dtype=torch.float64, device=self._dense.device).clone()
        else:
            self._upper = np.array(value.detach().to(device="cpu", dtype=torch.float64).numpy(), order="F")

    @staticmethod
    def one_blas_thread():
        """Context in which SciPy's BLAS runs on one thread (see the module docstring); a no-op without
        threadpoolctl."""
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - threadpoolctl is a dependency
            return contextlib.nullcontext()
        return threadpool_limits(limits=1, user_api="blas")

    # ----------------------------------------------------------------------------- state vector
    def flat_parameters(self) -> torch.Tensor:
        """The state vector ``w`` ``[n]`` (float64 copy)."""
        return torch.cat([p.detach().reshape(-1).to(torch.float64) for p in self.params])

    def flat_gradients(self, grads: Iterable[Optional[torch.Tensor]]) -> torch.Tensor:
        """Concatenate per-parameter gradients (None = zero) into one column ``[n]`` (float64)."""
        parts = []
        for p, g in zip(self.params, grads):
            parts.append(torch.zeros(p.numel(), dtype=torch.float64, device=p.device) if g is None
                         else g.detach().reshape(-1).to(torch.float64))
        return torch.cat(parts)

    def _add_to_parameters(self, delta: torch.Tensor) -> None:
        parts = torch.split(delta.to(device=self.params[0].device), [p.numel() for p in self.params])
        with torch.no_grad():
            torch._foreach_add_(self.params, [d.reshape(p.shape).to(p.dtype) for d, p in zip(parts, self.params)])

    # ----------------------------------------------------------------------------- the update
    def step(self, errors: torch.Tensor, jacobian: torch.Tensor) -> None:
        """One filter update.

        Parameters
        ----------
        errors : torch.Tensor
            ``xi = reference - prediction`` of the ``m`` observations, ``[m]`` (any units: the
            caller chooses them and their weights, as n2p2 does).
        jacobian : torch.Tensor
            ``d prediction / d w``, ``[n, m]`` (or ``[n]`` for one observation), in the order of
            :meth:`flat_parameters`.
        """
        device = "cpu" if self._upper is not None else self._dense.device
        xi = torch.as_tensor(errors, dtype=torch.float64, device=device).reshape(-1)
        H = torch.as_tensor(jacobian, dtype=torch.float64, device=device)
        if H.dim() == 1:
            H = H.unsqueeze(1)
        if H.shape != (self.n, xi.shape[0]):
            raise ValueError(f"Jacobian must be [n_weights={self.n}, n_observations={xi.shape[0]}], "
                             f"got {list(H.shape)}")
        if not (bool(torch.isfinite(xi).all()) and bool(torch.isfinite(H).all())):
            raise FloatingPointError("Kalman filter update with non-finite errors or Jacobian (diverged training: "
                                     "lower kalman eta or q0, or check the reference data)")
        scale = self.state_scale
        if scale is not None:
            H = H * scale.to(H.device).unsqueeze(1)
        if self._upper is not None:
            delta = torch.from_numpy(self._step_upper(xi.cpu().numpy(), H.cpu().numpy()))
        else:
            delta = self._step_dense(xi, H)
        self._add_to_parameters(delta if scale is None else delta * scale.to(delta.device))
        if self.q > self.q_min:
            self.q *= self.q_decay
        if self.kind == "fading_memory":
            self.lam = self.nu * self.lam + 1.0 - self.nu
        self.n_updates += 1

    def _step_dense(self, xi: torch.Tensor, H: torch.Tensor) -> torch.Tensor:
        """The update with torch's dense products (GPU); returns ``K xi`` ``[n]``."""
        P = self._dense
        X = P @ H
        A = H.T @ X
        A.diagonal().add_(self._noise())
        # With A = L L^T (Cholesky) and B = X L^-T: K X^T = X A^-1 X^T = B B^T and K xi = B L^-1 xi.
        # The rank-m product B B^T is symmetric to the last bit, so P stays symmetric without the
        # transposed copy that symmetrising costs; addmm_ updates P in place (no n x n temporary).
        # Measured for n = 1472 weights, m = 1: 36 ms -> 4 ms per update.
        L = torch.linalg.cholesky(A)
        B = torch.linalg.solve_triangular(L, X.T, upper=False).T  # [n, m]
        P.addmm_(B, B.T, alpha=-1.0)
        if self.kind == "fading_memory":
            P.div_(self.lam)
        P.diagonal().add_(self.q)
        return B @ torch.linalg.solve_triangular(L, xi.unsqueeze(1), upper=False).squeeze(1)

    def _noise(self) -> float:
        """The measurement-noise term on the diagonal of ``A`` (advances eta first, as n2p2)."""
        if self.kind == "standard":
            if self.eta < self.eta_max:
                self.eta *= self.eta_growth
            return 1.0 / self.eta
        return self.lam

    def _step_upper(self, xi: np.ndarray, H: np.ndarray) -> np.ndarray:
        """The update on the upper triangle of ``P`` with the symmetric BLAS; returns ``K xi`` ``[n]``."""
        P, m = self._upper, H.shape[1]
        if m == 1:
            # one observation: A = L L^T is a number (SciPy's small-matrix wrappers cost 0.15 ms each)
            x = blas.dsymv(1.0, P, H[:, 0], lower=0)
            root = math.sqrt(float(H[:, 0] @ x) + self._noise())
            b = x / root
            P = blas.dsyr(-1.0, b, lower=0, a=P, overwrite_a=1)  # in place (P is Fortran-ordered float64)
            delta = b * (float(xi[0]) / root)
        else:
            X = blas.dsymm(1.0, P, H, side=0, lower=0)
            A = H.T @ X
            A[np.diag_indices(m)] += self._noise()
            # A = L L^T, B = X L^-T: K X^T = B B^T (a symmetric downdate) and K xi = B L^-1 xi
            L = np.linalg.cholesky(A)
            B = solve_triangular(L, X.T, lower=True).T  # [n, m]
            P = blas.dsyrk(-1.0, B, beta=1.0, c=P, trans=0, lower=0, overwrite_c=1)
            delta = B @ solve_triangular(L, xi, lower=True)
        self._upper = P
        if self.kind == "fading_memory":
            P /= self.lam
        P.ravel(order="F")[:: self.n + 1] += self.q  # the diagonal (a view: P is Fortran-ordered)
        return delta

    # ----------------------------------------------------------------------------- resume
    def state_dict(self) -> Dict[str, object]:
        """Everything needed to continue bit for bit (tensors and plain numbers only).

        On the CPU ``P_upper`` holds the storage, of which only the upper triangle is meaningful: one
        copy (mirroring the full ``P`` cost 46 ms per checkpoint at n = 1472, 7 s over a 160-epoch run)."""
        common = {"q": self.q, "eta": self.eta, "lam": self.lam, "n_updates": self.n_updates, "kind": self.kind}
        if self._upper is not None:
            return {"P_upper": torch.from_numpy(self._upper.copy(order="F")), **common}
        return {"P": self._dense.clone(), **common}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        P = state["P_upper"] if "P_upper" in state else state["P"]
        if not isinstance(P, torch.Tensor) or P.shape != (self.n, self.n):
            raise ValueError(f"Kalman filter state has P of shape {getattr(P, 'shape', None)}, expected "
                             f"[{self.n}, {self.n}] (a different network?)")
        if state.get("kind", self.kind) != self.kind:
            raise ValueError(f"Kalman filter state is of kind {state['kind']!r}, this filter is {self.kind!r}")
        if "P_upper" in state:  # the upper triangle of P, as stored by a CPU filter
            upper = torch.triu(P.detach().to(device="cpu", dtype=torch.float64))
            P = upper + torch.triu(upper, 1).T
        self.P = P  # the setter copies (and keeps the CPU storage Fortran-ordered)
        self.q, self.eta, self.lam = float(state["q"]), float(state["eta"]), float(state["lam"])
        self.n_updates = int(state["n_updates"])
