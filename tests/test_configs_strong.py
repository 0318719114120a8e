"""configs/strong.yaml and configs/gpu.yaml (bf16, torch.compile on a GPU) through every command users run on
them: tests/test_configs.py's check, in a file of its own so that `make test` runs it beside the other recipes
(pytest-xdist's loadfile gives each file to one worker)."""

import pytest

from test_configs import GROUPS, through_every_command


@pytest.mark.slow
@pytest.mark.parametrize("name", GROUPS["test_configs_strong.py"])
def test_every_config_through_fit_interrupt_resume_evaluate_report_export(workspace, name):
    through_every_command(workspace, name)
