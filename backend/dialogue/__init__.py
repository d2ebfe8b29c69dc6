"""Dialogues: the Socratic Contrapunto graph (LangGraph), its SQLite checkpoints, the Live
Debugger, codex amendments that wait for the user, and the motivator that turns dissonance and
curiosity deficits into goals.

Importing LangGraph takes seconds, so only ``graph`` imports it, and the service loads it on
first use (``service.DialogueService``); a backend that never runs a dialogue never pays.
"""
