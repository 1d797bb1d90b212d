"""Behaviour of the ROS-free VLA model (aloe_policy.model): config, processing, flow matching,
checkpoints. A deterministic stand-in replaces MiniLM here (encode_fn) so these tests stay fast;
test_model_text_encoder.py loads the real MiniLM."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import torch

from aloe_policy.model import (CheckpointError, ConfigError, FlowMatchingPolicy, ObservationEncoder,
                               ObservationError, PolicyConfig, validate_checkpoint)
from aloe_policy.backends import PolicyBackend, TrainableBackend
from aloe_policy.testing import tiny_policy

TINY = dict(image_size=16, proprio_dim=6, chunk_horizon=4, cnn_channels=(8, 16), cnn_pool_size=2,
            hidden_dim=64, head_hidden_dim=128, head_layers=2, time_embed_dim=16, text_embed_dim=32,
            dropout=0.0)


def make_policy(seed=0, **overrides) -> FlowMatchingPolicy:
    return tiny_policy({**TINY, **overrides}, seed)


def make_obs(batch=2, size=16, seed=0, tasks=None, proprio_dim=6):
    rng = np.random.default_rng(seed)
    return {"images": {"front": rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)},
            "proprio": rng.standard_normal((batch, proprio_dim)).astype(np.float32),
            "task": tasks or ["pick up the cube"] * batch}


@pytest.fixture(autouse=True)
def one_thread():
    """2 shared cores: keep torch to one thread in these tests."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- config -------------------------------------------------------------------------------------
def test_config_round_trips_through_json_with_sim_defaults():
    config = PolicyConfig()
    assert config.action_names == ("dx", "dy", "dz", "rx", "ry", "rz", "grip")
    assert (config.chunk_horizon, config.action_dim, config.proprio_dim, config.image_size) == (10, 7, 18, 64)
    again = PolicyConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config


@pytest.mark.parametrize("data, words", [
    ({"action_dim": 3}, "action_names has 7 entries but action_dim is 3"),
    ({"chunk_horizon": 0}, "chunk_horizon must be a positive integer"),
    ({"action_low": [1.0] * 7}, "action_low must be < action_high"),
    ({"dropout": 1.5}, "dropout must be < 1"),
    ({"chunk_horizn": 5}, "unknown PolicyConfig keys ['chunk_horizn']"),
    ({"camera_names": []}, "camera_names must be a non-empty list"),
])
def test_invalid_config_is_rejected_with_the_field_named(data, words):
    with pytest.raises(ConfigError) as err:
        PolicyConfig.from_dict(data)
    assert words in str(err.value)


# --- processing ---------------------------------------------------------------------------------
def test_processing_resizes_images_to_float_chw_and_normalises_proprio():
    policy = make_policy()
    policy.fit_normalization(np.full((3, 6), 2.0, np.float32) + np.arange(3)[:, None], np.zeros((3, 4, 7)))
    obs = make_obs(batch=3, size=40)
    obs["proprio"] = np.full((3, 6), 3.0, np.float32)
    batch = policy.prepare(obs)
    img = batch["images"]["front"]
    assert img.shape == (3, 3, 16, 16) and img.dtype == torch.float32
    assert 0.0 <= img.min() and img.max() <= 1.0
    # mean 3, std sqrt(2/3): proprio 3 -> 0
    assert torch.allclose(batch["proprio"], torch.zeros(3, 6), atol=1e-6)
    assert batch["text"].shape == (3, 32)


@pytest.mark.parametrize("mutate, words", [
    (lambda o: o["images"].update(front=o["images"]["front"][..., :2]), "must be (B, h, w, 3)"),
    (lambda o: o["images"].update(front=o["images"]["front"].astype(np.float32)), "must be uint8"),
    (lambda o: o["images"].pop("front"), "lacks cameras ['front']"),
    (lambda o: o["proprio"].__setitem__((1, 2), np.nan), "obs['proprio'] contains NaN"),
    (lambda o: o.update(proprio=o["proprio"][:, :5]), "must be (B, 6)"),
    (lambda o: o.update(task=["only one"]), "has 1 entries but proprio has batch size 2"),
], ids=["image_not_rgb", "image_not_uint8", "camera_missing", "proprio_nan", "proprio_wrong_dim", "task_count"])
def test_processing_rejects_bad_observations_with_a_clear_error(mutate, words):
    policy = make_policy()
    obs = make_obs()
    mutate(obs)
    with pytest.raises(ObservationError) as err:
        policy.sample(obs)
    assert words in str(err.value)
    assert isinstance(err.value, ValueError)


