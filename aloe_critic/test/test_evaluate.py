"""aloe-evaluate: Q / V / advantage per recorded chunk -> CSV + PNG; the critic round-trips through safetensors."""

import csv

import numpy as np
import pytest
import torch

from aloe_critic.critic import load_critic_state, save_critic
from aloe_critic.evaluate import load_critic, main


def test_evaluate_writes_values_per_chunk_and_plots(aloe_checkpoint, tmp_path):
    root, ck = aloe_checkpoint
    out = tmp_path / "eval"
    assert main([str(root / "bags"), "--critic", str(ck), "--out", str(out), "--num-policy-samples", "2"]) == 0
    rows = list(csv.DictReader(open(out / "values.csv")))
    assert len(rows) == 30                                       # 3 bags x 10 ticks
    for r in rows:
        assert float(r["advantage"]) == pytest.approx(float(r["q"]) - float(r["v"]), abs=1e-5)
        assert np.isfinite(float(r["q_std"])) and r["method"] == "aloe"
        # the export for a trainer outside the suite: clip(exp(A / beta), 0, w_max), beta 0.1, w_max 20
        assert float(r["weight"]) == pytest.approx(min(np.exp(float(r["advantage"]) / 0.1), 20.0), rel=1e-4)
    human = [r for r in rows if r["bag"].endswith("ep1") and r["source"] == "HUMAN"]
    assert [int(r["tick"]) for r in human] == [4, 5, 6, 7]
    assert sorted(p.name for p in out.glob("*.png")) == ["values_ep0.png", "values_ep1.png", "values_ep2.png"]
    # --trust-operator: the operator's chunks at weight 1, the policy's as before
    trusted = tmp_path / "trusted"
    assert main([str(root / "bags"), "--critic", str(ck), "--out", str(trusted), "--num-policy-samples", "2",
                 "--no-plots", "--trust-operator"]) == 0
    for r, t in zip(rows, csv.DictReader(open(trusted / "values.csv"))):
        expected = 1.0 if float(r["human_fraction"]) >= 0.5 else float(r["weight"])
        assert float(t["weight"]) == pytest.approx(expected, rel=1e-4), (r, t)
    assert any(float(r["human_fraction"]) >= 0.5 for r in rows) and any(float(r["human_fraction"]) < 0.5 for r in rows)
    # --operator-share: the column gives the operator's chunks that share of proportional draws, each
    # source in proportion to its (trusted) weights, mean 1 over the chunks
    shared = tmp_path / "shared"
    assert main([str(root / "bags"), "--critic", str(ck), "--out", str(shared), "--num-policy-samples", "2",
                 "--no-plots", "--trust-operator", "--operator-share", "0.7"]) == 0
    s_rows = list(csv.DictReader(open(shared / "values.csv")))
    w = np.array([float(r["weight"]) for r in s_rows])
    t_w = np.array([float(r["weight"]) for r in csv.DictReader(open(trusted / "values.csv"))])
    op = np.array([float(r["human_fraction"]) >= 0.5 for r in s_rows])
    assert w.mean() == pytest.approx(1.0, rel=1e-5)
    assert w[op].sum() / w.sum() == pytest.approx(0.7, rel=1e-5)
    np.testing.assert_allclose(w[~op] / w[~op].sum(), t_w[~op] / t_w[~op].sum(), rtol=1e-5)
    np.testing.assert_allclose(w[op], w[op][0], rtol=1e-6)       # trusted: equal within the operator's
    with pytest.raises(SystemExit):                               # refused before any scoring
        main([str(root / "bags"), "--critic", str(ck), "--out", str(tmp_path / "bad"), "--operator-share", "1.5"])
    assert not (tmp_path / "bad").exists()


def test_critic_safetensors_round_trip_gives_identical_values(aloe_checkpoint, tmp_path):
    root, ck = aloe_checkpoint
    critic, policy, meta = load_critic(ck)
    assert meta["evaluated_policy_id"] == policy.policy_id
    save_critic(critic, tmp_path / "copy", extra=meta)
    other, _, _ = load_critic(ck)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    load_critic_state(other, tmp_path / "copy")
    obs = {"images": {"front": torch.zeros(2, 8, 8, 3, dtype=torch.uint8)}, "proprio": torch.zeros(2, 18),
           "task": ["pick the cube"] * 2}
    chunks = torch.zeros(2, critic.chunk_horizon, critic.action_dim)
    with torch.no_grad():
        torch.testing.assert_close(critic.q_values(obs, chunks), other.q_values(obs, chunks))


def test_evaluate_without_critic_says_what_to_do(initial_checkpoint, tmp_path, capsys):
    root = initial_checkpoint
    assert main([str(root / "bags"), "--critic", str(root / "iter0"), "--out", str(tmp_path / "e")]) == 1
    assert "no critic" in capsys.readouterr().err
