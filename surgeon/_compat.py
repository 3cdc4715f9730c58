"""Old names, for one release: every module path and top-level name that moved keeps working with a
DeprecationWarning that names its new home. The one owner of compatibility: nothing else in the
package keeps an old name.

surgeon 0.2 moved the flat modules of 0.1 into subpackages by concern (``surgeon.passes`` ->
``surgeon.surgery.passes``, ...); `install` puts a finder on ``sys.meta_path`` that answers the old
paths with a module forwarding every attribute to the new ones. Keywords that moved into an
options dataclass (``wd=`` into `surgeon.analysis.Objective`) are folded into it by one helper,
`options_from`, with the same warning.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from typing import Any

#: old module path -> the modules its names now live in (searched in order)
OLD_MODULES: dict[str, tuple[str, ...]] = {
    "surgeon.errors": ('surgeon.core.errors',),
    "surgeon.text": ('surgeon.core.text',),
    "surgeon.version": ('surgeon.core.version',),
    "surgeon.jsonio": ('surgeon.core.jsonio',),
    "surgeon.progress": ('surgeon.core.progress',),
    "surgeon.registry": ('surgeon.core.registry',),
    "surgeon.checks": ('surgeon.core.checks',),
    "surgeon.tables": ('surgeon.core.tables',),
    "surgeon.runfolder": ('surgeon.core.runfolder',),
    "surgeon.provenance": ('surgeon.model.provenance',),
    "surgeon.modelinfo": ('surgeon.model.sizes',),
    "surgeon.outputs": ('surgeon.model.outputs',),
    "surgeon.hf": ('surgeon.model.hf',),
    "surgeon.runtime": ('surgeon.model.runtime',),
    "surgeon.flops": ('surgeon.model.flops',),
    "surgeon.io": ('surgeon.model.weights', 'surgeon.core.files',),
    "surgeon.passes": ('surgeon.surgery.passes', 'surgeon.surgery.shapes', 'surgeon.surgery.alternet',),
    "surgeon.locality": ('surgeon.surgery.locality',),
    "surgeon.ensemble": ('surgeon.surgery.ensemble',),
    "surgeon.models": ('surgeon.surgery.loading',),
    "surgeon.executors": ('surgeon.parallel.executors',),
    "surgeon.distributed": ('surgeon.parallel.distributed',),
    "surgeon.corruptions": ('surgeon.data.corruptions',),
    "surgeon.metrics": ('surgeon.evaluation.metrics',),
    "surgeon.robustness": ('surgeon.evaluation.robustness', 'surgeon.evaluation.frequency_noise',
                           'surgeon.evaluation.pixels', 'surgeon.evaluation.cells',),
    "surgeon.adversarial": ('surgeon.evaluation.adversarial',),
    "surgeon.stability": ('surgeon.evaluation.stability',),
    "surgeon.latency": ('surgeon.evaluation.latency',),
    "surgeon.probes": ('surgeon.analysis.probes', 'surgeon.analysis.reductions', 'surgeon.analysis.maps',),
    "surgeon.curvature": ('surgeon.analysis.curvature', 'surgeon.analysis.hessian', 'surgeon.analysis.eigensolvers',),
    "surgeon.landscapes": ('surgeon.analysis.landscapes',),
    "surgeon.lesions": ('surgeon.analysis.lesions',),
    "surgeon.trajectory": ('surgeon.analysis.trajectory',),
    "surgeon.recipe_check": ('surgeon.training.recipe_check',),
    "surgeon.plots": ('surgeon.viz',),
    "surgeon.report": ('surgeon.comparison.report',),
    "surgeon.compare": ('surgeon.comparison.compare',),
    "surgeon.claims": ('surgeon.comparison.claims',),
}

#: old attribute paths that were renamed, not just moved: -> "new.module:attribute"
RENAMED: dict[str, str] = {
    "surgeon.passes.PRESETS": "surgeon.surgery.alternet:ALTERNETS",
    "surgeon.passes.apply_recipe": "surgeon.surgery.passes:apply_passes",
    "surgeon.passes.alter_resnet50": "surgeon.surgery.loading:alter_resnet50",
    "surgeon.io.load": "surgeon.surgery.loading:load",
    "surgeon.io.read_recipe": "surgeon.model.weights:_read_recipe",
        "surgeon.corruptions.PRESETS": "surgeon.data.corruptions:CONSTANTS",
    "surgeon.curvature.check_labels": "surgeon.model.runtime:check_batch_labels",
}


def _warn(old: str, new: str) -> None:
    from surgeon.core.errors import SurgeonDeprecationWarning

    warnings.warn(f"{old} moved to {new}; the old name goes in the next release", SurgeonDeprecationWarning,
                  stacklevel=3)


def moved(old: str, target: str) -> Any:
    """The value a moved top-level name now has (`target`: ``"module"`` or ``"module:attribute"``
    relative to the package), with a DeprecationWarning."""
    module, _, attr = target.partition(":")
    attr = attr or old.rpartition(".")[2]
    _warn(old, f"surgeon.{module}.{attr}")
    return getattr(importlib.import_module(f"surgeon.{module}"), attr)


class _OldModule(types.ModuleType):
    """A moved module's old path: attributes come from the modules that now hold them."""

    def __getattr__(self, name: str) -> Any:
        full = f"{self.__name__}.{name}"
        if full in RENAMED:
            module, _, attr = RENAMED[full].partition(":")
            _warn(full, f"{module}.{attr}")
            return getattr(importlib.import_module(module), attr)
        for target in OLD_MODULES[self.__name__]:
            module = importlib.import_module(target)
            if hasattr(module, name):
                return getattr(module, name)
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: Any = None, target: Any = None):
        if fullname not in OLD_MODULES:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec):
        return _OldModule(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        _warn(module.__name__, " and ".join(OLD_MODULES[module.__name__]))


class _Package(types.ModuleType):
    """The package's module type while old paths exist: importing an old module path binds it on the
    package, which must not hide the public function of the same name (0.1's module
    ``surgeon.ensemble`` and the function ``surgeon.ensemble``; ``latency``, ``trajectory``,
    ``compare`` likewise)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, _OldModule):
            return
        super().__setattr__(name, value)


def install(package: types.ModuleType) -> None:
    """Answer the old module paths (once per process) without letting them hide `package`'s names."""
    package.__class__ = _Package
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())


