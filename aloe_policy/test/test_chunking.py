"""ROS-free tests of chunk validation, alignment, blending and limits (aloe_policy.chunking)."""

import math

import numpy as np
import pytest

from aloe_policy.chunking import (NS_PER_S, ActionLimits, BlendMode, ChunkBlender, ChunkSpec, action_problems,
                                  actions_left, inference_due, limits_from_lists, make_chunk)

P = NS_PER_S // 10  # 0.1 s control period
SPEC = ChunkSpec(action_dim=2, horizon=4, action_names=("a", "b"))


def chunk(chunk_id, stamp_ns, values, policy_id="p1", spec=SPEC):
    values = np.asarray(values, dtype=np.float64)
    made, problems = make_chunk(spec, chunk_id=chunk_id, policy_id=policy_id, observation_stamp_ns=stamp_ns,
                                control_period_ns=P, horizon=values.shape[0], action_dim=values.shape[1],
                                action_names=("a", "b"), actions=values.ravel().tolist())
    assert not problems, problems
    return made


def ramp(start, n=4):
    """(n, 2) chunk whose action k is [start + k, -(start + k)]."""
    return [[start + k, -(start + k)] for k in range(n)]


def problems_of(**overrides):
    fields = dict(policy_id="p1", control_period_ns=P, horizon=4, action_dim=2, action_names=("a", "b"),
                  actions=[0.0] * 8)
    fields.update(overrides)
    from aloe_policy.chunking import chunk_problems
    return chunk_problems(SPEC, **fields)


def test_good_chunk_has_no_problems():
    assert problems_of() == []


@pytest.mark.parametrize("overrides, expected", [
    (dict(actions=[0.0] * 7 + [math.nan]), "1 NaN/inf"),
    (dict(actions=[math.inf, -math.inf] + [0.0] * 6), "2 NaN/inf"),
    (dict(actions=[0.0] * 6), "wrong size: 6 action values"),
    (dict(action_dim=3, actions=[0.0] * 12), "action_dim 3 != executor action_dim 2"),
    (dict(horizon=5, actions=[0.0] * 10), "horizon 5 != expected chunk_horizon 4"),
    (dict(horizon=0, actions=[]), "horizon 0"),
    (dict(policy_id=""), "empty policy_id"),
    (dict(control_period_ns=0), "control_period"),
    (dict(action_names=("b", "a")), "action_names"),
])
def test_malformed_chunk_is_rejected_with_named_reason(overrides, expected):
    problems = problems_of(**overrides)
    assert problems and any(expected in p for p in problems), problems


def test_blocked_and_unknown_policy_ids_are_rejected():
    from aloe_policy.chunking import chunk_problems
    spec = ChunkSpec(2, 4, (), frozenset({"good"}), frozenset({"bad"}))
    kw = dict(control_period_ns=P, horizon=4, action_dim=2, action_names=(), actions=[0.0] * 8)
    assert any("blocked" in p for p in chunk_problems(spec, policy_id="bad", **kw))
    assert any("unknown" in p for p in chunk_problems(spec, policy_id="other", **kw))
    assert chunk_problems(spec, policy_id="good", **kw) == []


