"""Numeric constants of the matrix-tree core, named once for both backends, each with the reason for its value."""

import math

#: Nats by which whatever the linear elimination flushes to zero or rounds away stays below the working
#: precision, relative to the final scale of its column.
LINEAR_ELIMINATION_MARGIN = 10.0

#: ``single_root``: the root's out-edges are scaled by ``e^-c`` with ``c`` this far above the bound on
#: ``log(Z_{>1} / Z_1)``, so arborescences with several root edges weigh less than ``e^-60`` (2e-26) of the total.
SINGLE_ROOT_MARGIN = 60.0

#: ``single_root``: half the margin. If ``Z_1 > 0`` then ``log Z_1 >= (n - 1) * smallest logit``; a value this
#: far below that bound can only be the ``e^-c``-scaled multi-root mass, so ``Z_1 = 0`` (no single-root tree).
SINGLE_ROOT_EMPTY_MARGIN = 30.0


def linear_elimination_max_loss(eps, tiny):
    """The most nats of scale a column of the linear (column-normalised) elimination may lose and stay exact.

    Its entries are flushed or rounded with absolute errors below ``tiny`` (the smallest normal number)
    in units of their column's scale at the time; after the column has lost ``L`` nats that error is
    ``tiny * e^L`` of the final scale, which stays ``LINEAR_ELIMINATION_MARGIN`` nats below the rounding
    error ``eps`` while ``L <= log(eps / tiny) - margin``: 662 nats in float64, 61 in float32.
    """
    return math.log(eps / tiny) - LINEAR_ELIMINATION_MARGIN


#: Panel widths of the blocked elimination, ``(most nodes, target width)`` by graph size, measured on 2 cores in
#: float32 (relaxed trees, marginals and backward). Wider panels put more of the work in the trailing matrix
#: products, but each panel's own steps are sequential and cost more per node than the node-by-node ones.
#: numpyro_sst (XLA): one panel up to 17 nodes, 8 nodes a panel up to 160, 16 beyond.
JAX_PANEL_WIDTHS = ((17, 16), (160, 8), (math.inf, 16))
#: pyro_sst (eager torch, where every panel adds a dozen operations): one panel up to 32 nodes, 16 beyond.
TORCH_PANEL_WIDTHS = ((32, 31), (math.inf, 16))


#: numpyro_sst: the log-space elimination that takes the batch elements the linear one cannot (a ``lax.cond``
#: branch) runs over chunks of at most this many elements in turn. Its per-step arrays are ``(n, n, n, chunk)``;
#: over the whole batch they set the program's scratch memory, which the allocator hands out afresh on every call
#: once it is large, even where the branch is skipped. At (256, 30), float32, in one piece against chunks of 64:
#: scratch of the marginals 32 against 15 MB, of marginals and their gradient 115 against 33 MB; the gradient (one
#: core) 58 against 45 ms with the branch skipped, 140 against 105 ms with the branch taken for a third of the
#: batch (chunks of 16: 257 ms).
JAX_LOGARITHMIC_CHUNK = 64

#: ... and at most this many entries per step array (``n^3 * chunk``), so that large graphs take smaller chunks
#: and the scratch memory stays bounded whatever the batch. Float32 gradient of the marginals of 16 graphs of
#: n = 200, every element in log space (2 cores): in one chunk 2.06 GB of scratch and 2.6 s; 2^26 entries (chunks
#: of 8) 1.03 GB, 3.0 s; 2^25 (chunks of 4) 0.52 GB, 3.5 s; 2^24 (chunks of 2) 0.27 GB, 4.2 s.
JAX_LOGARITHMIC_CHUNK_ENTRIES = 2**25

#: numpyro_sst's exact samplers run their log-space elimination in runs of at least this many nodes, at most
#: ``JAX_LOGARITHMIC_RUNS``, each on arrays of the nodes left when it starts (each run is one more compiled loop).
#: Float32, 2 cores, against one run over full-size arrays: one spanning tree for each of 256 graphs of n = 50 in
#: 0.10 against 0.13-0.17 s (6 runs: 0.097 s, for 0.7 s more compilation). The marginals' log-space branch (the
#: elements the linear elimination cannot take) keeps one run: it is compiled into every tree program and rarely
#: taken, and four runs added 1.2 s to compiling marginals and gradient at (64, 30) for 0.19-0.22 against 0.28-0.33 s
#: at (4, 100) with every element in that branch.
JAX_LOGARITHMIC_RUN_NODES = 8
JAX_LOGARITHMIC_RUNS = 4


def panel_width(n, widths):
    """Nodes per panel of the blocked elimination of ``n`` nodes, by ``widths`` (:data:`JAX_PANEL_WIDTHS`,
    :data:`TORCH_PANEL_WIDTHS`).

    The target width is evened out over the panels that ``n - 1`` nodes need, so that padding adds at most one
    node per panel (padding 9 nodes to 16 took twice the time of 10).
    """
    target = next(width for most, width in widths if n <= most)
    panels = max(1, -(-(n - 1) // target))
    return max(1, -(-(n - 1) // panels))


def subset_tilt_bisection_steps(d):
    r"""Bisection steps for the tilt :math:`\tau` of the k-subset passes over ``d`` items.

    The passes run on :math:`p_i = \sigma(\theta_i - \tau)` and need the count :math:`N \sim
    \text{PoissonBinomial}(p)` to have its mean near ``k``, so that :math:`P(N = k)` is far from underflow
    (any :math:`\tau` is exact). The bracket has width :math:`2 \log d + 1`; ``m`` halvings leave
    :math:`\Delta\tau \le 4 / d`, so the mean misses ``k`` by at most :math:`e\,\sigma^2 \Delta\tau`,
    i.e. :math:`5.4 / \sqrt d` standard deviations: :math:`P(N = k)` stays near the mode's.
    """
    width = 2 * math.log(max(d, 2)) + 1
    return max(1, math.ceil(math.log2(width * d / 4)))


#: k-subset passes: count distributions with at most this many coefficients are multiplied directly (every
#: coefficient to a few roundings, relative); longer ones by FFT, in ``O(L log L)`` instead of ``O(L^2)`` time and
#: memory. FFT's error is absolute, a few roundings times ``log L`` on probability vectors, and the coefficients
#: that the results divide by lie at the mode of the count, at least ``1 / (2 sigma + 2)``.
SUBSET_DIRECT_CONVOLUTION_MAX_LENGTH = 64
