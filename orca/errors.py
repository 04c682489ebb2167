"""Errors a user can act on. The CLI prints their message and exits non-zero, no traceback."""


class OrcaError(Exception):
    """Base class for errors caused by input or environment, not by a bug."""


class ConfigError(OrcaError):
    """An unknown name, an invalid value, or parts that do not fit together."""


class DataNotFoundError(OrcaError):
    """A dataset is not where the config says; the message names the path and the source."""


class BodyLoadError(OrcaError):
    """A pretrained body could not be loaded (offline without a local copy, bad path)."""


class NonFiniteLossError(OrcaError):
    """Training produced NaN or inf; the message names the stage and the step."""


class RunExistsError(OrcaError):
    """The run folder already holds a finished run; nothing is overwritten."""


class RunFolderBusyError(OrcaError):
    """Another live process runs in the run folder (holds its lock); the message names it."""


class DataError(OrcaError):
    """Data that cannot be used: a corrupt or truncated file (named), NaN or inf values, a
    class without training samples."""
