"""One registry type for everything surgeon looks up by name: layers (blocks a pass can build),
probes, surgery passes, corruptions and the named tables (AlterNet models, training recipes).

    PROBES = Registry("probe")

    @PROBES.register                  # under the object's ``name`` attribute, else its __name__
    class Variance(Probe): ...

    PROBES.register("var", Variance)  # or a name and an object (no decorator)
    PROBES.get("fourir")              # SurgeonError: unknown probe 'fourir'; did you mean 'fourier'? ...

A registry is a read-only mapping (``name in reg``, ``reg[name]``, ``list(reg)``, ``reg.items()``),
in registration order. Registering a taken name replaces the entry: a user's module may override a
built-in, as with timm's model registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar, overload

from surgeon.core.errors import SurgeonError, closest

__all__ = ["Registry", "UnknownName"]

T = TypeVar("T")
_MISSING: Any = object()


class UnknownName(SurgeonError, KeyError):
    """A name no registry entry has (a `SurgeonError`, and a `KeyError` for mapping code)."""

    __str__ = SurgeonError.__str__  # KeyError would quote the message


class Registry(Mapping[str, T], Generic[T]):
    """Named entries of one `kind` (a word for messages: ``"probe"``, ``"pass"``, ...)."""

    def __init__(self, kind: str, entries: Mapping[str, T] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, T] = dict(entries or {})

    @overload
    def register(self, name: str, obj: T) -> T: ...
    @overload
    def register(self, name: str) -> Callable[[T], T]: ...
    @overload
    def register(self, name: T) -> T: ...

    def register(self, name: Any = None, obj: Any = _MISSING) -> Any:
        """Add an entry: ``register(name, obj)``, or as a decorator ``@register("name")`` or
        ``@register`` (the name is the object's ``name`` attribute, else its ``__name__``)."""
        if obj is not _MISSING:
            return self._add(name, obj)
        if isinstance(name, str):
            return lambda o: self._add(name, o)
        if name is None:
            return lambda o: self._add(None, o)
        return self._add(None, name)

    def _add(self, name: str | None, obj: T) -> T:
        if name is None:
            name = getattr(obj, "name", None)
            if not isinstance(name, str):
                name = getattr(obj, "__name__", None)
        if not isinstance(name, str) or not name:
            raise SurgeonError(f"a {self.kind} needs a name to be registered under; pass one: register('name', obj)")
        self._entries[name] = obj
        return obj

    def get(self, name: str, default: Any = _MISSING) -> T:  # type: ignore[override]
        """The entry `name`; an unknown name raises `UnknownName` suggesting the closest name
        (or returns `default` when one is given, as ``dict.get`` does)."""
        if name in self._entries:
            return self._entries[name]
        if default is not _MISSING:
            return default
        near = closest(str(name), self.names(), n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise UnknownName(f"unknown {self.kind} {name!r}; {hint}choose from {', '.join(self.names()) or '(none)'}")

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._entries)

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
