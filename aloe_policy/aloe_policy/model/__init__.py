"""ROS-free VLA model: config (config.py), tensors in/out (processing.py), networks and checkpoints
(modeling.py), frozen text encoder (text_encoder.py); other VLAs plug in as backends (aloe_policy.backends).

Never imports rclpy: the trainer and the nodes both use it.
"""

from .config import ConfigError, PolicyConfig
from .modeling import (ADVANTAGE_NEGATIVE, ADVANTAGE_POSITIVE, ADVANTAGE_UNKNOWN, CheckpointError, FlowMatchingPolicy,
                       ObservationEncoder, compute_policy_id, load_checkpoint, validate_checkpoint,
                       with_advantage_conditioning)
from .processing import Normalizer, ObservationError, ObservationProcessor
from .text_encoder import TextEncoder, TextEncoderError

__all__ = [
    "PolicyConfig", "ConfigError",
    "FlowMatchingPolicy", "ObservationEncoder", "load_checkpoint", "validate_checkpoint", "CheckpointError", "compute_policy_id",
    "with_advantage_conditioning", "ADVANTAGE_UNKNOWN", "ADVANTAGE_NEGATIVE", "ADVANTAGE_POSITIVE",
    "Normalizer", "ObservationProcessor", "ObservationError",
    "TextEncoder", "TextEncoderError",
]
