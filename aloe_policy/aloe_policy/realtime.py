"""Real-time scheduling for the one thread of a node that must never wait (ROS-free).

The executor's control thread (a tick per control period) and the recorder's subscription thread
(a 2 kHz joint_states stream overflows its publisher's history within milliseconds of waiting)
take SCHED_FIFO where the machine allows it, as ros2_control's controller manager does.
"""

from __future__ import annotations


def apply_realtime_priority(priority: int) -> str:
    """SCHED_FIFO at ``priority`` for the calling thread (the one that spins: timer callbacks run there).

    Linux applies sched_setscheduler(0, ...) to the calling thread only, so the middleware's
    threads keep their scheduling. -> '' on success, else why not (the node then warns once).
    """
    if priority <= 0:
        return ""
    import os

    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except AttributeError:
        return "SCHED_FIFO is not available on this platform"
    except OSError as exc:
        return (f"{exc.strerror}: allow it with an rtprio limit (e.g. '@realtime - rtprio 99' in "
                "/etc/security/limits.conf) or CAP_SYS_NICE")
    return ""


def apply_and_log(logger, priority: int, thread: str) -> None:
    """apply_realtime_priority, then one log line saying what ``thread`` got (nothing when 0)."""
    problem = apply_realtime_priority(priority)
    if problem:
        logger.warn(f"realtime_priority {priority} not applied, normal scheduling: {problem}")
    elif priority:
        logger.info(f"{thread} runs SCHED_FIFO priority {priority}")
