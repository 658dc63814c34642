r"""The structures, written once for both backends.

A structure is a 0/1 array :math:`x \in \mathcal X` with the shape of the ``logits`` :math:`\theta`
(the event: the last ``_event_ndim`` dims). Each class below is a mixin that a backend's distribution
classes list before their base (``StructuredDistribution`` of :mod:`pyro_sst` or :mod:`numpyro_sst`). It
supplies what differs between structures:

* ``_log_partition``, ``_marginals``, ``solve`` (the argmax), ``_exact_sample`` and ``_enumerate``;
* where not every entry of :math:`\theta` is a free parameter (trees): ``_free_entries(rows, cols)``, which
  entries are parameters (each counted once), as a function of their indices, and ``_canonical(x)``, the
  array with the other entries filled in (mirrored for undirected trees, zeroed otherwise). The defaults
  read every entry.

The mixins call the backend's array functions as ``self._ops.<name>``, where ``_ops`` is the backend's
``ops`` package (set by its base class): both packages give those functions the same names and
contracts, so one definition serves both. ``*key`` is the backend's random state: a ``jax.random`` key
in numpyro_sst, nothing in pyro_sst (torch's global generator).
"""

from .checks import check_k, check_root, check_same_options

__all__ = [
    "ArborescenceStructure",
    "KSubsetStructure",
    "PermutationStructure",
    "SpanningTreeStructure",
    "Structure",
    "exp_family_kl",
    "is_gumbel_top_k",
]


class Structure:
    """The exponential-family algebra every structure shares; the defaults read every entry of ``logits``."""

    #: how many trailing dims of ``logits`` hold one structure (``event_dim`` once constructed)
    _event_ndim = 2
    #: names of the non-array options (static data that ``expand`` and pytrees carry)
    _options = ()

    def _free_entries(self, rows, cols):
        """Which entries of ``logits`` are parameters, from their row and column indices (broadcasting arrays of
        the backend); ``None``: all of them."""
        return None

    def _canonical(self, x):
        """``x`` with the non-free entries filled in."""
        return x

    def _check_event_shape(self, event_shape):
        if event_shape[-1] != event_shape[-2]:
            raise ValueError(f"logits must have shape (..., n, n), got event shape {tuple(event_shape)}")

    def _sum_event(self, x):
        return x.sum(tuple(range(-self._event_ndim, 0)))

    def _score(self, value):
        """``<theta, value>`` over the free entries, broadcasting over leading dims.

        Entries where ``value`` is 0 add 0, also where the logit is ``-inf`` (an absent edge or item), with
        zero gradients there.
        """
        return self._sum_event(self._ops.logspace.product_where_nonzero(self.logits, value, self._free_mask))

    def _exp_family_entropy(self):
        r""":math:`H = A(\theta) - \langle\theta, \mu(\theta)\rangle`."""
        return self.log_partition - self._score(self.marginals)


def exp_family_kl(q, p):
    r""":math:`\mathrm{KL}(q\|p) = A(\theta_p) - A(\theta_q) + \langle\theta_q - \theta_p, \mu(\theta_q)\rangle`."""
    check_same_options(q, p)
    # Entries absent from q (marginal 0) add 0, whatever p says; absent from p only: +inf.
    diff_times_mu = q._ops.logspace.product_where_nonzero(q.logits - p.logits, q.marginals, q._free_mask)
    return p.log_partition - q.log_partition + q._sum_event(diff_times_mu)


class SpanningTreeStructure(Structure):
    r"""Undirected spanning trees of :math:`K_n`.

    Value: ``(..., n, n)`` symmetric 0/1 matrix with zero diagonal, :math:`\sum_{i<j} x_{ij} = n - 1`.
    Only the strict upper triangle of ``logits`` is read (symmetric logits are validated when
    ``validate_args``); :math:`A(\theta)` is Kirchhoff's log-determinant of the weighted Laplacian
    minor. ``ops.edge_logits_to_matrix`` converts Pyro's ``SpanningTree`` edge logits.
    """

    @property
    def num_nodes(self) -> int:
        return self.event_shape[-1]

    def _free_entries(self, rows, cols):
        return rows < cols

    def _canonical(self, x):
        return self._ops.symmetrize_upper(x)

    def _log_partition(self, logits):
        return self._ops.spanning_tree_log_partition(logits)

    def _marginals(self, logits):
        return self._ops.spanning_tree_marginals(logits)

    def solve(self, utilities):
        """Maximum spanning tree of ``utilities`` (batched Prim)."""
        return self._ops.max_spanning_tree(utilities)

    def _exact_sample(self, sample_shape, *key):
        return self._ops.sample_spanning_tree(*key, self.logits, sample_shape)

    def _enumerate(self):
        return self._ops.enumerate_spanning_trees(self.num_nodes)


