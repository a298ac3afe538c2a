"""The ``privkd`` command line: ``demo``, ``run``, ``sweep``, ``study``, ``report``, ``predict``,
``export``, ``data info`` and ``data import``.

- :mod:`~privkd.cli.console`: the console and progress printer, the bottom layer;
- :mod:`~privkd.cli.run`, :mod:`~privkd.cli.data`, :mod:`~privkd.cli.deploy`,
  :mod:`~privkd.cli.report`: the commands, importing only the console and library code;
- :mod:`~privkd.cli.main`: the app that registers them and turns user-fixable errors
  into one message and exit code 2 (``--debug`` shows the traceback instead).
"""

from privkd.cli.main import app

__all__ = ["app"]
