"""Every error that can cross the wire: one ``ErrorCode`` enum, one ``ErrorReply`` model,
and the exception hierarchy the backend raises internally.

Messages say what happened *and what to do about it*.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel


class ErrorCode(StrEnum):
    UNKNOWN_KIND = "unknown_kind"
    INVALID_BODY = "invalid_body"
    MALFORMED = "malformed"
    PROTOCOL_MISMATCH = "protocol_mismatch"
    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    COMPILE_ERROR = "compile_error"
    CODEX_IMMUTABLE = "codex_immutable"
    STALE_VERSION = "stale_version"
    INVALID_PATH = "invalid_path"
    INVALID_VALUE = "invalid_value"
    METHOD_FAILED = "method_failed"
    IMAGE_ERROR = "image_error"
    IMAGE_TAMPERED = "image_tampered"
    CHECKPOINT_TAMPERED = "checkpoint_tampered"
    CODEX_INVALID = "codex_invalid"
    CONFIG_INVALID = "config_invalid"
    TIMEOUT = "timeout"
    UNAVAILABLE = "unavailable"
    MODEL_UNREACHABLE = "model_unreachable"
    MODEL_MISSING = "model_missing"
    MODEL_TOO_LARGE = "model_too_large"
    MODEL_FAILED = "model_failed"
    MODEL_UNAUTHORIZED = "model_unauthorized"
    MODEL_OUTPUT_INVALID = "model_output_invalid"
    CANCELLED = "cancelled"
    SANDBOX_UNAVAILABLE = "sandbox_unavailable"
    SANDBOX_FAILED = "sandbox_failed"
    DOCUMENT_REJECTED = "document_rejected"
    LAYOUT_INVALID = "layout_invalid"
    MEMORY_UNAVAILABLE = "memory_unavailable"
    INTERNAL = "internal"


class ErrorReply(BaseModel):
    """The reply to any request that failed. ``message`` tells the user what to do."""

    kind: Literal["error"] = "error"
    code: ErrorCode
    message: str
    detail: dict[str, Any] = {}
    traceback: str | None = None


class EntropicError(Exception):
    """Base of all typed errors. ``to_reply()`` turns one into an ``ErrorReply``."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def to_reply(self, traceback: str | None = None) -> ErrorReply:
        return ErrorReply(
            code=self.code, message=self.message, detail=self.detail, traceback=traceback
        )


class NotFoundError(EntropicError):
    code = ErrorCode.NOT_FOUND


class AlreadyExistsError(EntropicError):
    code = ErrorCode.ALREADY_EXISTS


class CompileError(EntropicError):
    """Method source that does not compile. ``detail`` holds ``line`` and ``column``."""

    code = ErrorCode.COMPILE_ERROR


class CodexImmutableError(EntropicError):
    code = ErrorCode.CODEX_IMMUTABLE


class StaleVersionError(EntropicError):
    code = ErrorCode.STALE_VERSION


class InvalidPathError(EntropicError):
    code = ErrorCode.INVALID_PATH


class InvalidValueError(EntropicError):
    code = ErrorCode.INVALID_VALUE


class MethodFailedError(EntropicError):
    code = ErrorCode.METHOD_FAILED


class ImageError(EntropicError):
    code = ErrorCode.IMAGE_ERROR


class ImageTamperedError(ImageError):
    code = ErrorCode.IMAGE_TAMPERED


class CheckpointTamperedError(EntropicError):
    """A stored dialogue checkpoint failed its signature or names code; it was not loaded."""

    code = ErrorCode.CHECKPOINT_TAMPERED


class CodexInvalidError(EntropicError):
    code = ErrorCode.CODEX_INVALID


class ConfigInvalidError(EntropicError):
    code = ErrorCode.CONFIG_INVALID


class UnavailableError(EntropicError):
    code = ErrorCode.UNAVAILABLE


class ModelUnreachableError(EntropicError):
    """The model server (Ollama) does not answer; ``detail['host']`` names it."""

    code = ErrorCode.MODEL_UNREACHABLE


class ModelMissingError(EntropicError):
    """The model is not installed; the message gives the exact ``ollama pull`` to run."""

    code = ErrorCode.MODEL_MISSING


class ModelTooLargeError(EntropicError):
    code = ErrorCode.MODEL_TOO_LARGE


class ModelFailedError(EntropicError):
    code = ErrorCode.MODEL_FAILED


class ModelUnauthorizedError(EntropicError):
    """A model server refused the API key; the message names the variable that holds it."""

    code = ErrorCode.MODEL_UNAUTHORIZED


class ModelOutputError(EntropicError):
    """A model's answer does not fit the JSON schema it was generated under (a backend that
    ignored the schema, or an answer cut off by the token limit)."""

    code = ErrorCode.MODEL_OUTPUT_INVALID


class CancelledError(EntropicError):
    code = ErrorCode.CANCELLED


class SandboxUnavailableError(EntropicError):
    """No sandbox runtime can run code here; the message names what to install.

    ``detail['reasons']`` maps each runtime to why it is unavailable. Code is never run
    unsandboxed instead.
    """

    code = ErrorCode.SANDBOX_UNAVAILABLE


class SandboxFailedError(EntropicError):
    """The sandbox itself failed (not the code in it); ``detail`` holds the runtime's words."""

    code = ErrorCode.SANDBOX_FAILED


class DocumentError(EntropicError):
    """A document dropped on a persona that cannot be read; the message says what to do."""

    code = ErrorCode.DOCUMENT_REJECTED


class LayoutError(EntropicError):
    """A layout file that cannot be loaded or saved; the message says what to do."""

    code = ErrorCode.LAYOUT_INVALID


class MemoryUnavailableError(EntropicError):
    """The episodic memory cannot serve (disabled, still opening, or failed to open); the
    message says what to do. The rest of the backend keeps running."""

    code = ErrorCode.MEMORY_UNAVAILABLE


class RemoteError(EntropicError):
    """Raised by a client when the backend answered with an ``ErrorReply``."""

    def __init__(self, reply: ErrorReply) -> None:
        super().__init__(f"[{reply.code}] {reply.message}", **reply.detail)
        self.code = reply.code
        self.reply = reply


class RequestTimeout(EntropicError, TimeoutError):
    """No reply arrived before the deadline."""

    code = ErrorCode.TIMEOUT
