"""The one exception type for user mistakes: the CLI prints its message as a single line."""


class SpiralrayError(Exception):
    """Bad input or configuration a user can fix; the message names the problem."""
