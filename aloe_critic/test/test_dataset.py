"""Bag ingestion: tick alignment, chunk padding, R^H, provenance, cache reuse, bad bags skipped."""

import os
import warnings

import numpy as np
import pytest

import aloe_data.ingestion as ingestion_mod
from aloe_critic.dataset import TransitionDataset
from aloe_data.ingestion import IngestionConfig, SkippedBagWarning, ingest_bags

POLICY = "abcdef0123456789"
SOURCES = [0, 0, 0, 1, 1, 2, 0, 0]  # ticks 3, 4 HUMAN (takeover), tick 5 HOLD


def config(tmp_path):
    return IngestionConfig(cache_dir=str(tmp_path / "cache"), image_size=8)


def test_ingestion_aligns_ticks_pads_chunks_and_keeps_provenance(tmp_path, episode_bag):
    bag = episode_bag("ep0", sources=SOURCES, policy_id=POLICY)
    report = ingest_bags([bag], config(tmp_path))
    assert report.skipped == [] and len(report.episodes) == 1
    ep = report.episodes[0]
    # o_t = newest message stamped <= tick t: frame k (10 ms before), never frame 100+k (50 ms after)
    np.testing.assert_array_equal(ep.images["front"][:, 0, 0, 0], np.arange(8))
    np.testing.assert_array_equal(ep.proprio[:, 0], np.arange(8))      # joint 1 position
    np.testing.assert_array_equal(ep.proprio[:, -3], np.arange(8))     # EE x
    assert ep.proprio.shape == (8, 18) and ep.task == "pick the cube" and ep.outcome == "SUCCESS"
    np.testing.assert_array_equal(ep.rewards, [0] * 7 + [1])           # sparse: 1 at the SUCCESS tick

    d = TransitionDataset(report.episodes, chunk_horizon=3, gamma=0.5)
    assert len(d) == 8
    np.testing.assert_array_equal(d.chunks[6, :, 0], [6, 7, 7])        # padded with the last action
    np.testing.assert_array_equal(d.chunks[2, :, 3], [2, 3, 4])
    np.testing.assert_allclose(d.returns, [0, 0, 0, 0, 0, 0.25, 0.5, 1.0])
    np.testing.assert_array_equal(d.done, [0, 0, 0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(d.next_tick, [3, 4, 5, 6, 7, 7, 7, 7])
    np.testing.assert_allclose(d.source_fraction[2], [1 / 3, 2 / 3, 0])
    np.testing.assert_allclose(d.source_fraction[4], [1 / 3, 1 / 3, 1 / 3])
    np.testing.assert_allclose(d.source_fraction[7], [1, 0, 0])        # only the real tick counts
    np.testing.assert_array_equal(d.is_intervention, [0, 1, 1, 1, 1, 0, 0, 0])
    assert d.policy_id[3] == "" and d.policy_id[4] == POLICY
    prov = d.provenance([3])[0]
    assert prov["bag"] == str(bag) and prov["outcome"] == "SUCCESS" and prov["human_fraction"] == pytest.approx(2 / 3)

    b = d.batch([0, 4])
    assert b.obs["images"]["front"].shape == (2, 8, 8, 3) and b.obs["task"] == ["pick the cube"] * 2
    assert int(b.next_obs["images"]["front"][0, 0, 0, 0]) == 3        # o_{t+H}
    np.testing.assert_array_equal(b.next_chunks[0, :, 0].numpy(), [3, 4, 5])


def test_reward_topic_replaces_sparse_success_reward(tmp_path, episode_bag):
    bag = episode_bag("ep0", num_ticks=4, rewards=[0.1, 0.2, 0.3, 0.4])
    ep = ingest_bags([bag], config(tmp_path)).episodes[0]
    np.testing.assert_allclose(ep.rewards, [0.1, 0.2, 0.3, 0.4], rtol=1e-6)


def test_aborted_episode_bootstraps_from_last_observation(tmp_path, episode_bag):
    bag = episode_bag("ep0", num_ticks=5, outcome="ABORT")
    d = TransitionDataset(ingest_bags([bag], config(tmp_path)).episodes, chunk_horizon=2, gamma=0.9)
    np.testing.assert_array_equal(d.done, 0)
    np.testing.assert_array_equal(d.returns, 0)
    np.testing.assert_array_equal(d.next_tick, [2, 3, 4, 4, 4])
    np.testing.assert_array_equal(d.next_transition, d.next_tick)  # td1 bootstraps on (o_{T-1}, A_{T-1})


def test_cache_is_reused_without_reparsing(tmp_path, episode_bag, monkeypatch):
    bags = [episode_bag(f"ep{i}", sources=SOURCES) for i in range(2)]
    first = ingest_bags([tmp_path / "bags"], config(tmp_path))
    assert sorted(first.decoded) == sorted(map(str, bags)) and first.cached == []

    calls = []
    monkeypatch.setattr(ingestion_mod, "decode_bag", lambda *a, **k: calls.append(a) or pytest.fail("re-parsed"))
    second = ingest_bags([tmp_path / "bags"], config(tmp_path))
    assert calls == [] and second.decoded == [] and sorted(second.cached) == sorted(map(str, bags))
    ep = second.episodes[0]
    assert isinstance(ep.images["front"], np.memmap) and isinstance(ep.actions, np.memmap)
    np.testing.assert_array_equal(ep.actions, first.episodes[0].actions)
    # a different decoding parameter is a different cache entry, decoded once more
    monkeypatch.undo()
    third = ingest_bags([bags[0]], IngestionConfig(cache_dir=str(tmp_path / "cache"), image_size=4))
    assert third.decoded == [str(bags[0])] and third.episodes[0].images["front"].shape[1:] == (4, 4, 3)


def test_truncated_bag_is_skipped_with_one_warning_and_others_load(tmp_path, episode_bag):
    good = [episode_bag(f"ep{i}") for i in range(2)]
    bad = episode_bag("cut")
    mcap = next(bad.glob("*.mcap"))
    os.truncate(mcap, mcap.stat().st_size // 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = ingest_bags([tmp_path / "bags"], config(tmp_path))
    skipped = [w for w in caught if issubclass(w.category, SkippedBagWarning)]
    assert len(skipped) == 1 and "cut" in str(skipped[0].message)
    assert [b for b, _ in report.skipped] == [str(bad)]
    assert sorted(e.bag for e in report.episodes) == sorted(map(str, good))


def test_bag_with_unknown_action_type_is_skipped(tmp_path, episode_bag):
    bag = episode_bag("ep0")
    meta = bag / "metadata.yaml"
    meta.write_text(meta.read_text().replace("aloe_msgs/msg/ExecutedAction", "other_msgs/msg/Unknown"))
    with pytest.warns(SkippedBagWarning, match="ep0"):
        report = ingest_bags([bag], config(tmp_path))
    assert report.episodes == [] and len(report.skipped) == 1


def test_bag_without_metadata_is_reindexed_or_reported(tmp_path, episode_bag):
    bag = episode_bag("crashed", metadata=False)
    try:
        from aloe_data.bag_repair import reindex_bag  # noqa: F401
    except ImportError:
        with pytest.warns(SkippedBagWarning, match="reindex_bag"):
            report = ingest_bags([bag], config(tmp_path))
        assert report.episodes == []
    else:
        report = ingest_bags([bag], config(tmp_path))
        assert len(report.episodes) == 1 and len(report.episodes[0]) == 8


def test_filters_select_by_provenance(tmp_path, episode_bag):
    episode_bag("a", sources=SOURCES, outcome="SUCCESS")
    episode_bag("b", outcome="FAILURE", policy_id="1111111111111111")
    d = TransitionDataset(ingest_bags([tmp_path / "bags"], config(tmp_path)).episodes, chunk_horizon=3, gamma=0.9)
    assert len(d) == 16
    assert len(d.filter(outcome="FAILURE")) == 8
    assert len(d.filter(is_intervention=True)) == 4
    assert set(d.policy_id[d.filter(policy_id="1111111111111111").indices]) == {"1111111111111111"}
    both = d.filter(outcome="SUCCESS").filter(is_intervention=False)
    assert len(both) == 4 and not d.is_intervention[both.indices].any()
    rng = np.random.default_rng(0)
    batch = both.sample(32, rng)
    assert set(batch.index.numpy()) <= set(both.indices)


def test_bags_from_the_recorder_load_including_a_crash_cut_one(tmp_path, episode_bag):
    pytest.importorskip("aloe_teleop.recorder")
    closed = episode_bag("closed", sources=SOURCES, writer="recorder")
    cut = episode_bag("cut", outcome="FAILURE", writer="recorder", crash=True)
    assert not (cut / "metadata.yaml").exists()
    report = ingest_bags([tmp_path / "bags"], config(tmp_path))
    assert report.skipped == [], report.skipped
    by_name = {os.path.basename(e.bag): e for e in report.episodes}
    assert (cut / "metadata.yaml").exists()                              # re-indexed
    assert by_name["closed"].outcome == "SUCCESS" and by_name["closed"].policy_ids == [POLICY]
    np.testing.assert_array_equal(by_name["closed"].sources, SOURCES)
    cut_ep = by_name["cut"]
    assert cut_ep.outcome == "INCOMPLETE" and 0 < len(cut_ep) < 8         # first half survived, no end event
    np.testing.assert_array_equal(cut_ep.actions[:, 0], np.arange(len(cut_ep)))
    d = TransitionDataset([cut_ep], chunk_horizon=3, gamma=0.9)
    assert not d.done.any() and not d.returns.any()                    # not terminal: bootstrap, no reward


def test_changed_bag_bytes_are_a_new_cache_entry(tmp_path, episode_bag):
    bag = episode_bag("ep0", num_ticks=4)
    first = ingest_bags([bag], config(tmp_path))
    assert first.decoded == [str(bag)]
    # rewrite the bag with other content: the memoised hash must not hide the change
    import shutil
    shutil.rmtree(bag)
    episode_bag("ep0", num_ticks=6)
    second = ingest_bags([bag], config(tmp_path))
    assert second.decoded == [str(bag)] and len(second.episodes[0]) == 6


def test_compressed_camera_topic_is_decoded_and_resized(tmp_path, episode_bag):
    bag = episode_bag("ep0", num_ticks=4, compressed=True, image_size=16)
    ep = ingest_bags([bag], config(tmp_path)).episodes[0]
    assert ep.images["front"].shape == (4, 8, 8, 3)                      # resized 16 -> 8
    np.testing.assert_array_equal(ep.images["front"][:, 4, 4, 1], np.arange(4))


def test_torch_dataloader_and_weighted_sampling(tmp_path, episode_bag):
    import torch

    episode_bag("a", sources=SOURCES)
    d = TransitionDataset(ingest_bags([tmp_path / "bags"], config(tmp_path)).episodes, chunk_horizon=3, gamma=0.9)
    loader = torch.utils.data.DataLoader(d, batch_size=5, shuffle=False, collate_fn=d.batch)
    batches = list(loader)
    assert [len(b.index) for b in batches] == [5, 3]
    torch.testing.assert_close(batches[1].chunks, torch.from_numpy(d.chunks[5:8]))
    only_interventions = d.sample(64, np.random.default_rng(0), weights=d.is_intervention[d.indices].astype(float))
    assert d.is_intervention[only_interventions.index.numpy()].all()


def test_bags_are_found_at_any_depth_and_an_empty_folder_says_why(tmp_path, episode_bag):
    from aloe_data.ingestion import find_bags, no_usable_bags

    flat = episode_bag("ep0")
    # the main loop's layout: bags/<run>/<phase>/<episode>/, two levels below the folder given
    nested = [episode_bag(f"run/{phase}/ep{i}") for phase in ("demos", "eval_01") for i in range(2)]
    (tmp_path / "bags" / ".hidden" / "x").mkdir(parents=True)
    found = find_bags([tmp_path / "bags"])
    assert sorted(map(str, found)) == sorted(map(str, [flat, *nested]))
    assert find_bags([nested[0]]) == [nested[0]], "a bag folder itself is one bag"
    empty = tmp_path / "nothing" / "here"
    empty.mkdir(parents=True)
    report = ingest_bags([empty], config(tmp_path))
    assert report.episodes == [] and report.skipped == []
    why = no_usable_bags([empty], report)
    assert str(empty) in why and "metadata.yaml or *.mcap" in why



def test_bags_of_any_camera_and_joint_state_topics_train_from_their_metadata(tmp_path, episode_bag):
    streams = {"camera:wrist": "/arm/wrist_cam/color/image_raw", "joint_states": "/arm/joint_states",
               "ee_pose": "/aloe/ee_pose"}
    bag = episode_bag("ep0", camera_topic=streams["camera:wrist"], joint_states_topic=streams["joint_states"],
                      stream_topics=streams)
    report = ingest_bags([bag], config(tmp_path))
    assert report.skipped == [] and len(report.episodes) == 1
    ep = report.episodes[0]
    assert list(ep.images) == ["wrist"]
    assert int(ep.images["wrist"][3].max()) == 3 and float(ep.proprio[3][0]) == 3.0  # tick k sees frame/joints k
    # without the metadata the same topics cannot be told apart from other streams: said by name
    plain = episode_bag("ep1", camera_topic="/arm/wrist_cam/color/image_raw", joint_states_topic="/arm/joint_states")
    report = ingest_bags([plain], config(tmp_path))
    assert report.episodes == [] and "/joint_states" in report.skipped[0][1]


@pytest.mark.parametrize("encoding", ["bayer_rggb8", "mono16"])
def test_bags_of_raw_bayer_and_big_endian_16_bit_cameras_ingest(tmp_path, episode_bag, encoding):
    pytest.importorskip("cv2")
    bag = episode_bag(f"ep_{encoding}", encoding=encoding)
    report = ingest_bags([bag], config(tmp_path))
    assert report.skipped == [], report.skipped
    frames = report.episodes[0].images["front"]
    assert [int(np.median(frames[k])) for k in range(4)] == [0, 1, 2, 3]  # tick k sees the grey value k


def test_ingestion_records_each_cameras_format_and_one_camera_name_cannot_mix_kinds(tmp_path, episode_bag):
    pytest.importorskip("cv2")
    colour = episode_bag("colour", image_size=16)
    jpeg = episode_bag("jpeg", image_size=16, compressed=True)  # the test writer compresses as png
    grey = episode_bag("grey", image_size=16, encoding="mono16")
    episodes = {bag.name: ep for bag in (colour, jpeg, grey)
                for ep in ingest_bags([bag], config(tmp_path)).episodes}
    assert {n: e.camera_formats for n, e in episodes.items()} == {
        "colour": {"front": "rgb8 16x16"}, "jpeg": {"front": "png 16x16"}, "grey": {"front": "mono16 16x16"}}
    again = ingest_bags([colour], config(tmp_path))
    assert again.cached == [str(colour)] and again.episodes[0].camera_formats == {"front": "rgb8 16x16"}
    both = TransitionDataset([episodes["colour"], episodes["jpeg"]], chunk_horizon=2, gamma=0.9)  # both colour
    assert both.camera_formats == {"front": "rgb8 16x16"}
    with pytest.raises(ValueError, match=r"camera 'front': episode .*grey sends mono images \(mono16 16x16\) but the "
                                         r"policy was trained on colour \(rgb8 16x16\)"):
        TransitionDataset([episodes["colour"], episodes["grey"]], chunk_horizon=2, gamma=0.9)


def test_a_depth_camera_ingests_as_grey_metres_once_a_depth_range_is_set(tmp_path, episode_bag):
    bag = episode_bag("depth", encoding="16UC1")  # tick k sees (k + 1) decimetres everywhere
    refused = ingest_bags([bag], config(tmp_path))
    assert refused.episodes == [] and "set depth_range_m" in refused.skipped[0][1]
    cfg = config(tmp_path)
    cfg.depth_range_m = 1.0
    ep = ingest_bags([bag], cfg).episodes[0]
    assert ep.camera_formats == {"front": "16UC1 8x8"}
    np.testing.assert_array_equal(ep.images["front"][:4, 0, 0, 0], np.round(255 * 0.1 * np.arange(1, 5)))
