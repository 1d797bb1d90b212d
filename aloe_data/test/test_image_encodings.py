"""Every camera encoding of issue 18 -> RGB (or metres for depth), against hand-made frames with
known values and against OpenCV's own conversions; cv_bridge's path where it imports."""

import numpy as np
import pytest

from aloe_data.observation import (DEPTH_ENCODINGS, IMAGE_ENCODINGS, ObservationError, depth_to_metres,
                                     image_to_rgb, message_to_rgb)

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless (scripts/requirements.txt) is the reference")

H, W = 6, 8


def frame(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


@pytest.mark.parametrize("bigendian", [0, 1])
@pytest.mark.parametrize("encoding,order,alpha", [("rgb16", [0, 1, 2], False), ("bgr16", [2, 1, 0], False),
                                                  ("rgba16", [0, 1, 2], True), ("bgra16", [2, 1, 0], True)])
def test_16_bit_colour_is_scaled_to_8_bits_in_either_byte_order(encoding, order, alpha, bigendian):
    rgb = frame()
    wide = rgb.astype(np.uint16) * 256 + 255  # low byte 255: value / 256 must drop it, not round up
    pixels = wide[..., order]
    if alpha:
        pixels = np.concatenate([pixels, np.full((H, W, 1), 65535, np.uint16)], axis=2)
    data = pixels.astype(">u2" if bigendian else "<u2").tobytes()
    got = image_to_rgb(encoding, H, W, W * pixels.shape[2] * 2, data, is_bigendian=bigendian)
    np.testing.assert_array_equal(got, rgb)


def test_mono16_becomes_grey_and_honours_the_byte_order():
    grey = frame()[..., 0]
    data = (grey.astype(np.uint16) * 256).astype(">u2").tobytes()
    got = image_to_rgb("mono16", H, W, W * 2, data, is_bigendian=1)
    np.testing.assert_array_equal(got, np.repeat(grey[..., None], 3, axis=2))
    wrong = image_to_rgb("mono16", H, W, W * 2, data, is_bigendian=0)
    assert not np.array_equal(wrong, got), "the flag changes the reading"


@pytest.mark.parametrize("encoding,packer", [
    ("yuv422", "uyvy"), ("uyvy", "uyvy"), ("yuv422_yuy2", "yuyv"), ("yuyv", "yuyv")])
def test_yuv422_matches_opencv_and_a_flat_grey_is_exact(encoding, packer):
    def pack(y, u, v):
        out = np.empty((H, W, 2), np.uint8)
        if packer == "uyvy":
            out[..., 0] = np.where(np.arange(W) % 2 == 0, u, v)
            out[..., 1] = y
        else:
            out[..., 0] = y
            out[..., 1] = np.where(np.arange(W) % 2 == 0, u, v)
        return out

    grey = pack(np.full((H, W), 128, np.uint8), 128, 128)  # BT.601 video range: 1.164 (Y - 16) = 130.4
    np.testing.assert_allclose(image_to_rgb(encoding, H, W, W * 2, grey.tobytes()), 130, atol=1)
    rng = np.random.default_rng(1)
    raw = pack(rng.integers(16, 236, (H, W), dtype=np.uint8), 90, 200)
    code = cv2.COLOR_YUV2RGB_UYVY if packer == "uyvy" else cv2.COLOR_YUV2RGB_YUY2
    np.testing.assert_array_equal(image_to_rgb(encoding, H, W, W * 2, raw.tobytes()), cv2.cvtColor(raw, code))
    red = image_to_rgb(encoding, H, W, W * 2, pack(np.full((H, W), 82, np.uint8), 90, 240).tobytes())
    assert red[..., 0].mean() > 200 and red[..., 2].mean() < 60, "V > 128 is red, as YCbCr says"


@pytest.mark.parametrize("encoding,pattern", [("bayer_rggb8", "RGGB"), ("bayer_bggr8", "BGGR"),
                                              ("bayer_gbrg8", "GBRG"), ("bayer_grbg8", "GRBG")])
def test_bayer_patterns_demosaic_a_flat_colour_to_that_colour(encoding, pattern):
    colour = {"R": 200, "G": 120, "B": 40}
    mosaic = np.empty((H, W), np.uint8)
    for dy in range(2):
        for dx in range(2):
            mosaic[dy::2, dx::2] = colour[pattern[2 * dy + dx]]
    got = image_to_rgb(encoding, H, W, W, mosaic.tobytes())
    interior = got[2:-2, 2:-2].reshape(-1, 3)
    np.testing.assert_allclose(interior, np.tile([200, 120, 40], (len(interior), 1)), atol=1)


def test_depth_is_metres_with_invalid_pixels_nan():
    mm = np.array([[0, 1000, 65535], [250, 1, 4000]], np.uint16)
    got = depth_to_metres("16UC1", 2, 3, 6, mm.tobytes())
    np.testing.assert_allclose(got, [[np.nan, 1.0, 65.535], [0.25, 0.001, 4.0]], rtol=1e-6)
    m = np.array([[np.nan, 1.5, np.inf], [-1.0, 0.0, 2.25]], np.float32)
    got = depth_to_metres("32FC1", 2, 3, 12, m.astype(">f4").tobytes(), is_bigendian=1)
    np.testing.assert_allclose(got, [[np.nan, 1.5, np.nan], [np.nan, np.nan, 2.25]])
    with pytest.raises(ObservationError, match="depth"):
        image_to_rgb("16UC1", 2, 3, 6, mm.tobytes())


def test_row_padding_and_short_buffers():
    rgb = frame()
    padded = np.zeros((H, W * 3 * 2 + 4), np.uint8)
    padded[:, :W * 6] = (rgb.astype(np.uint16) * 256).astype("<u2").view(np.uint8).reshape(H, -1)
    np.testing.assert_array_equal(image_to_rgb("rgb16", H, W, W * 6 + 4, padded.tobytes()), rgb)
    with pytest.raises(ObservationError, match="bytes"):
        image_to_rgb("yuv422", H, W, W * 2, b"\0" * 10)
    with pytest.raises(ObservationError, match="unsupported image encoding 'nv12'"):
        image_to_rgb("nv12", H, W, W, b"\0" * 100)


def test_every_listed_encoding_converts():
    for enc in IMAGE_ENCODINGS:
        per = {"16": 2}.get(enc[-2:], 1) * (4 if "a" in enc[-3:-1] or enc.endswith(("a8", "a16")) else 3)
        if enc.startswith(("mono", "bayer", "8UC1")):
            per = 2 if enc == "mono16" else 1
        if enc in ("yuv422", "uyvy", "yuv422_yuy2", "yuyv"):
            per = 2
        out = image_to_rgb(enc, H, W, W * per, bytes(H * W * per))
        assert out.shape == (H, W, 3) and out.dtype == np.uint8, enc
    assert set(DEPTH_ENCODINGS) == {"16UC1", "32FC1"}


def test_cv_bridge_and_the_own_conversion_give_identical_arrays():
    bridge = pytest.importorskip("cv_bridge", reason="apt ROS 2's cv_bridge is not installed here (PyPI ROS "
                                                      "wheels have none); the robot's path is tested where it is")
    from sensor_msgs.msg import Image

    rng = np.random.default_rng(3)
    for enc, channels in (("rgb8", 3), ("bgr8", 3), ("mono8", 1), ("bayer_rggb8", 1), ("yuv422", 2)):
        raw = rng.integers(0, 256, (H, W, channels), dtype=np.uint8)
        msg = Image(height=H, width=W, encoding=enc, step=W * channels, data=raw.tobytes())
        ours = image_to_rgb(enc, H, W, W * channels, raw.tobytes())
        np.testing.assert_array_equal(bridge.CvBridge().imgmsg_to_cv2(msg, "rgb8"), ours)
        np.testing.assert_array_equal(message_to_rgb(msg), ours)


def test_camera_formats_match_by_kind_and_aspect_not_by_exact_encoding_or_resolution():
    from aloe_data.observation import format_mismatch, image_format, image_kind, rgb_to_compressed

    assert [image_kind(e) for e in ("bgr8", "yuv422", "bayer_rggb8", "mono16", "8UC1", "32FC1", "jpeg")] == [
        "colour", "colour", "colour", "mono", "mono", "depth", "colour"]
    assert format_mismatch("rgb8 640x480", "bayer_grbg8 1280x960") == ""  # same kind and field of view
    assert "trained on colour (rgb8 640x480)" in format_mismatch("rgb8 640x480", "mono8 640x480")
    assert "aspect 1.778" in format_mismatch("rgb8 640x480", "rgb8 1280x720")
    with pytest.raises(ValueError, match="'<encoding> <width>x<height>'"):
        format_mismatch("rgb8", "rgb8 640x480")

    class Raw:  # the fields of sensor_msgs/Image and CompressedImage the format reads
        encoding, width, height = "yuv422", 640, 480

    class Compressed:
        format = "rgb8; png compressed bgr8"
        data = rgb_to_compressed(np.zeros((6, 10, 3), np.uint8), "png")

    assert image_format(Raw()) == "yuv422 640x480"
    assert image_format(Compressed()) == "png 10x6"



def test_a_depth_camera_becomes_grey_metres_with_no_return_as_zero():
    from aloe_data.observation import depth_to_grey, message_to_rgb

    metres = np.array([[0.5, 1.0, 3.0], [np.nan, 0.25, 2.0]], np.float32)
    grey = depth_to_grey(metres, 2.0)
    assert grey.shape == (2, 3, 3) and (grey[..., 0] == grey[..., 2]).all()
    np.testing.assert_array_equal(grey[..., 0], [[64, 128, 255], [0, 32, 255]])  # 255 = 2 m; beyond clips

    class Depth:  # sensor_msgs/Image fields: 16UC1 millimetres, one pixel with no return (0)
        encoding, height, width, is_bigendian = "16UC1", 1, 3, 0
        step = 6
        data = np.array([500, 0, 1000], "<u2").view(np.uint8).tobytes()

    np.testing.assert_array_equal(message_to_rgb(Depth(), depth_range_m=1.0)[0, :, 0], [128, 0, 255])
    with pytest.raises(ObservationError, match="set depth_range_m"):
        message_to_rgb(Depth())
