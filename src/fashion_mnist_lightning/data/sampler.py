"""The in-memory data set, the train/val split, and the shuffle that knows where it is inside an epoch.

Everything here is plain torch: one uint8 tensor holds the images, a batch is one index into it, and the
shuffle order depends only on (seed, epoch), so a resumed run sees exactly the batches it would have seen.
"""

import torch
from torch.utils.data import Dataset, DistributedSampler


def split_indices(n_total: int, n_val: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A (train, val) partition of range(n_total) that depends only on ``seed``."""
    order = torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))
    return order[n_val:], order[:n_val]


class ImageBatches(Dataset):
    """uint8 images (N, C, H, W) and int64 labels (N,) that hand out whole batches by index.

    ``index`` (N,): the rows of ``images`` this set is made of (a split of a larger, memory-mapped tensor that is
    never copied whole); None: all of ``images``, in order.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, index: torch.Tensor | None = None):
        self.images, self.labels, self.index = images, labels.long(), index

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i if self.index is None else self.index[i]], self.labels[i]  # (C, H, W) uint8, ()

    def to(self, device: torch.device | str) -> "ImageBatches":
        """Move the whole data set to ``device`` once (uint8: 4x less memory and bandwidth than float)."""
        if self.index is not None:  # only this set's rows
            self.images, self.index = self.images[self.index], None
        self.images, self.labels = self.images.to(device), self.labels.to(device)
        return self

    def first(self, count: int) -> torch.Tensor:
        """The first ``count`` images of the set, (count, C, H, W) uint8."""
        return self.images[:count] if self.index is None else self.images[self.index[:count]]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices, device=self.labels.device)
        rows = index if self.index is None else self.index[index]
        return self.images[rows], self.labels[index]  # (B, C, H, W) uint8, (B,) int64


def keep_batch(batch):
    """collate_fn for ImageBatches: ``__getitems__`` already returns a stacked batch."""
    return batch


class EpochShuffle(DistributedSampler):
    """This process's share of a random order of range(size) that depends only on (seed, epoch); stateful.

    With ``replicas`` processes (DDP), global step t covers order[t*B*R : (t+1)*B*R] and process ``rank``
    takes the rank-th block of B = ``batch_size`` of it: together the processes see exactly the batches one
    process with batch B*R sees, each image once per epoch (the last, partial step is split evenly; a size
    not divisible by R is padded by repeating the first images). With R = 1 this is plain ``randperm``.
    A DistributedSampler subclass, so Lightning uses it as is and calls ``set_epoch`` every epoch. With
    ``weights`` the epoch is ``size`` draws with replacement instead (the same sharding, resume and length).

    ``state_dict()`` says how far into the epoch it has handed out indices; ``load_state_dict()`` makes the
    next iteration of that epoch start there. The DataLoader pulls indices batch by batch (no worker
    processes) and Lightning fetches no batch ahead of a sized loader, so at any checkpoint the count equals
    the batches trained on. Every process takes the same number of indices per step, so rank 0's state is
    every rank's.
    """

    def __init__(
        self,
        size: int,
        seed: int,
        batch_size: int = 1,
        replicas: int = 1,
        rank: int = 0,
        weights: torch.Tensor | None = None,  # (size,): draw the epoch's ``size`` indices with replacement,
        # each with probability proportional to its weight (class-balanced sampling), instead of a permutation
    ):
        super().__init__(range(size), num_replicas=replicas, rank=rank, shuffle=True, seed=seed)
        self.size, self.batch_size, self.weights = size, batch_size, weights
        self.done = 0  # indices handed out in the current epoch
        self._resume: tuple[int, int] | None = None  # (epoch, indices already done) from a checkpoint

    def __len__(self) -> int:
        return -(-self.size // self.num_replicas)  # ceil: the padded share

    def indices(self) -> torch.Tensor:
        """All of this process's indices for the current epoch, in order. (len(self),) int64."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        if self.weights is None:
            order = torch.randperm(self.size, generator=generator)
        else:
            order = torch.multinomial(self.weights, self.size, replacement=True, generator=generator)
        replicas, step = self.num_replicas, self.batch_size * self.num_replicas
        order = torch.cat([order, order[: len(self) * replicas - self.size]])  # pad to a multiple of R
        full = len(order) // step * step
        head = order[:full].view(-1, replicas, self.batch_size)[:, self.rank]  # (steps, B)
        tail = order[full:].view(replicas, -1)[self.rank]  # (rest / R,)
        return torch.cat([head.reshape(-1), tail])

    def __iter__(self):
        mine = self.indices().tolist()
        self.done = 0
        if self._resume is not None:
            epoch, done = self._resume
            self._resume = None
            if epoch == self.epoch:
                self.done = done
        for index in mine[self.done :]:
            self.done += 1
            yield index

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "done": self.done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = (int(state["epoch"]), int(state["done"]))
