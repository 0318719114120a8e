"""configs/strong.yaml at toy size: the VGG network trains (well above chance) and repeats exactly with its seed."""

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import same_weights, weights

TINY = (
    "fashion-mnist fit --config configs/strong.yaml --model.network.init_args.width=8 --trainer.max_epochs=1 "
    "--trainer.limit_train_batches=40 --trainer.limit_val_batches=2"
)


@pytest.mark.slow
def test_strong_config_trains_and_repeats_exactly(workspace):
    for _ in range(2):
        workspace.run(TINY)
    first, second = workspace.runs()
    events = EventAccumulator(str(first), size_guidance={"scalars": 0})
    events.Reload()
    assert events.Scalars("val/acc")[-1].value > 0.5  # chance is 0.1; 40 steps of a width-8 net
    assert same_weights(weights(first / "checkpoints/last.ckpt"), weights(second / "checkpoints/last.ckpt"))
