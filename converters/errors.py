"""Errors the converters raise, each carrying a one-line message meant for a person and an exit code.

The CLI and the conversion job print `message` as the single stderr line and copy it into
report.json's `reason`; the exit code tells the operator whether retrying can help.
"""

from __future__ import annotations

# Exit codes of `serin convert` and `python -m serin.converters.job` (documented in
# docs/converters.md; the operator maps them to conditions, so they are a contract).
EXIT_OK = 0
EXIT_PARITY_FAILED = 1  # converted, but ONNX does not match the native model within tolerance
EXIT_USER_ERROR = 2  # bad input: format, digest, estimator, sample, arguments (retrying will not help)
EXIT_INTERNAL = 3  # a bug or an environment problem (traceback printed, report still written)
EXIT_FETCH_FAILED = 4  # the artifact or sample could not be fetched (may be transient: retry)
EXIT_STORE_FAILED = 5  # the model store could not be written (may be transient: retry)


class ConversionError(Exception):
    """A failure caused by the input, reported without a traceback."""

    exit_code = EXIT_USER_ERROR
    kind = "user-error"

    def __init__(self, message: str) -> None:
        # One line, always: the message ends up in a Pod termination message and in `reason`.
        super().__init__(" ".join(str(message).split()))

    @property
    def message(self) -> str:
        return str(self.args[0])


class FetchError(ConversionError):
    """The artifact or the sample could not be downloaded (network, credentials, missing object)."""

    exit_code = EXIT_FETCH_FAILED
    kind = "fetch-failed"


class SourceUnavailable(ConversionError):
    """The artifact or sample cannot be had until a person acts: the bucket or object does not
    exist, the keys are refused, the settings are wrong. A user error: retrying will not help."""

    kind = "source-unavailable"


class StoreUnavailable(ConversionError):
    """The converted model could not be written to the model store, and trying again later may
    work (the server unreachable, busy, or failing)."""

    exit_code = EXIT_STORE_FAILED
    kind = "store-unavailable"


class StoreRefused(ConversionError):
    """The model store refuses the write until a person acts: its bucket, its keys (the
    namespace's Secret) or its settings are wrong, or the version's place already holds other
    bytes (a published version is never overwritten)."""

    kind = "store-refused"


class DigestMismatch(ConversionError):
    kind = "digest-mismatch"


class UnsupportedModel(ConversionError):
    kind = "unsupported"


class SampleError(ConversionError):
    kind = "bad-sample"


def first_line(exc: BaseException, limit: int = 300) -> str:
    """A library exception reduced to one readable line (libraries like multi-line messages)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
