"""ROS-free observation assembly shared by the policy node, the simulator and bag ingestion (aloe_data:
every package may use it; the policy, simulator and trainer all do).

One place decides how standard robot messages become model inputs, so what the policy sees
live and what the trainer reads from a bag are the same numbers.

Image conversion: where apt's ``cv_bridge`` imports (a robot with ROS 2 installed) it converts
(``imgmsg_to_cv2(msg, "rgb8")``); elsewhere this module's own conversion covers the same set of
encodings (numpy for bit depths and byte order, OpenCV's ``cvtColor`` for channel orders, YUV 4:2:2
and Bayer demosaicing: the very calls cv_bridge makes), and the tests check both give identical arrays.
``IMAGE_ENCODINGS`` lists what converts to RGB; ``DEPTH_ENCODINGS`` what converts to metres.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np

# encoding -> (channels, bytes per channel, OpenCV code to RGB or None for a copy); 16-bit values
# are scaled to 8 bits as cv_bridge does (value / 256)
_PLAIN = {
    "rgb8": (3, 1, None), "bgr8": (3, 1, "COLOR_BGR2RGB"), "rgba8": (4, 1, "COLOR_RGBA2RGB"),
    "bgra8": (4, 1, "COLOR_BGRA2RGB"), "mono8": (1, 1, "COLOR_GRAY2RGB"), "8UC1": (1, 1, "COLOR_GRAY2RGB"),
    "8UC3": (3, 1, "COLOR_BGR2RGB"), "rgb16": (3, 2, None), "bgr16": (3, 2, "COLOR_BGR2RGB"),
    "rgba16": (4, 2, "COLOR_RGBA2RGB"), "bgra16": (4, 2, "COLOR_BGRA2RGB"), "mono16": (1, 2, "COLOR_GRAY2RGB"),
}
# encoding -> (bytes per pixel, OpenCV conversion code name): the codes cv_bridge uses
_CVT = {
    "yuv422": (2, "COLOR_YUV2RGB_UYVY"), "uyvy": (2, "COLOR_YUV2RGB_UYVY"),
    "yuv422_yuy2": (2, "COLOR_YUV2RGB_YUY2"), "yuyv": (2, "COLOR_YUV2RGB_YUY2"),
    # OpenCV names a Bayer pattern by its second row's first two pixels: ROS rggb = OpenCV BG
    "bayer_rggb8": (1, "COLOR_BayerBG2RGB"), "bayer_bggr8": (1, "COLOR_BayerRG2RGB"),
    "bayer_gbrg8": (1, "COLOR_BayerGR2RGB"), "bayer_grbg8": (1, "COLOR_BayerGB2RGB"),
}
IMAGE_ENCODINGS = tuple(_PLAIN) + tuple(_CVT)
# depth encodings -> (dtype, metres per unit): 16UC1 in millimetres (REP-118), 32FC1 in metres
DEPTH_ENCODINGS = {"16UC1": (np.uint16, 1e-3), "32FC1": (np.float32, 1.0)}


class ObservationError(ValueError):
    """A message cannot be turned into a model input (wrong encoding, size, NaN...)."""


def _rows(encoding: str, height: int, width: int, step: int, data, row_bytes: int) -> np.ndarray:
    """(height, row_bytes) uint8 view of an image's pixel rows (row padding dropped); checks sizes."""
    buf = np.frombuffer(bytes(data) if not isinstance(data, (bytes, bytearray, np.ndarray)) else data, dtype=np.uint8)
    if height <= 0 or width <= 0 or step < row_bytes or buf.size < step * height:
        raise ObservationError(f"image {width}x{height} {encoding} step {step}: expected >= {step * height} "
                               f"bytes with step >= {row_bytes}, got {buf.size} bytes")
    return buf[: step * height].reshape(height, step)[:, :row_bytes]


