"""LearningMorph as a real widget (SDL2 offscreen): it shows a persona's model, scores and
golden examples, announces curate / fine-tune / cancel / rollback / edit / exclude as typed
commands, and the store turns learning events into the loss and judge-score series."""

from __future__ import annotations

from typing import Any

from morphs.learning import LEARNING_METRICS, LearningMorph
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
from shared_api.events import InteractionsScored, LearningFinished, LearningProgress
from shared_api.learning import GoldenExample, JobInfo, JudgeScore, LearningSummary, ModelPointer
from shared_api.replies import GoldenList, LearningStatusReply
from tests.ui.conftest import frames, screenshot
from ui.store import WorkbenchStore

EXAMPLE = GoldenExample.model_validate(
    {
        "id": "g-1",
        "proto": "BRICK",
        "source": "curator",
        "score": 0.82,
        "messages": [
            {"role": "system", "content": "You are BRICK."},
            {"role": "user", "content": "Why is the sky blue?"},
            {"role": "assistant", "content": "Rayleigh scattering. Quod erat demonstrandum."},
        ],
    }
)
JOB = JobInfo(
    job_id="ft-1", proto="BRICK", phase="training", step=3, total_steps=24, loss=1.2, eta_s=40
)


def _morph() -> tuple[LearningMorph, list[Any]]:
    from kivy.core.window import Window

    morph = LearningMorph("BRICK", pos=(20, 20))
    sent: list[Any] = []
    morph.bind(on_intent=lambda _m, command: sent.append(command))
    Window.add_widget(morph)
    frames(3)
    return morph, sent


def test_the_morph_announces_every_action_as_a_command() -> None:
    morph, sent = _morph()
    try:
        morph.refresh()
        assert sent[-2:] == [LearningStatus(proto="BRICK"), ListGolden(proto="BRICK")]
        for name in ("curate", "fine-tune", "rollback"):
            morph.buttons[name].dispatch("on_release")
        assert sent[-3:] == [
            Curate(proto="BRICK"),
            StartFinetune(proto="BRICK"),
            RollbackModel(proto="BRICK"),
        ]
        morph.buttons["cancel"].dispatch("on_release")
        assert "no fine-tune is running" in morph.message.text
        morph.show_job(JOB)
        morph.buttons["cancel"].dispatch("on_release")
        assert sent[-1] == Cancel(request_id="ft-1")
        assert "step 3/24" in morph.job_label.text and "ETA 40s" in morph.job_label.text
        morph.show_golden(GoldenList(proto="BRICK", examples=[EXAMPLE]))
        row = morph.golden_rows[0]
        row.toggle.dispatch("on_release")
        assert sent[-1] == ExcludeGolden(proto="BRICK", id="g-1", excluded=True)
        row.text.dispatch("on_release")  # opens it in the editor
        assert morph.editing == "g-1" and "Rayleigh" in morph.reply_box.text
        morph.reply_box.text = "Rayleigh scattering, by logic."
        morph.save_button.dispatch("on_release")
        assert sent[-1] == PutGolden(
            proto="BRICK",
            id="g-1",
            prompt="Why is the sky blue?",
            reply="Rayleigh scattering, by logic.",
        )
        summary = LearningSummary(
            proto="BRICK",
            model=ModelPointer(id="BRICK-ft-1", proto="BRICK"),
            golden=12,
            scored=30,
            means={"overall": 0.61},
        )
        morph.show_status(
            LearningStatusReply(
                personas=[summary], available=False, how_to_enable="run make learning"
            )
        )
        assert "BRICK-ft-1" in morph.summary.text and "make learning" in morph.summary.text
        assert morph.buttons["fine-tune"].disabled
        screenshot("learning_morph")
    finally:
        morph.parent.remove_widget(morph)


def test_the_store_keeps_the_loss_curve_and_judge_scores() -> None:
    store = WorkbenchStore()
    for step, loss in ((1, 2.0), (1, 2.0), (2, 1.5)):
        store.apply(LearningProgress(job=JOB.model_copy(update={"step": step, "loss": loss})))
    assert store.metrics["finetune_loss"] == [2.0, 1.5]
    score = JudgeScore(interaction_id="i1", proto="BRICK", overall=0.7)
    store.apply(InteractionsScored(proto="BRICK", scores=[score]))
    assert store.metrics["judge_overall"] == [0.7]
    store.apply(
        LearningFinished(job=JOB.model_copy(update={"outcome": "adopted", "message": "yes"}))
    )
    assert store.learning_job.outcome == "adopted" and "adopted" in store.toasts[-1]
    assert set(LEARNING_METRICS) <= set(store.metrics)


def test_the_inspector_shows_the_judges_scores() -> None:
    from morphs.inspector import history_line, learning_line

    item = {"prompt": "Why?", "reply": "Because.", "model": "smollm2", "judge_score": 0.75}
    assert "judged 0.75" in history_line(item)
    line = learning_line({"model": "", "golden": 3, "judged": 9, "mean_score": 0.61})
    assert "judged 9: mean score 0.61" in line and "the default model" in line


def test_the_controller_needs_only_send_store_world_and_a_plot() -> None:
    """``LearningController`` gets what it uses, not the app: a panel it opens asks for its
    status through ``send`` and shows the reply, a change to its persona refreshes it, a job
    event reaches it, and its plot handle asks for a plot of the learning metrics."""
    from kivy.core.window import Window

    from morphs.world import World
    from ui.learning import LearningController

    sent: list[tuple[Any, Any]] = []
    plots: list[dict[str, Any]] = []
    store, world = WorkbenchStore(), World()
    Window.add_widget(world)
    controller = LearningController(
        lambda command, on_reply: sent.append((command, on_reply)),
        store,
        world,
        lambda _pos, **kwargs: plots.append(kwargs),
    )
    try:
        morph = controller.open("BRICK", (100, 800))
        assert morph.parent is world
        assert [c for c, _ in sent] == [LearningStatus(proto="BRICK"), ListGolden(proto="BRICK")]
        reply = LearningStatusReply(
            personas=[LearningSummary(proto="BRICK", golden=7)], available=True
        )
        sent[0][1](reply)
        assert "7 golden" in morph.summary.text
        store.dispatch("on_change", "ROBIN")  # another persona's change: nothing to ask
        store.dispatch("on_change", "BRICK")
        assert [c for c, _ in sent[2:]] == [
            LearningStatus(proto="BRICK"),
            ListGolden(proto="BRICK"),
        ]
        store.apply(LearningProgress(job=JOB))
        frames()
        assert "step 3/24" in morph.job_label.text
        morph.dispatch("on_plot")
        assert plots == [{"metrics": list(LEARNING_METRICS)}]
    finally:
        Window.remove_widget(world)
