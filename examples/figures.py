"""The figures of the examples written for both backends, once, from NumPy arrays.

Each figure is laid out to stay readable at the width of a documentation page: at most three panels
per row, every axis labelled.
"""

import cli
import numpy as np


def _grid(panels, columns, width, panel_height):
    """``(plt, fig, axes)``: ``panels`` axes, ``columns`` to a row, the unused ones of the last row hidden."""
    plt = cli.pyplot()
    rows = -(-panels // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(width, panel_height * rows), squeeze=False)
    axes = axes.flat
    for ax in axes[panels:]:
        ax.axis("off")
    return plt, fig, axes[:panels]


def _save(plt, fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _matrix_panel(ax, matrix, title):
    n = matrix.shape[-1]
    ax.imshow(matrix, cmap="Greys")
    ticks = np.arange(0, n, max(1, n // 5))
    ax.set(title=title, xlabel="node j", ylabel="node i", xticks=ticks, yticks=ticks)


def spanning_tree_svi(truth, mean_measurement, estimate, losses, path):
    """The hidden tree, the mean of the measurements, the guide's mode (``n x n`` arrays), and the loss curve."""
    plt, fig, axes = _grid(4, 2, 8, 3.75)
    panels = [(truth, "hidden tree"), (mean_measurement, "mean measurement"), (estimate, "recovered (guide's mode)")]
    for ax, (matrix, title) in zip(axes[:3], panels, strict=True):
        _matrix_panel(ax, matrix, title)
    losses = np.asarray(losses)
    axes[3].plot(np.arange(1, len(losses) + 1), losses)
    axes[3].set(title="training loss", xlabel="SVI step", ylabel="-ELBO")
    _save(plt, fig, path)


def graph_layout(examples, curves, final_positions, true_adjacency, path):
    """Test edge precision during training per latent, the true tree of one held-out trajectory drawn at its
    last frame, and one hard sample of each latent's guide for that trajectory (green: a true edge, red: not)."""
    plt, fig, axes = _grid(len(examples) + 2, 3, 10, 3.4)
    for latent, curve in curves.items():
        axes[0].plot(*zip(*curve, strict=True), marker="o", label=latent)
    axes[0].set(title="test edge precision", xlabel="training step", ylabel="edge precision", ylim=(0, 1.02))
    axes[0].legend()

    def draw(ax, adjacency, title):
        ax.scatter(final_positions[:, 0], final_positions[:, 1], s=25, color="k", zorder=2)
        for i, j in zip(*np.nonzero(np.triu(adjacency, 1)), strict=True):
            color = "tab:green" if true_adjacency[i, j] > 0 else "tab:red"
            ax.plot(*final_positions[[i, j]].T, color=color, lw=2)
        ax.set(title=title, xlabel="x (last frame)", ylabel="y (last frame)")
        ax.set_aspect("equal", adjustable="datalim")  # the layout's true shape, filling the panel

    draw(axes[1], true_adjacency, "true tree")
    for ax, (latent, example) in zip(axes[2:], examples.items(), strict=True):
        draw(ax, example, f"{latent}: hard sample")
    _save(plt, fig, path)


def estimators(curves, table, path, backend):
    """The toy problem's gradient variance during training, and per structure the gradient bias over the
    temperature of each tempered estimator against the reference's own error."""
    plt, fig, axes = _grid(1 + len(table), 2, 10, 4)
    for name, curve in curves.items():
        axes[0].plot(*zip(*curve, strict=True), label=name)
    axes[0].set(title=f"toy problem ({backend}): gradient variance", xlabel="training step", ylabel="log variance")
    axes[0].legend(fontsize=8)
    for ax, (structure, result) in zip(axes[1:], table.items(), strict=True):
        estimates = result["estimators"]
        for name in sorted({label.split("@")[0] for label in estimates if "@" in label}):
            points = sorted(
                (float(label.split("=")[1]), row["bias"])
                for label, row in estimates.items()
                if label.startswith(name + "@")
            )
            ax.plot(*zip(*points, strict=True), marker="o", label=name)
        ax.axhline(result["reference_standard_error"] + 1e-4, color="gray", ls=":", label="reference's error")
        ax.set(title=f"{structure}: gradient bias", xlabel="temperature", ylabel="|bias| (norm)")
        ax.set(xscale="log", yscale="log")
        ax.legend(fontsize=8)
    _save(plt, fig, path)


def sorting(curves, path, backend):
    """Training loss (moving mean over 50 steps) per list length."""
    plt, fig, (ax,) = _grid(1, 1, 6, 4)
    for n, losses in curves.items():
        window = min(50, len(losses))
        ax.plot(np.convolve(np.asarray(losses), np.ones(window) / window, mode="valid"), label=f"N = {n}")
    ax.set(title=f"learning to sort (Gumbel-Sinkhorn, {backend})", xlabel="training step")
    ax.set(ylabel="squared error (moving mean)", yscale="log")
    ax.legend()
    _save(plt, fig, path)
