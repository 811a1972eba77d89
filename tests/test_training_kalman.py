"""The n2p2/RuNNer global extended Kalman filter (hybridpot.training.kalman)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hybridpot.training.kalman import KalmanFilter


def tiny_network(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()


def predictions_and_jacobian(net, x):
    """Network outputs [m] and their Jacobian with respect to all weights [n, m]."""
    params = list(net.parameters())
    y = net(x).reshape(-1)
    columns = []
    for k in range(y.shape[0]):
        grads = torch.autograd.grad(y[k], params, retain_graph=True)
        columns.append(torch.cat([g.reshape(-1) for g in grads]))
    return y.detach(), torch.stack(columns, dim=1)


@pytest.mark.parametrize("storage", ["upper", "dense"])
@pytest.mark.parametrize("m", [1, 2])
def test_matches_a_dense_textbook_extended_kalman_filter(m, storage):
    """Five updates of a tiny tanh network, m observations each, against the textbook EKF
    K = P H (H^T P H + R)^-1, w += K xi, P = (I - K H^T) P + Q, written with numpy; with P as the
    upper triangle for the symmetric BLAS (CPU) and as a dense torch tensor (the GPU's path)."""
    net = tiny_network()
    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(m, 3, generator=g, dtype=torch.float64) for _ in range(5)]
    targets = [torch.randn(m, generator=g, dtype=torch.float64) for _ in range(5)]
    epsilon, q0, q_tau, eta0, eta_tau, updates_per_epoch = 0.01, 0.01, 2.302, 1e-3, 2.302, 5
    kf = KalmanFilter(net.parameters(), updates_per_epoch=updates_per_epoch, epsilon=epsilon, q0=q0, q_tau=q_tau,
                      q_min=1e-30, eta=eta0, eta_tau=eta_tau, eta_max=1e6)
    if storage == "dense":
        kf._dense, kf._upper = kf.P.clone(), None

    ref_net = tiny_network()
    n = sum(p.numel() for p in ref_net.parameters())
    P = np.eye(n) / epsilon
    for k, (x, t) in enumerate(zip(xs, targets)):
        y, H = predictions_and_jacobian(net, x)
        kf.step(t - y, H)
        # textbook, with the schedules of n2p2 written out in closed form
        q_k = q0 * math.exp(-k * q_tau / updates_per_epoch)
        eta_k = eta0 * math.exp((k + 1) * eta_tau / updates_per_epoch)
        y_ref, H_ref = (a.numpy() for a in predictions_and_jacobian(ref_net, x))
        R = np.eye(m) / eta_k
        K = P @ H_ref @ np.linalg.inv(H_ref.T @ P @ H_ref + R)
        P = (np.eye(n) - K @ H_ref.T) @ P + q_k * np.eye(n)
        w = np.concatenate([p.detach().numpy().ravel() for p in ref_net.parameters()]) + K @ (t.numpy() - y_ref)
        with torch.no_grad():
            offset = 0
            for p in ref_net.parameters():
                p.copy_(torch.from_numpy(w[offset:offset + p.numel()].reshape(p.shape)))
                offset += p.numel()
        np.testing.assert_allclose(kf.flat_parameters().numpy(), w, rtol=0, atol=1e-12)
        np.testing.assert_allclose(kf.P.numpy(), 0.5 * (P + P.T), rtol=1e-12, atol=1e-12 * np.abs(P).max())


def test_without_process_noise_the_filter_is_recursive_ridge_regression():
    """For a linear model, q = 0 and a constant eta, the filter's state after all updates is
    the ridge solution (epsilon I + eta sum h h^T)^-1 (epsilon w0 + eta sum h y)."""
    g = torch.Generator().manual_seed(2)
    w = torch.zeros(4, dtype=torch.float64)
    w0 = w.clone()
    kf = KalmanFilter([w], epsilon=0.5, q0=0.0, q_min=0.0, eta=3.0)
    hs = torch.randn(12, 4, generator=g, dtype=torch.float64)
    ys = hs @ torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64) + 0.1 * torch.randn(12, generator=g,
                                                                                          dtype=torch.float64)
    for batch in (slice(0, 1), slice(1, 4), slice(4, 5), slice(5, 12)):  # single and grouped observations
        h, y = hs[batch], ys[batch]
        kf.step(y - h @ w, h.T)
    lhs = 0.5 * torch.eye(4, dtype=torch.float64) + 3.0 * hs.T @ hs
    expected = torch.linalg.solve(lhs, 0.5 * w0 + 3.0 * hs.T @ ys)
    torch.testing.assert_close(w, expected, rtol=0, atol=1e-10)


