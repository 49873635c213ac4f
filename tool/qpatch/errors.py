"""One exception base for everything a user can do wrong; the CLI maps it to exit codes in one place."""

from __future__ import annotations


class QpatchError(Exception):
    """A problem with the user's input or environment. Message is shown as is, no traceback."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class UsageError(QpatchError):
    """Bad argument value: unknown ftype, type or build target, malformed --tensor-type."""

    exit_code = 2


class ModelError(QpatchError):
    """A GGUF model that cannot be read: not GGUF, truncated, missing or wrong shard."""

    exit_code = 3


class PolicyError(QpatchError):
    """An unknown policy, or one that cannot be loaded or is inconsistent; message names file:line."""

    exit_code = 4


class CheckoutError(QpatchError):
    """The llama.cpp checkout is missing, dirty, or a patch does not apply."""

    exit_code = 5


class SourceError(QpatchError):
    """No usable source for a pin (offline, corrupt archive, hash mismatch)."""

    exit_code = 6


class BuildError(QpatchError):
    """CMake configure or build failed, or a toolchain (nvcc, GPU) is missing."""

    exit_code = 7


class QuantizeError(QpatchError):
    """llama-quantize would refuse this job, or failed running it."""

    exit_code = 8


class VerifyMismatch(QpatchError):
    """A quantized file's tensor types differ from the prediction."""

    exit_code = 1


class NotExpressible(QpatchError):
    """`qpatch export`: some of the policy's types cannot be had from a stock binary with --tensor-type."""

    exit_code = 9


class Stale(QpatchError):
    """The checkout's generated code differs from what the policy renders today (`qpatch check`)."""

    exit_code = 1


class EvalError(QpatchError):
    """`qpatch eval`/`sweep`: missing text, models that do not match, a run of llama-perplexity that failed."""

    exit_code = 10


class ShelfError(QpatchError):
    """Shelves that cannot serve: made from another model, imatrix, pin or binary, or lacking a type a mix needs;
    a measurement table of another model or pin."""

    exit_code = 11


class JobsFailed(QpatchError):
    """`sweep`: some (policy, ftype) jobs failed; the others were measured and reported."""

    exit_code = 1
