"""`PolicyConfig`: every knob of the built-in flow-matching VLA, in one typed place.

The config is saved inside every checkpoint (``config.json``) and is part of the policy_id, so
two checkpoints with the same weights but a different horizon or action bounds are different
policies. ``from_dict`` validates everything and rejects unknown keys (a typo must not silently
fall back to a default).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

from aloe_data.schema import SIM_ACTION_NAMES  # noqa: E402


_FORMAT = re.compile(r"\S+ [1-9]\d*x[1-9]\d*")  # a camera format: "<encoding> <width>x<height>"


class ConfigError(ValueError):
    """A PolicyConfig (or its JSON) is invalid; the message says which field and why."""


@dataclass(frozen=True)
class PolicyConfig:
    """Configuration of `FlowMatchingPolicy` / `ObservationEncoder`.

    Defaults match the simulated Panda (docs/interfaces.md): one 64x64 ``front`` camera,
    18-d proprio, 7-d EE-delta action in [-1, 1], 10-step chunks at 0.1 s per step.
    """

    # --- observation -------------------------------------------------------------------------
    camera_names: tuple[str, ...] = ("front",)
    image_size: int = 64                 # images are resized to (image_size, image_size)
    camera_formats: tuple[str, ...] = ()  # per camera, what it sent in training: "<encoding> <W>x<H>" ("rgb8
                                         # 640x480"); nodes refuse another kind or aspect ratio by name
                                         # (observation.format_mismatch). () = not recorded
    depth_range_m: float = 0.0           # > 0: depth cameras (16UC1 / 32FC1) are images of grey metres, 255 =
                                         # this range (observation.depth_to_grey); 0 = depth cameras refused
    proprio_dim: int = 18                # P: 7 joint pos [rad], 7 joint vel [rad/s], gripper, EE xyz [m]
    proprio_names: tuple[str, ...] = ()  # what each proprio entry is, in order ("panda_joint1.position", ...,
                                         # "ee.z"; observation.ProprioSpec.names): the robot contract nodes
                                         # check by name. () = not recorded (checkpoints made before it)
    text_embed_dim: int = 384            # all-MiniLM-L6-v2 sentence embedding size
    text_encoder: str = "all-MiniLM-L6-v2"  # frozen; recorded for provenance only
    # --- action ------------------------------------------------------------------------------
    action_dim: int = 7                  # A
    action_names: tuple[str, ...] = SIM_ACTION_NAMES
    action_units: tuple[str, ...] = ()   # per action, its unit ("m", "rad", "m/s", "1"...); () = not recorded
    action_frame: str = ""               # the frame the actions are expressed in (REP-105: "panda_link0",
                                         # "tool0"...); '' = not recorded. Nodes refuse another by name
    action_low: tuple[float, ...] = (-1.0,) * 7    # per-dimension bounds, action units
    action_high: tuple[float, ...] = (1.0,) * 7
    chunk_horizon: int = 10              # H: actions per chunk
    control_period_s: float = 0.1        # seconds between two actions of a chunk
    # --- network -----------------------------------------------------------------------------
    cnn_channels: tuple[int, ...] = (32, 64, 64)   # one stride-2 3x3 conv per entry, per camera
    cnn_pool_size: int = 4               # CNN output is average-pooled to pool x pool cells (keeps layout)
    cnn_keypoints: int = 0               # > 0: also K spatial-softmax keypoints per camera (expected x, y of
                                         # K learnt feature maps: sub-cell object positions; Levine et al. 2016)
    image_shift: int = 0                 # > 0: training-time random shift augmentation by up to this many
                                         # pixels (replicate-pad + random crop, as DrQ); never at inference
    hidden_dim: int = 256                # observation feature size (ObservationEncoder.feature_dim)
    head_hidden_dim: int = 512           # velocity-field MLP width
    head_layers: int = 3                 # residual blocks in the velocity-field MLP
    time_embed_dim: int = 64             # sinusoidal embedding of the flow time t
    dropout: float = 0.1                 # in the observation fusion MLP (training only)
    # --- flow matching -----------------------------------------------------------------------
    flow_steps: int = 10                 # Euler steps from noise (t=0) to action (t=1) in sample()
    # --- advantage conditioning (policy improvement by conditioning; aloe_critic extraction "conditioned") --
    advantage_conditioning: bool = False  # the velocity field also takes an advantage indicator (unknown /
                                          # negative / positive); sampling conditions on positive
    advantage_guidance: float = 0.0       # classifier-free guidance at sampling: v = v_pos + g (v_pos - v_unknown);
                                          # 0 = the positive-conditioned field alone (one pass per Euler step)
    # --- normalisation -----------------------------------------------------------------------
    norm_std_floor: float = 1e-3         # std below this (constant dims) is raised to it

    def __post_init__(self):
        # Accept lists (JSON) everywhere a tuple is expected; frozen -> object.__setattr__.
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))
        self.validate()

    # ------------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ConfigError naming the first invalid field."""
        def positive_int(name):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ConfigError(f"PolicyConfig.{name} must be a positive integer, got {v!r}")

        def number(name, lo=None, hi=None, lo_open=False):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"PolicyConfig.{name} must be a finite number, got {v!r}")
            if lo is not None and (v <= lo if lo_open else v < lo):
                raise ConfigError(f"PolicyConfig.{name} must be {'>' if lo_open else '>='} {lo}, got {v!r}")
            if hi is not None and v >= hi:
                raise ConfigError(f"PolicyConfig.{name} must be < {hi}, got {v!r}")

        def str_tuple(name):
            v = getattr(self, name)
            if not isinstance(v, tuple) or not v or not all(isinstance(s, str) and s for s in v):
                raise ConfigError(f"PolicyConfig.{name} must be a non-empty list of non-empty strings, got {v!r}")
            if len(set(v)) != len(v):
                raise ConfigError(f"PolicyConfig.{name} has duplicates: {v!r}")

        for name in ("image_size", "proprio_dim", "text_embed_dim", "action_dim", "chunk_horizon",
                     "cnn_pool_size", "hidden_dim", "head_hidden_dim", "head_layers", "time_embed_dim",
                     "flow_steps"):
            positive_int(name)
        for name in ("cnn_keypoints", "image_shift"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"PolicyConfig.{name} must be an integer >= 0, got {v!r}")
        if self.image_shift >= self.image_size // 2:
            raise ConfigError(f"PolicyConfig.image_shift must be < image_size / 2 = {self.image_size // 2}, "
                              f"got {self.image_shift}")
        number("control_period_s", lo=0.0, lo_open=True)
        number("depth_range_m", lo=0.0)
        number("dropout", lo=0.0, hi=1.0)
        number("norm_std_floor", lo=0.0, lo_open=True)
        if not isinstance(self.advantage_conditioning, bool):
            raise ConfigError(f"PolicyConfig.advantage_conditioning must be true or false, "
                              f"got {self.advantage_conditioning!r}")
        number("advantage_guidance", lo=0.0)
        if self.advantage_guidance > 0 and not self.advantage_conditioning:
            raise ConfigError("PolicyConfig.advantage_guidance needs advantage_conditioning: true (guidance mixes "
                              "the positive-conditioned and the unconditioned velocity)")
        str_tuple("camera_names")
        bad_cams = [n for n in self.camera_names if "." in n]
        if bad_cams:  # camera names become parameter names ("encoder.cameras.<name>...")
            raise ConfigError(f"PolicyConfig.camera_names must not contain '.', got {bad_cams}")
        if self.camera_formats:
            if len(self.camera_formats) != len(self.camera_names):
                raise ConfigError(f"PolicyConfig.camera_formats has {len(self.camera_formats)} entries but there are "
                                  f"{len(self.camera_names)} cameras {list(self.camera_names)}")
            bad = [f for f in self.camera_formats if not _FORMAT.fullmatch(str(f))]
            if bad:
                raise ConfigError(f"PolicyConfig.camera_formats entries read '<encoding> <width>x<height>' "
                                  f"(e.g. 'rgb8 640x480'), got {bad}")
        str_tuple("action_names")
        if self.proprio_names:
            str_tuple("proprio_names")
            if len(self.proprio_names) != self.proprio_dim:
                raise ConfigError(f"PolicyConfig.proprio_names has {len(self.proprio_names)} entries but proprio_dim "
                                  f"is {self.proprio_dim}")
        if not isinstance(self.text_encoder, str):
            raise ConfigError(f"PolicyConfig.text_encoder must be a string, got {self.text_encoder!r}")
        if (not isinstance(self.cnn_channels, tuple) or not self.cnn_channels
                or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in self.cnn_channels)):
            raise ConfigError(f"PolicyConfig.cnn_channels must be a non-empty list of positive integers, "
                              f"got {self.cnn_channels!r}")
        if len(self.action_names) != self.action_dim:
            raise ConfigError(f"PolicyConfig.action_names has {len(self.action_names)} entries but action_dim is "
                              f"{self.action_dim}: give one name per action dimension")
        for name in ("action_low", "action_high"):
            v = getattr(self, name)
            if (not isinstance(v, tuple) or len(v) != self.action_dim
                    or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)):
                raise ConfigError(f"PolicyConfig.{name} must be {self.action_dim} finite numbers (one per action "
                                  f"dimension), got {v!r}")
        if self.action_units:
            str_units = all(isinstance(u, str) and u for u in self.action_units)
            if not str_units or len(self.action_units) != self.action_dim:
                raise ConfigError(f"PolicyConfig.action_units must be {self.action_dim} non-empty strings (one per "
                                  f"action dimension), got {self.action_units!r}")
        if not isinstance(self.action_frame, str):
            raise ConfigError(f"PolicyConfig.action_frame must be a string, got {self.action_frame!r}")
        bad = [n for n, lo, hi in zip(self.action_names, self.action_low, self.action_high) if not lo < hi]
        if bad:
            raise ConfigError(f"PolicyConfig.action_low must be < action_high for every dimension; not for {bad}")

    # ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-safe dict (tuples -> lists, floats stay floats)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, tuple):
                v = [float(x) if f.name in ("action_low", "action_high") else x for x in v]
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "PolicyConfig":
        """Inverse of `to_dict`; missing keys take defaults, unknown keys are an error."""
        if not isinstance(data, dict):
            raise ConfigError(f"policy config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown PolicyConfig keys {unknown}; known keys are {sorted(known)}")
        try:
            return cls(**data)
        except TypeError as exc:  # e.g. an unhashable value where a scalar belongs
            raise ConfigError(f"invalid policy config: {exc}") from exc

    def hashed_dict(self) -> dict:
        """`to_dict` without the fields added after format 1 while they are off (0 / empty), so the
        policy_id of a checkpoint written before they existed does not change."""
        out = self.to_dict()
        for name in ADDED_FIELDS:
            if out[name] in (0, 0.0, [], ""):
                del out[name]
        return out

    def replace(self, **changes) -> "PolicyConfig":
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)


# Fields added after the first checkpoint format (see `hashed_dict`).
ADDED_FIELDS = ("cnn_keypoints", "image_shift", "proprio_names", "camera_formats", "depth_range_m", "action_units",
                "action_frame", "advantage_conditioning", "advantage_guidance")

__all__ = ["PolicyConfig", "ConfigError", "SIM_ACTION_NAMES"]
