"""winnow's own error types: an input the user can fix, named in the message.

The CLI prints these as one line (`winnow: error: ...`, exit 2) and Prefect does not
retry them; any other exception is a bug and keeps its traceback.
"""

import errno


class WinnowError(Exception):
    """A wrong input, named in the message with the fix when it is known."""


class ConfigError(WinnowError, ValueError):
    """A params.yaml key or value is wrong; the message names the dotted key."""


class DataError(WinnowError, ValueError):
    """Bad input data; the message names the file, row or column."""


class MissingInput(WinnowError, FileNotFoundError):
    """A stage's input is not there yet; the message names it and the stage that writes it."""


class StaleInput(WinnowError, RuntimeError):
    """An input was made from other data, model or code than this run's; the message says what to rerun."""


class CheckpointError(WinnowError, RuntimeError):
    """A checkpoint is unreadable, unfinished or from another run."""


class StoreError(WinnowError, RuntimeError):
    """The score store cannot be opened or used; the message names the file."""


class StoreBusy(StoreError):
    """Another process holds the store's write lock for longer than we waited."""


class OutputBusy(WinnowError, RuntimeError):
    """Another run is writing the same output right now (two runs of one stage at once); this one refuses."""


class TrainingDiverged(WinnowError, FloatingPointError):
    """The loss became NaN or infinite; the message gives the step and the fix."""


# What the machine refused, not a bug: said in one line, with the fix
FIXABLE = {
    errno.ENOSPC: "the disk is full: free space there, or point artifacts, metrics, plots and reports elsewhere",
    errno.EDQUOT: "the disk quota is used up: free space there, or point the outputs elsewhere",
    errno.EROFS: "the folder is read-only: point artifacts, metrics, plots and reports at a writable one",
    errno.EACCES: "permission denied: make the folder writable for this user, or point the outputs elsewhere",
    errno.EPERM: "not permitted: make the folder writable for this user, or point the outputs elsewhere",
}


def os_error_line(e: OSError) -> str:
    """A refusal of the machine in one line: the file, what the system said, and the fix."""
    return f"{e.filename or ''}: {e.strerror}; {FIXABLE[e.errno]}".lstrip(": ")
