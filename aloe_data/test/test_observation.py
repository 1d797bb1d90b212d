"""Image and proprio conversion: every supported encoding, padding rows, bad input."""

import numpy as np
import pytest

from aloe_data.observation import (ObservationError, ProprioSpec, compressed_to_rgb, image_to_rgb,
                                     proprio_vector, resize_rgb, rgb_to_compressed, rgb_to_image_fields)


@pytest.fixture
def rgb():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8"])
def test_color_encodings_round_trip_exactly(rgb, encoding):
    fields = rgb_to_image_fields(rgb, encoding)
    back = image_to_rgb(fields["encoding"], fields["height"], fields["width"], fields["step"], fields["data"])
    np.testing.assert_array_equal(back, rgb)


def test_bgr8_really_swaps_channels(rgb):
    fields = rgb_to_image_fields(rgb, "bgr8")
    raw = np.frombuffer(fields["data"], np.uint8).reshape(5, 7, 3)
    np.testing.assert_array_equal(raw[..., 0], rgb[..., 2])


def test_mono8_becomes_grey_rgb(rgb):
    fields = rgb_to_image_fields(rgb, "mono8")
    back = image_to_rgb("mono8", 5, 7, fields["step"], fields["data"])
    assert back.shape == (5, 7, 3)
    np.testing.assert_array_equal(back[..., 0], back[..., 2])
    np.testing.assert_allclose(back[..., 0], rgb.mean(axis=2), atol=0.51)


@pytest.mark.parametrize("encoding,order", [("rgba8", [0, 1, 2]), ("bgra8", [2, 1, 0])])
def test_alpha_encodings_drop_alpha(rgb, encoding, order):
    rgba = np.concatenate([rgb[..., order], np.full((5, 7, 1), 9, np.uint8)], axis=2)
    np.testing.assert_array_equal(image_to_rgb(encoding, 5, 7, 28, rgba.tobytes()), rgb)


def test_row_padding_in_step_is_skipped(rgb):
    padded = np.zeros((5, 7 * 3 + 4), np.uint8)
    padded[:, :21] = rgb.reshape(5, 21)
    np.testing.assert_array_equal(image_to_rgb("rgb8", 5, 7, 25, padded.tobytes()), rgb)


@pytest.mark.parametrize("args,match", [
    (("nv21", 5, 7, 14, b"\0" * 70), "unsupported image encoding"),
    (("rgb8", 5, 7, 21, b"\0" * 50), "expected >= 105 bytes"),
    (("rgb8", 5, 7, 10, b"\0" * 105), "step >= 21"),
])
def test_malformed_images_are_rejected_with_reason(args, match):
    with pytest.raises(ObservationError, match=match):
        image_to_rgb(*args)


def test_jpeg_and_png_decode(rgb):
    big = np.kron(rgb, np.ones((8, 8, 1), np.uint8))
    np.testing.assert_array_equal(compressed_to_rgb("png", rgb_to_compressed(big, "png")), big)
    jpeg = compressed_to_rgb("jpeg", rgb_to_compressed(big, "jpeg", quality=95))
    assert jpeg.shape == big.shape and np.abs(jpeg.astype(int) - big).mean() < 12
    with pytest.raises(ObservationError, match="cannot decode"):
        compressed_to_rgb("jpeg", b"not an image")


def test_resize(rgb):
    assert resize_rgb(rgb, 4).shape == (4, 4, 3)
    same = np.zeros((4, 4, 3), np.uint8)
    assert resize_rgb(same, 4) is same


def test_proprio_vector_orders_by_name_not_message_order():
    spec = ProprioSpec(joints=["j1", "j2"], gripper_joints=["g"], use_velocity=True, use_ee_pose=True)
    vec = proprio_vector(spec, ["g", "j2", "j1"], [0.5, 2.0, 1.0], [0.0, 20.0, 10.0], ee_xyz=(0.1, 0.2, 0.3))
    np.testing.assert_allclose(vec, [1.0, 2.0, 10.0, 20.0, 0.5, 0.1, 0.2, 0.3], rtol=1e-6)
    assert vec.dtype == np.float32 and vec.shape == (spec.dim,)


def test_proprio_errors_name_the_problem():
    spec = ProprioSpec(joints=["j1"], gripper_joints=["g"], use_velocity=False, use_ee_pose=True)
    with pytest.raises(ObservationError, match=r"lacks joints \['g'\]"):
        proprio_vector(spec, ["j1"], [0.0], [], ee_xyz=(0, 0, 0))
    with pytest.raises(ObservationError, match="end-effector pose"):
        proprio_vector(spec, ["j1", "g"], [0.0, 0.0], [])
    with pytest.raises(ObservationError, match="NaN"):
        proprio_vector(spec, ["j1", "g"], [float("nan"), 0.0], [], ee_xyz=(0, 0, 0))
