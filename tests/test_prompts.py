"""Chat formats render to golden strings; hostile templates render nothing dangerous, and
templates that never end or eat memory are stopped within bounds."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from research import device
from research.engine import fit_history
from research.engine import templates as template_worker
from research.engine.prompts import (
    FORMATS,
    ORCA_SYSTEM,
    STOPS,
    TemplateLimitError,
    choose_format,
    render_template,
)
from research.errors import KitError

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy?"},
]


def test_chatml_golden():
    assert FORMATS["chatml"](CONVERSATION) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nCapital of France?<|im_end|>\n"
        "<|im_start|>assistant\nParis.<|im_end|>\n"
        "<|im_start|>user\nAnd of Italy?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_orca_mini_golden():
    # The format of the Orca-Mini-3B model card, which the paper used.
    messages = [
        {"role": "system", "content": ORCA_SYSTEM},
        {"role": "user", "content": "Tell me about Orcas."},
    ]
    assert FORMATS["orca-mini"](messages) == (
        "### System:\nYou are an AI assistant that follows instruction extremely well. "
        "Help as much as you can.\n\n### User:\nTell me about Orcas.\n\n### Response:\n"
    )
    assert FORMATS["orca-mini"](CONVERSATION).endswith(
        "### Response:\nParis.\n\n### User:\nAnd of Italy?\n\n### Response:\n"
    )


def test_select_format_by_name():
    fmt, warning = choose_format("orca-mini", "{{ messages }}")
    assert fmt.name == "orca-mini" and warning is None
    assert fmt.render(CONVERSATION[:2]).startswith("### System:\nBe brief.")
    with pytest.raises(KitError, match="unknown chat format"):
        choose_format("no-such-format", None)


CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def test_gguf_template_renders_like_the_named_format():
    assert render_template(CHATML_TEMPLATE, CONVERSATION) == FORMATS["chatml"](CONVERSATION)


HOSTILE = {
    "class hierarchy": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "globals via cycler": "{{ cycler.__init__.__globals__.os.popen('echo pwned').read() }}",
    "attr filter": "{{ ''|attr('__class__')|attr('__mro__') }}",
    "format string": "{{ '{0.__class__.__mro__}'.format('') }}",
    "format_map": "{{ '{a.__class__}'.format_map({'a': ''}) }}",
    "mutating a list": "{% set x = [] %}{{ x.append(1) }}",
    "self reference": "{{ self.__init__.__globals__ }}",
    "namespace globals": "{{ namespace.__init__.__globals__ }}",
    "lipsum globals": "{{ lipsum.__globals__['os'].system('echo pwned') }}",
}


@pytest.mark.parametrize("template", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_template_is_refused_without_running(template, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        out = render_template(template, CONVERSATION)
    except KitError as e:
        assert "\n" not in str(e)
        return
    # Rendering without an error is acceptable only if nothing of Python's insides came out.
    assert "class" not in out and "pwned" not in out and "function" not in out and "module" not in out


def test_hostile_template_in_a_gguf_falls_back_to_a_named_format():
    fmt, warning = choose_format(None, HOSTILE["class hierarchy"], fallback="chatml")
    assert fmt.name == "chatml" and fmt.template is None
    assert "unsafe" in warning or "failed" in warning


def test_template_refusing_system_role_gets_system_folded_in():
    template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}"
        "{% endif %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
    )
    fmt, warning = choose_format(None, template)
    assert warning is None
    assert fmt.render(CONVERSATION[:2]) == "<user>Be brief.\n\nCapital of France?"


def test_old_jinja2_or_llama_cpp_python_is_refused(monkeypatch):
    import importlib.metadata

    from research.engine import prompts

    real = importlib.metadata.version
    for pkg, old in (("jinja2", "3.1.4"), ("llama-cpp-python", "0.2.70")):
        monkeypatch.setattr(
            importlib.metadata, "version", lambda name, p=pkg, o=old: o if name == p else real(name)
        )
        with pytest.raises(KitError, match=f"{pkg} {old} has known security holes"):
            choose_format(None, "{{ 1 }}")
    monkeypatch.setattr(importlib.metadata, "version", real)
    prompts.check_versions()  # the installed versions pass


# ---- bounded rendering: templates that never end or eat memory render in a bounded worker ----

#: Each fits in the bundled model's 368-byte template (test_hostile.py puts them inside it).
UNBOUNDED = {
    "nested range loops": "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}",
    "recursion through macros": "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}"
    "{% endmacro %}{{ f(60) }}",
    "for over a huge sequence": "{% for c in 'x' * 10**7 %}{% if loop.index is divisibleby 7 %}{% endif %}"
    "{% endfor %}",
    "string repetition": "{{ 'x' * 10**9 }}",
    "doubling with ~": "{% set ns = namespace(s='x') %}{% for i in range(50) %}{% set ns.s = ns.s ~ ns.s %}"
    "{% endfor %}{{ ns.s }}",
    "list growth via namespace": "{% set ns = namespace(l=[1]) %}{% for i in range(50) %}"
    "{% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l | length }}",
    "output past the cap": "{{ 'x' * 10**7 }}",
}
#: Seconds from asking to the refusal: the bound, then killing the worker, maybe starting one
#: (0.1 s here, seconds on a machine as loaded as a shared CI runner), and slack.
REFUSAL_S = template_worker.WALL_S + 4
#: MB the asking process may grow by meanwhile (it reads at most one capped reply line).
GROWTH_MB = 32
#: Loops only when a message says LOOP, eats memory only when one says GROW; renders like
#: ChatML otherwise, so it passes at load.
TRIGGERED = (
    "{% for m in messages %}{% if 'LOOP' in m.content %}{% for i in range(99999) %}"
    "{% for j in range(99999) %}{% endfor %}{% endfor %}{% endif %}"
    "{% if 'GROW' in m.content %}{{ 'x' * 10**9 }}{% endif %}"
    "{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def within(seconds, fn, *args):
    """fn(*args) in a thread; fail, not hang, if it has not returned after `seconds`."""
    box = {}

    def run():
        try:
            box["value"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - handed to the test's thread
            box["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    if "error" in box:
        raise box["error"]
    return box["value"]


@pytest.mark.parametrize("template", UNBOUNDED.values(), ids=UNBOUNDED.keys())
def test_unbounded_template_is_refused_in_one_line_within_bounds(template):
    render_template(CHATML_TEMPLATE, CONVERSATION)  # a worker is up: its start is not counted
    device.reset_peak_rss()
    before = device.rss_mb()
    start = time.monotonic()
    with pytest.raises(TemplateLimitError) as e:
        within(REFUSAL_S + 30, render_template, template, CONVERSATION)
    took, grew = time.monotonic() - start, device.peak_rss_mb() - before
    assert took < REFUSAL_S and grew < GROWTH_MB, (took, grew)
    assert "\n" not in str(e.value) and "stopped" in str(e.value)
    assert render_template(CHATML_TEMPLATE, CONVERSATION) == FORMATS["chatml"](CONVERSATION)  # next one works


def test_a_range_past_the_sandbox_cap_is_one_line_not_a_traceback():
    with pytest.raises(KitError, match="failed to render.*Range too big"):
        render_template("{% for i in range(10**9) %}{% endfor %}", CONVERSATION)


def test_a_template_past_a_bound_at_load_falls_back_to_the_named_format():
    fmt, warning = choose_format(None, UNBOUNDED["nested range loops"], fallback="orca-mini")
    assert fmt.name == "orca-mini" and fmt.template is None
    assert "within 3 s" in warning and warning.endswith("using orca-mini") and "\n" not in warning
    assert fmt.render(CONVERSATION[:2]).startswith("### System:")


def test_a_template_past_a_bound_on_a_later_question_gives_way_to_the_fallback_for_good():
    fmt, warning = choose_format(None, TRIGGERED.replace("im_", "IM_"), fallback="chatml")
    assert fmt.name == "template" and warning is None
    assert fmt.render(CONVERSATION) == FORMATS["chatml"](CONVERSATION).replace("im_", "IM_")
    asked = CONVERSATION[:-1] + [{"role": "user", "content": "LOOP: and of Italy?"}]
    start = time.monotonic()
    assert within(REFUSAL_S + 30, fmt.render, asked) == FORMATS["chatml"](asked)  # answered in chatml
    assert time.monotonic() - start < REFUSAL_S
    assert fmt.name == "chatml" and fmt.stops == STOPS["chatml"] and fmt.template is None
    assert "within 3 s" in fmt.warning and fmt.warning.endswith("using chatml")
    assert fmt.render(CONVERSATION) == FORMATS["chatml"](CONVERSATION)  # for good


def test_a_template_asked_for_by_name_is_refused_later_rather_than_replaced():
    fmt, _ = choose_format("template", TRIGGERED)
    with pytest.raises(TemplateLimitError, match="needed more than 256 MB"):
        fmt.render([{"role": "user", "content": "GROW"}])
    assert fmt.name == "template"


def test_trimming_a_long_conversation_shares_one_time_budget():
    """fit_history renders again after each trim: slow renders together get WALL_S, not each."""
    slow = "{% for i in range(messages[0].content | int) %}{% for j in range(999) %}{% endfor %}{% endfor %}."
    n = 64
    while True:  # calibrate: a render that takes 0.6-1.5 s on this machine
        start = time.monotonic()
        render_template(slow, [{"role": "user", "content": str(n)}])
        if time.monotonic() - start >= 0.6:
            break
        n *= 2
    fmt, _ = choose_format(None, slow, fallback="chatml")
    turns = [{"role": r, "content": str(n)} for _ in range(20) for r in ("user", "assistant")]
    start = time.monotonic()
    # A tokenizer that counts characters and a context no rendering fits: trim to the last turn.
    chars = lambda m: list(fmt.render(m))  # noqa: E731
    _, _, dropped = within(60, fit_history, turns + [turns[0]], chars, 1, 10, -(10**9))
    assert time.monotonic() - start < REFUSAL_S  # 21 renders of >= 0.6 s each, were they all run
    assert dropped == 40 and fmt.name == "chatml" and "3 s" in fmt.warning


def test_a_stuck_render_does_not_hold_up_another_threads_render():
    render_template(CHATML_TEMPLATE, CONVERSATION)
    loop = UNBOUNDED["nested range loops"]
    stuck = threading.Thread(target=pytest.raises, args=(KitError, render_template, loop, CONVERSATION))
    stuck.daemon = True
    start = time.monotonic()
    stuck.start()
    time.sleep(0.2)  # the loop is running in a worker
    for _ in range(20):
        assert render_template(CHATML_TEMPLATE, CONVERSATION) == FORMATS["chatml"](CONVERSATION)
    assert stuck.is_alive(), time.monotonic() - start  # all served while it was still stuck
    stuck.join(REFUSAL_S)
    assert not stuck.is_alive()


def no_workers():
    """End every worker through the kit's own path: a template past the memory bound."""
    while template_worker.worker_pids():
        with pytest.raises(TemplateLimitError):
            render_template(UNBOUNDED["string repetition"], CONVERSATION)


