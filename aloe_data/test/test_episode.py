"""Episode: the in-memory form of one recorded bag."""

import pickle

import numpy as np

from aloe_data.ingestion import Episode


def _episode() -> Episode:
    return Episode.from_arrays(np.zeros((4, 2)), np.ones((4, 3)), [0, 0, 0, 1], task="pick", episode_id="e1")


def test_an_episode_round_trips_through_pickle_unchanged():
    e = _episode()
    e.camera_formats = {"wrist": "rgb8 64x64"}
    back = pickle.loads(pickle.dumps(e))
    assert back.camera_formats == {"wrist": "rgb8 64x64"} and back.episode_id == "e1" and back.task == "pick"
    np.testing.assert_array_equal(back.rewards, e.rewards)


def test_an_episode_pickled_before_a_field_existed_gets_its_default():
    e = _episode()
    state = dict(e.__dict__)
    del state["camera_formats"], state["bag_hash"]  # as a cache written by an older version holds it
    old = Episode.__new__(Episode)
    old.__setstate__(state)
    assert old.camera_formats == {} and old.bag_hash == ""
    assert old.episode_id == "e1" and len(old) == 4
    other = Episode.__new__(Episode)
    other.__setstate__(dict(state))
    old.camera_formats["x"] = "rgb8 1x1"
    assert other.camera_formats == {}  # a fresh default per episode, not one shared dict
