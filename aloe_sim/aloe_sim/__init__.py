"""Simulated Panda pick-cube robot (gym-hil / MuJoCo) behind robot topics, scripted operator, and the human-in-the-loop main job."""
