"""The command lines of the examples written for both backends, once: ``examples/pyro/NAME.py`` and
``examples/numpyro/NAME.py`` take the same options with the same defaults and smoke sizes. Standard library
only (see ``cli.py``)."""

import cli

#: the gradient-estimator study's temperatures, and its toy problem's target
TEMPERATURES = (0.1, 0.3, 1.0)
TOY_TARGET = 0.499
#: the graph-layout experiment's latent structures
LATENTS = ("tree", "topk", "independent")


def spanning_tree_svi(doc, script, argv, add_options=None):
    """The quick-start demo; ``add_options(parser)`` adds what one backend has on top."""
    parser = cli.example_parser(doc, "spanning_tree_svi.png")
    parser.add_argument("--nodes", type=int, default=20, help="objects in the hidden structure")
    parser.add_argument("--measurements", type=int, default=30, help="noisy observations of the tree")
    parser.add_argument("--steps", type=int, default=500, help="training steps")
    parser.add_argument("--lr", type=float, default=0.1, help="Adam's learning rate")
    parser.add_argument("--temperature", type=float, default=0.5, help="temperature of the relaxation")
    if add_options is not None:
        add_options(parser)
    return cli.parse(parser, argv, script, "spanning_tree_svi.png", nodes=8, steps=150)


def estimators(doc, script, argv):
    parser = cli.example_parser(doc, "estimators.png")
    parser.add_argument("--steps", type=int, default=1500, help="toy-problem training steps")
    parser.add_argument("--batch", type=int, default=20000, help="independent estimates per variance measurement")
    parser.set_defaults(temperatures=TEMPERATURES, structures=None)  # None: every structure
    smoke = {"steps": 40, "batch": 400, "temperatures": (0.3,), "structures": ("k_subset", "spanning_tree")}
    return cli.parse(parser, argv, script, "estimators.png", **smoke)


def graph_layout(doc, script, argv):
    parser = cli.example_parser(doc, "graph_layout.png")
    parser.add_argument("--latent", choices=LATENTS, nargs="+", default=list(LATENTS), help="latents, one model each")
    parser.add_argument("--nodes", type=int, default=10, help="objects in the hidden structure")
    parser.add_argument("--frames", type=int, default=20, help="layout iterations T")
    parser.add_argument("--train", type=int, default=4000, help="training trajectories")
    parser.add_argument("--test", type=int, default=500, help="held-out trajectories")
    parser.add_argument("--steps", type=int, default=1500, help="training steps")
    parser.add_argument("--batch", type=int, default=32, help="examples per step")
    parser.add_argument("--lr", type=float, default=1e-3, help="decays to a tenth over the steps")
    parser.add_argument("--temperature", type=float, default=1.0, help="temperature of the relaxation")
    parser.add_argument("--sigma", type=float, default=0.01, help="decoder's observation noise")
    parser.add_argument("--hidden", type=int, default=64, help="encoder's width")
    parser.add_argument("--decoder-hidden", type=int, default=32, help="decoder's width")
    return cli.parse(parser, argv, script, "graph_layout.png", nodes=6, train=256, test=64, steps=60)


def sorting(doc, script, argv):
    parser = cli.example_parser(doc, "sorting.png")
    parser.add_argument("--sizes", type=int, nargs="+", default=[5, 10, 20], help="list lengths N")
    parser.add_argument("--steps", type=int, default=1500, help="training steps")
    parser.add_argument("--batch", type=int, default=64, help="examples per step")
    parser.add_argument("--temperature", type=float, default=0.5, help="temperature of the relaxation")
    parser.add_argument("--test", type=int, default=1000, help="test lists per N")
    return cli.parse(parser, argv, script, "sorting.png", sizes=[5], steps=150, test=200)
