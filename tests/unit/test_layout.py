"""Layouts as JSON reconstruction scripts: schema, lenient decoding, atomic 0600 files."""

from __future__ import annotations

import json
import os
import stat
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from shared_api.errors import ErrorCode, LayoutError
from shared_api.layout import (
    LAYOUT_VERSION,
    OPERATION_KINDS,
    CreateInspector,
    CreatePersonaMorph,
    CreatePlotMorph,
    Layout,
    SetWorld,
    decode_layout,
)
from ui.layout_io import (
    DEFAULT_LAYOUT,
    apply_layout,
    load_layout,
    load_startup_layout,
    save_layout,
)

PERSONAS = {"BRICK", "ROBIN", "BABS", "ALFRED"}


def sample_layout() -> Layout:
    return Layout(
        version=LAYOUT_VERSION,
        saved_at=1_752_000_000.125,
        operations=[
            SetWorld(zoom=1.5, background="#1e1e24"),
            CreatePersonaMorph(persona="BRICK", x=10, y=-20.5, w=380, h=300),
            CreateInspector(persona="BRICK", x=400, y=0, w=300, h=420),
            CreatePlotMorph(metrics=["tokens_per_s", "ttft_ms"], x=0.1, y=0.2, w=1e3, h=0.5),
        ],
    )


def write_json(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "layout.json"
    path.write_text(json.dumps(data))
    return path


def refused(path: Path) -> str:
    with pytest.raises(LayoutError) as info:
        load_layout(path)
    assert info.value.code is ErrorCode.LAYOUT_INVALID
    return info.value.message


def persona_op(persona: str = "BRICK", **overrides: Any) -> dict[str, Any]:
    return {"op": "create_persona_morph", "persona": persona, "x": 0, "y": 0, "w": 10, "h": 10} | (
        overrides
    )


# --- saving and loading ---------------------------------------------------------------------


def test_round_trip_is_equal(tmp_path: Path) -> None:
    path = tmp_path / "layout.json"
    save_layout(path, sample_layout())
    assert load_layout(path) == (sample_layout(), [])


def test_saved_file_is_readable_json_with_op_first(tmp_path: Path) -> None:
    path = tmp_path / "layout.json"
    save_layout(path, sample_layout())
    data = json.loads(path.read_text())
    assert data["version"] == LAYOUT_VERSION
    assert [next(iter(op)) for op in data["operations"]] == ["op"] * 4


def test_save_is_atomic_0600_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "layout.json"
    path.write_text("old")
    path.chmod(0o644)
    old_umask = os.umask(0)
    try:
        save_layout(path, sample_layout())
        save_layout(path, Layout())
    finally:
        os.umask(old_umask)
    assert sorted(os.listdir(tmp_path)) == ["layout.json"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_layout(path) == (Layout(), [])


def test_save_into_a_missing_folder_is_a_layout_error(tmp_path: Path) -> None:
    with pytest.raises(LayoutError, match="Check that the folder exists"):
        save_layout(tmp_path / "nope" / "layout.json", Layout())


# --- malformed files are refused, saying what is wrong --------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    message = refused(tmp_path / "absent.json")
    assert "no layout file" in message and "absent.json" in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "not valid JSON"),
        ("", "not valid JSON"),
        ("[" * 100_000, "nested too deeply"),
    ],
)
def test_not_json(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "layout.json"
    path.write_text(content)
    assert expected in refused(path)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "layout.json"
    path.write_bytes(b"\xff\xfe{}")
    assert "not UTF-8" in refused(path)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ([], "expected a JSON object"),
        ("layout", "got a string"),
        (None, "got null"),
        ({"operations": []}, "has no 'version'"),
        ({"version": 2, "operations": []}, "is version 2, written by a newer Entropic OS"),
        ({"version": 0, "operations": []}, "has version 0"),
        ({"version": "1", "operations": []}, "has version '1'"),
        ({"version": True, "operations": []}, "has version True"),
        ({"version": 1.0, "operations": []}, "has version 1.0"),
        ({"version": 1, "operations": {}}, "'operations' must be a list"),
        ({"version": 1, "operations": "x"}, "not a string"),
        ({"version": 1, "operations": [], "zoom": 2}, "unknown top-level field(s) 'zoom'"),
        ({"version": 1, "saved_at": "today"}, "'saved_at' must be a timestamp"),
    ],
)
def test_malformed_layouts_are_refused(tmp_path: Path, data: Any, expected: str) -> None:
    message = refused(write_json(tmp_path, data))
    assert expected in message
    assert str(tmp_path / "layout.json") in message


