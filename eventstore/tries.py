"""The tries under eventstore.persistent, as functions on immutable nodes: a 32-way vector trie
(Clojure's PersistentVector) and a hash array mapped trie (Bagwell's HAMT). An update copies
one path of at most log32 n nodes and shares every other node with the trie it came from."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

BITS = 5
WIDTH = 1 << BITS
MASK = WIDTH - 1
MISSING: Any = object()

# A vector trie is a tuple of children down to leaves, tuples of WIDTH items; `shift` is the
# bit offset of the root's level (BITS for a root whose children are leaves).


def vector_leaf(root: tuple[Any, ...], shift: int, i: int) -> tuple[Any, ...]:
    """The leaf holding index i (below the tail)."""
    node = root
    for level in range(shift, 0, -BITS):
        node = node[(i >> level) & MASK]
    return node


def vector_push(
    root: tuple[Any, ...], shift: int, size: int, leaf: tuple[Any, ...]
) -> tuple[tuple[Any, ...], int]:
    """The trie of `size` items (the last WIDTH of them in `leaf`, a full tail) holding the
    leaf too, and its shift: a full trie grows a level."""
    if (size >> BITS) > (1 << shift):
        return (root, _path(shift, leaf)), shift + BITS
    return _push(root, shift, size, leaf), shift


def _push(node: tuple[Any, ...], level: int, size: int, leaf: tuple[Any, ...]) -> tuple[Any, ...]:
    sub = ((size - 1) >> level) & MASK
    if level == BITS:
        child = leaf
    elif sub < len(node):
        child = _push(node[sub], level - BITS, size, leaf)
    else:
        child = _path(level - BITS, leaf)
    return (*node[:sub], child, *node[sub + 1 :])


def _path(level: int, leaf: tuple[Any, ...]) -> tuple[Any, ...]:
    """A branch of single children from `level` down to the leaf."""
    return leaf if level == 0 else (_path(level - BITS, leaf),)


def vector_set(node: tuple[Any, ...], level: int, i: int, item: Any) -> tuple[Any, ...]:
    """The trie with index i (below the tail) replaced."""
    sub = (i >> level) & MASK
    child = item if level == 0 else vector_set(node[sub], level - BITS, i, item)
    return (*node[:sub], child, *node[sub + 1 :])


class Node:
    """A branch of a hash trie: a bitmap of the occupied slots, and their entries in order.
    An entry is a branch, a leaf `(hash, key, value)`, or a `Collision`."""

    __slots__ = ("bitmap", "entries")

    def __init__(self, bitmap: int, entries: tuple[Any, ...]) -> None:
        self.bitmap = bitmap
        self.entries = entries


EMPTY = Node(0, ())


class Collision:
    """Leaves whose keys have the same full hash."""

    __slots__ = ("hash", "leaves")

    def __init__(self, hash_: int, leaves: tuple[tuple[int, Any, Any], ...]) -> None:
        self.hash = hash_
        self.leaves = leaves


def _hash(key: object) -> int:
    return hash(key) & 0xFFFF_FFFF_FFFF_FFFF


def hash_find(root: Node, key: object) -> Any:
    """The value under key, or MISSING."""
    h = _hash(key)
    node, shift = root, 0
    while True:
        bit = 1 << ((h >> shift) & MASK)
        if not node.bitmap & bit:
            return MISSING
        entry = node.entries[(node.bitmap & (bit - 1)).bit_count()]
        if type(entry) is Node:
            node, shift = entry, shift + BITS
            continue
        for leaf_hash, leaf_key, value in entry.leaves if type(entry) is Collision else (entry,):
            if leaf_hash == h and leaf_key == key:
                return value
        return MISSING


def hash_insert(root: Node, key: object, value: Any) -> tuple[Node, bool]:
    """The trie with key set to value, and whether the key is new."""
    return _insert(root, _hash(key), 0, key, value)


def _insert(node: Node, h: int, shift: int, key: object, value: Any) -> tuple[Node, bool]:
    bit = 1 << ((h >> shift) & MASK)
    i = (node.bitmap & (bit - 1)).bit_count()
    leaf = (h, key, value)
    if not node.bitmap & bit:
        return Node(node.bitmap | bit, (*node.entries[:i], leaf, *node.entries[i:])), True
    entry = node.entries[i]
    child: Any
    added = True
    if type(entry) is Node:
        child, added = _insert(entry, h, shift + BITS, key, value)
    elif type(entry) is Collision:
        if entry.hash == h:
            others = tuple(x for x in entry.leaves if x[1] != key)
            added = len(others) == len(entry.leaves)
            child = Collision(h, (*others, leaf))
        else:
            child = _pair(entry, entry.hash, leaf, h, shift + BITS)
    elif entry[1] == key:
        child, added = leaf, False
    elif entry[0] == h:
        child = Collision(h, (entry, leaf))
    else:
        child = _pair(entry, entry[0], leaf, h, shift + BITS)
    return Node(node.bitmap, (*node.entries[:i], child, *node.entries[i + 1 :])), added


def _pair(a: Any, a_hash: int, b: Any, b_hash: int, shift: int) -> Node:
    """A branch holding two entries of different hashes, as deep as their hashes agree."""
    ia, ib = (a_hash >> shift) & MASK, (b_hash >> shift) & MASK
    if ia == ib:
        return Node(1 << ia, (_pair(a, a_hash, b, b_hash, shift + BITS),))
    return Node((1 << ia) | (1 << ib), (a, b) if ia < ib else (b, a))


def hash_leaves(node: Node) -> Iterator[tuple[int, Any, Any]]:
    """Every leaf `(hash, key, value)` of the trie."""
    for entry in node.entries:
        if type(entry) is Node:
            yield from hash_leaves(entry)
        elif type(entry) is Collision:
            yield from entry.leaves
        else:
            yield entry


# A set trie holds its keys in frozenset buckets of up to BUCKET keys (C-speed to copy and
# search), under branches like a hash trie's; a bucket that outgrows that bursts into a
# branch by the next bits of its keys' hashes. A small set is one bucket, as a frozenset was.
BUCKET = 64
EMPTY_SET: frozenset[Any] = frozenset()


def set_has(node: Node | frozenset[Any], key: object) -> bool:
    """Whether the set trie holds key."""
    h, shift = _hash(key), 0
    while isinstance(node, Node):
        bit = 1 << ((h >> shift) & MASK)
        if not node.bitmap & bit:
            return False
        node = node.entries[(node.bitmap & (bit - 1)).bit_count()]
        shift += BITS
    return key in node


def set_add(node: Node | frozenset[Any], key: object) -> Node | frozenset[Any]:
    """The set trie with key added (the same trie if it was there)."""
    return _set_add(node, _hash(key), 0, key)


def _set_add(node: Node | frozenset[Any], h: int, shift: int, key: object) -> Node | frozenset[Any]:
    if not isinstance(node, Node):
        if key in node:
            return node
        if len(node) < BUCKET or shift >= 64:  # past the hash's bits, a bucket only grows
            return node | {key}
        return _burst((*node, key), shift)
    bit = 1 << ((h >> shift) & MASK)
    i = (node.bitmap & (bit - 1)).bit_count()
    if not node.bitmap & bit:
        return Node(node.bitmap | bit, (*node.entries[:i], frozenset((key,)), *node.entries[i:]))
    child = _set_add(node.entries[i], h, shift + BITS, key)
    if child is node.entries[i]:
        return node
    return Node(node.bitmap, (*node.entries[:i], child, *node.entries[i + 1 :]))


def _burst(keys: tuple[object, ...], shift: int) -> Node | frozenset[Any]:
    """A branch sorting the keys into buckets by their hashes' bits at `shift`."""
    slots: dict[int, list[object]] = {}
    for key in keys:
        slots.setdefault((_hash(key) >> shift) & MASK, []).append(key)
    entries = []
    for slot in sorted(slots):
        bucket = slots[slot]
        fits = len(bucket) <= BUCKET or shift + BITS >= 64
        entries.append(frozenset(bucket) if fits else _burst(tuple(bucket), shift + BITS))
    return Node(sum(1 << slot for slot in slots), tuple(entries))


def set_keys(node: Node | frozenset[Any]) -> Iterator[Any]:
    """Every key of the set trie."""
    if isinstance(node, Node):
        for entry in node.entries:
            yield from set_keys(entry)
    else:
        yield from node
