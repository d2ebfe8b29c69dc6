"""LearningMorph: one persona's learning loop. Its model (and how it came to be adopted), the
judge's scores, the golden examples (browse, edit, exclude, add), a curation pass, a
fine-tune with its live phase, loss and ETA, and rollback.

It only announces intent: ``on_intent(command)`` for the app to send, ``on_plot()`` for a
plot of the loss curve and the judge's scores. The app hands replies back through
``show_status``, ``show_golden``, ``show_job`` and ``show_error``.
"""

from __future__ import annotations

from typing import Any

from kivy.graphics import Color, Line, RoundedRectangle
from kivy.properties import ObjectProperty, StringProperty
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.button import Button
from kivy.uix.gridlayout import GridLayout
from kivy.uix.label import Label
from kivy.uix.scrollview import ScrollView
from kivy.utils import escape_markup

from morphs.behaviors import DraggableBehavior
from morphs.field import Field
from morphs.panel import ClosableBehavior
from shared_api.commands import (
    Cancel,
    Curate,
    ExcludeGolden,
    LearningStatus,
    ListGolden,
    PutGolden,
    RollbackModel,
    StartFinetune,
)
from shared_api.learning import GoldenExample, JobInfo, LearningSummary
from shared_api.replies import GoldenList, LearningStatusReply

ROW = 28
#: What the "plot" button plots (``WorkbenchStore.metrics`` keys).
LEARNING_METRICS = ("finetune_loss", "judge_overall")


def _label(text: str, **kwargs: Any) -> Label:
    kwargs.setdefault("size_hint_y", None)
    kwargs.setdefault("height", ROW)
    label = Label(text=text, halign="left", valign="top", markup=True, font_size="12sp", **kwargs)
    label.bind(width=lambda lbl, w: setattr(lbl, "text_size", (w, None)))
    label.bind(texture_size=lambda lbl, ts: setattr(lbl, "height", max(ROW, ts[1] + 6)))
    return label


def _button(text: str, width: float = 72) -> Button:
    return Button(text=text, size_hint_x=None, width=width, font_size="12sp")


def summary_text(s: LearningSummary, available: bool, how: str) -> str:
    model = s.model.id if s.model else "the default model"
    lines = [f"talks through [b]{escape_markup(model)}[/b]"]
    v = s.model.detail.get("validation") if s.model else None
    if isinstance(v, dict):
        p_value = float(v.get("p_value") or 1.0)  # type: ignore[arg-type]
        lines[0] += f"  (won {v.get('wins')}-{v.get('losses')}, p={p_value:.3f})"
    means = "  ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in s.means.items())
    lines.append(
        f"[color=8899aa]{s.golden} golden ({s.excluded} excluded) · {s.scored} judged, "
        + (f"[color=e06c75]{s.failed} failed[/color], " if s.failed else "")
        + f"{s.unscored} to judge · {len(s.candidates)} candidates[/color]"
    )
    if means:
        lines.append(f"[color=8899aa]{means}[/color]")
    if not available:
        lines.append(f"[color=e0c36c]{escape_markup(how)}[/color]")
    return "\n".join(lines)


def job_line(job: JobInfo) -> str:
    parts = [f"{job.kind} {job.job_id}: {job.phase}"]
    if job.total_steps:
        parts.append(f"step {job.step}/{job.total_steps}")
    if job.loss is not None:
        parts.append(f"loss {job.loss:.3f}")
    if job.eta_s is not None and job.outcome is None:
        parts.append(f"ETA {job.eta_s:.0f}s")
    if job.outcome:
        parts.append(f"-> {job.outcome}")
    text = "  ".join(parts)
    if job.message or job.error:
        text += f"\n{job.error or job.message}"
    return str(escape_markup(text))


def golden_line(g: GoldenExample) -> str:
    colour = "8899aa" if g.excluded else "dfe5ec"
    score = f"{g.score:.2f} " if g.score is not None else ""
    mark = "[s]" if g.excluded else ""
    end = "[/s]" if g.excluded else ""
    prompt = escape_markup(" ".join(g.prompt.split())[:70])
    reply = escape_markup(" ".join(g.reply.split())[:90])
    return f"[color={colour}]{mark}{score}{g.source}: {prompt}\n  -> {reply}{end}[/color]"