def options_from(cls: type, given: Any, old: dict[str, Any], *, function: str, keyword: str,
                 strict: bool = True, renamed: dict[str, str] | None = None) -> Any:
    """The options object (a dataclass `cls`) a function runs with, from its `keyword` argument
    `given` (None: ``cls()``) or, as in the previous release, from its fields passed one by one:
    those are popped out of `old` (the function's ``**kwargs``; `renamed` maps an old keyword to
    the field it became, e.g. ``{"steps": "max_iter"}``) and build ``cls(**fields)`` with one
    `SurgeonDeprecationWarning` naming the new form. `strict`: any other keyword left in `old` is
    the TypeError Python gives an unknown keyword. Both forms at once are refused."""
    from dataclasses import fields

    from surgeon.core.errors import SurgeonError

    renamed = renamed or {}
    names = [*(k for k in renamed), *(f.name for f in fields(cls) if f.name not in renamed.values())]
    passed = {k: old.pop(k) for k in names if k in old}
    if strict and old:
        raise TypeError(f"{function}() got an unexpected keyword argument {next(iter(old))!r}")
    if not passed:
        return cls() if given is None else given
    if given is not None:
        raise SurgeonError(f"{function}: give {keyword}= or {', '.join(f'{k}=' for k in passed)}, not both")
    values = {renamed.get(k, k): v for k, v in passed.items()}
    new = f"{keyword}={cls.__name__}({', '.join(f'{k}={v!r}' for k, v in values.items())})"
    _deprecated_keywords(function, passed, new)
    return cls(**values)


def moved_keywords(old: dict[str, Any], names: tuple[str, ...], *, function: str, new: str) -> dict[str, Any]:
    """The keywords `names` popped out of `old` (a function's ``**kwargs``), with one
    `SurgeonDeprecationWarning` naming `new`, the form that replaced them; {} when none was given."""
    passed = {k: old.pop(k) for k in names if k in old}
    if passed:
        _deprecated_keywords(function, passed, new)
    return passed


def _deprecated_keywords(function: str, passed: dict[str, Any], new: str) -> None:
    from surgeon.core.errors import SurgeonDeprecationWarning

    warnings.warn(f"{function}({', '.join(f'{k}=' for k in passed)}) is deprecated; pass {new} (the old keywords go "
                  "in the next release)", SurgeonDeprecationWarning, stacklevel=4)