# --- sampling -----------------------------------------------------------------------------------
def test_sample_shape_bounds_and_seed_reproducibility():
    policy = make_policy(action_low=(-0.1,) * 7, action_high=(0.2,) * 7)
    policy.fit_normalization(np.zeros((2, 6)), np.random.default_rng(0).standard_normal((2, 4, 7)) * 5)
    obs = make_obs(batch=3)
    a = policy.sample(obs, n=5, generator=torch.Generator().manual_seed(7))
    b = policy.sample(obs, n=5, generator=torch.Generator().manual_seed(7))
    assert a.shape == (3, 5, 4, 7) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert a.min() >= -0.1 and a.max() <= 0.2
    assert not torch.equal(a[:, 0], a[:, 1])  # n draws are different noise


def test_sample_encodes_observation_once_and_keeps_training_mode():
    policy = make_policy(dropout=0.5)
    calls = []
    policy.encoder.register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    policy.train()
    policy.sample(make_obs(batch=2), n=6)
    assert calls == [2]  # B features, repeated n times, not B*n encodings
    assert policy.training


def test_sample_projects_the_observation_once_and_integrates_the_field_as_written():
    """The observation's projection in the velocity field is computed once per sample call, not once per
    flow step, and the chunks are bit for bit those of integrating VelocityField.forward step by step."""
    policy = make_policy()
    policy.eval()
    obs = make_obs(batch=3)
    calls = []
    handle = policy.velocity.in_obs.register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    got = policy.sample(obs, n=4, generator=torch.Generator().manual_seed(3))
    handle.remove()
    assert calls == [12]  # B * n rows, once
    c = policy.config
    with torch.no_grad():
        feature = policy.encoder(policy.prepare(obs)).repeat_interleave(4, dim=0)
        x = policy._noise((12, c.chunk_horizon, c.action_dim), torch.Generator().manual_seed(3))
        for k in range(c.flow_steps):
            x = x + (1.0 / c.flow_steps) * policy.velocity(x, torch.full((12,), k / c.flow_steps), feature)
        low, high = torch.tensor(c.action_low), torch.tensor(c.action_high)
        want = torch.maximum(torch.minimum(policy.normalizer.unnormalize_actions(x), high), low)
    assert torch.equal(got, want.view(3, 4, c.chunk_horizon, c.action_dim))


def test_predict_chunk_takes_one_unbatched_observation():
    policy = make_policy()
    obs = make_obs(batch=1)
    single = {"images": {"front": obs["images"]["front"][0]}, "proprio": obs["proprio"][0], "task": "pick"}
    chunk = policy.predict_chunk(single, generator=torch.Generator().manual_seed(1))
    assert isinstance(chunk, np.ndarray) and chunk.shape == (4, 7) and chunk.dtype == np.float32
    batched = policy.sample({**obs, "task": ["pick"]}, generator=torch.Generator().manual_seed(1))
    assert np.array_equal(chunk, batched[0, 0].numpy())


# --- loss and learning --------------------------------------------------------------------------
def test_zero_weight_samples_contribute_no_gradient():
    policy = make_policy()
    obs = make_obs(batch=3)
    chunks = np.random.default_rng(1).uniform(-1, 1, (3, 4, 7)).astype(np.float32)
    weights = torch.tensor([1.0, 0.0, 2.0])

    def grads(chunks_):
        policy.zero_grad()
        loss = policy.loss(obs, chunks_, weights, generator=torch.Generator().manual_seed(3))
        loss.sum().backward()
        return loss.detach(), [p.grad.clone() for p in policy.parameters()]

    loss_a, grad_a = grads(chunks)
    other = chunks.copy()
    other[1] = 0.9  # change only the weight-0 sample
    loss_b, grad_b = grads(other)
    assert loss_a[1] == 0.0 and loss_b[1] == 0.0
    assert all(torch.equal(a, b) for a, b in zip(grad_a, grad_b))
    unweighted = policy.loss(obs, chunks, generator=torch.Generator().manual_seed(3)).detach()
    assert torch.allclose(loss_a, unweighted * weights)