def test_the_worker_restarts_after_being_killed():
    no_workers()
    render_template(CHATML_TEMPLATE, CONVERSATION)
    (pid,) = template_worker.worker_pids()  # a single worker serves renders that do not overlap
    os.kill(pid, signal.SIGKILL)
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        time.sleep(0.01)
    assert render_template(CHATML_TEMPLATE, CONVERSATION) == FORMATS["chatml"](CONVERSATION)
    (again,) = template_worker.worker_pids()
    assert again != pid
    with pytest.raises(TemplateLimitError):
        render_template(UNBOUNDED["string repetition"], CONVERSATION)  # killed by the parent this time
    assert template_worker.worker_pids() == []
    assert render_template(CHATML_TEMPLATE, CONVERSATION) == FORMATS["chatml"](CONVERSATION)


def test_prestart_starts_the_worker_the_first_render_uses():
    no_workers()
    template_worker.prestart()
    (pid,) = template_worker.worker_pids()  # started before any render asked
    assert render_template(CHATML_TEMPLATE, CONVERSATION) == FORMATS["chatml"](CONVERSATION)
    template_worker.prestart()  # one is up: nothing more starts
    assert template_worker.worker_pids() == [pid]


def test_a_worker_that_cannot_start_is_one_line_and_the_format_falls_back(monkeypatch):
    no_workers()
    monkeypatch.setattr(sys, "executable", "/bin/false")  # exits at once, never says it is ready
    with pytest.raises(KitError, match="renderer failed to start") as e:
        render_template(CHATML_TEMPLATE, CONVERSATION)
    assert "\n" not in str(e.value) and template_worker.worker_pids() == []
    fmt, warning = choose_format(None, CHATML_TEMPLATE)
    assert fmt.name == "chatml" and "failed to start" in warning
    monkeypatch.undo()
    assert render_template(CHATML_TEMPLATE, CONVERSATION) == FORMATS["chatml"](CONVERSATION)


