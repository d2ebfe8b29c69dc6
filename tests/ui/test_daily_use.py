"""What a person meets in daily use, on real widgets (offscreen SDL2): typing to a persona,
reading back its conversation, copying an answer, close boxes and Esc, panels kept in view,
shortened labels with their tooltips, and the window sized from the layout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kivy.core.window import Window
from kivy.tests.common import UnitTestTouch

from morphs.goals import GoalsMorph
from morphs.memory import MemoryMorph
from morphs.menu import open_menu
from morphs.persona import PersonaMorph, last_answer
from morphs.tooltip import ELLIPSIS, ellipsize, shown_tooltip
from morphs.world import World
from shared_api.commands import AskPersona, Cancel
from shared_api.events import PersonaReply, Token
from tests.ui.conftest import frames, screenshot, settle
from ui.layout_io import DEFAULT_LAYOUT
from ui.store import WorkbenchStore
from ui.window import FALLBACK_SIZE, STATUS_H, TOAST_H, layout_geometry


def a_world(window: Any, *, keep_in_view: bool = True) -> World:
    world = World(size_hint=(None, None), size=window.size, keep_in_view=keep_in_view)
    window.add_widget(world)
    frames(2)
    return world


def key(field: Any, name: str, modifiers: list[str] | None = None) -> bool:
    codes = {"enter": 13, "escape": 27}
    return bool(field.keyboard_on_key_down(Window, (codes[name], name), None, modifiers or []))


def test_typing_to_a_persona_enter_sends_shift_enter_breaks_esc_cancels(window: Any) -> None:
    store = WorkbenchStore()
    world = a_world(window)
    brick = PersonaMorph(store.persona("BRICK", "the logician"), pos=(40, 200))
    world.add_widget(brick)
    intents: list[Any] = []
    world.bind(on_intent=lambda _w, command: intents.append(command))
    field = brick.input
    field.focus = True
    field.text = "Why is the sky blue?"
    field.cursor = (len(field.text), 0)
    key(field, "enter", ["shift"])  # a new line, not a send
    field.text += "Answer briefly."
    assert intents == [] and "\n" in field.text
    key(field, "enter")
    assert intents == [AskPersona(proto="BRICK", text="Why is the sky blue?\nAnswer briefly.")]
    assert field.text == ""
    key(field, "enter")  # nothing typed: nothing sent
    assert len(intents) == 1
    brick.model.pending_request = "r-1"
    key(field, "escape")
    assert intents[-1] == Cancel(request_id="r-1")
    store.apply(PersonaReply(request_id="r-1", proto="BRICK", text="", stop_reason="cancelled"))
    assert brick.model.pending_request == "" and "[cancelled]" in brick.model.conversation
    frames(2)
    screenshot("daily-typing")


def test_the_conversation_reads_back_in_full_and_the_answer_copies(window: Any) -> None:
    store = WorkbenchStore()
    world = a_world(window)
    brick = PersonaMorph(store.persona("BRICK", "the logician"), pos=(40, 200))
    world.add_widget(brick)
    brick.model.say("\nYou: the first question\n")
    for i in range(200):
        store.apply(Token(request_id="r1", proto="BRICK", index=i, text=f"word{i} "))
    store.apply(PersonaReply(request_id="r1", proto="BRICK", text="", stop_reason="stop"))
    settle(1.2)
    assert "You: the first question" in brick._talk.text  # nothing scrolled away for good
    assert "word199" in brick._talk.text
    assert brick._talk.height > brick._scroll.height  # it scrolls
    assert brick._scroll.scroll_y == 0  # and follows the newest text
    x, y = brick._scroll.center
    for _ in range(8):  # the wheel reads back
        touch = UnitTestTouch(x, y)
        touch.button = "scrolldown"
        touch.profile.append("button")
        touch.touch_down()
        touch.touch_up()
        frames(1)
    settle(0.3)
    assert brick._scroll.scroll_y > 0.05
    screenshot("daily-conversation-scrolled")
    answer = brick.copy_answer()
    assert answer.startswith("word0") and answer.endswith("word199")
    assert last_answer(brick.model.conversation, "BRICK") == answer
    assert last_answer("\nYou: hi\n", "BRICK") == ""


def test_close_boxes_esc_and_panels_kept_in_view(window: Any) -> None:
    world = a_world(window)
    memory = MemoryMorph(pos=(1388, -500))  # a saved position off the screen
    world.add_widget(memory)
    assert world.x <= memory.x and memory.right <= world.right
    assert world.y <= memory.y and memory.top <= world.top
    goals = GoalsMorph(pos=(100, 100))
    world.add_widget(goals)
    frames(3)
    screenshot("daily-close-boxes")
    x, y, w, h = goals.close_box_rect()
    touch = UnitTestTouch(x + w / 2, y + h / 2)
    touch.touch_down()
    touch.touch_up()
    frames(1)
    assert goals.parent is None and memory.parent is world
    assert world.close_front_panel() and memory.parent is None
    assert not world.close_front_panel()  # nothing left to close


def test_a_late_arrival_goes_under_the_panels_the_user_opened(window: Any) -> None:
    """The restored layout's plots arrive seconds late (Matplotlib is imported off the UI
    thread): they must not cover an Inspector or Memory panel opened meanwhile (in a real
    window the plot hid the Inspector's close box)."""
    world = a_world(window)
    memory = MemoryMorph(pos=(100, 100))
    world.add_widget(memory)
    late = MemoryMorph(pos=(150, 150))  # stands in for the late plot: any widget will do
    world.add_under_panels(late)
    assert world.children.index(memory) < world.children.index(late)  # memory drawn on top
    assert world.panels()[0] is memory
    fresh = GoalsMorph(pos=(120, 120))
    world.add_widget(fresh)  # what the user opens next still comes to the front
    assert world.children[0] is fresh


def test_the_world_pans_with_the_wheel_over_empty_canvas(window: Any) -> None:
    store = WorkbenchStore()
    world = a_world(window, keep_in_view=False)
    brick = PersonaMorph(store.persona("BRICK", "r"), pos=(40, 900))  # above the window
    world.add_widget(brick)
    touch = UnitTestTouch(window.width - 20, 20)
    touch.button = "scrolldown"  # Kivy's name for the wheel that reveals what is above
    touch.profile.append("button")
    touch.touch_down()
    touch.touch_up()
    assert brick.y == 900 - world.pan_step


def test_long_menu_entries_end_in_an_ellipsis_with_the_full_text_as_tooltip(
    window: Any,
) -> None:
    goal = "Debug: Should a small team write tests before the code or after it?"
    assert ellipsize(goal, 28).endswith(ELLIPSIS) and len(ellipsize(goal, 28)) <= 28
    assert ellipsize("short", 28) == "short"
    world = a_world(window)
    menu = open_menu(world, (300, 500), [(goal, lambda: None), ("Quit", lambda: None)])
    frames(2)
    button = menu.buttons[goal]
    assert button.text.endswith(ELLIPSIS) and "writ" not in button.text.split()[-1][:-1]
    assert button.tooltip == goal and not getattr(menu.buttons["Quit"], "tooltip", "")
    Window.mouse_pos = button.to_window(*button.center)
    settle(0.8)
    assert shown_tooltip() == goal
    screenshot("daily-menu-tooltip")
    Window.mouse_pos = (5, 5)
    frames(1)
    assert shown_tooltip() == ""


def test_the_window_is_sized_from_the_layout(tmp_path: Path) -> None:
    layout = json.loads(DEFAULT_LAYOUT.read_text())
    right = max(op["x"] + op["w"] for op in layout["operations"] if "x" in op)
    top = max(op["y"] + op["h"] for op in layout["operations"] if "y" in op)
    w, h, left, top_px = layout_geometry(DEFAULT_LAYOUT)
    assert w >= right and h >= top + STATUS_H + TOAST_H and left is top_px is None
    saved = tmp_path / "layout.json"
    saved.write_text(json.dumps({"version": 1, "operations": [
        {"op": "set_window", "w": 1000, "h": 700, "left": 10, "top": 20},
    ]}))  # fmt: skip
    assert layout_geometry(saved) == (1000, 700, 10, 20)
    saved.write_text("{broken")
    assert layout_geometry(saved) == (*FALLBACK_SIZE, None, None)
