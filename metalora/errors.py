"""User-facing errors.

Every error a user can cause (a bad file, a bad field, an impossible request) is raised as a
`MetaloraError` whose message names the file or field and says how to fix it. The CLI prints these
as one line and exits 2; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class MetaloraError(Exception):
    """An error caused by user input; its message is the whole story."""


class ConfigError(MetaloraError, ValueError):
    """A config file, config field or command-line option is wrong."""


class DataError(MetaloraError, ValueError):
    """A data card, data file, column or label is wrong or missing."""


class BackboneError(MetaloraError, ValueError):
    """A backbone cannot be loaded or does not match what an adapter was trained on."""


class HubError(MetaloraError, RuntimeError):
    """A Hub operation failed for a reason the user can act on (auth, missing repo, network)."""


class TrainingError(MetaloraError, RuntimeError):
    """Training could not go on (for example a NaN loss); the message names the step."""


class DataWarning(UserWarning):
    """Data that works but may mislead (e.g. test texts that also occur in train); the message says how to fix it."""
