"""Errors a user can act on. Each message names the file or key and what is wrong."""


class PipelineError(Exception):
    """Base class: the CLI prints these without a traceback."""


class ConfigError(PipelineError):
    """A parameter in params.yaml (or given with `dvc exp run -S`) is unknown or invalid."""


class DataError(PipelineError):
    """An input file is missing, corrupt, or does not have the documented keys/shapes."""


class DownloadError(PipelineError):
    """A remote file could not be fetched."""


class DiskFullError(PipelineError):
    """A write failed for lack of space; the message names the file."""
