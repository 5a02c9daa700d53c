"""The one error every wake-up source raises: it cannot be used here, and why."""


class Unavailable(Exception):
    """This source cannot be used for this target; the message says why."""
