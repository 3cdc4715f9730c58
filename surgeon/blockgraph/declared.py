"""Declared blocks: the user names the modules that are the blocks, for a model no rule understands.

    surgeon.graph(model, blocks=["features.0", "features.1", ...])        # module paths
    surgeon.graph(model, blocks=lambda path, module: isinstance(module, MyBlock))
    model.surgeon_blocks = ["features.0", ...]   # every analysis and command then uses them

Each declared module is one body block whose output is the module's output; the walk descends
only into modules that hold declared ones, and everything else is one layer per module, grouped
as usual (layers before the first block: the stem; from the first pooled vector on: the head;
runs between blocks: blocks of their own). Stages, kinds, selection and g.module follow from there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from surgeon.core.errors import SurgeonError
from surgeon.blockgraph.discovery import _Atom, _Discovery, _parent_of

#: what `graph(blocks=...)` and ``model.surgeon_blocks`` take
Declared = Sequence[str] | Callable[[str, nn.Module], bool]

ATTRIBUTE = "surgeon_blocks"


def declared_paths(model: nn.Module, blocks: Declared, called: set[str]) -> list[str]:
    """The declared module paths, checked: each a module of `model` that the forward calls, none
    inside another (a function's matches keep the outermost)."""
    if callable(blocks):
        found = [p for p, m in model.named_modules() if p and blocks(p, m)]
        paths = [p for p in found if not any(p.startswith(q + ".") for q in found)]
    elif isinstance(blocks, str):
        raise SurgeonError(f"blocks={blocks!r} is one string; give a list of module paths, e.g. blocks=[{blocks!r}]")
    else:
        paths = list(dict.fromkeys(blocks))
    if not paths:
        raise SurgeonError(f"no block declared; name module paths of the model, e.g. blocks={_examples(model)}")
    names = dict(model.named_modules())
    for p in paths:
        if p not in names or not p:
            raise SurgeonError(f"declared block {p!r} is not a module of {type(model).__name__}; "
                               f"module paths look like {_examples(model)}")
        if p not in called:
            raise SurgeonError(f"declared block {p!r} is never called by the forward; declare modules the "
                               "forward runs")
        outer = next((q for q in paths if p.startswith(q + ".")), None)
        if outer is not None:
            raise SurgeonError(f"declared block {p!r} lies inside declared block {outer!r}; declare one of them")
    return paths


def _examples(model: nn.Module) -> str:
    return str([n for n, _ in model.named_children()][:4])


class _DeclaredDiscovery(_Discovery):
    """The walk of `discovery._Discovery` where the declared modules are the only units."""

    def __init__(self, model: nn.Module, rec, paths: list[str]) -> None:
        super().__init__(model, rec)
        self.paths = set(paths)

    def _visit(self, path: str, mod: nn.Module, is_root: bool = False) -> list[_Atom]:
        if path in self.paths:
            return [_Atom("unit", [path], (path, "out"), _parent_of(path), in_container=True)]
        if not is_root and not any(p.startswith(path + ".") for p in self.paths):
            return [self._single("layer", path)]
        atoms = [a for k, c in self._children(path, mod) for a in self._visit(k, c)]
        if atoms:
            atoms[0].extra += self._direct_state(path, mod)
        return atoms


def declared_atoms(model: nn.Module, rec, blocks: Declared) -> list[_Atom]:
    """The atoms of `model` with the declared blocks as its units."""
    return _DeclaredDiscovery(model, rec, declared_paths(model, blocks, set(rec.calls))).run()
