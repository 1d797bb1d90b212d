"""The package README documents the bag layout the code writes (no drift)."""

from pathlib import Path

from aloe_data.episode_bag import CUSTOM_DATA_KEYS, ROSBAG2_METADATA_VERSION

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_lists_every_custom_data_key_and_no_other():
    text = README.read_text().split("`custom_data` (all values are strings")[1]
    rows = [line.split("|")[1].strip().strip("`") for line in text.splitlines()
            if line.startswith("| `")]
    assert rows == list(CUSTOM_DATA_KEYS)


def test_readme_states_the_metadata_version_written():
    assert f"metadata, version {ROSBAG2_METADATA_VERSION}" in README.read_text()
