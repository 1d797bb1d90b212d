"""Episode labelling: operator requests (START/SUCCESS/FAILURE/ABORT) -> EpisodeEvent fields.

ROS-free. One episode at a time: START while one runs, or an end without one, is refused with
a message saying what to do (the Trigger services return it, the node logs it).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from aloe_data.schema import EVENT_CODES  # noqa: E402,F401


@dataclass
class EpisodeEventFields:
    episode_id: str
    event: int     # EpisodeEvent.START .. ABORT
    reward: float  # sparse task reward: 1.0 at SUCCESS, else 0.0
    task: str


def new_episode_id(prefix: str = "") -> str:
    """Sortable, unique, filesystem-safe: ``<prefix>20260101-120000-1a2b3c``."""
    return f"{prefix}{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"


class EpisodeLabeller:
    def __init__(self, id_prefix: str = ""):
        self.id_prefix = id_prefix
        self.current: str | None = None

    def request(self, kind: str, task: str) -> tuple[bool, str, EpisodeEventFields | None]:
        """-> (accepted, message, event to publish or None)."""
        if kind not in EVENT_CODES:
            return False, f"unknown episode event {kind!r}", None
        if kind == "START":
            if self.current is not None:
                return False, (f"episode {self.current} is running: end it with success, failure or "
                               f"abort first"), None
            self.current = new_episode_id(self.id_prefix)
            return True, f"episode {self.current} started", EpisodeEventFields(self.current, 0, 0.0, task)
        if self.current is None:
            return False, f"no episode is running: nothing to mark {kind}; start one first", None
        episode_id, self.current = self.current, None
        reward = 1.0 if kind == "SUCCESS" else 0.0
        return True, f"episode {episode_id}: {kind}", EpisodeEventFields(episode_id, EVENT_CODES[kind], reward, task)
