"""Mutation testing of the modules that guard safety and scores: `make mutation [MODULES=...]`.

Each module is mutated by mutmut with its own tests only ([tool.research.mutation] in
pyproject.toml names them), in a scratch folder of its own under build/mutation/ (mutmut reads
its settings from the pyproject.toml of the folder it runs in, and keeps its results there, so
one module's run never invalidates another's). The score is killed / (mutants - equivalent):
a mutant no test reaches counts as a survivor, and an equivalent one is written down, with why,
in [tool.research.mutation.equivalent]. The report goes to docs/results/mutation.{json,md};
a run over some modules replaces their rows and keeps the others. Every run starts afresh (mutmut
would keep a survivor's verdict when only the tests changed).

Not in CI: a full run takes minutes on two cores (the report says how many).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI (mutmut needs it there too)
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = ROOT / "build" / "mutation"
RESULTS = ROOT / "docs" / "results"
#: mutmut's exit codes per mutant (mutmut.stats.status_by_exit_code): a test failed (1, or
#: pytest's internal error 3), ran past its time, was killed by a signal, or a type checker caught it.
KILLED = {1, 3, 36, -24, 24, 152, 255, -11, -9, 37}
NO_TESTS = {5, 33}


def settings() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["research"]["mutation"]


def scratch_for(name: str, module: dict, conf: dict) -> Path:
    """A folder where mutmut sees the kit (links to src, tests, data) and only this module's config."""
    where = SCRATCH / name
    where.mkdir(parents=True, exist_ok=True)
    for part in ("src", "tests", *conf["also_copy"]):
        link = where / part
        if not link.exists():
            link.symlink_to(ROOT / part)
    pyproject = (ROOT / "pyproject.toml").read_text()
    own = {
        "source_paths": ["src"],
        "also_copy": conf["also_copy"],
        "only_mutate": [module["source"]],
        "pytest_add_cli_args_test_selection": module["tests"],
        "pytest_add_cli_args": conf["pytest_args"],
        "max_stack_depth": -1,
    }
    lines = ["", "[tool.mutmut]"] + [f"{k} = {json.dumps(v)}" for k, v in own.items()]
    text = pyproject + "\n".join(lines) + "\n"
    if not (where / "pyproject.toml").exists() or (where / "pyproject.toml").read_text() != text:
        (where / "pyproject.toml").write_text(text)
    return where


