"""PersonaMorph and World, as real widgets on the offscreen window."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kivy.tests.common import UnitTestTouch

from morphs.persona import CALM, PersonaMorph
from morphs.world import DROP_HINT, World
from shared_api.commands import AskDocument
from shared_api.events import CognitiveDissonance, PersonaReply, PersonaStatus, Token
from tests.ui.conftest import frames, screenshot, settle
from ui.store import WorkbenchStore


def world_with(
    window: Any, store: WorkbenchStore, *names: str
) -> tuple[World, dict[str, PersonaMorph]]:
    world = World(size_hint=(None, None), size=window.size)
    morphs = {}
    for i, name in enumerate(names):
        morph = PersonaMorph(store.persona(name, f"role of {name}"), pos=(40 + 420 * i, 200))
        world.add_widget(morph)
        morphs[name] = morph
    window.add_widget(world)
    frames(2)
    return world, morphs


def test_drag_moves_the_morph_and_announces_it(window: Any) -> None:
    store = WorkbenchStore()
    _, morphs = world_with(window, store, "BRICK")
    morph = morphs["BRICK"]
    moved: list[int] = []
    morph.bind(on_moved=lambda *_: moved.append(1))
    touch = UnitTestTouch(100, 300)
    touch.touch_down()
    touch.touch_move(150, 340)
    touch.touch_move(200, 380)
    touch.touch_up()
    frames(2)
    assert tuple(morph.pos) == (140, 280)
    assert moved == [1]


def test_right_click_asks_for_a_halo(window: Any) -> None:
    store = WorkbenchStore()
    _, morphs = world_with(window, store, "BRICK")
    asked: list[Any] = []
    morphs["BRICK"].bind(on_meta_click=lambda _m, touch: asked.append(touch))
    touch = UnitTestTouch(100, 300)
    touch.button = "right"
    touch.touch_down()
    touch.touch_up()
    assert len(asked) == 1
    assert tuple(morphs["BRICK"].pos) == (40, 200)  # a meta-click never drags


def test_events_drive_the_morph(window: Any) -> None:
    store = WorkbenchStore()
    _, morphs = world_with(window, store, "BRICK", "ROBIN")
    brick = morphs["BRICK"]
    store.apply(PersonaStatus(proto="BRICK", status="streaming"))
    for i, piece in enumerate(["Premise ", "one: ", "the sky."]):
        store.apply(Token(request_id="r1", proto="BRICK", index=i, text=piece))
    store.apply(CognitiveDissonance(proto="BRICK", source="test", score=0.9))
    frames(2)
    assert "Premise" not in brick._talk.text  # the label re-wraps at most twice a second
    settle(1.1)
    assert brick.model.busy and brick.glow > 0
    assert "BRICK: Premise one: the sky." in brick._talk.text
    assert "streaming" in brick._header.text
    assert brick._fill_colour.rgb[0] > CALM[0] + 0.2  # redder with dissonance
    store.apply(
        PersonaReply(
            request_id="r1",
            proto="BRICK",
            text="Premise one: the sky.",
            stop_reason="stop",
            backend="embedded",
            model="smollm2",
        )
    )
    store.apply(PersonaStatus(proto="BRICK", status="idle"))
    settle(1.1)
    assert not brick.model.busy and brick.glow == 0
    assert "embedded:smollm2" in brick._header.text
    screenshot("ui-morphs")


def test_drop_on_a_persona_sends_its_path(window: Any, tmp_path: Path) -> None:
    store = WorkbenchStore()
    world, morphs = world_with(window, store, "BRICK", "ROBIN")
    intents: list[Any] = []
    notices: list[str] = []
    world.bind(on_intent=lambda _w, c: intents.append(c), on_notice=lambda _w, t: notices.append(t))

    def forward(_win: Any, name: bytes, x: float, y: float, *_: Any) -> None:
        world.drop_file(name, x, y)  # as the app wires it

    window.bind(on_drop_file=forward)
    doc = tmp_path / "notes.md"
    doc.write_text("# Plan\nThe bridge needs three pillars.\n")
    robin = morphs["ROBIN"]
    x, y = robin.center
    window.dispatch("on_drop_file", str(doc).encode(), x, window.height - y)
    # only the path goes: the backend reads the file, remembers it and asks ROBIN
    assert intents == [AskDocument(proto="ROBIN", path=str(doc), max_bytes=5 * 1024 * 1024)]
    window.dispatch("on_drop_file", str(doc).encode(), 1200, 20)  # empty canvas
    assert notices == [DROP_HINT] and len(intents) == 1
    window.unbind(on_drop_file=forward)


def press(x: float, y: float, to: tuple[float, float] | None = None, button: str = "left") -> None:
    touch = UnitTestTouch(x, y)
    touch.button = button
    touch.touch_down()
    if to is not None:
        touch.touch_move((x + to[0]) / 2, (y + to[1]) / 2)
        touch.touch_move(*to)
    touch.touch_up()


def test_halo_handles(window: Any) -> None:
    store = WorkbenchStore()
    world, morphs = world_with(window, store, "BRICK")
    brick = morphs["BRICK"]
    actions: list[tuple[str, str]] = []
    notices: list[str] = []
    world.bind(on_halo_action=lambda _w, m, name: actions.append((m.model.name, name)))
    world.bind(on_notice=lambda _w, text: notices.append(text))
    press(100, 300, button="right")
    halo = world.halo
    assert halo is not None and halo.target is brick
    frames(2)
    screenshot("ui-halo")

    hx, hy = halo.handles["move"].center
    press(hx, hy, to=(hx + 50, hy - 20))
    assert tuple(brick.pos) == pytest.approx((90, 180)) and actions[-1] == ("BRICK", "moved")
    w, h = brick.size
    rx, ry = halo.handles["resize"].center
    press(rx, ry, to=(rx + 40, ry - 30))
    assert tuple(brick.size) == pytest.approx((w + 40, h + 30))
    assert brick.top == pytest.approx(180 + h)  # the top edge stays put
    for name in ("inspect", "duplicate", "dismiss"):
        press(brick.x + 10, brick.y + 10, button="right")
        press(*world.halo.handles[name].center)
        assert actions[-1] == ("BRICK", name)
        assert world.halo is None  # an action closes the halo
    press(brick.x + 10, brick.y + 10, button="right")
    assert world.halo.handles["debug"].available  # the Live Debugger has landed
    press(*world.halo.handles["debug"].center)
    assert actions[-1] == ("BRICK", "debug") and world.halo is None
    press(brick.x + 10, brick.y + 10, button="right")
    press(1200, 50)  # a background click closes the halo
    assert world.halo is None


def test_world_menu_and_dismiss_confirmation(window: Any) -> None:
    from morphs.menu import MenuMorph, confirm_dismiss, open_menu

    world = World(size_hint=(None, None), size=window.size)
    window.add_widget(world)
    chosen: list[str] = []
    menu = open_menu(
        world,
        (600, 500),
        [("Save image", lambda: chosen.append("save")), ("Quit", lambda: chosen.append("quit"))],
    )
    frames(2)
    press(*menu.buttons["Save image"].center)
    assert chosen == ["save"] and not any(isinstance(c, MenuMorph) for c in world.children)
    open_menu(world, (600, 500), [("Quit", lambda: chosen.append("quit"))])
    press(100, 100)  # a click elsewhere closes the menu without choosing
    assert chosen == ["save"] and not any(isinstance(c, MenuMorph) for c in world.children)

    outcome: list[str] = []
    popup = confirm_dismiss(
        "BRICK-2",
        on_close=lambda: outcome.append("close"),
        on_delete=lambda: outcome.append("delete"),
    )
    frames(3)
    screenshot("ui-dismiss-confirm")
    delete = next(b for b in popup.content.children if getattr(b, "text", "").startswith("Delete"))
    delete.dispatch("on_release")
    frames(2)
    assert outcome == ["delete"]


def test_a_morph_off_screen_is_neither_drawn_nor_updated_and_catches_up(window: Any) -> None:
    store = WorkbenchStore()
    world = World(size_hint=(None, None), size=window.size)
    near = PersonaMorph(store.persona("BRICK", "the logician"), pos=(40, 200))
    far = PersonaMorph(store.persona("ROBIN", "the artist"), pos=(40, window.height + 400))
    for morph in (near, far):
        world.add_widget(morph)
    window.add_widget(world)
    frames(2)
    assert near.shown and near.canvas in world.canvas.children
    assert not far.shown and far.canvas not in world.canvas.children  # not drawn
    header, talk = far._header.text, far._talk.text
    store.apply(PersonaStatus(proto="ROBIN", status="streaming"))
    store.apply(Token(request_id="r1", proto="ROBIN", index=0, text="A sonnet."))
    store.apply(CognitiveDissonance(proto="ROBIN", source="test", score=0.9))
    settle(1.1)
    assert (far._header.text, far._talk.text) == (header, talk)  # not updated
    assert tuple(far._fill_colour.rgb) == pytest.approx(CALM) and far.glow == 0
    world.bring_to_front(far)  # e.g. a click on its halo: still off the draw tree
    assert far.canvas not in world.canvas.children and world.children[0] is far
    world.pan(0, -(window.height + 200))  # the wheel brings ROBIN into view, BRICK out
    assert far.shown and "streaming" in far._header.text  # caught up at once
    assert "ROBIN: A sonnet." in far._talk.text
    assert far._fill_colour.rgb[0] > CALM[0] + 0.2
    assert not near.shown and near.canvas not in world.canvas.children
    assert world.canvas.children[-1] is far.canvas  # back in its place: in front
    settle(0.2)
    assert far.glow > 0  # the busy glow pulses again
    assert far._header.texture_size[1] > 40  # name and status: two lines in one texture
    screenshot("ui-morph-culled-then-shown")
    world.pan(0, window.height + 200)
    assert near.shown and not far.shown
    world.remove_widget(far)  # removing a hidden morph is safe, and it is shown again
    assert far.parent is None and far.shown


def test_a_world_taken_off_the_window_stops_its_morphs_until_it_is_back(window: Any) -> None:
    """A removed World lives on until a full garbage collection (Kivy's TextInput keeps its
    last instance): its morphs must not keep pulsing and refreshing meanwhile."""
    from morphs.persona import _Pulse

    store = WorkbenchStore()
    world, morphs = world_with(window, store, "BRICK")
    morph = morphs["BRICK"]
    store.apply(PersonaStatus(proto="BRICK", status="streaming"))
    settle(0.2)
    assert morph in _Pulse.morphs and morph.glow > 0
    window.remove_widget(world)
    frames(2)
    assert not morph.shown and morph not in _Pulse.morphs and morph.glow == 0
    header = morph._header.text
    store.apply(PersonaStatus(proto="BRICK", status="loading"))
    settle(0.3)
    assert morph._header.text == header and morph.glow == 0  # neither refreshed nor pulsing
    window.add_widget(world)
    frames(2)
    assert morph.shown and morph.canvas in world.canvas.children
    assert "loading" in morph._header.text  # caught up at once
    settle(0.2)
    assert morph in _Pulse.morphs and morph.glow > 0
    window.remove_widget(world)


def test_moving_the_morphs_starts_no_scroll_bar_animations(window: Any) -> None:
    """Kivy fades a ScrollView's bar with an Animation after every move; a World zoomed or
    opened with many morphs would animate every one of them for half a second."""
    from kivy.animation import Animation

    store = WorkbenchStore()
    world, morphs = world_with(window, store, "BRICK", "ROBIN")
    store.apply(Token(request_id="r1", proto="BRICK", index=0, text="line\n" * 40))
    settle(1.2)  # rendered (at most 2 Hz) and scrolled: the bar is drawn
    assert morphs["BRICK"]._talk.height > morphs["BRICK"]._scroll.height
    for morph in morphs.values():
        morph.pos = (morph.x + 30, morph.y + 10)
    settle(0.7)  # past Kivy's half-second delay before the fade
    scrolls = {m._scroll.uid for m in morphs.values()}
    assert not [a for a in Animation._instances if scrolls & set(a._widgets)]
    for morph in morphs.values():  # the bar has turned inactive, at once
        assert tuple(morph._scroll._bar_color) == tuple(morph._scroll.bar_inactive_color)
    window.remove_widget(world)
