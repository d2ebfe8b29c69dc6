"""The dialogue commands' handlers, registered in the server's dispatch table.

Each returns at once with a typed reply; a dialogue's progress arrives as events. They are
``blocking`` (they touch SQLite, and the first one loads LangGraph), so they run on the
worker pool, never on the request loop.
"""

from __future__ import annotations

from backend.dialogue.service import DialogueService
from backend.routing import Context, route
from shared_api import commands as c
from shared_api.errors import UnavailableError
from shared_api.replies import (
    AmendmentDecision,
    ApprovalListReply,
    DebugAck,
    DebugHistoryReply,
    DebugStateUpdated,
    DialogueAccepted,
    DialogueGraphReply,
    DialogueListReply,
    DialogueStatusReply,
    GoalListReply,
    GoalReply,
    Reply,
)


def _service(ctx: Context) -> DialogueService:
    service = ctx.dialogue
    if not isinstance(service, DialogueService):
        raise UnavailableError("The dialogue service does not run in this backend.")
    return service


@route("start_dialogue", blocking=True)
def start_dialogue(ctx: Context, cmd: c.StartDialogue) -> Reply:
    summary = _service(ctx).start_dialogue(
        cmd.goal,
        max_rounds=cmd.max_rounds,
        breakpoints=cmd.breakpoints,
        personas=dict(cmd.personas),
        paused=cmd.paused,
    )
    return DialogueAccepted(dialogue=summary)


@route("list_dialogues", blocking=True)
def list_dialogues(ctx: Context, cmd: c.ListDialogues) -> Reply:
    return DialogueListReply(dialogues=_service(ctx).list_dialogues())


@route("dialogue_status", blocking=True)
def dialogue_status(ctx: Context, cmd: c.DialogueStatus) -> Reply:
    summary, values, approvals = _service(ctx).status(cmd.dialogue_id)
    return DialogueStatusReply(dialogue=summary, values=values, approvals=approvals)


@route("dialogue_graph", blocking=True)
def dialogue_graph(ctx: Context, cmd: c.DialogueGraph) -> Reply:
    nodes, edges, mermaid = _service(ctx).graph_info()
    return DialogueGraphReply(nodes=nodes, edges=edges, mermaid=mermaid)


@route("debug_step", blocking=True)
def debug_step(ctx: Context, cmd: c.DebugStep) -> Reply:
    return DebugAck(dialogue=_service(ctx).step(cmd.dialogue_id), action="step")


@route("debug_continue", blocking=True)
def debug_continue(ctx: Context, cmd: c.DebugContinue) -> Reply:
    return DebugAck(dialogue=_service(ctx).continue_(cmd.dialogue_id), action="continue")


@route("debug_pause", blocking=True)
def debug_pause(ctx: Context, cmd: c.DebugPause) -> Reply:
    return DebugAck(dialogue=_service(ctx).pause(cmd.dialogue_id), action="pause")


@route("cancel_dialogue", blocking=True)
def cancel_dialogue(ctx: Context, cmd: c.CancelDialogue) -> Reply:
    return DebugAck(dialogue=_service(ctx).cancel(cmd.dialogue_id), action="cancel")


@route("set_breakpoints", blocking=True)
def set_breakpoints(ctx: Context, cmd: c.SetBreakpoints) -> Reply:
    summary = _service(ctx).set_breakpoints(cmd.dialogue_id, list(cmd.nodes))
    return DebugAck(dialogue=summary, action="set_breakpoints")


@route("debug_update_state", blocking=True)
def debug_update_state(ctx: Context, cmd: c.DebugUpdateState) -> Reply:
    summary, checkpoint_id, values = _service(ctx).update_state(cmd.dialogue_id, dict(cmd.values))
    return DebugStateUpdated(dialogue=summary, checkpoint_id=checkpoint_id, values=values)


@route("debug_history", blocking=True)
def debug_history(ctx: Context, cmd: c.DebugHistory) -> Reply:
    summary, steps, truncated = _service(ctx).history(cmd.dialogue_id, cmd.limit)
    return DebugHistoryReply(dialogue=summary, steps=steps, truncated=truncated)


@route("debug_rewind", blocking=True)
def debug_rewind(ctx: Context, cmd: c.DebugRewind) -> Reply:
    summary = _service(ctx).rewind(cmd.dialogue_id, cmd.checkpoint_id, cmd.resume)
    return DebugAck(dialogue=summary, action="rewind")


@route("decide_amendment", blocking=True)
def decide_amendment(ctx: Context, cmd: c.DecideAmendment) -> Reply:
    approval = _service(ctx).decide(cmd.interrupt_id, cmd.approve, cmd.note)
    return AmendmentDecision(approval=approval)


@route("list_approvals", blocking=True)
def list_approvals(ctx: Context, cmd: c.ListApprovals) -> Reply:
    return ApprovalListReply(approvals=_service(ctx).approvals(pending_only=not cmd.all))


@route("list_goals", blocking=True)
def list_goals(ctx: Context, cmd: c.ListGoals) -> Reply:
    motivator = _service(ctx).motivator
    return GoalListReply(goals=motivator.goals(), suppressed=motivator.suppressed)


@route("goal_action", blocking=True)
def goal_action(ctx: Context, cmd: c.GoalAction) -> Reply:
    return GoalReply(goal=_service(ctx).motivator.act(cmd.goal_id, cmd.action))