def test_version_errors_name_the_supported_version(tmp_path: Path) -> None:
    message = refused(write_json(tmp_path, {"version": 7, "operations": []}))
    assert f"reads layout version {LAYOUT_VERSION} only" in message


def test_missing_operations_is_an_empty_layout(tmp_path: Path) -> None:
    assert load_layout(write_json(tmp_path, {"version": 1})) == (Layout(), [])


# --- single operations are skipped with a warning -------------------------------------------


def test_unknown_ops_warn_and_the_rest_loads(tmp_path: Path) -> None:
    ops = [
        {"op": "set_world"},
        persona_op(),
        {"op": "create_flux_capacitor", "gigawatts": 1.21},
        persona_op("ROBIN"),
    ]
    layout, warnings = load_layout(write_json(tmp_path, {"version": 1, "operations": ops}))
    assert warnings == ["skipped operation 3: unknown op 'create_flux_capacitor'"]
    assert [op.op for op in layout.operations] == [
        "set_world",
        "create_persona_morph",
        "create_persona_morph",
    ]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("set_world", "skipped operation 1: not an object with an 'op' field"),
        ({"persona": "BRICK"}, "skipped operation 1: not an object with an 'op' field"),
        ({"op": 3}, "skipped operation 1: not an object with an 'op' field"),
        (
            persona_op(w=0),
            "skipped operation 1 (create_persona_morph): w: Input should be greater than 0",
        ),
        (persona_op(h=-5), "h: Input should be greater than 0"),
        (persona_op(x=float("inf")), "x: Input should be a finite number"),
        (persona_op(y=float("nan")), "y: Input should be a finite number"),
        (persona_op(x="12"), "x: Input should be a valid number"),
        (persona_op(w=True), "w: Input should be a valid number"),
        (persona_op(colour="red"), "colour: Extra inputs are not permitted"),
        (persona_op(persona="no spaces"), "persona: String should match pattern"),
        ({"op": "create_plot_morph", "x": 0, "y": 0, "w": 1, "h": 1}, "metrics: Field required"),
        ({"op": "set_world", "zoom": -1}, "zoom: Input should be greater than 0"),
    ],
)
def test_invalid_operations_warn(raw: Any, expected: str) -> None:
    layout, warnings = decode_layout({"version": 1, "operations": [raw]})
    assert layout.operations == []
    assert len(warnings) == 1 and expected in warnings[0]


def test_non_finite_json_numbers_are_caught(tmp_path: Path) -> None:
    # Python's json reads NaN and Infinity; the schema must still refuse them.
    path = tmp_path / "layout.json"
    path.write_text('{"version": 1, "operations": [{"op": "set_world", "zoom": Infinity}]}')
    layout, warnings = load_layout(path)
    assert layout.operations == [] and "finite" in warnings[0]


def test_strict_model_refuses_unknown_ops_directly() -> None:
    # Only decode_layout is lenient; the model itself is the strict schema.
    with pytest.raises(ValidationError):
        Layout.model_validate({"version": 1, "operations": [{"op": "create_flux_capacitor"}]})
    kinds = {
        "create_persona_morph",
        "create_plot_morph",
        "create_inspector",
        "set_world",
        "set_window",
    }
    assert kinds == OPERATION_KINDS


# --- applying a layout ----------------------------------------------------------------------


def test_apply_skips_ops_for_missing_personas_with_one_warning_each() -> None:
    layout = Layout(
        operations=[
            SetWorld(),
            CreatePersonaMorph(persona="BRICK", x=0, y=0, w=1, h=1),
            CreatePersonaMorph(persona="BRICK-7", x=0, y=0, w=1, h=1),
            CreateInspector(persona="BRICK-7", x=0, y=0, w=1, h=1),
            CreateInspector(persona="GHOST", x=0, y=0, w=1, h=1),
            CreatePlotMorph(metrics=["ttft_ms"], x=0, y=0, w=1, h=1),
        ]
    )
    operations, warnings = apply_layout(layout, PERSONAS)
    assert operations == [layout.operations[i] for i in (0, 1, 5)]
    assert warnings == [
        "skipped: persona 'BRICK-7' no longer exists",
        "skipped: persona 'GHOST' no longer exists",
    ]