def test_fading_memory_filter_updates_lambda_and_scales_p():
    w = torch.zeros(2, dtype=torch.float64)
    kf = KalmanFilter([w], kind="fading_memory", epsilon=1.0, q0=0.0, q_min=0.0, lam=0.9, nu=0.5)
    h = torch.tensor([1.0, 0.0], dtype=torch.float64)
    kf.step(torch.tensor([1.0]), h)
    # one observation of w[0]: P00 = 1, A = 1 + 0.9, K = (1/1.9, 0), P00' = (1 - 1/1.9) / 0.9
    assert float(w[0]) == pytest.approx(1.0 / 1.9, rel=1e-15)
    assert float(kf.P[0, 0]) == pytest.approx((1.0 - 1.0 / 1.9) / 0.9, rel=1e-14)
    assert float(kf.P[1, 1]) == pytest.approx(1.0 / 0.9, rel=1e-14)
    assert kf.lam == pytest.approx(0.5 * 0.9 + 0.5, rel=1e-15)


def test_state_dict_resumes_bit_for_bit():
    def run(interrupt: bool):
        net = tiny_network(3)
        kf = KalmanFilter(net.parameters(), updates_per_epoch=3, eta=0.01, eta_tau=1.0, eta_max=0.1)
        g = torch.Generator().manual_seed(4)
        for k in range(6):
            x = torch.randn(3, 3, generator=g, dtype=torch.float64)
            t = torch.randn(3, generator=g, dtype=torch.float64)
            y, H = predictions_and_jacobian(net, x)
            kf.step(t - y, H)
            if interrupt and k == 2:
                state = {"kf": kf.state_dict(), "net": {k: v.clone() for k, v in net.state_dict().items()}}
                net = tiny_network(99)
                net.load_state_dict(state["net"])
                kf = KalmanFilter(net.parameters(), updates_per_epoch=3, eta=0.01, eta_tau=1.0, eta_max=0.1)
                kf.load_state_dict(state["kf"])
        return kf.flat_parameters(), kf.P

    w_a, p_a = run(False)
    w_b, p_b = run(True)
    assert torch.equal(w_a, w_b) and torch.equal(p_a, p_b)


class _ScaledOutput(torch.nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


@pytest.mark.parametrize("storage", ["upper", "dense"])
def test_state_scale_equals_the_filter_of_the_reparametrised_network(storage):
    """A network whose output is multiplied by c, filtered with state scale 1/c on its output layer, takes
    the steps of the network with c folded into its output layer (filtered without a scale): same
    predictions and weights after each update. The unscaled filter on the first network does not."""
    c = 27.2
    g = torch.Generator().manual_seed(2)
    xs = [torch.randn(2, 3, generator=g, dtype=torch.float64) for _ in range(6)]
    targets = [c * torch.randn(2, generator=g, dtype=torch.float64) for _ in range(6)]

    def filtered(net, scale):
        kf = KalmanFilter(net.parameters(), updates_per_epoch=6, epsilon=0.01, q0=0.01, q_min=1e-6, eta=0.01,
                          eta_tau=2.302, eta_max=1.0, state_scale=scale)
        if storage == "dense":
            kf._dense, kf._upper = kf.P.clone(), None
        out = []
        for x, t in zip(xs, targets):
            y, H = predictions_and_jacobian(net, x)
            kf.step(t - y, H)
            out.append(net(x).detach().reshape(-1))
        return out

    def folded_network():
        net = tiny_network()
        with torch.no_grad():
            net[2].weight.mul_(c)
            net[2].bias.mul_(c)
        return net

    scaled, folded = torch.nn.Sequential(*tiny_network(), _ScaledOutput(c)).double(), folded_network()
    n_hidden = sum(p.numel() for p in scaled[0].parameters())
    scale = torch.ones(sum(p.numel() for p in scaled.parameters()), dtype=torch.float64)
    scale[n_hidden:] = 1.0 / c  # w' = w / s = c w: the folded network's output layer
    steps_folded = filtered(folded, None)
    for a, b in zip(filtered(scaled, scale), steps_folded):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-10)
    assert torch.allclose(scaled[2].weight * c, folded[2].weight, rtol=1e-10, atol=0)
    unscaled = filtered(torch.nn.Sequential(*tiny_network(), _ScaledOutput(c)).double(), None)
    assert not torch.allclose(unscaled[-1], steps_folded[-1], rtol=1e-3)
    with pytest.raises(ValueError, match="state_scale"):
        KalmanFilter(tiny_network().parameters(), state_scale=-scale)


