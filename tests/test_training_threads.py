"""Thread defaults that cannot oversubscribe (hybridpot.training.threads)."""

import os

import pytest
import torch

from hybridpot.training.threads import apply_threads, available_cpus, choose_threads


def test_requested_threads_win_and_are_applied():
    before = torch.get_num_threads()
    try:
        threads, reason = apply_threads(1)
        assert threads == 1 and torch.get_num_threads() == 1 and "configuration" in reason
    finally:
        torch.set_num_threads(before)


def test_default_leaves_the_loaded_cores_alone(monkeypatch):
    cpus = available_cpus()
    monkeypatch.setattr(os, "getloadavg", lambda: (cpus + 3.0, 0.0, 0.0))
    assert choose_threads()[0] == 1  # fully loaded machine: one thread
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert choose_threads()[0] == cpus  # idle machine: every core


def test_bad_thread_count_is_refused():
    with pytest.raises(ValueError, match="threads must be >= 1"):
        choose_threads(0)