def test_text_crosses_to_the_worker_and_back_unchanged():
    messages = [{"role": "user", "content": 'Grüße aus 東京 😀 "quoted" \\ \n\x00 \u2028 end'}]
    assert render_template(CHATML_TEMPLATE, messages) == FORMATS["chatml"](messages)


@pytest.mark.skipif(not os.path.exists("/proc/self/limits"), reason="reads /proc")
def test_the_worker_limits_its_own_address_space_and_cpu_time():
    render_template(CHATML_TEMPLATE, CONVERSATION)
    limits, pids = {}, template_worker.worker_pids()
    assert pids
    for pid in pids:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]:
            name, soft = line[:26].strip(), line[26:47].strip()
            limits[name] = soft
        assert limits["Max address space"] != "unlimited"
        assert int(limits["Max address space"]) <= (template_worker.MEMORY_MB + 64) * 2**20
        assert limits["Max cpu time"] != "unlimited"
        assert int(limits["Max core file size"]) == 0


def test_a_worker_whose_parent_stopped_waiting_ends_by_itself():
    """The CPU limit is the backstop when nobody enforces the wall clock (the parent died)."""
    with subprocess.Popen(
        [sys.executable, "-m", "research.engine.template_child"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    ) as proc:
        assert b"ready" in proc.stdout.readline()
        request = {
            "template": UNBOUNDED["nested range loops"],
            "messages": [],
            "bos_token": "",
            "eos_token": "",
            "add_generation_prompt": True,
            "max_chars": 100,
        }
        proc.stdin.write(json.dumps(request).encode() + b"\n")
        proc.stdin.flush()
        try:
            assert proc.wait(timeout=template_worker.CPU_S + 30) == -signal.SIGXCPU
        finally:
            proc.kill()
