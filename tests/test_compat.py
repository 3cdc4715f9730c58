"""Old names keep working for one release (`surgeon._compat`): every moved module path, every name
that left the top level and every renamed attribute warns with `SurgeonDeprecationWarning` and
gives the same object as its new home. The suite turns that warning into an error
(pyproject.toml), so no other test or example uses an old name by accident."""

from __future__ import annotations

import importlib
import sys

import pytest

import surgeon
from surgeon import _compat
from surgeon.core.errors import SurgeonDeprecationWarning


@pytest.mark.parametrize("old", sorted(_compat.OLD_MODULES))
def test_an_old_module_path_warns_and_forwards(old):
    sys.modules.pop(old, None)
    with pytest.warns(SurgeonDeprecationWarning, match=old.replace(".", r"\.")):
        module = importlib.import_module(old)
    new = importlib.import_module(_compat.OLD_MODULES[old][0])
    public = [n for n in getattr(new, "__all__", dir(new)) if not n.startswith("_") or n == "__version__"]
    assert public, old
    for name in public:
        assert getattr(module, name) is getattr(new, name), f"{old}.{name}"


@pytest.mark.parametrize("name", sorted(surgeon._MOVED))
def test_a_name_that_left_the_top_level_warns_and_is_the_same_object(name):
    module, _, attr = surgeon._MOVED[name].partition(":")
    with pytest.warns(SurgeonDeprecationWarning, match=f"surgeon.{name} moved to surgeon.{module}"):
        value = getattr(surgeon, name)
    assert value is getattr(importlib.import_module(f"surgeon.{module}"), attr or name)
    assert name not in surgeon.__all__


@pytest.mark.parametrize("old", sorted(_compat.RENAMED))
def test_a_renamed_attribute_warns_and_is_the_new_one(old):
    module, _, attr = old.rpartition(".")
    new_module, _, new_attr = _compat.RENAMED[old].partition(":")
    with pytest.warns(SurgeonDeprecationWarning):
        value = getattr(importlib.import_module(module), attr)
    assert value is getattr(importlib.import_module(new_module), new_attr)


def test_old_names_kept_by_their_packages_warn_too():
    with pytest.warns(SurgeonDeprecationWarning):
        assert surgeon.training.PRESETS is surgeon.training.recipe.RECIPES
    with pytest.warns(SurgeonDeprecationWarning):
        assert surgeon.search.SearchRecipe is surgeon.search.SearchSpec


def test_the_suite_turns_an_old_name_into_an_error():
    """The filter in pyproject.toml is on: an unmarked use of an old name fails the test using it."""
    with pytest.raises(SurgeonDeprecationWarning):
        surgeon.Fourier  # noqa: B018


def test_every_public_name_and_submodule_resolves_without_a_warning(recwarn):
    for name in surgeon.__all__:
        getattr(surgeon, name)
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)]


@pytest.mark.parametrize("name", sorted(n for n in surgeon.__all__ if f"surgeon.{n}" in _compat.OLD_MODULES))
def test_an_old_module_path_never_hides_the_public_function_of_its_name(name):
    sys.modules.pop(f"surgeon.{name}", None)
    with pytest.warns(SurgeonDeprecationWarning):
        importlib.import_module(f"surgeon.{name}")
    assert callable(getattr(surgeon, name)) and getattr(surgeon, name).__module__.startswith("surgeon.")