def image_to_rgb(encoding: str, height: int, width: int, step: int, data, is_bigendian: int = 0) -> np.ndarray:
    """sensor_msgs/Image fields -> (height, width, 3) uint8 RGB array (a copy).

    Every encoding of IMAGE_ENCODINGS; 16-bit ones honour ``is_bigendian`` and are scaled by 1/256.
    Depth encodings (DEPTH_ENCODINGS) are refused here: they are metres, not colour (depth_to_metres).
    """
    if encoding in _PLAIN:
        import cv2

        channels, size, code = _PLAIN[encoding]
        rows = _rows(encoding, height, width, step, data, width * channels * size)
        if size == 2:
            values = rows.view(">u2" if is_bigendian else "<u2").reshape(height, width, channels)
            pixels = (values >> 8).astype(np.uint8)
        else:
            pixels = rows.reshape(height, width, channels)
        if code is None:
            return np.array(pixels, copy=True, order="C")
        return cv2.cvtColor(np.ascontiguousarray(pixels), getattr(cv2, code))
    if encoding in _CVT:
        import cv2

        per_pixel, code = _CVT[encoding]
        rows = _rows(encoding, height, width, step, data, width * per_pixel)
        if encoding.startswith("bayer") and (height < 2 or width < 2):
            raise ObservationError(f"a {encoding} image needs at least 2x2 pixels, got {width}x{height}")
        src = np.ascontiguousarray(rows).reshape(height, width, per_pixel) if per_pixel > 1 else \
            np.ascontiguousarray(rows)
        return np.ascontiguousarray(cv2.cvtColor(src, getattr(cv2, code)))
    if encoding in DEPTH_ENCODINGS:
        raise ObservationError(f"image encoding {encoding!r} is depth (metres), not colour: set depth_range_m "
                               "(ingestion and the policy's config) to take depth cameras as grey images")
    raise ObservationError(f"unsupported image encoding {encoding!r}; use one of {sorted(IMAGE_ENCODINGS)}")


def depth_to_metres(encoding: str, height: int, width: int, step: int, data, is_bigendian: int = 0) -> np.ndarray:
    """A 16UC1 (mm) or 32FC1 (m) depth image -> (height, width) float32 metres; invalid pixels
    (0, NaN, +-inf: no return) are NaN."""
    if encoding not in DEPTH_ENCODINGS:
        raise ObservationError(f"{encoding!r} is not a depth encoding; use one of {sorted(DEPTH_ENCODINGS)}")
    dtype, scale = DEPTH_ENCODINGS[encoding]
    dt = np.dtype(dtype).newbyteorder(">" if is_bigendian else "<")
    rows = _rows(encoding, height, width, step, data, width * dt.itemsize)
    metres = np.ascontiguousarray(rows).view(dt).reshape(height, width).astype(np.float32) * np.float32(scale)
    metres[~np.isfinite(metres) | (metres <= 0)] = np.nan
    return metres


