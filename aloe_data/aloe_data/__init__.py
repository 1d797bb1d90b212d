"""ROS-free data contract of the ALOE suite (DESIGN.md, "Layout"). ``schema``: every default topic
name, the episode event and action source codes and the simulator's action names, written once."""
