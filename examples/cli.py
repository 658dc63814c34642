"""Command lines of the examples: every option's default in ``--help``, a figure path that a smoke run never
writes over the documented figure, and a clear error at once (not after the training) when matplotlib, which
draws the figures, is missing. Standard library only, so that ``--help`` answers before torch or JAX loads
(each example parses its arguments before its heavy imports)."""

import argparse
import importlib.util
import pathlib
import tempfile

MISSING_MATPLOTLIB = (
    "the examples draw their figures with matplotlib, which is not installed: "
    "pip install -e '.[examples]' from the repository (or pip install matplotlib)"
)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring as written, then every option with its default."""


def example_parser(doc, figure):
    """A parser for an example whose module docstring is ``doc`` and whose figure is ``figure`` beside it.

    It has ``--out`` (the figure's path), ``--smoke`` (tiny sizes) and ``--seed``; the example adds its own
    options, each with a help text (the default is shown after it), and calls :func:`parse`.
    """
    parser = argparse.ArgumentParser(description=doc, formatter_class=_HelpFormatter)
    parser.add_argument(
        "--out", default=None, help=f"figure path; None: {figure} beside the script, or a temporary file with --smoke"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: what the test-suite runs")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random number")
    return parser


def parse(parser, argv, script, figure, **smoke_sizes):
    """Parse ``argv``; with ``--smoke``, set the options in ``smoke_sizes`` and, unless ``--out`` is given, write
    the figure to a temporary file instead of over the documented one beside ``script``."""
    args = parser.parse_args(argv)
    if importlib.util.find_spec("matplotlib") is None:  # say so now, not after the training
        parser.exit(2, f"{parser.prog}: error: {MISSING_MATPLOTLIB}\n")
    if args.out is None:
        smoke_figure = pathlib.Path(tempfile.gettempdir()) / f"smoke_{figure}"
        args.out = str(smoke_figure if args.smoke else pathlib.Path(script).with_name(figure))
    if args.smoke:
        for name, value in smoke_sizes.items():
            setattr(args, name, value)
    return args


def pyplot():
    """``matplotlib.pyplot`` on the file-only Agg backend (the examples save PNGs; no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
