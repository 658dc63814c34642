"""Numeric constants of the matrix-tree core, named once for both backends, each with the reason for its value."""

#: The linear (column-normalised, float64) elimination is exact while no column loses more than this many
#: nats of scale. float64 flushes below ``e^-708``, so anything it loses is at least ``e^-108`` below the
#: final scale of its column: far below float64 rounding. A batch element past it takes the log-space
#: elimination, which has no range limit.
LINEAR_ELIMINATION_MAX_LOSS = 600.0

#: ``single_root``: the root's out-edges are scaled by ``e^-c`` with ``c`` this far above the bound on
#: ``log(Z_{>1} / Z_1)``, so arborescences with several root edges weigh less than ``e^-60`` (2e-26) of the total.
SINGLE_ROOT_MARGIN = 60.0

#: ``single_root``: half the margin. If ``Z_1 > 0`` then ``log Z_1 >= (n - 1) * smallest logit``; a value this
#: far below that bound can only be the ``e^-c``-scaled multi-root mass, so ``Z_1 = 0`` (no single-root tree).
SINGLE_ROOT_EMPTY_MARGIN = 30.0
