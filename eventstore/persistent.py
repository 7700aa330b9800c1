"""Persistent collections for the pure core: frozen values whose updates share structure.

A session's state grows with every event; with tuples and frozensets each event copied all
of it. These return a new value in O(log32 n) and never change the one they came from.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence, Set
from typing import Any, TypeVar, get_args, overload

from pydantic import GetCoreSchemaHandler
from pydantic_core import CoreSchema, core_schema

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_BITS = 5
_WIDTH = 1 << _BITS
_MASK = _WIDTH - 1
_MISSING: Any = object()


class _Frozen:
    """Immutable: a copy is the value itself."""

    __slots__ = ()

    def __copy__(self) -> Any:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return self


class Vector(_Frozen, Sequence[T]):
    """A sequence with amortized O(1) append and O(log32 n) index and set: full leaves of 32
    items in a 32-way trie, the last up to 32 items in a tail (Clojure's PersistentVector)."""

    __slots__ = ("_root", "_shift", "_size", "_tail")

    def __init__(self) -> None:
        self._size = 0
        self._shift = _BITS
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
        if i >= self._tail_offset():
            return self._tail
        node = self._root
        for level in range(self._shift, 0, -_BITS):
            node = node[(i >> level) & _MASK]
        return node

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
        return self._leaf(i)[i & _MASK]

    def __iter__(self) -> Iterator[T]:
        for start in range(0, self._tail_offset(), _WIDTH):
            yield from self._leaf(start)
        yield from self._tail

    def __reversed__(self) -> Iterator[T]:
        return reversed(tuple(self))

    def append(self, item: T) -> Vector[T]:
        """This vector with one more item at the end."""
        if len(self._tail) < _WIDTH:
            return self._with(self._size + 1, self._shift, self._root, (*self._tail, item))
        # The tail is full: it becomes a leaf of the trie, which grows a level when full.
        shift, root = self._shift, self._root
        if (self._size >> _BITS) > (1 << shift):
            root, shift = (root, _path(shift, self._tail)), shift + _BITS
        else:
            root = self._push_tail(shift, root)
        return self._with(self._size + 1, shift, root, (item,))

    def _push_tail(self, level: int, node: tuple[Any, ...]) -> tuple[Any, ...]:
        sub = ((self._size - 1) >> level) & _MASK
        if level == _BITS:
            child: tuple[Any, ...] = self._tail
        elif sub < len(node):
            child = self._push_tail(level - _BITS, node[sub])
        else:
            child = _path(level - _BITS, self._tail)
        return (*node[:sub], child, *node[sub + 1 :])

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
        return self._with(self._size, self._shift, _assoc(self._shift, self._root, i, item), self._tail)

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


def _path(level: int, leaf: tuple[Any, ...]) -> tuple[Any, ...]:
    """A branch of single children from `level` down to the leaf."""
    return leaf if level == 0 else (_path(level - _BITS, leaf),)


def _assoc(level: int, node: tuple[Any, ...], i: int, item: Any) -> tuple[Any, ...]:
    sub = (i >> level) & _MASK
    child = item if level == 0 else _assoc(level - _BITS, node[sub], i, item)
    return (*node[:sub], child, *node[sub + 1 :])


class _Node:
    """A branch of the hash trie: a bitmap of the occupied slots, and their entries in order.
    An entry is a branch, a leaf `(hash, key, value)`, or a `_Collision`."""

    __slots__ = ("bitmap", "entries")

    def __init__(self, bitmap: int, entries: tuple[Any, ...]) -> None:
        self.bitmap = bitmap
        self.entries = entries


class _Collision:
    """Leaves whose keys have the same full hash."""

    __slots__ = ("hash", "leaves")

    def __init__(self, hash_: int, leaves: tuple[tuple[int, Any, Any], ...]) -> None:
        self.hash = hash_
        self.leaves = leaves


def _hash(key: Hashable) -> int:
    return hash(key) & 0xFFFF_FFFF_FFFF_FFFF


def _pair(a: Any, a_hash: int, b: Any, b_hash: int, shift: int) -> _Node:
    """A branch holding two entries of different hashes, as deep as their hashes agree."""
    ia, ib = (a_hash >> shift) & _MASK, (b_hash >> shift) & _MASK
    if ia == ib:
        return _Node(1 << ia, (_pair(a, a_hash, b, b_hash, shift + _BITS),))
    return _Node((1 << ia) | (1 << ib), (a, b) if ia < ib else (b, a))


def _insert(node: _Node, h: int, shift: int, key: Any, value: Any) -> tuple[_Node, bool]:
    """The branch with key set to value, and whether the key is new."""
    bit = 1 << ((h >> shift) & _MASK)
    i = (node.bitmap & (bit - 1)).bit_count()
    leaf = (h, key, value)
    if not node.bitmap & bit:
        return _Node(node.bitmap | bit, (*node.entries[:i], leaf, *node.entries[i:])), True
    entry = node.entries[i]
    child: Any
    added = True
    if type(entry) is _Node:
        child, added = _insert(entry, h, shift + _BITS, key, value)
    elif type(entry) is _Collision:
        if entry.hash == h:
            others = tuple(x for x in entry.leaves if x[1] != key)
            added = len(others) == len(entry.leaves)
            child = _Collision(h, (*others, leaf))
        else:
            child = _pair(entry, entry.hash, leaf, h, shift + _BITS)
    elif entry[1] == key:
        child, added = leaf, False
    elif entry[0] == h:
        child = _Collision(h, (entry, leaf))
    else:
        child = _pair(entry, entry[0], leaf, h, shift + _BITS)
    return _Node(node.bitmap, (*node.entries[:i], child, *node.entries[i + 1 :])), added


def _leaves(node: _Node) -> Iterator[tuple[int, Any, Any]]:
    for entry in node.entries:
        if type(entry) is _Node:
            yield from _leaves(entry)
        elif type(entry) is _Collision:
            yield from entry.leaves
        else:
            yield entry


class HashMap(_Frozen, Mapping[K, V]):
    """A mapping with O(log32 n) lookup and set: a hash array mapped trie (Bagwell's HAMT)."""

    __slots__ = ("_root", "_size")

    def __init__(self) -> None:
        self._root = _Node(0, ())
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def _lookup(self, key: object) -> Any:
        """The value under key, or _MISSING."""
        h = _hash(key)
        node, shift = self._root, 0
        while True:
            bit = 1 << ((h >> shift) & _MASK)
            if not node.bitmap & bit:
                return _MISSING
            entry = node.entries[(node.bitmap & (bit - 1)).bit_count()]
            if type(entry) is _Node:
                node, shift = entry, shift + _BITS
                continue
            for leaf_hash, leaf_key, value in entry.leaves if type(entry) is _Collision else (entry,):
                if leaf_hash == h and leaf_key == key:
                    return value
            return _MISSING

    def __getitem__(self, key: K) -> V:
        value = self._lookup(key)
        if value is _MISSING:
            raise KeyError(key)
        return value  # type: ignore[no-any-return]

    def get(self, key: K, default: Any = None) -> Any:
        value = self._lookup(key)
        return default if value is _MISSING else value

    def __contains__(self, key: object) -> bool:
        return self._lookup(key) is not _MISSING

    def __iter__(self) -> Iterator[K]:
        return (key for _, key, _ in _leaves(self._root))

    def set(self, key: K, value: V) -> HashMap[K, V]:
        """This mapping with key set to value."""
        root, added = _insert(self._root, _hash(key), 0, key, value)
        out: HashMap[K, V] = HashMap.__new__(HashMap)
        out._root, out._size = root, self._size + added
        return out

    def __repr__(self) -> str:
        return f"HashMap({dict(self)!r})"


class HashSet(_Frozen, Set[K]):
    """A set with O(log32 n) membership and add, on a HashMap."""

    __slots__ = ("_map",)

    def __init__(self, items: Iterable[K] = ()) -> None:
        self._map: HashMap[K, None] = HashMap()
        for item in items:
            self._map = self._map.set(item, None)

    def __len__(self) -> int:
        return len(self._map)

    def __contains__(self, item: object) -> bool:
        return item in self._map

    def __iter__(self) -> Iterator[K]:
        return iter(self._map)

    def add(self, item: K) -> HashSet[K]:
        """This set with one more item."""
        out: HashSet[K] = HashSet.__new__(HashSet)
        out._map = self._map.set(item, None)
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
