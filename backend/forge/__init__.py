"""The Tool Forge: personas write, test (in the sandbox) and hot-load their own tools."""

from backend.forge.forge import ToolForge

__all__ = ["ToolForge"]
