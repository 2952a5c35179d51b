"""The one exception type for bad user inputs (files, folders, rasters, split configs)."""


class InputError(ValueError):
    """A user input is unusable: a missing or unreadable file, rasters that do not match, a bad label.

    The message is one complete sentence that names the file(s) and says what is wrong, e.g.
    ``date images differ in size: a/A.png is 384x768 (rows x cols) but a/B.png is 383x768.`` Entry
    points catch it, print ``error: <message>`` and exit with status 2 (no stack trace).
    """