def test_bad_input_is_refused_with_a_clear_error():
    w = torch.zeros(3, dtype=torch.float64)
    kf = KalmanFilter([w])
    with pytest.raises(ValueError, match="Jacobian must be"):
        kf.step(torch.zeros(2), torch.zeros(2, 2))
    with pytest.raises(FloatingPointError, match="non-finite"):
        kf.step(torch.tensor([float("nan")]), torch.zeros(3))
    with pytest.raises(ValueError, match="kalman_type"):
        KalmanFilter([w], kind="extended")
    with pytest.raises(ValueError, match="eta_tau and eta_max"):
        KalmanFilter([w], eta_tau=1.0)
    with pytest.raises(ValueError, match="different network"):
        KalmanFilter([torch.zeros(2)]).load_state_dict(kf.state_dict())


# ----------------------------------------------------------------------------- training with the filter
from test_training import CUTOFF, _na_cl_4g_setup, lj_clusters, small_model  # noqa: E402  (shared fixtures)

from hybridpot.training import AtomsDataset, Trainer, TrainingConfig, TrainingInterrupted, evaluate_model  # noqa: E402


def kalman_config(**overrides):
    kalman = dict(eta=0.05, eta_tau=2.302, eta_max=1.0, force_fraction=0.2, force_weight=1.0)
    kalman.update(overrides.pop("kalman", {}))
    return TrainingConfig(optimizer="kalman", kalman=kalman, dtype="float64", early_stopping_patience=0, **overrides)


def test_kalman_training_fits_a_tiny_dataset_better_than_its_start():
    """8 Lennard-Jones clusters: ten epochs of filter updates bring energies and forces
    well below the untrained model's errors."""
    ds = AtomsDataset.from_atoms(lj_clusters(8), CUTOFF)
    start = evaluate_model(small_model(), ds).compute()
    trainer = Trainer(small_model(), ds, None, kalman_config(epochs=10), progress=False)
    final = evaluate_model(trainer.fit(), ds).compute()
    assert final["energy_rmse"] < 0.1 * start["energy_rmse"]
    assert final["forces_rmse"] < 0.5 * start["forces_rmse"]
    assert trainer.history[-1]["lr"] > trainer.history[0]["lr"]  # eta grows as in n2p2 (etatau, etamax)


@pytest.mark.parametrize("selection", ["random", "threshold"])
def test_kalman_4g_two_stages_and_bit_exact_resume(tmp_path, selection):
    make_model, train, val = _na_cl_4g_setup()
    kalman = {} if selection == "random" else dict(selection="threshold", energy_threshold=0.8, force_threshold=1.0,
                                                     charge_threshold=0.5, threshold_trials=3)
    cfg = kalman_config(charge_epochs=3, epochs=2, kalman=kalman)
    reference = Trainer(make_model(0), train, val, cfg, directory=tmp_path / "full", progress=False)
    final_ref = reference.fit()
    h1 = [h for h in reference.history if h["stage"] == "charges"]
    assert h1[-1]["train_charges_rmse"] < h1[0]["train_charges_rmse"]

    def kill(trainer, stage, epoch, record):
        if (stage, epoch) == ("energy", 1):
            raise TrainingInterrupted("simulated kill")

    with pytest.raises(TrainingInterrupted):
        Trainer(make_model(0), train, val, cfg, directory=tmp_path / "cut", progress=False, callback=kill).fit()
    final = Trainer(make_model(0), train, val, cfg, directory=tmp_path / "cut", progress=False).fit(resume=True)
    a, b = final_ref.state_dict(), final.state_dict()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), k


