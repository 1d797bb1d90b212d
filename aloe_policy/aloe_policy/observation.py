"""ROS-free observation assembly shared by the policy node, the simulator and bag ingestion.

One place decides how standard robot messages become model inputs, so what the policy sees
live and what the trainer reads from a bag are the same numbers.

Image conversion is done here with numpy (and Pillow for CompressedImage) instead of
cv_bridge: apt's cv_bridge is missing on wheel installs and the PyPI port has encoding bugs.
Supported encodings are exactly those in ``IMAGE_ENCODINGS`` and are tested.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np

# encoding -> (channels, dtype, channel order to get RGB)
IMAGE_ENCODINGS = {
    "rgb8": (3, np.uint8, (0, 1, 2)),
    "bgr8": (3, np.uint8, (2, 1, 0)),
    "rgba8": (4, np.uint8, (0, 1, 2)),
    "bgra8": (4, np.uint8, (2, 1, 0)),
    "mono8": (1, np.uint8, (0, 0, 0)),
}


class ObservationError(ValueError):
    """A message cannot be turned into a model input (wrong encoding, size, NaN...)."""


def image_to_rgb(encoding: str, height: int, width: int, step: int, data) -> np.ndarray:
    """sensor_msgs/Image fields -> (height, width, 3) uint8 RGB array (a copy)."""
    if encoding not in IMAGE_ENCODINGS:
        raise ObservationError(f"unsupported image encoding {encoding!r}; use one of {sorted(IMAGE_ENCODINGS)}")
    channels, dtype, order = IMAGE_ENCODINGS[encoding]
    row = width * channels * np.dtype(dtype).itemsize
    buf = np.frombuffer(bytes(data) if not isinstance(data, (bytes, bytearray, np.ndarray)) else data, dtype=np.uint8)
    if height <= 0 or width <= 0 or step < row or buf.size < step * height:
        raise ObservationError(f"image {width}x{height} {encoding} step {step}: expected >= {step * height} "
                               f"bytes with step >= {row}, got {buf.size} bytes")
    rows = buf[: step * height].reshape(height, step)[:, :row]
    pixels = rows.reshape(height, width, channels)
    return np.ascontiguousarray(pixels[:, :, list(order)])


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
