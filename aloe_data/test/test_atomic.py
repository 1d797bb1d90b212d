"""Whole or absent: files and directories replaced atomically, nothing left beside them."""

import pytest

from aloe_data.atomic import install_dir, write_atomic


def test_a_file_is_replaced_whole_and_no_temporary_is_left(tmp_path):
    path = tmp_path / "metrics.json"
    write_atomic(path, "[1]")
    write_atomic(path, b"[1, 2]", fsync=True)
    assert path.read_text() == "[1, 2]" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path):
    path = tmp_path / "a.txt"
    write_atomic(path, "old")
    with pytest.raises(TypeError):
        write_atomic(path, 42)  # neither str nor bytes: fails while writing the temporary
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_a_directory_is_swapped_in_and_an_existing_one_kept_unless_overwrite(tmp_path):
    target = tmp_path / "ckpt"
    for version in ("v1", "v2"):
        stage = tmp_path / f".stage-{version}"
        stage.mkdir()
        (stage / "weights").write_text(version)
        install_dir(stage, target)
    assert (target / "weights").read_text() == "v2" and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    stage = tmp_path / ".stage-v3"
    stage.mkdir()
    with pytest.raises(FileExistsError, match="--overwrite"):
        install_dir(stage, target, overwrite=False)
    assert not stage.exists() and (target / "weights").read_text() == "v2"