def test_loss_rejects_bad_chunks_and_weights():
    policy = make_policy()
    obs = make_obs(batch=2)
    with pytest.raises(ValueError, match=r"chunks must be \(B, H, A\) = \(2, 4, 7\)"):
        policy.loss(obs, np.zeros((2, 5, 7)))
    with pytest.raises(ValueError, match="weights must be >= 0"):
        policy.loss(obs, np.zeros((2, 4, 7)), np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="weights contains NaN"):
        policy.loss(obs, np.zeros((2, 4, 7)), np.array([1.0, np.nan]))


def test_training_reduces_loss_and_sample_reproduces_each_context_chunk():
    """Two (task, proprio) contexts -> two distinct chunks; after training, sample() gives the right one."""
    policy = make_policy(seed=0)
    rng = np.random.default_rng(0)
    steps = np.linspace(0.0, 1.0, 4)[:, None]
    chunk_a = np.zeros((4, 7), np.float32)
    chunk_a[:, 0], chunk_a[:, 2], chunk_a[:, 6] = 0.5 * steps[:, 0], -0.3, 1.0
    chunk_b = np.zeros((4, 7), np.float32)
    chunk_b[:, 0], chunk_b[:, 1], chunk_b[:, 6] = -0.4, 0.6 * steps[:, 0], -1.0
    n = 64
    is_b = np.arange(n) % 2 == 1
    proprio = np.where(is_b[:, None], -1.0, 1.0).astype(np.float32) + 0.05 * rng.standard_normal((n, 6)).astype(np.float32)
    tasks = ["push right" if b else "push left" for b in is_b]
    chunks = np.where(is_b[:, None, None], chunk_b, chunk_a).astype(np.float32)
    images = np.repeat(rng.integers(0, 256, (1, 16, 16, 3), dtype=np.uint8), n, axis=0)  # carries no information
    policy.fit_normalization(proprio, chunks)

    opt = torch.optim.Adam(policy.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 300)
    gen = torch.Generator().manual_seed(0)
    losses = []
    t0 = time.perf_counter()
    for _ in range(300):
        idx = torch.randint(0, n, (32,), generator=gen).numpy()
        obs = {"images": {"front": images[idx]}, "proprio": proprio[idx], "task": [tasks[i] for i in idx]}
        loss = policy.loss(obs, chunks[idx], generator=gen).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
        losses.append(loss.item())
    train_s = time.perf_counter() - t0
    assert np.mean(losses[-20:]) < 0.25 * np.mean(losses[:20]), (losses[:5], losses[-5:])

    test = {"images": {"front": images[:2]}, "proprio": np.array([[1.0] * 6, [-1.0] * 6], np.float32),
            "task": ["push left", "push right"]}
    samples = policy.sample(test, n=16, generator=torch.Generator().manual_seed(1)).numpy()  # (2, 16, H, A)
    for got, want, other in ((samples[0], chunk_a, chunk_b), (samples[1], chunk_b, chunk_a)):
        assert np.abs(got - want).mean() < 0.05, (np.abs(got - want).mean(), train_s)
        assert np.abs(got.mean(axis=0) - want).max() < 0.1, (np.abs(got.mean(axis=0) - want).max(), train_s)
        # every single draw is nearer its own context's chunk than the other one
        assert np.all(np.abs(got - want).mean(axis=(1, 2)) < np.abs(got - other).mean(axis=(1, 2)))


