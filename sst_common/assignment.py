"""Maximum-weight assignments on the host (NumPy, scipy): both backends' CPU path."""

import numpy as np


def linear_sum_assignments(cost, index_dtype=np.int64):
    """:func:`scipy.optimize.linear_sum_assignment` per element of ``(..., n, n)`` ``cost`` (``+inf`` = forbidden).

    Returns ``(columns, failed)``: ``(..., n)`` the column of each row (of ``index_dtype``) minimising the total
    cost, and ``(...)`` where no assignment of finite cost exists (those elements get the identity).
    """
    from scipy.optimize import linear_sum_assignment

    cost = np.asarray(cost)
    n = cost.shape[-1]
    flat = cost.reshape(-1, n, n)
    columns = np.tile(np.arange(n, dtype=index_dtype), (flat.shape[0], 1))
    failed = np.zeros(flat.shape[0], bool)
    for b, element in enumerate(flat):
        try:
            columns[b] = linear_sum_assignment(element)[1]
        except ValueError:  # no assignment of finite cost
            failed[b] = True
    return columns.reshape(cost.shape[:-1]), failed.reshape(cost.shape[:-2])