def test_unknown_optimizer_is_named():
    ds = AtomsDataset.from_atoms(lj_clusters(2), CUTOFF)
    with pytest.raises(ValueError, match="'adam' or 'kalman'"):
        Trainer(small_model(), ds, None, TrainingConfig(optimizer="sgd", epochs=1), progress=False).fit()


def test_kalman_config_is_validated_before_training(tmp_path):
    from hybridpot.training.config import ConfigError, load_config

    path = tmp_path / "config.yaml"
    path.write_text("data: {train: x.xyz}\ntraining: {optimizer: kalman, kalman: {eta: 1e-3, etaa: 1}}\n")
    with pytest.raises(ConfigError, match="training.kalman.etaa"):
        load_config(path)
    path.write_text("data: {train: x.xyz}\ntraining: {optimizer: kalman, kalman: {kind: extended}}\n")
    with pytest.raises(ConfigError, match="fading_memory"):
        load_config(path)
    path.write_text("data: {train: x.xyz}\ntraining: {optimizer: kalman, kalman: {eta: 1e-3, force_weight: 2}}\n")
    assert load_config(path).training.kalman["eta"] == 1e-3


def test_cached_descriptors_give_the_same_energies_forces_and_training_gradients():
    """AtomsDataset.cache_descriptors: the engine runs once per structure; energies, forces and
    force-training parameter gradients equal those of a fresh computation (bit for bit)."""
    from hybridpot.training.dataset import collate

    ds = AtomsDataset.from_atoms(lj_clusters(3), CUTOFF)
    m = small_model()
    params = [p for p in m.parameters() if p.requires_grad]

    def run():
        out = []
        for k in range(len(ds)):
            b = collate([ds.samples[k]])
            pred = m(b.system, neighbors=b.neighbors, create_graph=True)
            grads = torch.autograd.grad(pred["forces"][1, 2] + pred["energy"][0], params, allow_unused=True)
            out.append((pred["energy"].detach(), pred["forces"].detach(), [g for g in grads if g is not None]))
        return out

    fresh = run()
    ds.cache_descriptors()
    first, second = run(), run()
    assert all(len(s.neighbors.descriptor_store) == 1 for s in ds.samples)
    for a, b, c in zip(fresh, first, second):
        assert torch.equal(a[0], c[0]) and torch.equal(a[1], c[1]) and torch.equal(b[1], c[1])
        assert all(torch.equal(x, y) for x, y in zip(a[2], c[2]))
    ds.cache_descriptors(False)
    assert all(s.neighbors.descriptor_store is None for s in ds.samples)


def _threshold_epochs(**settings):
    from hybridpot.training.kalman_fit import KalmanEpochs, KalmanSettings

    ds = AtomsDataset.from_atoms(lj_clusters(6), CUTOFF)
    model = small_model()
    params = [p for p in model.parameters()]
    return KalmanEpochs(model, params, ds, "energy", KalmanSettings(**settings), torch.zeros(119, dtype=torch.float64),
                        torch.float64, torch.Generator().manual_seed(0)), model, ds


