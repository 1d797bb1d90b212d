"""Simulated Panda pick-cube robot (gym-hil / MuJoCo) behind robot topics, and the scripted operator; ROS-free apart from its two nodes."""
