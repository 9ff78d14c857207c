"""The one exception type for user mistakes: the CLI prints its message as a single line."""


class SpiralrayError(Exception):
    """Bad input or configuration a user can fix; the message names the problem."""


# Exit codes: a user mistake (one line on stderr) exits 2, as argparse does; a run over many
# inputs (an archive, an ingest) that finished some and failed others exits 3.
EXIT_USAGE = 2
EXIT_FAILED_IMAGES = 3
