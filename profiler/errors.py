"""Setup-time errors; `main()` prints them as one line and exits nonzero."""


class SframeProfError(Exception):
    """An error the user can act on; the message is one line."""

    exit_code = 1