class GoldenRow(BoxLayout):
    """A golden example: press the text to edit it, the button to exclude or include it."""

    example: GoldenExample = ObjectProperty(None)

    def __init__(self, example: GoldenExample, **kwargs: Any) -> None:
        super().__init__(size_hint_y=None, height=2 * ROW, spacing=4, **kwargs)
        self.example = example
        self.text = Button(
            text=golden_line(example),
            markup=True,
            halign="left",
            valign="middle",
            font_size="11sp",
            background_normal="",
            background_color=(0.15, 0.18, 0.24, 1),
        )
        self.text.bind(width=lambda b, w: setattr(b, "text_size", (w - 10, None)))
        self.toggle = _button("include" if example.excluded else "exclude", 64)
        self.add_widget(self.text)
        self.add_widget(self.toggle)


class LearningMorph(ClosableBehavior, DraggableBehavior, BoxLayout):
    #: The persona shown.
    persona = StringProperty("BRICK")
    #: The golden example loaded in the editor ("" for a new one).
    editing = StringProperty("")
    #: The latest job of this persona, if any.
    job: JobInfo | None = ObjectProperty(None, allownone=True)

    __events__ = ("on_intent", "on_plot", "on_moved", "on_meta_click", "on_close")

    def __init__(self, persona: str = "BRICK", **kwargs: Any) -> None:
        kwargs.setdefault("size_hint", (None, None))
        kwargs.setdefault("size", (560, 640))
        super().__init__(orientation="vertical", padding=8, spacing=4, **kwargs)
        self.persona = persona
        with self.canvas.before:
            Color(0.11, 0.13, 0.17, 1)
            self._bg = RoundedRectangle(radius=[10])
            Color(0.71, 0.61, 0.94, 0.8)
            self._edge = Line(width=1.2)
        self.bind(pos=self._redraw, size=self._redraw)
        head = BoxLayout(size_hint_y=None, height=ROW, spacing=4)
        head.add_widget(_label("[b]Learning[/b]", height=ROW))
        self.persona_box = Field(
            text=persona, multiline=False, font_size="12sp", size_hint_x=None, width=110
        )
        self.persona_box.bind(on_text_validate=lambda i: self.show_persona(i.text.strip()))
        head.add_widget(self.persona_box)
        self.summary = _label("[color=8899aa]...[/color]", height=3 * ROW)
        actions = BoxLayout(size_hint_y=None, height=ROW, spacing=4)
        self.buttons: dict[str, Button] = {}
        for name, width in (
            ("curate", 60),
            ("fine-tune", 72),
            ("cancel", 58),
            ("rollback", 68),
            ("plot", 44),
            ("refresh", 62),
        ):
            button = _button(name, width)
            button.bind(on_release=lambda _b, n=name: self.act(n))
            self.buttons[name] = button
            actions.add_widget(button)
        self.job_label = _label("[color=8899aa]no fine-tune yet[/color]", height=2 * ROW)
        self.message = _label("", color=(1, 0.55, 0.55, 1), height=0)
        self.rows = GridLayout(cols=1, size_hint_y=None, spacing=3)
        self.rows.bind(minimum_height=self.rows.setter("height"))
        scroll = ScrollView(do_scroll_x=False)
        scroll.add_widget(self.rows)
        self.prompt_box = Field(
            hint_text="prompt (user)", font_size="12sp", size_hint_y=None, height=2 * ROW
        )
        self.reply_box = Field(
            hint_text="ideal answer (assistant)", font_size="12sp", size_hint_y=None, height=2 * ROW
        )
        edit = BoxLayout(size_hint_y=None, height=ROW, spacing=4)
        self.edit_label = _label("[color=8899aa]new golden example[/color]")
        self.save_button = _button("save", 56)
        self.save_button.bind(on_release=lambda _b: self.save())
        self.new_button = _button("new", 48)
        self.new_button.bind(on_release=lambda _b: self.edit(None))
        for widget in (self.edit_label, self.new_button, self.save_button):
            edit.add_widget(widget)
        for widget in (head, self.summary, actions, self.job_label, self.message, scroll,
                       self.prompt_box, self.reply_box, edit):  # fmt: skip
            self.add_widget(widget)
        self.golden_rows: list[GoldenRow] = []
        self._redraw()
        self._init_close_box()

    def _redraw(self, *_: Any) -> None:
        self._bg.pos, self._bg.size = self.pos, self.size
        self._edge.rounded_rectangle = (self.x, self.y, self.width, self.height, 10)

    # -- intent -----------------------------------------------------------------------------
    def show_persona(self, name: str) -> None:
        try:
            LearningStatus(proto=name)
        except ValueError:
            self.show_error(f"{name!r} is not a persona name")
            return
        self.persona = name
        self.refresh()

    def refresh(self) -> None:
        self.dispatch("on_intent", LearningStatus(proto=self.persona))
        self.dispatch("on_intent", ListGolden(proto=self.persona))

    def act(self, name: str) -> None:
        self.show_error("")
        if name == "curate":
            self.dispatch("on_intent", Curate(proto=self.persona))
        elif name == "fine-tune":
            self.dispatch("on_intent", StartFinetune(proto=self.persona))
        elif name == "cancel":
            if self.job is None or self.job.outcome is not None:
                self.show_error("no fine-tune is running")
            else:
                self.dispatch("on_intent", Cancel(request_id=self.job.job_id))
        elif name == "rollback":
            self.dispatch("on_intent", RollbackModel(proto=self.persona))
        elif name == "plot":
            self.dispatch("on_plot")
        else:
            self.refresh()

    def edit(self, example: GoldenExample | None) -> None:
        self.editing = example.id if example else ""
        self.prompt_box.text = example.prompt if example else ""
        self.reply_box.text = example.reply if example else ""
        self.edit_label.text = (
            f"[color=8899aa]editing {escape_markup(example.id)}[/color]"
            if example
            else "[color=8899aa]new golden example[/color]"
        )

    def save(self) -> None:
        prompt, reply = self.prompt_box.text.strip(), self.reply_box.text.strip()
        if not prompt or not reply:
            self.show_error("a golden example needs a prompt and an answer")
            return
        self.dispatch(
            "on_intent",
            PutGolden(proto=self.persona, id=self.editing or None, prompt=prompt, reply=reply),
        )

    def exclude(self, example: GoldenExample) -> None:
        self.dispatch(
            "on_intent",
            ExcludeGolden(proto=self.persona, id=example.id, excluded=not example.excluded),
        )

    # -- replies ----------------------------------------------------------------------------
    def show_status(self, reply: LearningStatusReply) -> None:
        mine = [p for p in reply.personas if p.proto == self.persona]
        if mine:
            self.summary.text = summary_text(mine[0], reply.available, reply.how_to_enable)
        self.buttons["fine-tune"].disabled = not reply.available
        jobs = [j for j in reply.jobs if j.proto == self.persona]
        if jobs:
            self.show_job(max(jobs, key=lambda j: j.started or 0.0))

    def show_golden(self, reply: GoldenList) -> None:
        if reply.proto != self.persona:
            return
        self.rows.clear_widgets()
        self.golden_rows = []
        for example in reversed(reply.examples):
            row = GoldenRow(example)
            row.text.bind(on_release=lambda _b, e=example: self.edit(e))
            row.toggle.bind(on_release=lambda _b, e=example: self.exclude(e))
            self.golden_rows.append(row)
            self.rows.add_widget(row)
        if not reply.examples:
            self.rows.add_widget(
                _label("[color=8899aa]no golden examples yet: curate, or add one below[/color]")
            )

    def show_job(self, job: JobInfo) -> None:
        if job.proto != self.persona:
            return
        self.job = job
        self.job_label.text = job_line(job)

    def show_error(self, text: str) -> None:
        self.message.text = escape_markup(text)
        self.message.height = ROW if text else 0

    # -- events -----------------------------------------------------------------------------
    def on_intent(self, command: Any) -> None:
        pass

    def on_plot(self) -> None:
        pass

    def on_moved(self) -> None:
        pass

    def on_meta_click(self, touch: Any) -> None:
        pass
