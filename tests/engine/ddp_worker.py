"""Run by tests/engine/test_trainer.py under ``torchrun --nproc_per_node 2``: train a few steps
with DDP (gloo) and save this rank's parameters and the training images it was given."""

import json
import sys

import torch
import torch.distributed as dist

from detopt.config import TrainConfig
from detopt.data.dataset import DetectionDataset
from detopt.engine import Trainer

data, out = sys.argv[1], sys.argv[2]
seen: list[list[int]] = []  # per epoch, the training items this rank loaded
_getitem = DetectionDataset.__getitem__


def _recording_getitem(self, i):
    if self.pipeline is not None:  # the training set (validation is off)
        if len(seen) <= self.epoch:
            seen.append([])
        seen[self.epoch].append(int(i))
    return _getitem(self, i)


DetectionDataset.__getitem__ = _recording_getitem
cfg = TrainConfig(data=data, out=out, model="yolo-p", imgsz=64, epochs=2, batch=4, nbs=8, workers=0,
                  deterministic=True, val=False, progress=False, amp=False, warmup_min_iters=2)
trainer = Trainer(cfg)
trainer.train()
rank = dist.get_rank()
torch.save({k: v.detach().clone() for k, v in trainer.model.named_parameters()}, f"{out}/rank{rank}.pt")
with open(f"{out}/seen{rank}.json", "w") as f:
    json.dump(seen, f)
dist.barrier()
dist.destroy_process_group()
