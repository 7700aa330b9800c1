"""Persistent collections for the pure core: frozen values whose updates return a new value
in O(log32 n), sharing all the rest with the old one, which never changes."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence, Set
from typing import Any, TypeVar, get_args, overload

from pydantic import GetCoreSchemaHandler
from pydantic_core import CoreSchema, core_schema

from eventstore.tries import (
    BITS,
    EMPTY,
    EMPTY_SET,
    MASK,
    MISSING,
    WIDTH,
    hash_find,
    hash_insert,
    hash_leaves,
    set_add,
    set_has,
    set_keys,
    vector_leaf,
    vector_push,
    vector_set,
)

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Frozen:
    """Immutable: a copy is the value itself."""

    __slots__ = ()

    def __copy__(self) -> Any:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return self


class Vector(_Frozen, Sequence[T]):
    """A sequence with amortized O(1) append and O(log32 n) index and set: full leaves of 32
    items in a 32-way trie, the last up to 32 items in a tail."""

    __slots__ = ("_root", "_shift", "_size", "_tail")

    def __init__(self) -> None:
        self._size = 0
        self._shift = BITS
        self._root: tuple[Any, ...] = ()
        self._tail: tuple[T, ...] = ()

    @classmethod
    def of(cls, items: Iterable[T]) -> Vector[T]:
        """A vector of these items, in order."""
        out: Vector[T] = cls()
        for item in items:
            out = out.append(item)
        return out

    def _with(self, size: int, shift: int, root: tuple[Any, ...], tail: tuple[T, ...]) -> Vector[T]:
        out: Vector[T] = Vector.__new__(Vector)
        out._size, out._shift, out._root, out._tail = size, shift, root, tail
        return out

    def _tail_offset(self) -> int:
        return self._size - len(self._tail)

    def __len__(self) -> int:
        return self._size

    def _leaf(self, i: int) -> tuple[T, ...]:
        """The leaf (or the tail) holding index i."""
        return self._tail if i >= self._tail_offset() else vector_leaf(self._root, self._shift, i)

    @overload
    def __getitem__(self, index: int) -> T: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[T, ...]: ...
    def __getitem__(self, index: int | slice) -> T | tuple[T, ...]:
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(self._size)))
        i = index + self._size if index < 0 else index
        if not 0 <= i < self._size:
            raise IndexError("Vector index out of range")
        return self._leaf(i)[i & MASK]

    def __iter__(self) -> Iterator[T]:
        for start in range(0, self._tail_offset(), WIDTH):
            yield from self._leaf(start)
        yield from self._tail

    def __reversed__(self) -> Iterator[T]:
        return reversed(tuple(self))

    def append(self, item: T) -> Vector[T]:
        """This vector with one more item at the end."""
        if len(self._tail) < WIDTH:
            return self._with(self._size + 1, self._shift, self._root, (*self._tail, item))
        # The tail is full: it becomes a leaf of the trie.
        root, shift = vector_push(self._root, self._shift, self._size, self._tail)
        return self._with(self._size + 1, shift, root, (item,))

    def set(self, index: int, item: T) -> Vector[T]:
        """This vector with the item at `index` replaced."""
        i = index + self._size if index < 0 else index
        if not 0 <= i < self._size:
            raise IndexError("Vector index out of range")
        offset = self._tail_offset()
        if i >= offset:
            j = i - offset
            return self._with(
                self._size, self._shift, self._root, (*self._tail[:j], item, *self._tail[j + 1 :])
            )
        return self._with(self._size, self._shift, vector_set(self._root, self._shift, i, item), self._tail)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Vector):
            if self._size == other._size and self._root is other._root and self._tail == other._tail:
                return True
            return self._size == other._size and all(a == b for a, b in zip(self, other, strict=True))
        if isinstance(other, tuple):
            return tuple(self) == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"Vector({list(self)!r})"

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return _sequence_schema(cls, source, handler, cls.of)


class HashMap(_Frozen, Mapping[K, V]):
    """A mapping with O(log32 n) lookup and set, on a hash array mapped trie."""

    __slots__ = ("_root", "_size")

    def __init__(self) -> None:
        self._root = EMPTY
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, key: K) -> V:
        value = hash_find(self._root, key)
        if value is MISSING:
            raise KeyError(key)
        return value  # type: ignore[no-any-return]

    def get(self, key: K, default: Any = None) -> Any:
        value = hash_find(self._root, key)
        return default if value is MISSING else value

    def __contains__(self, key: object) -> bool:
        return hash_find(self._root, key) is not MISSING

    def __iter__(self) -> Iterator[K]:
        return (key for _, key, _ in hash_leaves(self._root))

    def set(self, key: K, value: V) -> HashMap[K, V]:
        """This mapping with key set to value."""
        root, added = hash_insert(self._root, key, value)
        out: HashMap[K, V] = HashMap.__new__(HashMap)
        out._root, out._size = root, self._size + added
        return out

    def __repr__(self) -> str:
        return f"HashMap({dict(self)!r})"


class HashSet(_Frozen, Set[K]):
    """A set with O(log32 n) membership and add; up to 64 items it is one frozenset."""

    __slots__ = ("_root", "_size")

    def __init__(self, items: Iterable[K] = ()) -> None:
        self._root: Any = EMPTY_SET
        self._size = 0
        for item in items:
            if not set_has(self._root, item):
                self._root, self._size = set_add(self._root, item), self._size + 1

    def __len__(self) -> int:
        return self._size

    def __contains__(self, item: object) -> bool:
        return set_has(self._root, item)

    def __iter__(self) -> Iterator[K]:
        return set_keys(self._root)

    def add(self, item: K) -> HashSet[K]:
        """This set with one more item (itself if the item was in it)."""
        root = set_add(self._root, item)
        if root is self._root:
            return self
        out: HashSet[K] = HashSet.__new__(HashSet)
        out._root, out._size = root, self._size + 1
        return out

    __hash__ = Set._hash

    def __repr__(self) -> str:
        return f"HashSet({set(self)!r})"

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return _sequence_schema(cls, source, handler, cls, dump=frozenset)


class Keyed(_Frozen, Sequence[T]):
    """Items in the order they were first put, found and replaced by a string key. The items
    put as open (a few: the unfinished turns of a session) are also listed apart, so finding
    them does not scan the rest."""

    __slots__ = ("_index", "_items", "_open")

    def __init__(self) -> None:
        self._items: Vector[T] = Vector()
        self._index: HashMap[str, int] = HashMap()
        self._open: tuple[int, ...] = ()

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> T: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[T, ...]: ...
    def __getitem__(self, index: int | slice) -> T | tuple[T, ...]:
        return self._items[index]

    def __iter__(self) -> Iterator[T]:
        return iter(self._items)

    def get(self, key: str) -> T | None:
        """The item put under this key, if any."""
        i = self._index.get(key)
        return None if i is None else self._items[i]

    def open(self) -> tuple[T, ...]:
        """The items whose latest put was open, in order."""
        return tuple(self._items[i] for i in self._open)

    def open_count(self) -> int:
        """How many items are open."""
        return len(self._open)

    def put(self, key: str, item: T, is_open: bool) -> Keyed[T]:
        """These items with `item` under `key`: in the place of the one it replaces, or last."""
        i = self._index.get(key)
        out: Keyed[T] = Keyed.__new__(Keyed)
        if i is None:
            i = len(self._items)
            out._items, out._index = self._items.append(item), self._index.set(key, i)
        else:
            out._items, out._index = self._items.set(i, item), self._index
        was_open = i in self._open
        if is_open and not was_open:
            opened = list(self._open)
            bisect.insort(opened, i)
            out._open = tuple(opened)
        elif was_open and not is_open:
            out._open = tuple(j for j in self._open if j != i)
        else:
            out._open = self._open
        return out

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Keyed):
            return self._open == other._open and self._items == other._items
        if isinstance(other, tuple):
            return self._items == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._items)

    def __repr__(self) -> str:
        return f"Keyed({list(self)!r})"

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        # Built by `put` only: an item's key and openness are the caller's to say.
        return _sequence_schema(cls, source, handler, None)


def _sequence_schema(
    cls: type,
    source: Any,
    handler: GetCoreSchemaHandler,
    build: Callable[[Any], Any] | None,
    dump: Callable[[Any], Any] = tuple,
) -> CoreSchema:
    """Validate an instance as is (or, with `build`, any list of valid items); dump as a tuple
    (or a frozenset) of the items' dumps, as the tuple or frozenset it replaces was."""
    args = get_args(source)
    items = handler.generate_schema(args[0]) if args else core_schema.any_schema()
    as_is = core_schema.is_instance_schema(cls)
    validate = (
        as_is
        if build is None
        else core_schema.union_schema(
            [as_is, core_schema.no_info_after_validator_function(build, core_schema.list_schema(items))]
        )
    )
    returned = (
        core_schema.frozenset_schema(items)
        if dump is frozenset
        else core_schema.tuple_schema([items], variadic_item_index=0)
    )
    return core_schema.json_or_python_schema(
        json_schema=validate,
        python_schema=validate,
        serialization=core_schema.plain_serializer_function_ser_schema(dump, return_schema=returned),
    )
