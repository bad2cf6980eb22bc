"""autobayes.checks: the number checks behind the configuration, training, schedules, losses, metrics and CLI.

Each returns the value in its plain Python type, and each refusal names the argument, the rule, the value given
and the hint."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from autobayes import BayesConfig, ConfigError, GaussianELBO, get_beta_schedule
from autobayes.checks import check_between, check_finite, check_int, check_nonnegative, check_positive
from autobayes.commands.common import key_values, positive
from autobayes.training.settings import TrainSettings


def test_accepted_values_come_back_as_int_or_float():
    assert check_int(np.int64(3), "n") == 3 and type(check_int(np.int64(3), "n")) is int
    assert check_int(0, "seed", 0) == 0
    for check in (check_finite, check_positive, check_nonnegative):
        value = check(np.float32(0.5), "x")
        assert value == 0.5 and type(value) is float
    assert check_finite(-2, "x") == -2.0 and check_nonnegative(0, "x") == 0.0
    assert check_between(1, "r", 0, 1, closed=(False, True)) == 1.0
    assert check_between(0, "r", 0, 1, closed=(True, False)) == 0.0


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: check_int(0, "epochs"), "epochs must be an integer >= 1, got 0"),
        (lambda: check_int(True, "epochs"), "epochs must be an integer >= 1, got True"),
        (lambda: check_int(2.0, "epochs"), "epochs must be an integer >= 1, got 2.0"),
        (lambda: check_int("3", "epochs"), "epochs must be an integer >= 1, got '3'"),
        (lambda: check_int(-1, "seed", 0), "seed must be an integer >= 0, got -1"),
        (lambda: check_int(0, "n_bins", hint="e.g. n_bins=15"), "n_bins must be an integer >= 1, got 0; e.g. n_bins=15"),
        (lambda: check_finite(math.inf, "prior_loc"), "prior_loc must be a finite number, got inf"),
        (lambda: check_finite(None, "prior_loc"), "prior_loc must be a finite number, got None"),
        (lambda: check_positive(0, "lr"), "lr must be a finite number > 0, got 0"),
        (lambda: check_positive(math.nan, "lr"), "lr must be a finite number > 0, got nan"),
        (lambda: check_positive(False, "lr"), "lr must be a finite number > 0, got False"),
        (lambda: check_nonnegative(-0.5, "beta"), "beta must be a finite number >= 0, got -0.5"),
        (lambda: check_between(1, "interval", 0, 1, hint="e.g. 0.95"), "interval must be a number in (0, 1), got 1; e.g. 0.95"),
        (lambda: check_between(math.nan, "ratio", 0, 1, closed=(False, True)), "ratio must be a number in (0, 1], got nan"),
        (lambda: check_between(0, "ratio", 0, 1, closed=(False, True)), "ratio must be a number in (0, 1], got 0"),
        (lambda: check_between("0.5", "p", 0, 1, closed=(True, True)), "p must be a number in [0, 1], got '0.5'"),
    ],
)
def test_refusals_name_the_argument_the_rule_and_the_value(call, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        call()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: BayesConfig(n_mc=0), "n_mc must be an integer >= 1, got 0; the number of Monte Carlo samples of the KL"),
        (lambda: BayesConfig(prior_scale=-1), "prior_scale must be a finite number > 0, got -1"),
        (lambda: BayesConfig(prior_loc=math.nan), "prior_loc must be a finite number, got nan"),
        (lambda: TrainSettings(epochs=0), "epochs must be an integer >= 1, got 0"),
        (lambda: TrainSettings(lr=-1.0), "lr must be a finite number > 0, got -1.0"),
        (lambda: get_beta_schedule("warmup", warmup_steps=-1), "beta schedule: warmup_steps must be an integer >= 0"),
        (lambda: get_beta_schedule("constant", value=-1.0), "beta schedule: value must be a finite number >= 0"),
        (lambda: get_beta_schedule("cyclical", total_steps=0), "CyclicalBeta: total_steps must be an integer >= 1, got 0; "
                                                              "e.g. total_steps=epochs"),
        (lambda: get_beta_schedule("none")(0, -1, 0, 1), "beta schedule: epoch must be an integer >= 0, got -1"),
        (lambda: GaussianELBO(num_data=0), "num_data must be an integer >= 1, got 0; the number of training examples"),
        (lambda: GaussianELBO(num_data=1, variance=0.0), "GaussianELBO: a fixed variance must be a finite number > 0"),
        (lambda: GaussianELBO(num_data=1, beta=-1), r"beta \(the KL weight\) must be a finite number >= 0, got -1"),
        (lambda: positive(0, "--n-samples"), "--n-samples must be an integer >= 1, got 0"),
    ],
)
def test_the_callers_messages(call, message):
    with pytest.raises(ConfigError, match=message):
        call()


def test_positive_lets_an_unset_option_pass():
    assert positive(None, "--image-size") is None
    assert positive(1, "--image-size") is None


def test_key_values_reads_json_and_keeps_bare_words():
    assert key_values(["width=32", "act=relu", "hidden=[8, 8]", "x="], "--model-arg") == {
        "width": 32, "act": "relu", "hidden": [8, 8], "x": ""}
    for bad in ("width", "=3"):
        with pytest.raises(ConfigError, match=f"--model-arg expects KEY=VALUE, got '{bad}'; e.g. --model-arg width=32"):
            key_values([bad], "--model-arg")
