import os
# Tests never reach a hub or the W&B server, and never open a window.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("MPLBACKEND", "Agg")

import torch
torch.set_num_threads(1)  # pytest -n 2 runs two workers on two cores
