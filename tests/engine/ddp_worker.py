"""Run by tests/engine/test_trainer.py under ``torchrun --nproc_per_node 2``: train a few steps
with DDP (gloo) and save this rank's parameters."""

import sys

import torch
import torch.distributed as dist

from detopt.config import TrainConfig
from detopt.engine import Trainer

data, out = sys.argv[1], sys.argv[2]
cfg = TrainConfig(data=data, out=out, model="yolo-p", imgsz=64, epochs=2, batch=4, nbs=8, workers=0,
                  deterministic=True, val=False, progress=False, amp=False, warmup_min_iters=2)
trainer = Trainer(cfg)
trainer.train()
rank = dist.get_rank()
torch.save({k: v.detach().clone() for k, v in trainer.model.named_parameters()}, f"{out}/rank{rank}.pt")
dist.barrier()
dist.destroy_process_group()
