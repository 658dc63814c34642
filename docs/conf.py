"""Sphinx configuration: ``make docs`` builds ``docs/_build/html`` (warnings are errors in CI)."""

project = "sst-distributions"
author = "the sst-distributions developers"
copyright = "the sst-distributions developers; Apache-2.0"
extensions = [
    "myst_nb",  # MyST Markdown pages and notebooks (docs/tutorials), executed at every build
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx-mathjax-offline",  # MathJax copied into the site: formulas render without a network
]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb"}
nb_execution_mode = "force"
nb_execution_raise_on_error = True
nb_execution_timeout = 600
nb_output_stderr = "remove"  # import-time notices of third-party packages (tqdm's) are not the tutorial's output
exclude_patterns = ["_build"]
myst_enable_extensions = ["amsmath", "dollarmath"]
myst_heading_anchors = 3
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "none"
html_theme = "alabaster"
html_theme_options = {"page_width": "1240px", "sidebar_width": "290px"}  # whole class names in the sidebar
html_static_path = ["_static"]
html_css_files = ["custom.css"]
