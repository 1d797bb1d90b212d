"""Flow-matching VLA policy (ROS-free model core), asynchronous inference node and action executor node."""
