"""The Inspector's tool side: call any message, see forged tools, forge a new one.

``ToolsSection`` is mixed into ``InspectorMorph``. It renders into the inspector's body and
announces commands the same way the inspector does (``on_intent(command, key)``), and
formats the backend's answers (``describe_reply``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from kivy.uix.boxlayout import BoxLayout
from kivy.uix.button import Button
from kivy.uix.label import Label
from kivy.uix.textinput import TextInput

from morphs.field import Field
from shared_api.commands import ForgeTool, Invoke, RemoveTool
from shared_api.errors import ErrorReply
from shared_api.replies import (
    DoesNotUnderstand,
    ForgeAccepted,
    InvokeResult,
    ProtoDescription,
    ToolResult,
)
from shared_api.tools import TOOL_NAME, Tool

ROW = 30


def attempts_line(tool: Tool) -> str:
    """How a tool came to be, in one line."""
    p = tool.provenance
    tries = len(tool.attempts)
    where = tool.attempts[-1].runtime if tool.attempts else "?"
    model = f" ({p.backend}:{p.model})" if p.model else ""
    return (
        f"passed on attempt {tries} in {where}; written by {p.author}{model} for {p.requested_by}"
    )


def describe_reply(reply: Any) -> tuple[str, bool]:
    """(text, ok) for the answer to a call, a forge or a tool edit."""
    if isinstance(reply, ErrorReply):
        trace = (reply.traceback or str(reply.detail.get("traceback") or "")).strip()
        last = trace.splitlines()[-1] if trace else ""
        return (f"{reply.message} {last}".strip(), False)
    if isinstance(reply, InvokeResult | ToolResult):
        where = (
            f"  [{reply.runtime}, {reply.duration_s:.2f}s]" if isinstance(reply, ToolResult) else ""
        )
        return (f"= {json.dumps(reply.result)[:400]}{where}", True)
    if isinstance(reply, DoesNotUnderstand):
        if reply.forge is not None:
            return (
                f"does not understand {reply.message!r}; the forge {reply.forge['outcome']}",
                False,
            )
        return (f"does not understand {reply.message!r}; press forge to teach it", False)
    if isinstance(reply, ForgeAccepted):
        return (f"{reply.author} is writing {reply.name} ({reply.max_attempts} attempts)...", True)
    return (f"done (v{getattr(reply, 'version', '?')})", True)


class ToolsSection:
    """Mixed into ``InspectorMorph`` (which provides ``persona``, ``_body``, ``inputs``,
    ``_result_label``, ``_say`` and ``dispatch``)."""

    persona: str
    inputs: dict[str, TextInput]
    _body: Any
    forge_label: Label
    #: The last forge_tool body a does-not-understand answer proposed.
    proposal: dict[str, Any] | None = None

    if TYPE_CHECKING:  # provided by InspectorMorph

        def _label(self, text: str, **kwargs: Any) -> Label: ...
        def _result_label(self, key: str) -> Label: ...
        def _say(self, key: str, text: str, ok: bool = False) -> None: ...
        def dispatch(self, name: str, *args: Any) -> Any: ...

    # -- rendering --------------------------------------------------------------------------
    def _tools_section(self, description: ProtoDescription) -> None:
        body = self._body
        body.add_widget(
            self._label(
                "[b]Tools[/b] [color=8899aa](forged; each call runs in the sandbox)[/color]"
            )
        )
        for tool in description.tools:
            self._tool_view(tool)
        self._call_row()
        self._forge_form()

    def _tool_view(self, tool: Tool) -> None:
        key = "tool:" + tool.name
        head = BoxLayout(size_hint_y=None, height=ROW, spacing=4)
        head.add_widget(self._label(f"[color=7fd1b9]{tool.signature}[/color]"))
        remove = Button(text="remove", size_hint_x=None, width=64, font_size="12sp")
        remove.bind(on_release=lambda _b: self.remove_tool(key, tool.name))
        head.add_widget(remove)
        self._body.add_widget(head)
        self._body.add_widget(
            self._label(f"[color=b8c2cc]{tool.description}\n{attempts_line(tool)}[/color]")
        )
        code = Field(
            text=f"{tool.source}\n# tests it passed\n{tool.tests}",
            readonly=True,
            multiline=True,
            size_hint_y=None,
            height=96,
            font_name="RobotoMono-Regular",
            font_size="11sp",
        )
        code.cursor = (0, 0)  # show the top: the signature, not the end of the tests
        self._body.add_widget(code)
        self._body.add_widget(self._result_label(key))

    def _entry_row(self, key: str, hints: tuple[str, str], button: str, width: int) -> None:
        """A name field, a value field and a button that acts on ``key``."""
        row = BoxLayout(size_hint_y=None, height=ROW, spacing=4)
        name = Field(hint_text=hints[0], multiline=False, size_hint_x=0.35, font_size="12sp")
        value = Field(hint_text=hints[1], multiline=False, font_size="12sp")
        self.inputs[key + ":name"], self.inputs[key] = name, value
        act = self.call_message if key == "call" else self.forge_tool
        press = Button(text=button, size_hint_x=None, width=width, font_size="12sp")
        press.bind(on_release=lambda _b: act(key))
        for widget in (name, value, press):
            row.add_widget(widget)
        self._body.add_widget(row)
        self._body.add_widget(self._result_label(key))

    def _call_row(self) -> None:
        self._entry_row("call", ("message", '{"arg": 1}'), "call", 44)

    def _forge_form(self) -> None:
        self._entry_row("forge", ("new_tool_name", "what it must do"), "forge", 52)
        if self.proposal is not None:
            self.inputs["forge:name"].text = str(self.proposal.get("name", ""))
            self.inputs["forge"].text = str(self.proposal.get("description", ""))
        self._body.add_widget(self.forge_label)

    def show_forge(self, text: str) -> None:
        """The latest forge progress for this persona (kept across re-renders)."""
        self.forge_label.text = text
        self.forge_label.height = max(ROW, self.forge_label.texture_size[1] + 6) if text else 0

    # -- commands (announced, never sent from here) -----------------------------------------
    def call_message(self, key: str) -> None:
        message = self.inputs[key + ":name"].text.strip()
        if not message.isidentifier():
            self._say(key, "enter the message to send (a method or tool name)")
            return
        try:
            args = json.loads(self.inputs[key].text or "{}")
        except json.JSONDecodeError as exc:
            self._say(key, f"arguments: not valid JSON: {exc.msg}")
            return
        if not isinstance(args, dict):
            self._say(key, 'arguments must be a JSON object, e.g. {"x": 1}')
            return
        self._say(key, "calling...", ok=True)
        self.dispatch("on_intent", Invoke(proto=self.persona, method=message, args=args), key)

    def forge_tool(self, key: str) -> None:
        name = self.inputs[key + ":name"].text.strip()
        what = self.inputs[key].text.strip()
        if not TOOL_NAME.match(name):
            self._say(key, "the tool's name: lower case letters, digits and _, e.g. word_count")
            return
        if not what:
            self._say(key, "say what the tool must do")
            return
        self.proposal = None
        self._say(key, "asking the forge...", ok=True)
        command = ForgeTool(proto=self.persona, name=name, description=what)
        self.dispatch("on_intent", command, key)

    def remove_tool(self, key: str, name: str) -> None:
        self._say(key, "removing...", ok=True)
        self.dispatch("on_intent", RemoveTool(proto=self.persona, name=name), key)

    def offer_forge(self, reply: DoesNotUnderstand) -> None:
        """A does-not-understand answer: fill the forge form with its proposal."""
        if reply.proposal is None:
            return
        self.proposal = dict(reply.proposal)
        if "forge:name" in self.inputs:
            self.inputs["forge:name"].text = str(reply.proposal.get("name", ""))
            self.inputs["forge"].text = str(reply.proposal.get("description", ""))