def test_apply_keeps_everything_when_all_personas_exist() -> None:
    assert apply_layout(sample_layout(), {"BRICK"}) == (sample_layout().operations, [])


# --- the first-run layout -------------------------------------------------------------------


def test_default_layout_loads_cleanly() -> None:
    layout, warnings = load_layout(DEFAULT_LAYOUT)
    assert warnings == []
    operations, skipped = apply_layout(layout, PERSONAS)
    assert skipped == [] and operations == layout.operations
    personas = [op for op in layout.operations if isinstance(op, CreatePersonaMorph)]
    assert [p.persona for p in personas] == ["BRICK", "ROBIN", "BABS", "ALFRED"]
    (plot,) = [op for op in layout.operations if isinstance(op, CreatePlotMorph)]
    assert plot.metrics == ["tokens_per_s", "queue_wait_ms", "ttft_ms", "total_ms"]


def test_default_layout_personas_exist_in_the_codex() -> None:
    codex = {path.stem for path in (DEFAULT_LAYOUT.parent.parent / "personas").glob("*.json")}
    layout, _ = load_layout(DEFAULT_LAYOUT)
    assert {op.persona for op in layout.operations if isinstance(op, CreatePersonaMorph)} <= codex


def test_default_layout_fits_a_1280x800_window_without_overlaps() -> None:
    layout, _ = load_layout(DEFAULT_LAYOUT)
    boxes = [
        (op.x, op.y, op.x + op.w, op.y + op.h)
        for op in layout.operations
        if isinstance(op, CreatePersonaMorph | CreatePlotMorph)
    ]
    assert len(boxes) == 5
    for x0, y0, x1, y1 in boxes:
        assert 0 <= x0 < x1 <= 1280 and 0 <= y0 < y1 <= 800
    for a, b in combinations(boxes, 2):
        assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)
    # a 2x2 grid: BRICK and ROBIN on top (y grows upwards), BABS and ALFRED below
    brick, robin, babs, alfred = (
        op for op in layout.operations if isinstance(op, CreatePersonaMorph)
    )
    assert brick.y == robin.y > babs.y == alfred.y
    assert brick.x == babs.x < robin.x == alfred.x


def test_huge_integers_are_layout_errors_or_skipped_operations(tmp_path: Path) -> None:
    path = tmp_path / "layout.json"
    path.write_text('{"version": 1, "saved_at": ' + "9" * 5000 + ', "operations": []}')
    with pytest.raises(LayoutError, match="cannot give us"):  # not a bare ValueError
        load_layout(path)
    op = '{"op": "create_persona_morph", "persona": "BRICK", "x": %s, "y": 1, "w": 9, "h": 9}'
    path.write_text('{"version": 1, "operations": [' + op % ("9" * 4000) + "]}")
    layout, warnings = load_layout(path)  # under Python's digit limit, over a float's range
    assert layout.operations == [] and "skipped operation 1" in warnings[0]


@pytest.mark.parametrize(
    "content",
    ['{"version": 1, "x": ' + "1" * 5000 + "}", "{not json", '{"version": 99}', "[]"],
    ids=["5000_digits", "not_json", "newer_version", "not_an_object"],
)
def test_unusable_layout_at_startup_opens_the_default_and_keeps_the_file(
    tmp_path: Path, content: str
) -> None:
    path = tmp_path / "layout.json"
    path.write_text(content)
    layout, warnings = load_startup_layout(path)
    assert layout == load_layout(DEFAULT_LAYOUT)[0]
    kept = list(tmp_path.glob("layout.json.bad-*"))
    assert not path.exists() and len(kept) == 1 and kept[0].read_text() == content
    assert "Opened the default layout instead" in warnings[0] and str(kept[0]) in warnings[0]


def test_startup_layout_is_the_users_or_the_default(tmp_path: Path) -> None:
    assert load_startup_layout(tmp_path / "none.json")[0] == load_layout(DEFAULT_LAYOUT)[0]
    mine = Layout(operations=[SetWorld(zoom=2.0)])
    save_layout(tmp_path / "layout.json", mine)
    assert load_startup_layout(tmp_path / "layout.json") == (mine, [])
