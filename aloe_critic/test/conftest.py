"""aloe_critic test set-up: the machine is shared, keep torch to one thread."""

import torch

torch.set_num_threads(1)