def mutmut(where: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    # The mutated copy first, for children the tests start too (the kit's editable install
    # would otherwise hand them whichever checkout it was installed from).
    # It must exist before Python starts: a missing path entry is cached as one to skip.
    (where / "mutants" / "src").mkdir(parents=True, exist_ok=True)
    # A child started in the package's parent folder (the ZIM readers: cwd=PACKAGE_PARENT) runs
    # mutmut's trampolines too; while mutmut collects which tests reach which function they
    # read mutmut's settings from the working folder, and without any stop the child with
    # "Could not figure out where the code to mutate is". What a child reaches is not counted
    # (tests must reach the function in their own process); this only lets the child run.
    (where / "mutants" / "src" / "pyproject.toml").write_text('[tool.mutmut]\nsource_paths = ["research"]\n')
    env["PYTHONPATH"] = str(where / "mutants" / "src")
    return subprocess.run(
        [sys.executable, "-m", "mutmut", *args], cwd=where, env=env, text=True, capture_output=True, **kwargs
    )


def exit_codes(where: Path, source: str) -> dict[str, int | None]:
    meta = where / "mutants" / (source + ".meta")
    return json.loads(meta.read_text())["exit_code_by_key"]


#: Run in the module's scratch folder: every named mutant's diff, by mutmut's own code, as JSON.
DIFFS = """
import json, re, sys
from mutmut.__main__ import find_mutant
from mutmut.mutation.diff_apply import get_diff_for_mutant
out = {}
for name in json.loads(sys.stdin.read()):
    text = get_diff_for_mutant(name, path=find_mutant(name).path)
    out[name] = "\\n".join(l for l in text.splitlines() if re.match(r"[-+][^-+]", l))
print(json.dumps(out))
"""


def diffs(where: Path, names: list[str]) -> dict[str, str]:
    """What each mutant changed: its lines removed (-) and added (+)."""
    if not names:
        return {}
    done = subprocess.run(
        [sys.executable, "-c", DIFFS], cwd=where, input=json.dumps(names), text=True, capture_output=True
    )
    if done.returncode != 0:
        return dict.fromkeys(names, f"(no diff: {done.stderr.strip().splitlines()[-1:]})")
    return json.loads(done.stdout)


def run_module(name: str, module: dict, conf: dict, children: int) -> dict:
    where = scratch_for(name, module, conf)
    # A fresh run each time: mutmut keeps a survivor's verdict when only the tests changed, and a
    # report must judge the tests as they are now.
    shutil.rmtree(where / "mutants", ignore_errors=True)
    start = time.monotonic()
    done = mutmut(where, "run", "--max-children", str(children))
    seconds = time.monotonic() - start
    if done.returncode != 0:  # most often the module's tests fail on the real code
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        return {"error": f"mutmut failed in {where}:\n{tail}", "seconds": round(seconds)}
    codes = exit_codes(where, module["source"])
    equivalent = conf.get("equivalent", {})
    killed = sorted(k for k, c in codes.items() if c in KILLED)
    judged = {k: equivalent[k] for k in codes if k in equivalent and k not in killed}
    survivors = sorted(k for k in codes if k not in killed and k not in judged)
    total = len(codes) - len(judged)
    shown = diffs(where, [*judged, *survivors])
    named = run_named(name, module, conf, children)
    return {
        "source": module["source"],
        "tests": module["tests"],
        "target": module.get("target", conf["target"]),
        "mutants": len(codes),
        "killed": len(killed),
        "equivalent": [{"mutant": k, "why": v, "diff": shown[k]} for k, v in sorted(judged.items())],
        "score": round(100 * len(killed) / total, 1) if total else 100.0,
        "survivors": [
            {
                "mutant": k,
                "status": "no tests" if codes[k] in NO_TESTS else "survived",
                "diff": shown[k],
            }
            for k in survivors
        ],
        "named": named,
        "named_killed": sum(n["status"] == "killed" for n in named),
        "seconds": round(time.monotonic() - start),
    }


def named_mutants() -> list[dict]:
    return tomllib.loads((ROOT / "scripts" / "mutants.toml").read_text())["mutant"]


def run_named(name: str, module: dict, conf: dict, children: int) -> list[dict]:
    """The hand-written mutants of this module (scripts/mutants.toml), each applied alone to a copy
    of src/ and judged by the module's tests; killed when the tests fail (pytest's exit 1 to 3)."""
    mutants = [m for m in named_mutants() if m["module"] == name]

    slots: queue.Queue[int] = queue.Queue()
    for i in range(children):
        slots.put(i)

    def judge(m: dict) -> dict:
        slot = slots.get()  # a copy of src/ per worker, never two mutants in one
        try:
            return judge_in(m, SCRATCH / name / f"named-{slot}" / "src")
        finally:
            slots.put(slot)

    def judge_in(m: dict, tree: Path) -> dict:
        shutil.rmtree(tree, ignore_errors=True)
        shutil.copytree(ROOT / "src", tree, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        target = tree.parent / module["source"]
        text = target.read_text()
        if text.count(m["old"]) != 1:
            return {"why": m["why"], "status": f"stale: its old text occurs {text.count(m['old'])} times"}
        target.write_text(text.replace(m["old"], m["new"]))
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", *conf["pytest_args"], *module["tests"]],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(tree)},
            capture_output=True,
            text=True,
        )
        status = "killed" if done.returncode in (1, 2, 3) else "survived"
        return {"why": m["why"], "status": status, "old": m["old"], "new": m["new"]}

    with ThreadPoolExecutor(children) as pool:
        return list(pool.map(judge, mutants))


def write_report(rows: dict, command: str, seconds: float) -> None:
    path = RESULTS / "mutation.json"
    old = json.loads(path.read_text()) if path.exists() else {"modules": {}}
    modules = {**old["modules"], **rows}
    report = {
        "tool": f"mutmut {version()}",
        "command": command,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": sum(r["seconds"] for r in modules.values()),
        "modules": dict(sorted(modules.items())),
    }
    path.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    md = [
        "# Mutation testing",
        "",
        "Command: `make mutation` (all modules) or `make mutation MODULES='page.text jsonl'`; this file",
        f"was last written by `{command}` ({report['tool']}, {report['date']}). Run time: "
        f"{report['seconds']} s for the modules below, each row's own in its last column (mutmut",
        "and the hand-written mutants, two workers, on two cores shared with other work).",
        "",
        "Each module is mutated alone and judged by its own test files (pyproject.toml,",
        "`[tool.research.mutation]`), without model, page or browser tests. Score = killed /",
        "(mutants - equivalent); a mutant no test reaches counts as a survivor. mutmut mutates inside",
        "functions only: the hand-written mutants (scripts/mutants.toml) change module-level tables,",
        "patterns and constants, and repeat those issue 33 named; each must be killed.",
        "",
        "| module | tests | mutmut: killed / mutants | equivalent | score | target "
        "| hand-written: killed | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in report["modules"].items():
        ok = "" if met(r) else " **below**"
        md.append(
            f"| {name} | {', '.join(Path(t).name for t in r['tests'])} | {r['killed']} / {r['mutants']} "
            f"| {len(r['equivalent'])} | {r['score']} %{ok} | {r['target']} % "
            f"| {r['named_killed']} / {len(r['named'])} | {r['seconds']} |"
        )
    for title, key in (("Survivors", "survivors"), ("Equivalent mutants, and why", "equivalent")):
        md += ["", f"## {title}", ""]
        entries = [(name, e) for name, r in report["modules"].items() for e in r[key]]
        if not entries:
            md.append("None.")
        for name, e in entries:
            md += [f"- {name}: `{e['mutant']}` ({e.get('status') or e['why']})", "", "  ```diff"]
            md += [f"  {line}" for line in e["diff"].splitlines()] + ["  ```"]
    md += ["", "## Hand-written mutants (scripts/mutants.toml)", ""]
    for name, r in report["modules"].items():
        md += [f"- {name}: {n['why']}: {n['status']}" for n in r["named"]]
    (RESULTS / "mutation.md").write_text("\n".join(md) + "\n")


def version() -> str:
    from importlib.metadata import version

    return version("mutmut")


def main(argv: list[str] | None = None) -> int:
    conf = settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help=f"some of: {' '.join(conf['modules'])} (default: all)")
    parser.add_argument("--children", type=int, default=2, help="mutants tested at once (default 2)")
    parser.add_argument("--no-report", action="store_true", help="print only; leave docs/results alone")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.modules) - set(conf["modules"]))
    if unknown:
        parser.error(f"unknown module(s) {unknown}; known: {' '.join(conf['modules'])}")
    names = args.modules or list(conf["modules"])
    start, rows = time.monotonic(), {}
    command = "make mutation" + (f" MODULES='{' '.join(args.modules)}'" if args.modules else "")
    for name in names:
        rows[name] = r = run_module(name, conf["modules"][name], conf, args.children)
        r["command"] = command
        if "error" in r:
            print(f"{name:24} FAILED: {r['error']}", flush=True)
            continue
        mark = "ok" if met(r) else "BELOW TARGET"
        print(
            f"{name:24} killed {r['killed']:4} / {r['mutants'] - len(r['equivalent']):4}"
            f"  ({len(r['equivalent'])} equivalent)  score {r['score']:5.1f} %  target {r['target']} %"
            f"  hand-written {r['named_killed']} / {len(r['named'])}  {mark}  [{r['seconds']} s]",
            flush=True,
        )
        for s in r["survivors"]:
            print(f"    {s['status']:9} {s['mutant']}")
            print("      " + s["diff"].replace("\n", "\n      "))
        for n in r["named"]:
            if n["status"] != "killed":
                print(f"    {n['status']:9} hand-written: {n['why']}")
    seconds = time.monotonic() - start
    print(f"{len(names)} module(s) in {seconds:.0f} s")
    failed = [name for name, r in rows.items() if "error" in r]
    if not args.no_report and not failed:
        write_report(rows, command, seconds)
    return 0 if not failed and all(met(r) for r in rows.values()) else 1


def met(r: dict) -> bool:
    """The module's target reached, and every hand-written mutant killed."""
    return r["score"] >= r["target"] and r["named_killed"] == len(r["named"])


if __name__ == "__main__":
    sys.exit(main())
