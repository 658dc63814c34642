"""The documentation works as a reader meets it: every Python block of a getting-started page runs as written,
top to bottom, in a fresh interpreter; the site builds with warnings as errors, its tutorial notebooks executed
with their results and figures; and no page shows raw TeX or fetches MathJax from a CDN."""

import html.parser
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
TUTORIALS = ("latent_tree_pyro", "latent_tree_numpyro", "choosing_an_estimator")


def python_blocks(path):
    """The ```` ```python ```` blocks of a Markdown file, in order."""
    return re.findall(r"^```python\n(.*?)^```", pathlib.Path(path).read_text(), re.S | re.M)


@pytest.mark.parametrize(
    "page,gradient", [("getting_started_pyro.md", "logits.grad"), ("getting_started_numpyro.md", "grad")]
)
def test_getting_started_page_runs_top_to_bottom(page, gradient, tmp_path):
    blocks = python_blocks(DOCS / page)
    assert len(blocks) >= 2, page
    script = tmp_path / "page.py"
    # After the page: the size of the gradient demo's gradient (a loss whose gradient is zero would teach
    # nothing), on the last line.
    script.write_text("\n".join(blocks) + f"\nprint(abs({gradient}).max().item())\n")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    *_, recovered, gradient_size = done.stdout.strip().splitlines()
    assert recovered == "True", done.stdout[-1000:]  # the guide's tree is the one behind the data
    assert float(gradient_size) > 1e-3


class _VisibleText(html.parser.HTMLParser):
    """The text a reader sees on a built page, less math (typeset by MathJax in the browser) and code."""

    HIDDEN = {"script", "style", "pre", "code", "head"}

    def __init__(self):
        super().__init__()
        self.stack, self.chunks = [], []

    def handle_starttag(self, tag, attrs):
        classes = (dict(attrs).get("class") or "").split()
        hidden = tag in self.HIDDEN or "math" in classes or bool(self.stack and self.stack[-1])
        if tag not in {"br", "img", "hr", "meta", "link", "input", "wbr"}:
            self.stack.append(hidden)

    def handle_endtag(self, tag):
        if self.stack and tag not in {"br", "img", "hr", "meta", "link", "input", "wbr"}:
            self.stack.pop()

    def handle_data(self, data):
        if not (self.stack and self.stack[-1]):
            self.chunks.append(data)


def raw_math(page_html):
    """Unrendered TeX in a page's visible text: math delimiters, or TeX commands that lost theirs."""
    parser = _VisibleText()
    parser.feed(page_html)
    return re.findall(
        r"\\\(|\\\[|\$\$|\\(?:frac|sum|mathbb|hat|tilde|log|nabla|theta|mu|sigma)(?![A-Za-z])", "".join(parser.chunks)
    )


@pytest.fixture(scope="module")
def built_docs(tmp_path_factory):
    """The documentation site built as ``make docs`` builds it (warnings are errors), the tutorial notebooks
    executed (an error in a cell fails the build)."""
    out = tmp_path_factory.mktemp("html")
    done = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_math_is_typeset_offline_on_every_page(built_docs):
    pages = sorted(built_docs.glob("**/*.html"))
    assert len(pages) > 10
    for page in pages:
        text = page.read_text()
        assert raw_math(text) == [], page.name
        for src in re.findall(r'<script[^>]*src="([^"]*mathjax[^"]*)"', text, re.I):
            # MathJax is served from the site itself, not fetched from a CDN when the page is viewed.
            assert "//" not in src, (page.name, src)
            assert (page.parent / src.split("?")[0]).is_file(), (page.name, src)
    assert '<span class="math' in (built_docs / "estimators.html").read_text()


CHROMIUM = next((path for name in ("chromium", "chromium-browser") if (path := shutil.which(name))), None)


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (Debian: apt install chromium)")
@pytest.mark.parametrize("page", ["api_pyro_sst.html", "estimators.html", "tutorials/latent_tree_pyro.html"])
def test_a_browser_typesets_every_formula_offline(built_docs, page, tmp_path):
    """Headless Chromium opens the page from disk (no network) and runs its scripts: the site's own MathJax
    replaces every formula of the static page by typeset math (no TeX source left in the page), and the page
    draws (a screenshot with content, not a blank one)."""
    url = (built_docs / page).as_uri()
    browser = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000"]
    rendered = subprocess.run(browser + ["--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    formulas = len(re.findall(r'<(?:span|div) class="math', (built_docs / page).read_text()))
    assert formulas > 0
    assert rendered.count("<mjx-container") >= formulas, (rendered.count("<mjx-container"), formulas)
    without_scripts = re.sub(r"<script.*?</script>", "", rendered, flags=re.S)
    assert not re.findall(r"\\\(|\\\[|\$\$", without_scripts)
    shot = tmp_path / "page.png"
    window = ["--hide-scrollbars", "--window-size=1280,1400", f"--screenshot={shot}"]
    subprocess.run(browser + window + [url], capture_output=True, timeout=120)
    assert shot.stat().st_size > 50_000


def test_tutorials_are_executed_with_their_results_and_figures(built_docs):
    pages = {name: (built_docs / "tutorials" / f"{name}.html").read_text() for name in TUTORIALS}
    assert "mode recovers the tree: True | straight-through: True" in pages["latent_tree_pyro"]
    assert "mode recovers the tree: True" in pages["latent_tree_numpyro"]
    assert "fits that recover the tree: 8 of 8" in pages["latent_tree_numpyro"]
    assert re.search(r"RLOO x4 +squared bias", pages["choosing_an_estimator"])
    for name, page in pages.items():
        assert '<img alt="../_images/' in page, name  # its figures, rendered at build time


def test_the_raw_math_check_sees_tex_that_lost_its_delimiters():
    assert raw_math("<p>a sum (\\hat g = \\frac1N) here</p>") == ["\\hat", "\\frac"]
    assert raw_math("<p>inline \\(x\\)</p>") == ["\\("]
    assert raw_math('<p><span class="math notranslate">\\(x\\)</span> and <code>\\(y\\)</code></p>') == []
