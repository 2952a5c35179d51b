"""The mantis demo (``make demo``)."""
