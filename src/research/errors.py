"""The one exception type for errors a user can cause and fix."""


class KitError(Exception):
    """A problem the user can act on: the message says what went wrong and what to do.

    The CLI prints it as one line and exits non-zero; the page shows it as a message.
    """
