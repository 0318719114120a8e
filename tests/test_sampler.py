"""data/sampler.py: the seeded split, the (seed, epoch) shuffle, DDP shards, and the resumable position."""

import torch

from fashion_mnist_lightning.data.sampler import EpochShuffle, split_indices


def test_split_is_deterministic_and_changes_with_seed():
    a, b, c = (split_indices(60_000, 5_000, seed) for seed in (42, 42, 43))
    assert torch.equal(a[1], b[1]) and torch.equal(a[0], b[0])
    assert not torch.equal(a[1], c[1])


def test_shuffle_depends_only_on_seed_and_epoch():
    a, b = EpochShuffle(1000, seed=3), EpochShuffle(1000, seed=3)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first and sorted(a) == list(range(1000))
    a.set_epoch(0)
    assert list(a) == first


def batches(sampler: EpochShuffle, size: int) -> list[list[int]]:
    order = list(sampler)
    return [order[i : i + size] for i in range(0, len(order), size)]


def test_two_process_shards_make_up_the_one_process_batches():
    """DDP: at every step the two processes' batches together are the one-process batch of twice the size."""
    single = batches(EpochShuffle(1000, seed=3, batch_size=64), 64)
    ranks = [batches(EpochShuffle(1000, seed=3, batch_size=32, replicas=2, rank=r), 32) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(single)
    for step, whole in enumerate(single):
        assert sorted(ranks[0][step] + ranks[1][step]) == sorted(whole)
        assert not set(ranks[0][step]) & set(ranks[1][step])


def test_uneven_size_is_padded_so_every_process_gets_the_same_count():
    shards = [list(EpochShuffle(1001, seed=0, batch_size=10, replicas=2, rank=r)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 501 and set(shards[0]) | set(shards[1]) == set(range(1001))


def test_state_dict_is_the_position_and_a_loaded_one_resumes_there_in_that_epoch_only():
    sampler = EpochShuffle(100, seed=1, batch_size=10)
    sampler.set_epoch(2)
    full = list(sampler)
    iterator = iter(sampler)
    taken = [next(iterator) for _ in range(30)]  # three batches of ten
    assert taken == full[:30] and sampler.state_dict() == {"epoch": 2, "done": 30}
    resumed = EpochShuffle(100, seed=1, batch_size=10)
    resumed.set_epoch(2)
    resumed.load_state_dict(sampler.state_dict())
    assert list(resumed) == full[30:] and resumed.state_dict() == {"epoch": 2, "done": 100}
    assert list(resumed) == full  # once only
    resumed.load_state_dict({"epoch": 1, "done": 30})
    assert list(resumed) == full  # another epoch: nothing skipped


def test_balanced_draws_give_every_class_its_share_seeded_sharded_and_resumable():
    labels = torch.tensor([0] * 900 + [1] * 100)  # 9:1
    weights = (1 / torch.bincount(labels).double())[labels]
    sampler = EpochShuffle(1000, seed=5, batch_size=50, weights=weights)
    drawn = torch.tensor(list(sampler))
    assert len(drawn) == 1000 and 400 < int((labels[drawn] == 1).sum()) < 600  # the minority about half the time
    assert torch.equal(torch.tensor(list(EpochShuffle(1000, seed=5, batch_size=50, weights=weights))), drawn)
    single = batches(EpochShuffle(1000, seed=5, batch_size=100, weights=weights), 100)
    ranks = [
        batches(EpochShuffle(1000, seed=5, batch_size=50, replicas=2, rank=r, weights=weights), 50) for r in (0, 1)
    ]
    assert all(sorted(a + b) == sorted(whole) for a, b, whole in zip(*ranks, single))
    resumed = EpochShuffle(1000, seed=5, batch_size=50, weights=weights)
    resumed.load_state_dict({"epoch": 0, "done": 300})
    assert list(resumed) == drawn[300:].tolist()
