"""Rendered results: parameters injected, a notebook executed and written as Markdown with its
figures, outputs made machine-independent, the claims assembled (research.paper.render)."""

import json

import nbformat
import pytest

from research import paths
from research.errors import KitError
from research.paper import claims as paper
from research.paper import render as results


def _notebook(path):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("N = 2\nLABEL = 'default'")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        nbformat.v4.new_markdown_cell("# A test notebook"),
        params,
        nbformat.v4.new_code_cell(
            "import matplotlib.pyplot as plt\n"
            "from IPython.display import display\n"
            "fig, ax = plt.subplots()\nax.plot(range(N))\ndisplay(fig)\nplt.close(fig)\n"
            "from research import paths\nprint(LABEL, N, paths.REPO_ROOT)"
        ),
    ]
    nbformat.write(nb, path)
    return path


def test_a_notebook_runs_with_injected_parameters_and_renders_with_its_figure(tmp_path):
    nb, seconds = results.execute(_notebook(tmp_path / "t.ipynb"), {"N": 5, "LABEL": "full"})
    assert seconds > 0
    assert nb.cells[2].metadata["tags"] == ["injected-parameters"]
    printed = nb.cells[3].outputs[-1]["text"]
    assert printed.startswith("full 5 ")  # the injected values won over the defaults
    md = results.render(results.clean(nb), tmp_path / "out", "t")
    text = md.read_text()
    assert "full 5 <checkout>" in text and str(paths.REPO_ROOT) not in text
    pngs = list((tmp_path / "out" / "t_files").glob("*.png"))
    assert len(pngs) == 1 and pngs[0].name in text


def test_a_notebook_without_a_parameters_cell_cannot_take_parameters():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("N = 1")]
    assert results.inject(nb, {}) is nb  # nothing to inject: unchanged
    with pytest.raises(KitError, match="parameters"):
        results.inject(nb, {"N": 2})


def test_progress_bars_keep_their_last_state_and_lose_their_colours():
    assert results._clean_text("\x1b[31m10%\r50%\r100%\x1b[0m done") == "100% done"


def test_the_python_environment_is_named_not_shown():
    import sys

    assert results._clean_text(f"file: {sys.prefix}/lib/m.gguf") == "file: <venv>/lib/m.gguf"


def test_the_claims_page_names_the_claims_a_run_did_not_confront(tmp_path):
    f = paper.Finding("ram", "3150 MB at 2048", "nb 02", "5 %", "contradicted", "the file", "this machine")
    page = results.write_claims(tmp_path / "claims.md", [f]).read_text()
    assert "| ram |" in page and "**not decided**" in page
    assert "Not confronted in this run: termux-build, llama-cpp, orca-mini-3b" in page


def test_the_index_keeps_earlier_runs(tmp_path):
    results.write_index(tmp_path, {"name": "01_x", "params": {}, "seconds": 60})
    results.write_index(tmp_path, {"name": "02_y", "params": {"CHUNKS": 8}, "seconds": 120})
    assert set(json.loads((tmp_path / "index.json").read_text())) == {"01_x", "02_y"}
    readme = (tmp_path / "README.md").read_text()
    assert "the defaults (CI-sized)" in readme and "`CHUNKS = 8`" in readme and "2.0 min" in readme


def test_links_written_for_the_notebooks_folder_work_from_docs_results():
    text = "[g](README.md#glossary) [r](../docs/results/x.md) [q](../data/qa/README.md) [w](https://x)"
    assert results.relink(text) == (
        "[g](../../notebooks/README.md#glossary) [r](../results/x.md) [q](../../data/qa/README.md) [w](https://x)"
    )


def test_a_progress_bar_in_many_outputs_renders_as_its_last_state():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stderr", text="\rrun:   0%| 0/3"),
        nbformat.v4.new_output("stream", name="stderr", text="\rrun:  33%| 1/3"),
        nbformat.v4.new_output("stream", name="stderr", text="\rrun: 100%| 3/3\n"),
        nbformat.v4.new_output("stream", name="stdout", text="done\n"),
    ]
    nb.cells = [cell]
    outs = results.clean(nb).cells[0].outputs
    assert [o["text"] for o in outs] == ["run: 100%| 3/3\n", "done\n"]


def test_the_readme_s_claims_section_is_the_one_the_committed_results_generate(tmp_path):
    from research.paper import shaped

    findings = paper.load(paths.REPO_ROOT / "docs" / "results" / "claims")
    readme = (paths.REPO_ROOT / "README.md").read_text()
    block = readme.split(results.README_BEGIN + "\n", 1)[1].split(results.README_END, 1)[0]
    assert block == results.claims_block(findings, shaped.recorded()) + "\n", (
        "README's claims differ from docs/results: run `make results` (or results.write_readme_claims)"
    )
    assert {f.claim for f in findings} == set(paper.CLAIMS)
    # Rewriting keeps everything around the section.
    copy = tmp_path / "README.md"
    copy.write_text("intro\n" + results.README_BEGIN + "\nold\n" + results.README_END + "\nrest\n")
    results.write_readme_claims(copy, findings[:1], None)
    text = copy.read_text()
    assert text.startswith("intro\n") and text.endswith(results.README_END + "\nrest\n") and "old" not in text
    copy.write_text("no section")
    with pytest.raises(KitError, match="no claims section"):
        results.write_readme_claims(copy, findings, None)
