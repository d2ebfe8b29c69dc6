from __future__ import annotations

import pytest

from backend.state_tree import copy_tree, get_path, set_path
from shared_api.errors import InvalidPathError


def test_set_creates_maps_and_get_reads() -> None:
    tree: dict[str, object] = {}
    set_path(tree, "mood.level", 3)
    set_path(tree, "mood.name", "calm")
    assert tree == {"mood": {"level": 3, "name": "calm"}}
    assert get_path(tree, "mood.level") == 3
    assert get_path(tree, "") is tree


def test_lists_are_indexed_and_appendable() -> None:
    tree: dict[str, object] = {"items": [1, 2]}
    set_path(tree, "items.0", 10)
    set_path(tree, "items.2", 30)
    assert tree["items"] == [10, 2, 30]
    assert get_path(tree, "items.-1") == 30
    with pytest.raises(InvalidPathError, match="out of range"):
        set_path(tree, "items.9", 1)
    with pytest.raises(InvalidPathError, match="integer"):
        get_path(tree, "items.x")


def test_failed_set_changes_nothing() -> None:
    tree: dict[str, object] = {"a": 5}
    with pytest.raises(InvalidPathError):
        set_path(tree, "a.b.c", 1)
    assert tree == {"a": 5}


def test_missing_key_names_it() -> None:
    with pytest.raises(InvalidPathError, match="'nope'"):
        get_path({"a": {}}, "a.nope")


def test_copy_tree_is_deep() -> None:
    tree = {"a": {"b": [1, {"c": 2}]}}
    twin = copy_tree(tree)
    twin["a"]["b"][1]["c"] = 99
    assert tree["a"]["b"][1]["c"] == 2


def test_depth_is_capped() -> None:
    from backend.state_tree import MAX_DEPTH, check_depth, depth
    from shared_api.errors import InvalidValueError

    assert depth(1) == 0 and depth({"a": [1, {"b": 2}]}) == 3
    nested: object = 1
    for _ in range(MAX_DEPTH):
        nested = {"x": nested}
    check_depth(nested)  # exactly at the limit
    with pytest.raises(InvalidValueError, match="at most"):
        check_depth(nested, "one.more")
    with pytest.raises(InvalidValueError):
        check_depth(1, ".".join(["a"] * (MAX_DEPTH + 1)))
