"""Measurements of the chat page itself: its process at rest, its memory, in a real browser.

The page runs as `python -m research demo` in a child process on a free loopback port, with its
own ratings file and temporary folder, so measuring never writes into the user's data. Figures
come from /proc (Linux, Android): CPU time and voluntary context switches summed over all the
process's threads (a voluntary switch is a thread going to sleep, so one per wake-up), and the
resident memory.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from research.errors import KitError
from research.page import launch
from research.units import MB


@dataclass(frozen=True)
class ProcSample:
    """One reading of a process: CPU-seconds, voluntary context switches, resident bytes."""

    t: float
    cpu_s: float
    wakeups: int
    rss: int

    @classmethod
    def of(cls, pid: int) -> ProcSample:
        cpu, wakeups = 0, 0
        tick = os.sysconf("SC_CLK_TCK")
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
            for tid in tasks:
                try:
                    stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
                    cpu += int(stat[11]) + int(stat[12])  # utime, stime (clock ticks)
                    for line in Path(f"/proc/{pid}/task/{tid}/status").read_text().splitlines():
                        if line.startswith("voluntary_ctxt_switches:"):
                            wakeups += int(line.split()[1])
                except (FileNotFoundError, ProcessLookupError):
                    continue  # a thread that ended between listing and reading
            rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError as e:
            why = f"cannot read process {pid} from /proc ({e.strerror}): needs Linux or Android"
            raise KitError(why) from None
        return cls(time.monotonic(), cpu / tick, wakeups, rss)


def browser_cpu_s(page_pid: int) -> float:
    """CPU-seconds used so far by this process's children apart from the page and its own children:
    the browser that playwright started (every process of it) and playwright's driver. A process
    that ended in between takes its seconds with it: compare two readings over short spans."""
    import psutil

    try:
        page = {page_pid, *(c.pid for c in psutil.Process(page_pid).children(recursive=True))}
    except psutil.Error:
        page = {page_pid}
    total = 0.0
    for child in psutil.Process().children(recursive=True):
        if child.pid in page:
            continue
        try:
            t = child.cpu_times()
        except psutil.Error:
            continue  # ended between listing and reading
        total += t.user + t.system
    return total


def rest(pid: int, seconds: float) -> dict:
    """What a process does at rest over `seconds`: % of a core, wake-ups a second, resident MB."""
    a = ProcSample.of(pid)
    time.sleep(seconds)
    b = ProcSample.of(pid)
    dt = b.t - a.t
    return {
        "seconds": dt,
        "cpu_pct_of_a_core": 100 * (b.cpu_s - a.cpu_s) / dt,
        "cpu_s_per_minute": 60 * (b.cpu_s - a.cpu_s) / dt,
        "wakeups_per_s": (b.wakeups - a.wakeups) / dt,
        "rss_mb": b.rss / MB,
    }


class Page:
    """The real chat page in a child process: `with Page(model, *args) as page: page.url, page.pid`."""

    def __init__(self, model: str | None = None, *args: str, n_ctx: int = 4096, timeout: float = 300):
        self.model, self.args, self.n_ctx, self.timeout = model, args, n_ctx, timeout

    def __enter__(self) -> launch.RunningPage:
        self._tmp = tempfile.TemporaryDirectory(prefix="research-bench-page-")
        tmp = Path(self._tmp.name)
        args = ["--ctx", str(self.n_ctx), *(["--model", str(self.model)] if self.model else []), *self.args]
        # Its own ratings file and temporary folder: measuring must not write into the user's.
        page = launch.RunningPage(
            launch.demo_command(launch.free_port(), *args),
            tmp / "page.log",
            launch.private_env(tmp),
            timeout=self.timeout,
        )
        try:
            self._page = page.start()
        except KitError as e:
            self._tmp.cleanup()
            raise KitError(f"{e} (measuring)") from None
        return self._page

    def __exit__(self, *exc) -> None:
        self._page.stop()
        self._tmp.cleanup()


def page_memory(model: str | None, n_ctx: int = 4096, question: str | None = None) -> dict:
    """Peak resident memory of the chat page's process after it answered `question`.

    The page holds the same engine as `research chat` plus Gradio, its web server and the page's
    state; its peak beside the cold start's (the engine alone, same model, context and question:
    research.measure.chat_timing.cold_start) is what the page adds on top.
    """
    from research.measure.chat_timing import QUESTION

    with Page(model, n_ctx=n_ctx) as page:
        page.client().predict(question or QUESTION, temperature=0, max_tokens=16, api_name="/ask")
        status = Path(f"/proc/{page.pid}/status").read_text()
        start_s = page.start_s
    peak_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    return {"peak_rss_mb": peak_kb * 1024 / MB, "start_s": start_s, "n_ctx": n_ctx}


def idle(model: str | None = None, seconds: float = 60, browser: str | None = None, progress=print) -> dict:
    """The page at rest: with no browser, with an idle browser tab, and after unloading its model.

    Returns figures per state (% of a core, wake-ups a second, resident MB) and the unloaded
    page's memory beside a page that never loaded a model (--lazy).
    """
    out = {"seconds": seconds}
    with Page(model) as page:
        time.sleep(3)  # start-up work done (first imports, template worker, allocator)
        progress(f"page at rest, no browser, {seconds:.0f} s ...")
        out["no_browser"] = rest(page.pid, seconds)
        chromium = browser or find_browser()
        if chromium:
            progress(f"page at rest with an idle browser tab ({chromium}), {seconds:.0f} s ...")
            out["browser_tab"] = _with_tab(page, chromium, seconds)
        else:
            out["browser_tab"] = None
            progress("no Chromium found (--browser PATH): the browser-tab figures are left out")
    with Page(model, "--unload-after", "0.05") as page:  # 3 s
        progress("page that unloads its model after 3 idle seconds ...")
        if not page.wait_for_log("unloaded after", 60):
            raise KitError("the page did not unload its model after 3 idle seconds")
        time.sleep(2)
        out["unloaded"] = rest(page.pid, min(seconds, 10))
    with Page(model, "--lazy") as page:
        time.sleep(3)
        out["never_loaded"] = rest(page.pid, min(seconds, 10))
    out["unloaded_over_never_loaded_mb"] = out["unloaded"]["rss_mb"] - out["never_loaded"]["rss_mb"]
    return out


def find_browser() -> str | None:
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


#: Chromium's own calls home (component updates, safe browsing, ...), off: the page is on
#: loopback and must be measured alone. The kit's browser tests launch it with these too.
#: Chromium features off in the kit's browser: those that call Google on their own, and those
#: playwright turns off for its own reasons (its list, as of playwright 1.58), kept off.
QUIET_FEATURES = (
    "AutofillServerCommunication",
    "NetworkTimeServiceQuerying",
    "OptimizationHints",
    "AimEnabled",
    "PreconnectToSearch",
    "MediaRouter",
    "LensOverlay",
    "AvoidUnnecessaryBeforeUnloadCheckSync",
    "DestroyProfileOnBrowserClose",
    "HttpsUpgrades",
    "HttpsFirstBalancedModeAutoEnable",
    "PaintHolding",
    "ThirdPartyStoragePartitioning",
    "AvoidCorsURLLoaderRestartOnRedirect",
)
QUIET_BROWSER = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    # Left on, Chromium still asks Google for the time, updates and accounts and sends a signature
    # of the page's form to its autofill service: the flags above do not stop those. One
    # --disable-features counts (the last), so this list holds playwright's own (which it passes
    # before ours) and the kit's. No name but this device's resolves at all
    # (research.page.server.private_name's *.localhost included).
    "--disable-features=" + ",".join(QUIET_FEATURES),
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE localhost , EXCLUDE *.localhost",
]


def open_page(tab, url: str, timeout_ms: int = 120_000) -> None:
    """Open the chat page at `url` in a playwright tab and return once it can be used: loaded and its
    question box shown. Not "network idle": that waits for 500 ms with no request in flight, which a
    loaded machine (or a poll the page starts) can put off past any timeout, with the page ready."""
    tab.goto(url, wait_until="load", timeout=timeout_ms)
    tab.get_by_placeholder("Ask a question…").wait_for(state="visible", timeout=timeout_ms)
    tab.get_by_text("Model:").first.wait_for(timeout=timeout_ms)


def _with_tab(page: Page, chromium: str, seconds: float) -> dict:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise KitError("measuring with a browser needs playwright: pip install playwright") from None
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=QUIET_BROWSER, headless=True)
        try:
            tab = b.new_page(viewport={"width": 390, "height": 844})
            open_page(tab, page.open_url)
            time.sleep(3)
            before = browser_cpu_s(page.pid)
            out = rest(page.pid, seconds)
            used = browser_cpu_s(page.pid) - before
            return out | {"browser_pct_of_a_core": 100 * used / out["seconds"]}
        finally:
            b.close()


def format_idle(r: dict) -> str:
    lines = [f"{'the page at rest':34} {'% of a core':>11} {'CPU s/min':>9} {'wake-ups/s':>10} {'RSS MB':>7}"]
    names = {
        "no_browser": "model loaded, no browser",
        "browser_tab": "model loaded, idle browser tab",
        "unloaded": "model unloaded (idle)",
        "never_loaded": "model never loaded (--lazy)",
    }
    for key, name in names.items():
        x = r.get(key)
        if x is None:
            lines.append(f"{name:34} {'(no browser found)':>11}")
            continue
        lines.append(
            f"{name:34} {x['cpu_pct_of_a_core']:11.2f} {x['cpu_s_per_minute']:9.2f} "
            f"{x['wakeups_per_s']:10.1f} {x['rss_mb']:7.0f}"
        )
    tab = r.get("browser_tab")
    if tab and "browser_pct_of_a_core" in tab:
        lines.append(
            f"the idle tab's browser itself (Chromium's processes, playwright's driver): "
            f"{tab['browser_pct_of_a_core']:.2f} % of a core"
        )
    lines.append(
        f"unloaded page against one that never loaded a model: {r['unloaded_over_never_loaded_mb']:+.0f} MB"
    )
    return "\n".join(lines)
