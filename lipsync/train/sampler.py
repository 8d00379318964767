"""A distributed sampler that can resume in the middle of an epoch.

It yields `(index, epoch)` keys: datasets draw their per-sample randomness (window positions, off-sync
offsets, masks) from `numpy.random.default_rng([seed, epoch, index])`, so a sample is a pure function of
its key, whichever worker process builds it and whether or not the run was resumed. Each epoch is a permutation drawn from (seed, epoch) alone, split across ranks like `DistributedSampler`
(padded by wrapping so every rank sees the same count). Skipping the batches already consumed makes a
resumed run see exactly the samples the uninterrupted run would have seen.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


class ResumableSampler(Sampler[tuple[int, int]]):
    """Indices of this rank's share of each epoch, optionally starting `skip` samples in.

    Args:
        num_samples: dataset length.
        rank, world_size: this process's share.
        seed: permutation seed (the same on every rank).
        shuffle: permute each epoch; False keeps dataset order (validation).
    """

    def __init__(self, num_samples: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                 shuffle: bool = True) -> None:
        if num_samples < 1:
            raise ValueError("the dataset is empty")
        self.num_samples = num_samples
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.skip = 0
        self.per_rank = -(-num_samples // world_size)

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Select the epoch, and how many of this rank's samples of it are already consumed."""
        self.epoch = epoch
        self.skip = skip

    def __len__(self) -> int:
        return self.per_rank - self.skip

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples)
        else:
            order = np.arange(self.num_samples)
        total = self.per_rank * self.world_size
        order = np.resize(order, total)                  # wrap so all ranks get equal shares
        mine = order[self.rank : total : self.world_size]
        return iter([(index, self.epoch) for index in mine[self.skip :].tolist()])
