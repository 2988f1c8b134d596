"""Rendered results: run the notebooks top to bottom and write them, figures and all, to docs/results.

`python -m research.paper.render` (`make results`) executes each notebook in a fresh kernel with its
default parameters (CI-sized: minutes), or with `--full` the parameters of a full run (FULL:
notebook 02 then measures the Orca-Mini-3B-shaped files itself, notebook 03 asks every question),
injected after the notebook's `parameters` cell as papermill does, and writes
docs/results/NN_name.md with its figures beside it (NN_name_files/), an index
(docs/results/README.md: when, on what machine, how long, which parameters), the Orca-Mini-3B-shaped
measurements (research.paper.shaped.RECORDED) and docs/claims.md from the findings the notebooks saved.
The notebooks themselves stay without outputs; these copies are what a reader sees without
running anything. The default run reads the Orca-Mini-3B-shaped figures recorded by
`python -m research.paper.shaped` (research.paper.shaped.RECORDED) rather than measuring them again.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import sys
import time
from pathlib import Path

from research import device, paths
from research.errors import KitError
from research.paper import claims as paper
from research.paper import shaped

NOTEBOOKS = (
    "01_build_llama_cpp",
    "02_model_selection",
    "03_qa_evaluation",
    "04_trusting_answers",
    "05_offline_library",
)
#: Parameters of the full run, per notebook: what CI leaves out for time. Notebooks 04 and 05
#: keep their defaults: their full figures come from `eval` (README, "Which answers to trust" and
#: "Answers from your own library"), an hour and more each.
FULL = {
    "01_build_llama_cpp": {"THREADS": [1, 2]},
    "02_model_selection": {"ORCA_SHAPED": True, "CHUNKS": 8},
    "03_qa_evaluation": {"LIMIT": None, "PAPER_LIMIT": None},
    "04_trusting_answers": {},
    "05_offline_library": {},
}
#: Seconds a single cell may run (the Orca-Mini-3B-shaped cell takes about half an hour).
CELL_TIMEOUT = 4 * 3600
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def inject(nb, params: dict):
    """Add a cell of `params` after the cell tagged "parameters" (papermill's convention: tagged
    "injected-parameters"), so a rendered notebook shows what it ran with. Returns `nb`."""
    import nbformat

    if not params:
        return nb
    at = next((i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])), None)
    if at is None:
        raise KitError("the notebook has no cell tagged 'parameters' to override")
    source = "# Parameters of this run (research.paper.render)\n" + "\n".join(
        f"{k} = {v!r}" for k, v in params.items()
    )
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    cell.id = "injected-parameters"
    nb.cells.insert(at + 1, cell)
    return nb


def execute(path: Path, params: dict, timeout: int = CELL_TIMEOUT):
    """Run a notebook top to bottom in a fresh kernel, from its own folder (as nbmake and
    JupyterLab do); returns (notebook with outputs, seconds). A failing cell raises nbclient's
    CellExecutionError, which names the cell and its traceback."""
    import tempfile

    import nbformat
    from nbclient import NotebookClient
    from traitlets.config import Config

    nb = inject(nbformat.read(path, as_version=4), params)
    with tempfile.TemporaryDirectory(prefix="research-kernel-") as sockets:
        # The kernel talks to this process over Unix sockets in a private folder, not over TCP
        # on loopback: no port for anything else on the device to connect to.
        ipc = Config({"KernelManager": {"transport": "ipc", "ip": str(Path(sockets) / "kernel")}})
        client = NotebookClient(
            nb,
            timeout=timeout,
            kernel_name="python3",
            config=ipc,
            resources={"metadata": {"path": str(path.parent)}},
        )
        t0 = time.perf_counter()
        client.execute()
        return nb, time.perf_counter() - t0


def _clean_text(text: str) -> str:
    """Progress bars as the last state of each line, without colour codes; the Python environment,
    the checkout and the home folder named as such, so renders from two machines (or from a
    checkout that uses another's environment) compare."""
    lines = [line.rsplit("\r", 1)[-1] for line in _ANSI.sub("", text).split("\n")]
    text = "\n".join(lines).replace(sys.prefix, "<venv>")
    return text.replace(str(paths.REPO_ROOT), "<checkout>").replace(str(Path.home()), "~")


def _merge_streams(outputs: list) -> list:
    """Consecutive outputs of one stream as one (a progress bar arrives as one output per update,
    each starting with a carriage return), so that cleaning keeps only its last state."""
    merged = []
    for out in outputs:
        prev = merged[-1] if merged else None
        if (
            prev is not None
            and out.get("output_type") == "stream"
            and prev.get("output_type") == "stream"
            and prev.get("name") == out.get("name")
        ):
            prev["text"] += out["text"]
        else:
            merged.append(out)
    return merged


def clean(nb):
    """Streams merged and clean_text() over every stream and text output of a notebook; returns it."""
    for cell in nb.cells:
        if "outputs" in cell:
            cell["outputs"] = _merge_streams(cell["outputs"])
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                out["text"] = _clean_text(out["text"])
            for kind in ("text/plain", "text/markdown", "text/html"):
                if kind in out.get("data", {}):
                    out["data"][kind] = _clean_text(out["data"][kind])
    return nb


def relink(markdown: str) -> str:
    """Links written for notebooks/ made to work from docs/results/:
    `relink("[glossary](README.md#glossary)")` -> "[glossary](../../notebooks/README.md#glossary)"."""
    for old, new in (
        ("](../docs/", "](../"),
        ("](../data/", "](../../data/"),
        ("](README.md", "](../../notebooks/README.md"),
    ):
        markdown = markdown.replace(old, new)
    return markdown


def render(nb, out_dir: Path, name: str) -> Path:
    """Write a notebook with outputs as Markdown (name.md) and its figures (name_files/*.png)."""
    from nbconvert import MarkdownExporter

    files = out_dir / f"{name}_files"
    shutil.rmtree(files, ignore_errors=True)
    body, resources = MarkdownExporter().from_notebook_node(
        nb, resources={"output_files_dir": f"{name}_files"}
    )
    for rel, data in resources.get("outputs", {}).items():
        target = out_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    path = out_dir / f"{name}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(relink(body))
    return path


def write_index(out_dir: Path, run: dict | None = None) -> Path:
    """docs/results/README.md from docs/results/index.json, `run` (name, params, seconds, quick)
    added first: what was run, when, on what machine, how long and with which parameters."""
    from research.engine.provenance import llama_cpp_commit

    store = out_dir / "index.json"
    runs = json.loads(store.read_text()) if store.is_file() else {}
    if run is not None:
        cpus = len(device.core_speeds()) or "?"
        runs[run["name"]] = run | {
            "date": time.strftime("%Y-%m-%d %H:%M %Z"),
            "machine": f"{device.cpu_info()}, {platform.machine()}, {cpus} CPUs",
            "llama_cpp": llama_cpp_commit(),
            "python": platform.python_version(),
        }
        store.write_text(json.dumps(runs, indent=1, sort_keys=True) + "\n")
    lines = [
        "# Rendered results",
        "",
        "The notebooks, run top to bottom by `make results` (`python -m research.paper.render`) and written",
        "here with their outputs and figures, so they can be read without running anything. Generated:",
        "do not edit. The claims of the paper against these numbers: [docs/claims.md](../claims.md).",
        "",
        "| notebook | parameters of this run | run time | when, where |",
        "|---|---|---|---|",
    ]
    for name in sorted(runs):
        r = runs[name]
        params = ", ".join(f"`{k} = {v!r}`" for k, v in r["params"].items()) or "the defaults (CI-sized)"
        where = f"{r['date']}; {r['machine']}; llama.cpp {r['llama_cpp']}, Python {r['python']}"
        lines.append(f"| [{name}]({name}.md) | {params} | {r['seconds'] / 60:.1f} min | {where} |")
    path = out_dir / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_claims(path: Path, findings: list) -> Path:
    """docs/claims.md: every claim of the paper with the kit's evidence and verdict."""
    intro = (
        "# The paper's claims against the kit's numbers\n\n"
        "Fassold, *Porting Large Language Models to Mobile Devices for Question Answering* (arXiv\n"
        "2404.15851, 2024), claim by claim: what the kit measured or projected, where those figures were\n"
        "measured (this machine in the run that rendered the notebook, a record made on another machine\n"
        "and day, or a published source), the notebook section that computes it (rendered in\n"
        "[docs/results](results/README.md)), its error band, and a verdict: **reproduced**, **consistent\n"
        "within error**, **not decided** (the error band holds both the claim and its opposite),\n"
        "**contradicted**, or **not testable here** and why. MB means 2^20 bytes (research.units).\n"
        "Generated by `make results` from the findings the notebooks save; the verdict rules are in\n"
        "`src/research/paper/claims.py`.\n\n"
    )
    missing = [c for c in paper.CLAIMS if c not in {f.claim for f in findings}]
    tail = f"\n\nNot confronted in this run: {', '.join(missing)}.\n" if missing else "\n"
    path.write_text(intro + paper.table(findings) + tail)
    return path


#: The README's claims section lies between these lines, written by write_readme_claims.
README_BEGIN = "<!-- claims: generated by `make results` from docs/results/claims; do not edit -->"
README_END = "<!-- /claims -->"


def claims_block(findings: list, shaped_result: dict | None) -> str:
    """The README's claims section: each claim, the kit's evidence, its verdict and where it is
    computed (band and reasons in docs/claims.md), then the Orca-Mini-3B-shaped files' figures."""
    lines = [paper.table(findings, brief=True)]
    if shaped_result:
        parts = []
        for r in shaped.summary_rows(shaped_result):
            peaks = "; ".join(
                f"peak {r[f'predicted_{c}_mb']:.0f} predicted / {r[f'measured_{c}_mb']:.0f} measured MB "
                f"at {c}"
                for c in sorted(int(k.split("_")[1]) for k in r if k.startswith("measured_"))
            )
            speed = (
                f"; llama-bench decode {r['llama-bench_tg_tps']:.2f} t/s, "
                f"prompt {r['llama-bench_pp_tps']:.1f} t/s"
                if r.get("llama-bench_tg_tps") and r.get("llama-bench_pp_tps")
                else ""
            )
            parts.append(
                f"{r['type']} {r['size_mb']:.1f} MB, {r['bits_per_weight']:.2f} bits/weight, {peaks}{speed}"
            )
        m = shaped_result.get("machine", {})
        lines += [
            "",
            "The Orca-Mini-3B-shaped files (random weights, its exact shape; "
            f"`{shaped_result.get('command')}`, "
            f"{shaped_result.get('minutes')} min on {m.get('cpu')}, {m.get('threads')} threads, "
            f"{shaped_result.get('measured_at')}; "
            "[docs/results/orca_mini_3b_shaped.json](docs/results/orca_mini_3b_shaped.json)): "
            + "; ".join(parts)
            + ". Recorded on that machine, not in the run that rendered the notebooks; a PC is not a "
            "phone: the speeds show what the shape costs there, beside the projection.",
        ]
    return "\n".join(lines)


def write_readme_claims(readme: Path, findings: list, shaped_result: dict | None) -> Path:
    """Replace the README's claims section (between README_BEGIN and README_END) by claims_block."""
    text = readme.read_text()
    try:
        head, rest = text.split(README_BEGIN + "\n", 1)
        _, tail = rest.split(README_END, 1)
    except ValueError:
        raise KitError(
            f"{readme} has no claims section between {README_BEGIN!r} and {README_END!r}"
        ) from None
    readme.write_text(
        head + README_BEGIN + "\n" + claims_block(findings, shaped_result) + "\n" + README_END + tail
    )
    return readme


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m research.paper.render", description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="*", help=f"names or numbers (default: all of {', '.join(NOTEBOOKS)})")
    ap.add_argument("--full", action="store_true", help="FULL's parameters (about an hour), not the defaults")
    ap.add_argument(
        "--out", default=str(paths.REPO_ROOT / "docs" / "results"), help="folder of the rendered copies"
    )
    args = ap.parse_args(argv)
    chosen = [n for n in NOTEBOOKS if not args.notebooks or any(n.startswith(a) for a in args.notebooks)]
    if not chosen:
        print(
            f"no such notebook: {' '.join(args.notebooks)}; choose from {', '.join(NOTEBOOKS)}",
            file=sys.stderr,
        )
        return 2
    out = Path(args.out)
    (out / "claims").mkdir(parents=True, exist_ok=True)
    for name in chosen:
        params = FULL[name] if args.full else {}
        saved = paper.claims_dir() / f"{name[:2]}.json"
        saved.unlink(missing_ok=True)  # only this run's findings are copied below
        print(f"{name}: running with {params or 'the defaults'} ...", file=sys.stderr, flush=True)
        try:
            nb, seconds = execute(paths.REPO_ROOT / "notebooks" / f"{name}.ipynb", params)
        except Exception as e:  # a failing cell: say which, and stop (the outputs so far are not rendered)
            print(f"{name}: FAILED: {str(e)[-3000:]}", file=sys.stderr)
            return 1
        render(clean(nb), out, name)
        if saved.is_file():
            shutil.copyfile(saved, out / "claims" / saved.name)
        measured = paths.REPO_ROOT / "runs" / "02" / shaped.RUN_FILE
        if name.startswith("02") and params.get("ORCA_SHAPED") and measured.is_file():
            shutil.copyfile(measured, shaped.RECORDED)
        write_index(out, {"name": name, "params": params, "seconds": seconds})
        print(f"{name}: rendered in {seconds / 60:.1f} min", file=sys.stderr, flush=True)
    findings = paper.load(out / "claims")
    write_claims(out.parent / "claims.md", findings)
    if out.resolve() == (paths.REPO_ROOT / "docs" / "results").resolve():
        write_readme_claims(paths.REPO_ROOT / "README.md", findings, shaped.recorded())
    return 0


if __name__ == "__main__":
    sys.exit(main())
