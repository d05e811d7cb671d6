"""The one exception type MRB raises for bad input; the CLI prints it and exits 2."""


class MRBError(Exception):
    """A user-facing error: the message names the file, task, query or document at fault."""
