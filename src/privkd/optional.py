"""The optional dependencies: each belongs to one extra of ``pyproject.toml`` and is imported
only inside the function that needs it, through :func:`require`.

A plain ``pip install privkd`` (``make demo``) brings what training, evaluation and the demo
need; the extras add what a single command or importer uses (``pip install 'privkd[export]'``).
When one of those packages is missing, :func:`require` raises a one-line
:class:`MissingDependencyError` naming the extra to install, instead of an ``ImportError``
traceback from deep inside the command.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from privkd.errors import PrivkdError

__all__ = ["EXTRAS", "MissingDependencyError", "require"]

EXTRAS: dict[str, tuple[str, ...]] = {
    "video": ("av", "pillow"),
    "export": ("onnx", "onnxscript", "onnxruntime"),
    "sweep": ("optuna",),
    "parquet": ("pyarrow",),
    "report": ("matplotlib",),
}
"""Extra -> the packages (as pip names them) it installs; ``all`` is every one of them and
``test`` adds the test tools to ``all``. Kept equal to ``[project.optional-dependencies]``
(``tests/test_optional.py`` checks)."""

_PIP_NAMES = {"PIL": "pillow", "sklearn": "scikit-learn"}
"""Import name -> pip name, where they differ."""


class MissingDependencyError(PrivkdError, ImportError):
    """An optional package that a command needs is not installed.

    Also an ``ImportError``, since it stands for a failed import.
    """

    def __init__(self, module: str, extra: str, purpose: str) -> None:
        Exception.__init__(self, module, extra, purpose)
        self.module = module
        self.extra = extra
        self.purpose = purpose
        self.name = module
        self.path = None
        package = _PIP_NAMES.get(module.split(".")[0], module.split(".")[0])
        self.problem = f"{purpose} needs the '{package}' package, which is not installed"
        self.fix = (f"install privkd's {extra} extra: pip install 'privkd[{extra}]' "
                    f"(in a source checkout: pip install -e '.[{extra}]')")

    def __reduce__(self):  # ImportError's own would also pass name and path, which __init__ does not take
        return (type(self), (self.module, self.extra, self.purpose))


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` (dotted names such as ``pyarrow.parquet`` too) and return it, or raise a
    :class:`MissingDependencyError` saying that ``purpose`` (e.g. ``"privkd export"``) needs
    privkd's ``extra`` extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        # only the package itself missing is ours to explain; a broken install says what broke
        missing = getattr(exc, "name", None)
        if missing is not None and module != missing and not module.startswith(f"{missing}."):
            raise
        raise MissingDependencyError(module, extra, purpose) from None
