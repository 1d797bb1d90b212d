"""Tests of the OPE benchmark's analysis helpers (run: ``pytest bench/test_ope_accuracy.py``)."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ope_accuracy import advantage_error  # noqa: E402


def _rows(q, v):
    return [{"q_true": float(a), "v_true": float(b)} for a, b in zip(q, v)]


def test_equal_q_and_v_errors_at_a_state_cancel_in_the_advantage():
    rng = np.random.default_rng(0)
    q, v = rng.uniform(0, 1, 20), rng.uniform(0, 1, 20)
    shift = rng.normal(0, 0.2, 20)  # one error per state, shared by Q and V
    est = {"q": q + shift, "v": v + shift, "advantage": (q + shift) - (v + shift)}
    e = advantage_error(est, _rows(q, v))
    assert e["adv_rmse"] == pytest.approx(0.0, abs=1e-12)
    assert e["q_v_error_corr"] == pytest.approx(1.0)
    assert e["q_error_rms"] == pytest.approx(e["v_error_rms"]) and e["q_error_rms"] > 0.1


def test_the_decomposition_adds_up_and_a_constant_advantage_scores_one_true_std():
    q = np.array([0.9, 0.2, 0.6, 0.4])
    v = np.array([0.5, 0.5, 0.5, 0.5])
    a_true = q - v
    est = {"q": np.array([0.8, 0.3, 0.6, 0.5]), "v": np.array([0.6, 0.4, 0.5, 0.45])}
    est["advantage"] = est["q"] - est["v"]
    e = advantage_error(est, _rows(q, v))
    eq, ev = est["q"] - q, est["v"] - v
    assert e["adv_rmse"] ** 2 == pytest.approx(e["q_error_rms"] ** 2 + e["v_error_rms"] ** 2 - 2 * np.mean(eq * ev))
    flat = {**est, "advantage": np.full(4, a_true.mean())}  # the right mean, no information per state
    assert advantage_error(flat, _rows(q, v))["over_true_std"] == pytest.approx(1.0)
