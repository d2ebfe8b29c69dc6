"""The Entropic OS protocol, shared by the backend and the workbench.

Pure pydantic + msgpack; only ``transport`` imports zmq. Nothing here imports kivy,
langgraph or any backend service.
"""

from shared_api.version import PROTOCOL_VERSION

__all__ = ["PROTOCOL_VERSION"]