def depth_to_grey(metres: np.ndarray, depth_range_m: float) -> np.ndarray:
    """(H, W) float metres -> (H, W, 3) uint8: grey value round(255 * d / depth_range_m), clipped
    to [0, 255] (farther than the range reads as the range); invalid pixels (NaN: no return) are 0,
    as near as a camera reports nothing. How the model takes a depth camera: one more image."""
    if not depth_range_m > 0:
        raise ObservationError(f"depth_range_m must be > 0 to take a depth camera, got {depth_range_m}")
    scaled = np.nan_to_num(metres / np.float32(depth_range_m), nan=0.0, posinf=1.0, neginf=0.0)
    grey = np.round(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def message_to_rgb(msg, depth_range_m: float = 0.0) -> np.ndarray:
    """A sensor_msgs/Image or CompressedImage (rclpy or rosbags) -> (H, W, 3) uint8 RGB: cv_bridge
    where it imports (apt ROS 2), this module's own conversion elsewhere (same arrays, tested).
    A depth image (DEPTH_ENCODINGS) becomes grey metres (depth_to_grey) when ``depth_range_m`` > 0
    and is refused otherwise."""
    if hasattr(msg, "format"):  # CompressedImage
        return compressed_to_rgb(msg.format, msg.data)
    if msg.encoding in DEPTH_ENCODINGS and depth_range_m > 0:
        return depth_to_grey(depth_to_metres(msg.encoding, msg.height, msg.width, msg.step, msg.data,
                                             msg.is_bigendian), depth_range_m)
    bridge = _cv_bridge()
    if bridge is not None and msg.encoding in IMAGE_ENCODINGS and type(msg).__module__.startswith("sensor_msgs"):
        try:
            return np.ascontiguousarray(bridge.imgmsg_to_cv2(msg, "rgb8"))
        except Exception as exc:  # noqa: BLE001 - cv_bridge raises its own CvBridgeError and cv2 errors
            raise ObservationError(f"cv_bridge cannot convert {msg.encoding} {msg.width}x{msg.height}: {exc}") from exc
    return image_to_rgb(msg.encoding, msg.height, msg.width, msg.step, msg.data, msg.is_bigendian)


_BRIDGE: list = []


def _cv_bridge():
    """apt ROS 2's cv_bridge.CvBridge, or None where it does not import (PyPI ROS wheels)."""
    if not _BRIDGE:
        try:
            from cv_bridge import CvBridge
            _BRIDGE.append(CvBridge())
        except Exception:  # noqa: BLE001 - absent, or a broken install: use this module's conversion
            _BRIDGE.append(None)
    return _BRIDGE[0]


def rgb_to_image_fields(rgb: np.ndarray, encoding: str = "rgb8") -> dict:
    """(H, W, 3) uint8 RGB -> sensor_msgs/Image fields (encoding, height, width, step, data)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ObservationError(f"expected (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
    if encoding == "rgb8":
        pixels = rgb
    elif encoding == "bgr8":
        pixels = rgb[:, :, ::-1]
    elif encoding == "mono8":
        pixels = rgb.mean(axis=2, keepdims=True).round().astype(np.uint8)
    else:
        raise ObservationError(f"cannot encode to {encoding!r}; use rgb8, bgr8 or mono8")
    pixels = np.ascontiguousarray(pixels)
    h, w, c = pixels.shape
    return {"encoding": encoding, "height": h, "width": w, "step": w * c, "is_bigendian": 0,
            "data": pixels.tobytes()}


def compressed_to_rgb(fmt: str, data) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png) -> (H, W, 3) uint8 RGB."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(bytes(data))) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError) as exc:
        raise ObservationError(f"cannot decode CompressedImage (format {fmt!r}): {exc}") from exc


def rgb_to_compressed(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="JPEG" if fmt in ("jpeg", "jpg") else fmt.upper(), quality=quality)
    return out.getvalue()


def image_kind(encoding: str) -> str:
    """What an encoding's pixels are to the model: 'colour' (decoded to RGB), 'mono' (grey copied
    to three channels) or 'depth' (metres). Compressed formats (jpeg, png) count as colour."""
    if encoding in DEPTH_ENCODINGS:
        return "depth"
    if encoding in ("mono8", "mono16", "8UC1"):
        return "mono"
    return "colour"


def image_format(msg, rgb: np.ndarray | None = None) -> str:
    """'<encoding> <W>x<H>' of a sensor_msgs/Image; '<jpeg|png> <W>x<H>' of a CompressedImage (its size
    from the decoded ``rgb``). The form a checkpoint's camera_formats records."""
    if hasattr(msg, "format"):  # CompressedImage: "jpeg", "png" or image_transport's "rgb8; png compressed bgr8"
        kind = "png" if "png" in str(msg.format).lower() else "jpeg"
        height, width = (rgb if rgb is not None else message_to_rgb(msg)).shape[:2]
        return f"{kind} {width}x{height}"
    return f"{msg.encoding} {msg.width}x{msg.height}"


