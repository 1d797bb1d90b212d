"""Bringing ALOE up: the node sets the launch files start, the process launcher for machines
without the launch package, and the main job (the loop in simulation) with its report."""
