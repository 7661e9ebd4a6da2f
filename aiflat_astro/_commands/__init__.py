"""Sub-commands of the ``aiflat`` CLI: one module each (``add_parser`` + ``run``)."""
