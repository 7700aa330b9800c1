"""The persistent collections behave as the list, dict and set they stand for, across thousands
of items and from any older version, which never changes."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict

from eventstore.persistent import HashMap, HashSet, Keyed, Vector


class Key:
    """A key whose hash is chosen: many keys share one, or their low bits, to force collisions."""

    def __init__(self, name: str, hash_: int) -> None:
        self.name, self.hash_ = name, hash_

    def __hash__(self) -> int:
        return self.hash_

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Key) and other.name == self.name

    def __repr__(self) -> str:
        return f"Key({self.name!r}, {self.hash_})"


# Each op names a version to start from (an index into the versions made so far, so older
# versions are branched from too) and what to do there.
vector_ops = st.lists(
    st.tuples(st.integers(0, 10**6), st.sampled_from(["append", "set"]), st.integers(0, 10**6)),
    max_size=300,
)


@settings(max_examples=60, deadline=None)
@given(vector_ops)
def test_a_vector_is_the_list_it_stands_for_from_any_version(ops: list[tuple[int, str, int]]) -> None:
    versions: list[tuple[Vector[int], list[int]]] = [(Vector(), [])]
    for pick, op, n in ops:
        vector, model = versions[pick % len(versions)]
        if op == "set" and model:
            i = n % len(model) - (len(model) if n % 2 else 0)  # negative indexes too
            j = i % len(model)
            vector, model = vector.set(i, -n), [*model[:j], -n, *model[j + 1 :]]
        else:
            vector, model = vector.append(n), [*model, n]
        versions.append((vector, model))
    for vector, model in versions:
        assert list(vector) == model and len(vector) == len(model)
        assert [vector[i] for i in range(len(model))] == model
        assert list(reversed(vector)) == model[::-1] and vector[1:3] == tuple(model[1:3])
        assert vector == tuple(model) and vector == Vector.of(model)


@pytest.mark.parametrize("size", [0, 1, 31, 32, 33, 64, 1056, 1057, 33 * 1024 + 32, 33 * 1024 + 33])
def test_a_vector_holds_items_across_trie_levels(size: int) -> None:
    vector = Vector.of(range(size))
    assert list(vector) == list(range(size))
    assert all(vector[i] == i for i in range(0, size, 97))
    changed = vector.set(size // 2, -1) if size else vector
    assert list(changed) == [-1 if size and i == size // 2 else i for i in range(size)]
    assert list(vector) == list(range(size))  # the original is as it was
    with pytest.raises(IndexError):
        vector[size]


keys = st.builds(
    Key,
    st.sampled_from([f"k{i}" for i in range(60)]),
    st.one_of(st.integers(0, 3), st.integers(-(2**63), 2**63 - 1), st.integers(0, 31).map(lambda b: b << 60)),
)
map_ops = st.lists(st.tuples(st.integers(0, 10**6), keys, st.integers()), max_size=200)


@settings(max_examples=100, deadline=None)
@given(map_ops)
def test_a_hash_map_is_the_dict_it_stands_for_even_when_hashes_collide(
    ops: list[tuple[int, Key, int]],
) -> None:
    # A name always has the same hash within a run, as Python's own keys do.
    hashes: dict[str, int] = {}
    versions: list[tuple[HashMap[Key, int], dict[Key, int]]] = [(HashMap(), {})]
    for pick, key, value in ops:
        key.hash_ = hashes.setdefault(key.name, key.hash_)
        mapping, model = versions[pick % len(versions)]
        versions.append((mapping.set(key, value), {**model, key: value}))
    for mapping, model in versions:
        assert dict(mapping) == model and len(mapping) == len(model)
        assert all(key in mapping and mapping[key] == value for key, value in model.items())
        assert Key("absent", 0) not in mapping and mapping.get(Key("absent", 1)) is None


def colliding(n: int) -> Key:
    """Key n: a third share one hash, a third agree on their hashes' low 60 bits, a third not."""
    name = f"k{n}"
    return Key(name, [7, (n % 5) << 60 | 7, hash(name)][n % 3])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 299)), max_size=400))
def test_a_hash_set_is_the_set_it_stands_for_even_when_hashes_collide(ops: list[tuple[int, int]]) -> None:
    versions: list[tuple[HashSet[Key], set[Key]]] = [(HashSet(), set())]
    for pick, n in ops:
        hashed, model = versions[pick % len(versions)]
        versions.append((hashed.add(colliding(n)), model | {colliding(n)}))
    for hashed, model in versions:
        assert set(hashed) == model and len(hashed) == len(model) and len(list(hashed)) == len(model)
        assert all(key in hashed for key in model) and Key("absent", 7) not in hashed


def test_buckets_of_one_hash_grow_past_their_size_and_the_others_burst() -> None:
    # 100 keys of one hash: a bucket past the hash's bits, that only grows.
    hashed: HashSet[Key] = HashSet(colliding(n) for n in range(300))
    assert set(hashed) == {colliding(n) for n in range(300)} and len(hashed) == 300
    assert hashed.add(colliding(3)) is hashed


def test_a_hash_set_of_many_ids_is_the_set_it_stands_for() -> None:
    ids = [f"event-{i}" for i in range(5000)]
    seen: HashSet[str] = HashSet()
    halfway = seen
    for i, key in enumerate(ids):
        seen = seen.add(key)
        if i == 2499:
            halfway = seen
    assert set(seen) == set(ids) and seen == HashSet(reversed(ids)) and len(seen.add(ids[0])) == 5000
    assert set(halfway) == set(ids[:2500]) and ids[2500] not in halfway and seen != halfway
    assert copy.deepcopy(seen) is seen


keyed_ops = st.lists(
    st.tuples(st.integers(0, 10**6), st.sampled_from("abcdefghij"), st.integers(), st.booleans()),
    max_size=100,
)


@settings(max_examples=100, deadline=None)
@given(keyed_ops)
def test_keyed_items_keep_their_first_place_and_the_open_ones_are_listed_apart(
    ops: list[tuple[int, str, int, bool]],
) -> None:
    versions: list[tuple[Keyed[int], dict[str, tuple[int, bool]]]] = [(Keyed(), {})]
    for pick, key, value, is_open in ops:
        keyed, model = versions[pick % len(versions)]
        versions.append((keyed.put(key, value, is_open), {**model, key: (value, is_open)}))
    for keyed, model in versions:
        assert list(keyed) == [value for value, _ in model.values()]  # dicts keep first places too
        assert keyed.open() == tuple(value for value, is_open in model.values() if is_open)
        assert all(keyed.get(key) == value for key, (value, _) in model.items())
        assert keyed.get("z") is None


class Holder(BaseModel):
    model_config = ConfigDict(frozen=True)

    items: Vector[int] = Vector()
    ids: HashSet[str] = HashSet()
    keyed: Keyed[int] = Keyed()


def test_a_model_dumps_them_as_the_tuples_and_frozensets_they_replace() -> None:
    holder = Holder(items=Vector.of([1, 2]), ids=HashSet(["a"]), keyed=Keyed[int]().put("x", 3, True))
    assert holder.model_dump() == {"items": (1, 2), "ids": frozenset({"a"}), "keyed": (3,)}
    assert holder.model_dump(mode="json") == {"items": [1, 2], "ids": ["a"], "keyed": [3]}
    assert Holder.model_validate({"items": [4], "ids": ["b"]}) == Holder(
        items=Vector.of([4]), ids=HashSet(["b"])
    )
    assert Holder() == Holder() and Holder().items is Holder().items