class ArborescenceStructure(Structure):
    r"""Arborescences (directed spanning trees) rooted at ``root``.

    Value: ``(..., n, n)`` with ``x[i, j] = 1`` iff ``i`` is the parent of ``j``; non-root columns sum
    to 1, the root column is 0. :math:`A(\theta)` by Tutte's directed matrix-tree theorem; with
    ``single_root=True`` the root has exactly one child (Koo et al., 2007).
    """

    _options = ("root", "single_root")

    @property
    def num_nodes(self) -> int:
        return self.event_shape[-1]

    def _set_root(self, logits, root, single_root):
        logits = self._ops.validation.check_square(logits)
        self.root, self.single_root = check_root(logits.shape[-1], root, single_root), bool(single_root)

    def _free_entries(self, rows, cols):
        return (rows != cols) & (cols != self.root)

    def _canonical(self, x):
        return self._zero_where_not_free(x)

    def _log_partition(self, logits):
        return self._ops.arborescence_log_partition(logits, self.root, self.single_root)

    def _marginals(self, logits):
        return self._ops.arborescence_marginals(logits, self.root, self.single_root)

    def solve(self, utilities):
        """Maximum arborescence of ``utilities`` (batched Chu-Liu-Edmonds)."""
        return self._ops.max_arborescence(self._canonical(utilities), self.root, self.single_root)

    def _exact_sample(self, sample_shape, *key):
        return self._ops.sample_arborescence(*key, self.logits, self.root, self.single_root, sample_shape)

    def _enumerate(self):
        return self._ops.enumerate_arborescences(self.num_nodes, self.root, self.single_root)


class KSubsetStructure(Structure):
    r"""k-subsets of ``d`` items.

    Value: ``(..., d)`` k-hot vector. :math:`A(\theta) = \log e_k(e^{\theta})`, the elementary symmetric
    polynomial, by a log-space DP in :math:`O(dk)` (``ops.log_elementary_symmetric``); the marginals are
    its exact gradient.
    """

    _event_ndim = 1
    _options = ("k",)

    @property
    def num_items(self) -> int:
        return self.event_shape[-1]

    def _set_k(self, logits, k):
        logits = self._ops.validation.check_array(logits, "logits", 1)
        self.k = check_k(k, logits.shape[-1])

    def _check_event_shape(self, event_shape):
        """Any ``d``; ``k`` was checked against it."""

    def _log_partition(self, logits):
        return self._ops.log_elementary_symmetric(logits, self.k)

    def _marginals(self, logits):
        return self._ops.subset_marginals(logits, self.k)

    def solve(self, utilities):
        """Top-k of ``utilities`` as a k-hot vector (ties to the lowest index)."""
        return self._ops.top_k_mask(utilities, self.k)

    def _exact_sample(self, sample_shape, *key):
        return self._ops.sample_k_subset(*key, self.logits, self.k, sample_shape)

    def _enumerate(self):
        return self._ops.enumerate_k_subsets(self.num_items, self.k)


def is_gumbel_top_k(dist) -> bool:
    """Whether ``dist``'s hard samples are the top-k of Gumbel-perturbed logits, whose law has a closed form
    (``ops.gumbel_top_k_log_prob``): a relaxed k-subset with Gumbel noise."""
    return isinstance(dist, KSubsetStructure) and getattr(dist, "noise", None) == "gumbel"


class PermutationStructure(Structure):
    r"""Permutations of ``n``: ``x[i, j] = 1`` iff row ``i`` goes to column ``j``.

    :math:`A(\theta) = \log\operatorname{perm}(e^{\theta})`: exact for ``n <= 12``, the Bethe
    approximation beyond (``ops.log_permanent``).
    """

    @property
    def num_items(self) -> int:
        return self.event_shape[-1]

    def _log_partition(self, logits):
        return self._ops.log_permanent(logits)

    def _marginals(self, logits):
        return self._ops.permutation_marginals(logits)

    def solve(self, utilities):
        """Maximum-weight assignment of ``utilities`` (Hungarian)."""
        return self._ops.max_assignment(utilities)
