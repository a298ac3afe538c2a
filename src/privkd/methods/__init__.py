"""The methods privkd trains, one module each, registered in their training order.

Importing this package registers them (:mod:`privkd.methods.registry`); the order of the
imports below is the order rows are trained within a fold, so it is not alphabetical.
"""

# isort: off
from privkd.methods import baseline  # noqa: F401
from privkd.methods import linear  # noqa: F401
from privkd.methods import teacher  # noqa: F401
from privkd.methods import pkdot  # noqa: F401
from privkd.methods import mt_pkdot  # noqa: F401
from privkd.methods import point_to_point  # noqa: F401
from privkd.methods import amid  # noqa: F401
# isort: on
