"""Every error a command turns into one line and an exit status: one small hierarchy, in a leaf module that imports
nothing of the project (so the data layer, the run directory, the engine and the commands all raise from it).

| class | exit | meaning |
|---|---|---|
| ConfigError | 2 | a configuration value or combination that cannot run |
| RunDirError | 2 | a run directory that may not be used as asked (in use, foreign or damaged files, not writable) |
| ForeignRunError | 2 | a checkpoint, result or run that belongs to another run (model, drop, classes, data, study) |
| ExperimentError | 2 | a bad experiment name or option, or no runs to report |
| FigureError | 2 | a run directory or option a figure or evaluation cannot use |
| Preempted | 3 | stopped by a signal after writing a checkpoint (the message says how to go on) |
| CheckpointError | 5 | a checkpoint could not be written or loaded |
| OutputWriteError | 5 | metrics, result.json or another output could not be written (the previous ones are intact) |

Each message is one line that names the problem and the fix; ``exit_status`` says how a command ends.
"""

from __future__ import annotations


class SelectScaleError(Exception):
    """Base of the project's known failures; ``exit_status`` is the status a command exits with."""

    exit_status = 2


class ConfigError(SelectScaleError, ValueError):
    """A configuration value or combination that cannot run; the message is one line."""


class RunDirError(ConfigError):
    """A run directory that may not be used as asked: in use by another process, holding a link, pipe or folder
    where the run keeps a file, damaged records, not writable. Nothing was changed."""


class ForeignRunError(RunDirError):
    """A checkpoint, result or run directory that belongs to another run (another model, drop method, number of
    classes, data set or study): refused rather than read as this run's."""


class ExperimentError(SelectScaleError, ValueError):
    """A bad experiment name or option, or no runs to report; the message is one line."""


class FigureError(SelectScaleError, ValueError):
    """A run directory or option that a figure or an evaluation cannot use; one line naming it and the fix."""


class Preempted(SelectScaleError, RuntimeError):
    """Raised after the checkpoint is written; the message says how to resume."""

    exit_status = 3


class CheckpointError(SelectScaleError, RuntimeError):
    """No checkpoint could be written or loaded; the message says which file and why."""

    exit_status = 5


class OutputWriteError(SelectScaleError, RuntimeError):
    """A run's output (metrics, result.json, TensorBoard events) could not be written; the message says which file
    and why. Exit status 5, like a checkpoint that cannot be written: the previous files are intact."""

    exit_status = 5


def one_line(error: BaseException) -> str:
    """``error``'s message on one line (whitespace runs folded), or its type's name if it has none."""
    return " ".join(str(error).split()) or type(error).__name__