# --- vision: keypoints and shift augmentation ---------------------------------------------------
def test_random_shift_moves_each_image_by_at_most_pad_pixels_reproducibly():
    from aloe_policy.model.modeling import random_shift

    images = torch.zeros(64, 1, 16, 16)
    images[:, 0, 8, 8] = 1.0  # one bright pixel in the middle of every image
    out = random_shift(images, 3, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and torch.equal(out.sum(dim=(1, 2, 3)), torch.ones(64))
    where = out[:, 0].flatten(1).argmax(1)
    rows, cols = (where // 16).numpy(), (where % 16).numpy()
    assert np.all(np.abs(rows - 8) <= 3) and np.all(np.abs(cols - 8) <= 3)
    assert len(set(zip(rows, cols))) > 20  # per-image offsets, not one for the batch
    again = random_shift(images, 3, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_spatial_softmax_returns_the_position_of_the_peak_in_minus_one_to_one():
    from aloe_policy.model.modeling import SpatialSoftmax

    keypoints = SpatialSoftmax(channels=4, keypoints=2)
    with torch.no_grad():
        keypoints.maps.weight.fill_(1.0)
        keypoints.maps.bias.zero_()
    feature = torch.zeros(1, 4, 5, 5)
    feature[0, :, 1, 3] = 50.0  # row 1 (y = -0.5), column 3 (x = 0.5)
    assert torch.allclose(keypoints(feature), torch.tensor([[0.5, -0.5, 0.5, -0.5]]), atol=1e-4)


def test_keypoint_policy_learns_where_a_spot_is_from_the_image_alone():
    """The chunk is the (x, y) of a bright spot: only the image carries it. The keypoint encoder
    places it to under a pixel of the 16 px image, closer than the average-pooled 2x2 grid alone
    (seeds 0-2: 0.5-0.75 px vs 1.04-1.10 px)."""
    rng = np.random.default_rng(0)
    n = 256
    pos = rng.integers(2, 14, (n, 2))
    images = np.zeros((n, 16, 16, 3), np.uint8)
    images[np.arange(n), pos[:, 0], pos[:, 1]] = 255
    chunks = np.zeros((n, 4, 7), np.float32)
    chunks[:, :, 0] = ((pos[:, 1] - 7.5) / 7.5)[:, None]
    chunks[:, :, 1] = ((pos[:, 0] - 7.5) / 7.5)[:, None]
    proprio = np.zeros((n, 6), np.float32)

    def train(policy):
        policy.fit_normalization(proprio, chunks)
        opt = torch.optim.Adam(policy.parameters(), lr=3e-3)
        gen = torch.Generator().manual_seed(0)
        for _ in range(400):
            idx = torch.randint(0, n - 32, (32,), generator=gen).numpy()
            obs = {"images": {"front": images[idx]}, "proprio": proprio[idx], "task": ["find it"] * 32}
            loss = policy.loss(obs, chunks[idx], generator=gen).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        held_out = slice(n - 32, n)
        obs = {"images": {"front": images[held_out]}, "proprio": proprio[held_out], "task": ["find it"] * 32}
        got = policy.sample(obs, n=1, generator=torch.Generator().manual_seed(1))[:, 0, :, :2].mean(1).numpy()
        return np.abs(got - chunks[held_out, 0, :2]).mean() * 7.5  # error in pixels

    pooled = train(make_policy(seed=0))
    keypoints = train(make_policy(seed=0, cnn_keypoints=8))
    print(f"spot error: keypoints {keypoints:.2f} px, pooled grid {pooled:.2f} px")
    assert keypoints < 1.0 and keypoints < pooled, (keypoints, pooled)


def test_image_shift_acts_in_training_only():
    shifted = make_policy(seed=3, image_shift=2)
    plain = make_policy(seed=3)
    plain.load_state_dict(shifted.state_dict())
    for p in (shifted, plain):
        p.fit_normalization(np.zeros((4, 6)), np.zeros((4, 4, 7)))
    obs, chunks = make_obs(batch=8), np.zeros((8, 4, 7), np.float32)
    losses = {}
    for mode in ("train", "eval"):
        for name, p in (("shifted", shifted), ("plain", plain)):
            p.train(mode == "train")
            losses[mode, name] = p.loss(obs, chunks, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(losses["train", "shifted"], losses["train", "plain"])
    assert torch.equal(losses["eval", "shifted"], losses["eval", "plain"])
    a = shifted.sample(obs, n=2, generator=torch.Generator().manual_seed(1))
    b = plain.sample(obs, n=2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


@pytest.mark.parametrize("data, words", [
    ({"cnn_keypoints": -1}, "cnn_keypoints must be an integer >= 0"),
    ({"image_shift": 40}, "image_shift must be < image_size / 2"),
])
def test_invalid_vision_options_are_rejected(data, words):
    with pytest.raises(ConfigError) as err:
        PolicyConfig.from_dict(data)
    assert words in str(err.value)


def test_checkpoints_from_before_the_vision_options_keep_their_policy_id(tmp_path):
    """Fields added later are hashed only when set: an old config.json (without them) loads to the
    same policy_id; a keypoint + shift policy round-trips bit-exactly."""
    policy = trained_like(make_policy(seed=1))
    assert "cnn_keypoints" not in policy.config.hashed_dict()
    policy_id = policy.save_pretrained(tmp_path / "old")
    meta = json.loads((tmp_path / "old" / "config.json").read_text())
    assert "cnn_keypoints" not in meta["config"] and "image_shift" not in meta["config"]
    assert FlowMatchingPolicy.from_pretrained(tmp_path / "old").policy_id == policy_id

    vision = trained_like(make_policy(seed=1, cnn_keypoints=4, image_shift=2))
    assert vision.config.hashed_dict()["cnn_keypoints"] == 4
    vision_id = vision.save_pretrained(tmp_path / "new")
    loaded = FlowMatchingPolicy.from_pretrained(tmp_path / "new")
    assert loaded.policy_id == vision_id != policy_id and loaded.config == vision.config
    a, b = vision.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- checkpoints --------------------------------------------------------------------------------
def trained_like(policy):
    """Give a fresh policy non-trivial normalisation and a text cache, as a trained one has."""
    rng = np.random.default_rng(5)
    policy.fit_normalization(rng.standard_normal((10, 6)), rng.uniform(-0.5, 0.5, (10, 4, 7)))
    policy.text_encoder.encode(["pick up the cube", "open the drawer"])
    return policy


def test_save_load_round_trip_is_bit_exact(tmp_path):
    policy = trained_like(make_policy(seed=1))
    policy_id = policy.save_pretrained(tmp_path / "ckpt")
    assert policy_id == policy.policy_id and len(policy_id) == 16 and int(policy_id, 16) >= 0
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]  # no temporary leftovers
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["config.json", "model.safetensors"]

    # A fresh text encoder with no model: the cached instructions must be enough.
    loaded = FlowMatchingPolicy.from_pretrained(tmp_path / "ckpt")
    assert loaded.policy_id == policy_id
    assert loaded.config == policy.config
    a, b = policy.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert loaded.normalizer.to_dict() == policy.normalizer.to_dict()
    assert loaded.text_encoder.known_instructions == ["open the drawer", "pick up the cube"]

    obs = make_obs(batch=2, tasks=["pick up the cube", "open the drawer"])
    out_a = policy.sample(obs, n=3, generator=torch.Generator().manual_seed(9))
    out_b = loaded.sample(obs, n=3, generator=torch.Generator().manual_seed(9))
    assert torch.equal(out_a, out_b)
    assert not loaded.text_encoder.used_model  # known tasks never load MiniLM


def test_policy_id_changes_with_weights_and_normalisation():
    policy = trained_like(make_policy())
    original = policy.policy_id
    with torch.no_grad():
        policy.velocity.out[1].bias[0] += 1e-6
    changed_weight = policy.policy_id
    policy.fit_normalization(np.ones((4, 6)), np.zeros((4, 4, 7)))
    assert len({original, changed_weight, policy.policy_id}) == 3
    policy.text_encoder.encode(["a new instruction"])  # the cache is not part of the identity
    assert policy.text_encoder.known_instructions and policy.policy_id == policy.policy_id


def test_save_over_existing_checkpoint_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "ckpt"
    first = make_policy(seed=1).save_pretrained(target)
    second_policy = make_policy(seed=2)
    # A crash while writing the new weights leaves the old checkpoint untouched and valid.
    import safetensors.torch

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        second_policy.save_pretrained(target)
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]
    assert FlowMatchingPolicy.from_pretrained(target).policy_id == first
    monkeypatch.undo()
    second = second_policy.save_pretrained(target)
    assert second != first and FlowMatchingPolicy.from_pretrained(target).policy_id == second
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]


def test_save_refuses_to_replace_a_directory_holding_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match=r"refusing to overwrite .*notes.txt"):
        make_policy().save_pretrained(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


@pytest.fixture
def saved(tmp_path):
    policy = trained_like(make_policy(seed=3))
    policy.save_pretrained(tmp_path / "ckpt")
    return tmp_path / "ckpt"


def test_validate_checkpoint_accepts_a_good_checkpoint(saved):
    ok, message = validate_checkpoint(saved)
    assert ok, message
    assert FlowMatchingPolicy.from_pretrained(saved).policy_id in message


def edit_json(path, change):
    meta = json.loads((path / "config.json").read_text())
    change(meta)
    (path / "config.json").write_text(json.dumps(meta))


def write_nan_weight(path):
    from safetensors.torch import load_file, save_file

    state = load_file(str(path / "model.safetensors"))
    state["velocity.out.1.bias"][0] = float("nan")
    save_file(state, str(path / "model.safetensors"))


@pytest.mark.parametrize("corrupt, words", [
    (lambda p: (p / "model.safetensors").write_bytes((p / "model.safetensors").read_bytes()[:5000]),
     "model.safetensors cannot be read (truncated or corrupt?)"),
    (lambda p: (p / "model.safetensors").unlink(), "is missing model.safetensors"),
    (lambda p: (p / "config.json").unlink(), "is missing config.json"),
    (lambda p: (p / "config.json").write_text('{"format": "aloe_policy.flow'), "config.json is not valid JSON"),
    (lambda p: edit_json(p, lambda m: m["config"].update(action_dim=6, action_names=list("abcdef"),
                                                        action_low=[-1] * 6, action_high=[1] * 6)),
     "tensor 'velocity.in_x.weight' is (128, 28) torch.float32 in model.safetensors but the config (action_dim=6"),
    (write_nan_weight, "tensor 'velocity.out.1.bias' in model.safetensors contains NaN"),
    (lambda p: edit_json(p, lambda m: m["config"].update(chunk_horizon=-1)), "invalid config"),
    (lambda p: edit_json(p, lambda m: m["normalization"].update(action_std=[0.0] * 7)), "'action_std' must be finite and > 0"),
    (lambda p: edit_json(p, lambda m: m["config"].update(dropout=0.2)), "were edited or come from two different saves"),
    (lambda p: edit_json(p, lambda m: m.update(format_version=99)), "version 99 is not"),
], ids=["truncated_weights", "missing_weights", "missing_config", "garbage_json", "action_dim_vs_weights",
        "nan_weight", "invalid_config", "zero_action_std", "edited_config", "unknown_format_version"])
def test_validate_checkpoint_rejects_broken_checkpoints_naming_the_problem(saved, corrupt, words):
    corrupt(saved)
    ok, message = validate_checkpoint(saved)
    assert not ok
    assert words in message, message
    with pytest.raises(CheckpointError):
        FlowMatchingPolicy.from_pretrained(saved)


def test_validate_checkpoint_runs_a_forward_pass(tmp_path):
    """Finite but absurd weights pass the static checks; only running the model shows the NaN."""
    policy = trained_like(make_policy())
    with torch.no_grad():
        policy.velocity.out[1].weight.fill_(3e38)
    policy.save_pretrained(tmp_path / "ckpt")
    FlowMatchingPolicy.from_pretrained(tmp_path / "ckpt")  # static checks pass
    ok, message = validate_checkpoint(tmp_path / "ckpt")
    assert not ok and "test forward pass produced NaN or inf" in message


def test_validate_checkpoint_never_raises_on_nonsense_paths(tmp_path):
    (tmp_path / "file").write_text("x")
    for path in (tmp_path / "absent", tmp_path / "file"):
        ok, message = validate_checkpoint(path)
        assert not ok and "does not exist" in message


# --- reuse and adapters -------------------------------------------------------------------------
def test_observation_encoder_is_usable_alone_for_the_critic():
    config = PolicyConfig(**TINY, camera_names=("front", "wrist"))
    encoder = ObservationEncoder(config)
    batch = {"images": {c: torch.rand(5, 3, 16, 16) for c in ("front", "wrist")},
             "proprio": torch.randn(5, 6), "text": torch.randn(5, 32)}
    assert encoder(batch).shape == (5, encoder.feature_dim) == (5, 64)


def test_builtin_policy_is_a_trainable_backend():
    policy = make_policy()
    assert isinstance(policy, PolicyBackend) and isinstance(policy, TrainableBackend)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("vision", [{}, {"cnn_keypoints": 4, "image_shift": 2}], ids=["grid", "keypoints_shift"])
def test_cuda_policy_matches_cpu_sampling_with_a_cpu_generator(tmp_path, vision):
    policy = trained_like(make_policy(**vision))
    policy.save_pretrained(tmp_path / "ckpt")
    gpu = FlowMatchingPolicy.from_pretrained(tmp_path / "ckpt", device="cuda")
    obs = make_obs(batch=2)
    out_cpu = policy.eval().sample(obs, n=2, generator=torch.Generator().manual_seed(0))
    out_gpu = gpu.sample(obs, n=2, generator=torch.Generator().manual_seed(0))
    assert out_gpu.device.type == "cuda" and gpu.policy_id == policy.policy_id
    assert torch.allclose(out_cpu, out_gpu.cpu(), atol=1e-4)
    assert gpu.loss(obs, np.zeros((2, 4, 7), np.float32)).device.type == "cuda"
    # training mode (shift augmentation drawn from a CPU generator): the same loss as on the CPU
    policy.train(), gpu.train()
    chunks = np.full((2, 4, 7), 0.1, np.float32)
    loss_cpu = policy.loss(obs, chunks, generator=torch.Generator().manual_seed(3))
    loss_gpu = gpu.loss(obs, chunks, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(loss_cpu, loss_gpu.cpu(), rtol=1e-3, atol=1e-4)
    loss_gpu.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in gpu.parameters() if p.requires_grad)


def test_model_package_imports_without_rclpy_or_loading_minilm():
    import subprocess
    import sys

    code = ("import sys, aloe_policy.model; "
            "bad = [m for m in ('rclpy', 'sentence_transformers', 'transformers') if m in sys.modules]; "
            "assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]


def test_hashed_text_embedding_is_per_text_deterministic_and_unit_norm():
    from aloe_policy.testing import hashed_text_embedding

    e = hashed_text_embedding(["pick up the cube", "stack the cube", "pick up the cube"], dim=16)
    assert e.shape == (3, 16) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-6)
    assert np.array_equal(e[0], e[2]) and abs(float(e[0] @ e[1])) < 0.99
    assert np.array_equal(hashed_text_embedding(["stack the cube"], dim=16)[0], e[1])  # batch does not matter


def test_a_checkpoint_config_records_camera_formats_and_action_units_well_formed():
    from aloe_policy.model import ConfigError, PolicyConfig

    config = PolicyConfig(camera_names=("front", "wrist"), camera_formats=("rgb8 640x480", "rgb8 640x480"))
    assert PolicyConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="camera_formats has 1 entries but there are 2 cameras"):
        PolicyConfig(camera_names=("front", "wrist"), camera_formats=("rgb8 640x480",))
    with pytest.raises(ConfigError, match="'<encoding> <width>x<height>'"):
        PolicyConfig(camera_formats=("rgb8 640 x 480",))
    assert "camera_formats" not in PolicyConfig().hashed_dict(), "unset: the policy_id of older checkpoints stays"
    hashed = PolicyConfig().hashed_dict()
    assert not {"action_units", "action_frame", "depth_range_m"} & set(hashed)
    with pytest.raises(ConfigError, match="action_units must be 7 non-empty strings"):
        PolicyConfig(action_units=("m",))


def test_advantage_indicator_starts_at_zero_and_is_refused_by_a_plain_policy(tmp_path):
    from aloe_policy.model import ADVANTAGE_POSITIVE, with_advantage_conditioning

    policy = make_policy()
    assert not {"advantage_conditioning", "advantage_guidance"} & set(policy.config.hashed_dict()), \
        "off: the policy_id of older checkpoints stays"
    with pytest.raises(ConfigError, match="advantage_guidance needs advantage_conditioning"):
        PolicyConfig(advantage_guidance=1.0)
    obs = make_obs(2)
    conditioned = with_advantage_conditioning(policy, guidance=2.0)
    a = policy.sample(obs, 3, generator=torch.Generator().manual_seed(0))
    b = conditioned.sample(obs, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b)  # zero embedding; guidance of two equal fields changes nothing
    assert conditioned.policy_id != policy.policy_id, "a different policy (config differs)"
    with pytest.raises(ValueError, match="takes no advantage indicator"):
        policy.loss(obs, torch.zeros(2, policy.config.chunk_horizon, policy.config.action_dim),
                    advantage=torch.full((2,), ADVANTAGE_POSITIVE))
    with pytest.raises(ValueError, match=r"must be \(B,\)"):
        conditioned.loss(obs, torch.zeros(2, policy.config.chunk_horizon, policy.config.action_dim),
                         advantage=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="indicator values"):
        conditioned.loss(obs, torch.zeros(2, policy.config.chunk_horizon, policy.config.action_dim),
                         advantage=torch.full((2,), 5))
    conditioned.save_pretrained(tmp_path / "c")
    loaded = FlowMatchingPolicy.from_pretrained(tmp_path / "c")
    assert loaded.config.advantage_conditioning and loaded.config.advantage_guidance == 2.0
    torch.testing.assert_close(loaded.sample(obs, 3, generator=torch.Generator().manual_seed(0)), b)