def test_threshold_selection_takes_the_first_candidate_above_threshold_else_the_fallback(monkeypatch):
    epochs, _, _ = _threshold_epochs(selection="threshold", energy_threshold=0.8, force_threshold=1.0,
                                     threshold_trials=3, threshold_fallback="largest")
    plan = epochs._plan()
    selects = [u for u in plan if u[0] == "select"]
    assert len(selects) == len(plan) and all(len(u[1]) == 3 for u in selects)  # both thresholds positive
    errors = {}
    forces = [u[1] for u in selects if u[1][0][0] == "forces"]
    assert forces and all(len({c[1] for c in u}) == 1 for u in forces)  # force candidates: one structure
    monkeypatch.setattr(epochs, "_candidate_error", lambda update, memo=None: errors[id(update)])
    a, b, c = ("energy", 0), ("energy", 1), ("energy", 2)
    rmse = {"energy": 1.0}
    errors.update({id(a): 0.5, id(b): 0.9, id(c): 2.0})
    assert epochs._select([a, b, c], rmse) is b  # the first above 0.8 x RMSE
    errors.update({id(a): 0.5, id(b): 0.7, id(c): 0.1})
    assert epochs._select([a, b, c], rmse) is b  # none above: the largest
    epochs.settings.threshold_fallback = "last"
    assert epochs._select([a, b, c], rmse) is c  # none above: the last tried (n2p2)
    errors.update({id(a): 0.5, id(b): 0.9, id(c): 2.0})
    assert epochs._select([a, b, c], rmse) is b  # the fallback does not change a found candidate
    random_plan = _threshold_epochs(force_threshold=1.0, threshold_trials=3)[0]._plan()
    assert not any(u[0] == "select" for u in random_plan)  # selection "random" ignores the thresholds


def test_training_rmse_and_candidate_errors_against_the_model():
    """The selection's RMSEs and errors equal those computed from plain model calls (per-atom energies,
    force components)."""
    epochs, model, ds = _threshold_epochs(selection="threshold", force_threshold=1.0, threshold_trials=2)
    e_sq, f_sq, n_f = [], [], 0
    for sample in ds.samples:
        from hybridpot.training.dataset import collate

        b = collate([sample])
        pred = model(b.system, neighbors=b.neighbors)
        e_sq.append(float((pred["energy"][0] - b.energy[0]) / b.n_atoms[0]) ** 2)
        f_sq.append(float(((pred["forces"] - b.forces) ** 2).sum()))
        n_f += pred["forces"].numel()
    expected = {"energy": math.sqrt(sum(e_sq) / len(e_sq)), "forces": math.sqrt(sum(f_sq) / n_f)}
    for frozen in (True, False):
        if not frozen:
            epochs.frozen_term = None
        got = epochs.training_rmse()
        assert got.keys() == expected.keys()
        for k in expected:
            assert got[k] == pytest.approx(expected[k], rel=1e-10)
        assert epochs._candidate_error(("energy", 0)) == pytest.approx(math.sqrt(e_sq[0]), rel=1e-10)


def test_cpu_state_loads_into_a_dense_filter_and_back():
    """A checkpoint of the CPU filter (upper-triangle storage) continues on a dense (GPU-path) filter with the
    same full P, and a dense filter's state loads into a CPU one."""
    net = tiny_network(5)
    cpu = KalmanFilter(net.parameters(), eta=0.01)
    y, H = predictions_and_jacobian(net, torch.randn(2, 3, dtype=torch.float64))
    cpu.step(-y, H)
    state = cpu.state_dict()
    assert "P_upper" in state
    dense = KalmanFilter(net.parameters(), eta=0.01)
    dense._dense, dense._upper = dense.P.clone(), None
    dense.load_state_dict(state)
    assert torch.equal(dense.P, cpu.P)
    again = KalmanFilter(net.parameters(), eta=0.01)
    again.load_state_dict(dense.state_dict())
    assert torch.equal(again.P, cpu.P)


def test_output_layer_scale_marks_each_short_range_output_layer():
    """energy_unit / c on the last linear layer of every element's network (c: factors after it), 1 elsewhere."""
    from hybridpot.io.n2p2 import _Scale
    from hybridpot.training.kalman_fit import output_layer_scale

    model = small_model(elements=(1, 8), hidden=(10, 6))
    nets = model.short_range.nets
    nets.nets["8"].append(_Scale(4.0))  # an imported network's unit conversion after its output layer
    params = list(nets.parameters())
    scale = output_layer_scale(model, params, 2.0)
    expected = []
    for p in params:
        last = {z: nets.linear_layers(z)[-1] for z in (1, 8)}
        value = 1.0
        for z, layer in last.items():
            if any(p is q for q in layer.parameters()):
                value = 2.0 if z == 1 else 0.5
        expected.append(torch.full((p.numel(),), value, dtype=torch.float64))
    assert torch.equal(scale, torch.cat(expected))
    assert int((scale != 1).sum()) == 2 * (6 + 1)  # weights and bias of two 6 -> 1 output layers
