"""The learning commands' handlers, registered in the server's dispatch table.

A fine-tune or Ascension answers at once (``learning_accepted``) and runs on the learning
thread; its progress arrives as events. The others are quick, except ``curate``, which waits
for the judge (blocking, on the worker pool like the rest).
"""

from __future__ import annotations

from backend.learning import image_ops
from backend.learning.service import LearningService
from backend.routing import Context, route
from shared_api import commands as c
from shared_api.errors import UnavailableError
from shared_api.replies import GoldenReply, LearningAccepted, Reply, ScoreList


def service(ctx: Context) -> LearningService:
    learning = ctx.learning
    if not isinstance(learning, LearningService):
        raise UnavailableError("The learning loop does not run in this backend.")
    return learning


@route("learning_status", blocking=True)
def learning_status(ctx: Context, cmd: c.LearningStatus) -> Reply:
    return service(ctx).status(cmd.proto)


@route("curate", blocking=True)
def curate(ctx: Context, cmd: c.Curate) -> Reply:
    return service(ctx).curate(cmd.proto, cmd.limit)


@route("judge", blocking=True)
def judge(ctx: Context, cmd: c.JudgePair) -> Reply:
    return service(ctx).judge_pair(cmd)


@route("list_scores", blocking=True)
def list_scores(ctx: Context, cmd: c.ListScores) -> Reply:
    proto = ctx.runtime.manager.get(cmd.proto)
    scores = sorted(image_ops.scores_of(proto).values(), key=lambda s: s.ts)
    return ScoreList(proto=proto.name, scores=scores[-cmd.limit :])


@route("list_golden", blocking=True)
def list_golden(ctx: Context, cmd: c.ListGolden) -> Reply:
    return service(ctx).list_golden(cmd.proto, cmd.include_excluded)


@route("put_golden", blocking=True)
def put_golden(ctx: Context, cmd: c.PutGolden) -> Reply:
    example = service(ctx).put_golden(
        cmd.proto,
        cmd.id,
        cmd.prompt,
        cmd.reply,
        list(cmd.messages) if cmd.messages else None,
        cmd.note,
    )
    return GoldenReply(example=example)


@route("exclude_golden", blocking=True)
def exclude_golden(ctx: Context, cmd: c.ExcludeGolden) -> Reply:
    return GoldenReply(example=service(ctx).exclude_golden(cmd.proto, cmd.id, cmd.excluded))


@route("start_finetune", blocking=True)
def start_finetune(ctx: Context, cmd: c.StartFinetune) -> Reply:
    job = service(ctx).start_finetune(
        cmd.proto, engine=cmd.engine, steps=cmd.steps, adopt=cmd.adopt
    )
    return LearningAccepted(job=job)


@route("adopt_model", blocking=True)
def adopt_model(ctx: Context, cmd: c.AdoptModel) -> Reply:
    return service(ctx).adopt(cmd.proto, cmd.candidate, force=cmd.force, reason=cmd.reason)


@route("rollback_model", blocking=True)
def rollback_model(ctx: Context, cmd: c.RollbackModel) -> Reply:
    return service(ctx).rollback(cmd.proto, cmd.reason)


@route("propose_ascension", blocking=True)
def propose_ascension(ctx: Context, cmd: c.ProposeAscension) -> Reply:
    return service(ctx).propose_ascension(cmd.proto)


@route("ascend", blocking=True)
def ascend(ctx: Context, cmd: c.Ascend) -> Reply:
    job = service(ctx).ascend(cmd.proto, cmd.base, steps=cmd.steps, follow_up=cmd.follow_up)
    return LearningAccepted(job=job)
