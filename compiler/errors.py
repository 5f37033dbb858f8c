"""Errors that map to the CLI exit codes of DESIGN section 8.

Every failure a user can cause or meet is raised as one of these; the CLI turns it
into one line on stderr and the matching exit code. Anything else is our bug (1).
"""

from __future__ import annotations


class MfncError(Exception):
    """Base class: a one-line message and an exit code."""

    exit_code = 1


class BadInput(MfncError):
    """Bad input or usage, unsupported target/backend, or a model that does not fit."""

    exit_code = 2


class AccuracyGateFailed(MfncError):
    """The quantized model missed the accuracy gate; the report is still written."""

    exit_code = 3


class HilCheckFailed(MfncError):
    """A hardware-in-the-loop check failed (not bit-exact or below threshold)."""

    exit_code = 4


class ExternalFailure(MfncError):
    """A device, link, emulator, tracker or external tool failed or timed out."""

    exit_code = 5
