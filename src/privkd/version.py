"""privkd's version, in a module of its own so that what records it (a saved student's card)
need not import the package's top level, which brings in the training API."""

__version__ = "0.1.0"