def _parse_format(text: str) -> tuple[str, int, int]:
    encoding, _, size = text.partition(" ")
    width, _, height = size.partition("x")
    if not encoding or not width.isdigit() or not height.isdigit() or int(width) <= 0 or int(height) <= 0:
        raise ValueError(f"camera format must read '<encoding> <width>x<height>' (e.g. 'rgb8 640x480'), got {text!r}")
    return encoding, int(width), int(height)


def format_mismatch(trained: str, seen: str) -> str:
    """'' when images of format ``seen`` give a policy trained on ``trained`` the inputs it learnt
    from; else why not. The model sees every camera as image_size x image_size RGB, so the exact
    encoding within a kind (rgb8 / bgr8 / yuv422 / bayer...) and the resolution may differ; the kind
    (colour / mono / depth) and the aspect ratio (the field of view after resizing) may not."""
    te, tw, th = _parse_format(trained)
    se, sw, sh = _parse_format(seen)
    if image_kind(te) != image_kind(se):
        return f"sends {image_kind(se)} images ({seen}) but the policy was trained on {image_kind(te)} ({trained})"
    if abs(sw / sh - tw / th) > 0.01 * tw / th:
        return (f"sends {sw}x{sh} images (aspect {sw / sh:.3f}) but the policy was trained on {tw}x{th} "
                f"(aspect {tw / th:.3f}): a different field of view after resizing")
    return ""


def resize_rgb(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize to (size, size, 3) with area averaging (Pillow); no-op when already that size."""
    if rgb.shape[0] == size and rgb.shape[1] == size:
        return rgb
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize((size, size), Image.BILINEAR), dtype=np.uint8)


@dataclass
class ProprioSpec:
    """Which joint_states entries make the proprio vector, in order.

    proprio = [position of joints..., velocity of joints..., position of gripper_joints...,
               ee xyz (if use_ee_pose)]; units: rad, rad/s, gripper units, metres (REP-103).
    """

    joints: list[str] = field(default_factory=lambda: [f"panda_joint{i}" for i in range(1, 8)])
    gripper_joints: list[str] = field(default_factory=lambda: ["panda_gripper"])
    use_velocity: bool = True
    use_ee_pose: bool = True

    @property
    def dim(self) -> int:
        return len(self.joints) * (2 if self.use_velocity else 1) + len(self.gripper_joints) + (3 if self.use_ee_pose else 0)

    @property
    def names(self) -> list[str]:
        """What each proprio entry is, in order (PolicyConfig.proprio_names: the robot contract)."""
        return ([f"{j}.position" for j in self.joints] + ([f"{j}.velocity" for j in self.joints] if self.use_velocity
                                                          else [])
                + [f"{g}.position" for g in self.gripper_joints] + (["ee.x", "ee.y", "ee.z"] if self.use_ee_pose else []))


def proprio_vector(spec: ProprioSpec, names, position, velocity, ee_xyz=None) -> np.ndarray:
    """sensor_msgs/JointState fields (+ EE position) -> (spec.dim,) float32 proprio vector."""
    index = {n: i for i, n in enumerate(names)}
    missing = [n for n in spec.joints + spec.gripper_joints if n not in index]
    if missing:
        raise ObservationError(f"joint_states lacks joints {missing}; has {list(names)}")
    position = np.asarray(position, dtype=np.float64)
    parts = [position[[index[n] for n in spec.joints]]]
    if spec.use_velocity:
        velocity = np.asarray(velocity, dtype=np.float64)
        if velocity.shape != position.shape:
            raise ObservationError(f"joint_states velocity has {velocity.size} entries for {position.size} positions")
        parts.append(velocity[[index[n] for n in spec.joints]])
    parts.append(position[[index[n] for n in spec.gripper_joints]])
    if spec.use_ee_pose:
        if ee_xyz is None:
            raise ObservationError("proprio needs the end-effector pose but none was received")
        parts.append(np.asarray(ee_xyz, dtype=np.float64).reshape(3))
    vec = np.concatenate(parts).astype(np.float32)
    if not np.all(np.isfinite(vec)):
        raise ObservationError("proprio contains NaN or inf")
    return vec
