"""autobayes.registry: names are case-insensitive, a miss lists the valid names and suggests the closest one, a
second object under a taken name is refused unless ``overwrite=True``, and ``register_subclass`` checks the base."""

from __future__ import annotations

import re

import pytest

from autobayes import BETA_SCHEDULES, KL_ESTIMATORS, POSTERIORS, PRIORS, UnknownNameError
from autobayes.models import ARCHITECTURES
from autobayes.registry import Registry, did_you_mean


class Base:
    name = ""


def _registry() -> Registry:
    reg: Registry = Registry("posterior")
    reg.register("Gaussian", "g")
    reg.register("radial", "r")
    return reg


def test_names_are_case_insensitive_and_listed_sorted():
    reg = _registry()
    assert reg.get("GAUSSIAN") == "g" and reg.get("gaussian") == "g"
    assert "Radial" in reg and "laplace" not in reg
    assert reg.names() == ["gaussian", "radial"] == list(reg)
    assert len(reg) == 2
    assert repr(reg) == "Registry('posterior', ['gaussian', 'radial'])"


def test_a_miss_lists_the_names_and_suggests_the_closest():
    reg = _registry()
    with pytest.raises(UnknownNameError) as err:
        reg.get("gausian")
    assert str(err.value) == "unknown posterior 'gausian'; choose one of ['gaussian', 'radial']. Did you mean 'gaussian'?"
    with pytest.raises(UnknownNameError) as err:
        reg.get("student")
    assert str(err.value) == "unknown posterior 'student'; choose one of ['gaussian', 'radial']."


def test_a_taken_name_is_refused_unless_overwrite():
    reg = _registry()
    with pytest.raises(ValueError, match=re.escape("a posterior named 'GAUSSIAN' is already registered ('g'); pass "
                                                   "overwrite=True to replace it")):
        reg.register("GAUSSIAN", "other")
    assert reg.get("gaussian") == "g"
    assert reg.register("gaussian", "g") == "g"  # the same object again: no error (a module imported twice)
    reg.register("gaussian", "other", overwrite=True)
    assert reg.get("gaussian") == "other"


def test_register_as_a_decorator_returns_the_object():
    reg: Registry = Registry("prior")

    @reg.register("flat")
    def flat():
        return 0

    assert reg.get("flat") is flat and flat() == 0


def test_register_subclass_checks_the_base_and_sets_the_name():
    reg: Registry = Registry("posterior")

    @reg.register_subclass("mine", Base)
    class Mine(Base):
        pass

    assert reg.get("mine") is Mine and Mine.name == "mine"
    with pytest.raises(TypeError, match="registering a posterior expects a Base subclass, got <class 'int'>"):
        reg.register_subclass("int", Base)(int)
    assert "int" not in reg


def test_did_you_mean():
    assert did_you_mean("n_mcc", ["n_mc", "kl"]) == " Did you mean 'n_mc'?"
    assert did_you_mean("xyz", ["n_mc", "kl"]) == ""
    assert did_you_mean(3, [3.0, "b"]) == " Did you mean '3.0'?"  # choices and name are compared as strings


@pytest.mark.parametrize(
    "registry, typo, suggestion",
    [(POSTERIORS, "gausian", "gaussian"), (PRIORS, "normall", "normal"), (KL_ESTIMATORS, "closd", "closed"),
     (BETA_SCHEDULES, "cyclic", "cyclical"), (ARCHITECTURES, "digits_cnm", "digits_cnn")],
)
def test_the_package_registries_suggest(registry, typo, suggestion):
    with pytest.raises(UnknownNameError, match=re.escape(f"Did you mean {suggestion!r}?")):
        registry.get(typo)
