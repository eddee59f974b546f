"""The ``tune`` config section and how its search space becomes Optuna suggestions."""

from __future__ import annotations

import optuna
import pytest

from recsys_lib.core.config import ConfigError, load_config
from recsys_lib.pipelines.tune import suggest

pytestmark = pytest.mark.unit


def test_a_space_maps_to_optuna_suggestions_of_the_right_kind():
    cfg = load_config(overrides=["tune.space.temperature.low=0.05", "tune.space.temperature.high=1.0",
                                 "tune.space.temperature.log=true", "tune.space.embedding_dim.choices=[16, 64]",
                                 "tune.space.sampling_window.low=1000", "tune.space.sampling_window.high=9000",
                                 "tune.space.sampling_window.integer=true"])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(5):
        values = suggest(study.ask(), cfg.tune.space)
        assert 0.05 <= values["temperature"] <= 1.0
        assert values["embedding_dim"] in (16, 64)
        assert isinstance(values["sampling_window"], int) and 1000 <= values["sampling_window"] <= 9000
        # every proposal is a valid train config
        load_config(overrides=[f"train.{k}={v}" for k, v in values.items()])


@pytest.mark.parametrize(("override", "message"), [
    ("tune.space.epochz.choices=[1]", "cannot tune ['epochz']"),
    ("tune.space.temperature.high=0.5", "'low' < 'high'"),
    ("tune.space.learning_rate.choices=[]", "non-empty 'choices'"),
])
def test_a_bad_space_names_the_key_and_the_problem(override, message):
    base = [] if "temperature" not in override else ["tune.space.temperature.low=0.9"]
    with pytest.raises(ConfigError, match="tune.space") as err:
        load_config(overrides=[*base, override])
    assert message in str(err.value)
