"""Operator takeover devices, episode labelling and the rosbag2 MCAP recorder."""