def test_alignment_uses_observation_stamp_plus_k_periods():
    c = chunk(1, 10 * P, ramp(0))
    blender = ChunkBlender(BlendMode.NEWEST)
    blender.add(c)
    assert c.index_at(10 * P) == 0
    assert c.index_at(12 * P) == 2
    assert c.index_at(12 * P + P // 3) == 2  # nearest target time
    assert c.index_at(12 * P + 2 * P // 3) == 3
    assert blender.action_at(13 * P).action.tolist() == [3.0, -3.0]
    assert blender.action_at(14 * P) is None
    assert "exhausted" in blender.stale_reason(14 * P, 0)


def test_stale_and_future_chunks_are_reported():
    blender = ChunkBlender()
    assert blender.stale_reason(0, P) == "no chunk received"
    blender.add(chunk(1, 100 * P, ramp(0)))
    assert "old" in blender.stale_reason(100 * P + 6 * P, chunk_timeout_ns=5 * P)
    assert blender.stale_reason(100 * P + 2 * P, chunk_timeout_ns=5 * P) == ""
    assert "future" in blender.stale_reason(98 * P, chunk_timeout_ns=5 * P)


def test_out_of_order_and_duplicate_chunks_are_ignored():
    blender = ChunkBlender()
    assert blender.add(chunk(2, 10 * P, ramp(0)))
    assert not blender.add(chunk(1, 9 * P, ramp(5)))
    assert not blender.add(chunk(2, 10 * P, ramp(5)))
    assert blender.newest.chunk_id == 2


def test_newest_wins_switches_at_the_first_tick_of_the_new_chunk():
    blender = ChunkBlender(BlendMode.NEWEST)
    blender.add(chunk(1, 0, ramp(0)))
    assert blender.action_at(1 * P).action.tolist() == [1.0, -1.0]
    blender.add(chunk(2, 1 * P, ramp(10)))
    got = blender.action_at(2 * P)
    assert got.action.tolist() == [11.0, -11.0] and got.chunk_id == 2 and got.index_in_chunk == 1


def test_linear_crossfade_matches_hand_computed_blend():
    blender = ChunkBlender(BlendMode.LINEAR, blend_steps=2)
    blender.add(chunk(1, 0, ramp(0)))
    assert blender.action_at(0).action.tolist() == [0.0, 0.0]  # first chunk: nothing to fade from
    blender.add(chunk(2, 1 * P, ramp(10)))
    # tick 2: old k=2 -> 2, new k=1 -> 11, w=1/3; tick 3: old 3, new 12, w=2/3; tick 4: old exhausted -> 13
    out = [blender.action_at(t * P).action[0] for t in (2, 3, 4)]
    assert out == pytest.approx([2 + (11 - 2) / 3, 3 + 2 * (12 - 3) / 3, 13.0])


def test_temporal_ensemble_matches_hand_computed_weights():
    m = 0.5
    blender = ChunkBlender(BlendMode.TEMPORAL_ENSEMBLE, ensemble_decay=m)
    blender.add(chunk(1, 0, ramp(0)))
    blender.add(chunk(2, 1 * P, ramp(10)))
    w0, w1 = 1.0, math.exp(-m)  # oldest first
    got = blender.action_at(2 * P)
    assert got.action[0] == pytest.approx((w0 * 2 + w1 * 11) / (w0 + w1))
    assert got.chunk_id == 2 and got.index_in_chunk == 1


def test_rate_limit_then_bounds():
    limits = limits_from_lists(2, [-1, -1], [1, 1], [2.0, 0.0])  # dim 0: 2 units/s; dim 1 unlimited
    out = limits.apply(np.array([5.0, 5.0]), previous=np.array([0.0, 0.0]), dt_s=0.1)
    assert out.tolist() == pytest.approx([0.2, 1.0])
    assert limits.limited_dims == [0, 1]
    out = limits.apply(np.array([-5.0, 0.5]), previous=out, dt_s=0.1)
    assert out.tolist() == pytest.approx([0.0, 0.5])
    assert ActionLimits().apply(np.array([9.0]), None, 0.1).tolist() == [9.0]


def test_limit_lists_of_wrong_length_are_refused():
    with pytest.raises(ValueError, match="action_lower has 1 entries"):
        limits_from_lists(2, [0.0], [], [])
    with pytest.raises(ValueError, match="exceeds"):
        limits_from_lists(1, [1.0], [0.0], [])


def test_operator_action_validation():
    assert action_problems([0.0, 1.0], 2) == []
    assert any("wrong size" in p for p in action_problems([0.0], 2))
    assert any("NaN" in p for p in action_problems([0.0, math.nan], 2))


def test_unknown_blend_mode_is_refused():
    with pytest.raises(ValueError, match="unknown blending mode"):
        BlendMode.parse("cubic")


def test_inference_trigger_starts_early_by_the_inference_delay():
    # H = 10 actions from stamp 0, 0.1 s apart.
    assert actions_left(3 * P, 0, P, 10) == 7
    # execution_horizon 5, delay 0.25 s = 3 ticks: infer once fewer than 8 actions are left.
    assert not inference_due(8, 5, 0.25, P)
    assert inference_due(7, 5, 0.25, P)
    # Synchronous (execution_horizon 1, delay 0): only when the chunk is used up.
    assert not inference_due(actions_left(9 * P, 0, P, 10), 1, 0.0, P)
    assert inference_due(actions_left(10 * P, 0, P, 10), 1, 0.0, P)
