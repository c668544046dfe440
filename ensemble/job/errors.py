"""JobError: the one error type of the job stage."""
from __future__ import annotations


class JobError(Exception):
    """A job cannot be created, resumed or read as asked; the message says what to do instead."""
