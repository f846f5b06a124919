"""Plain value classes for the quick commands: fields in ``__slots__``, equality, repr, a dict.

``typing.NamedTuple`` and dataclasses build each class by generating and compiling source
(a third to half a millisecond per class, a dozen of them on the way to ``workspace run``);
a subclass of :class:`Value` is an ordinary class, and says its fields once, in ``__slots__``
(docs/decisions/0001-stdlib-only-cli-fast-path.md).
"""

from __future__ import annotations

from typing import Any


class Value:
    """Equality, repr and :meth:`as_dict` over the fields a subclass lists in ``__slots__``.

    Values are meant to be read, not changed, once built (the local run record, which is
    filled in as its run ends, is the exception and says so).
    """

    __slots__: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The fields by name, in ``__slots__`` order (not recursive)."""
        return {name: getattr(self, name) for name in self.__slots__}

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    __hash__ = None  # type: ignore[assignment]  # equal by value, so not hashable by identity

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"
