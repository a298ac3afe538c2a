"""privkd: privileged knowledge distillation from multimodal teachers to prevalent-modality students.

``privkd.run(config)`` trains and scores a run from Python (:mod:`privkd.api`); importing
privkd loads neither torch nor Lightning until something trains.
"""

import os as _os

if _os.environ.get("PRIVKD_PORTABLE") == "1":  # before anything imports torch: see privkd.portable
    from privkd.portable import enable_portable_kernels

    enable_portable_kernels()

from privkd.api import Run, run
from privkd.version import __version__

__all__ = ["Run", "__version__", "run"]
