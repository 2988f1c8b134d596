"""The page at rest: no timer wakes it, the model's memory goes back when idle, answers say their cost."""

import time

import pytest

from research import energy
from research.engine import EngineConfig, Sampling
from research.measure import page as page_bench
from research.page import host as chat


def rapl(root, packages):
    """A fake /sys with RAPL package domains: {name: (energy_uj, max_energy_range_uj)}."""
    for i, (uj, wrap) in enumerate(packages):
        d = root / "sys/class/powercap" / f"intel-rapl:{i}"
        d.mkdir(parents=True)
        (d / "energy_uj").write_text(f"{uj}\n")
        (d / "max_energy_range_uj").write_text(f"{wrap}\n")
        (d / "name").write_text(f"package-{i}\n")
        sub = root / "sys/class/powercap" / f"intel-rapl:{i}:0"  # a sub-domain (core): not summed
        sub.mkdir()
        (sub / "energy_uj").write_text("999999999\n")


def test_rapl_energy_is_summed_over_packages_and_unwrapped(tmp_path):
    rapl(tmp_path, [(1_000_000, 10_000_000), (2_000_000, 10_000_000)])
    m = energy.find(tmp_path)
    assert m.source == "rapl" and m.read() == pytest.approx((1.0, 2.0))
    before = m.read()
    (tmp_path / "sys/class/powercap/intel-rapl:0/energy_uj").write_text("500000\n")  # wrapped past 10 J
    (tmp_path / "sys/class/powercap/intel-rapl:1/energy_uj").write_text("2500000\n")
    assert m.spent(before, m.read()) == pytest.approx(9.5 + 0.5)


def test_android_battery_counter_gives_joules(tmp_path):
    d = tmp_path / "sys/class/power_supply/battery"
    d.mkdir(parents=True)
    (d / "type").write_text("Battery\n")
    (d / "charge_counter").write_text("3000000\n")  # µAh
    (d / "voltage_now").write_text("4000000\n")  # µV
    m = energy.find(tmp_path)
    before = m.read()
    (d / "charge_counter").write_text("2999000\n")  # 1 mAh drawn
    assert m.source == "battery" and m.spent(before, m.read()) == pytest.approx(1e-3 * 3600 * 4.0)


def test_no_counter_is_said_not_guessed(tmp_path):
    m = energy.find(tmp_path)
    assert m.source == "none" and "no RAPL" in m.why and m.read() is None
    rapl(tmp_path, [(1, 10)])
    (tmp_path / "sys/class/powercap/intel-rapl:0/energy_uj").write_text("")  # unreadable, as for non-root
    assert "not readable" in energy.find(tmp_path).why
    with energy.Span(m) as span:
        sum(i * i for i in range(200_000))
    assert span.cpu_s > 0 and span.energy_j is None


@pytest.mark.page
@pytest.mark.model
def test_the_page_at_rest_does_not_poll(page):
    """Gradio's queue polled every millisecond (~800 wake-ups a second); the page now waits for
    events. The bound is loose on purpose: it tells waiting from polling, not a speed."""
    time.sleep(2)
    r = page_bench.rest(page.proc.pid, 6)
    assert r["wakeups_per_s"] < 25, r
    assert r["cpu_pct_of_a_core"] < 3, r


@pytest.mark.model
def test_the_model_is_unloaded_when_idle_and_reloaded_by_a_question():
    host = chat.ModelHost(None, EngineConfig(n_ctx=512, n_threads=2), unload_after_s=0.5)
    ask = [{"role": "user", "content": "Say hi."}]
    *_, first = host.respond(ask, "", Sampling(temperature=0, max_tokens=8))
    assert "model loaded in" in first[-1]["content"]  # loaded by this question
    *_, second = host.respond(ask, "", Sampling(temperature=0, max_tokens=8))
    assert "model loaded in" not in second[-1]["content"] and host.engine is not None
    deadline = time.monotonic() + 10
    while host.engine is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert host.engine is None and host.unloaded
    *_, third = host.respond(ask, "", Sampling(temperature=0, max_tokens=8))
    assert "model loaded in" in third[-1]["content"] and not host.unloaded
    assert "CPU" in third[-1]["content"]  # what the answer cost
    host.unload_after_s = None
    host.engine.close()


@pytest.mark.model
def test_an_answer_running_is_never_unloaded():
    host = chat.ModelHost(None, EngineConfig(n_ctx=512, n_threads=2), unload_after_s=0.2)
    stream = host.respond([{"role": "user", "content": "Count to fifty."}], "", Sampling(max_tokens=200))
    next(stream)  # the answer is running
    time.sleep(0.5)
    assert not host.unload_if_idle() and host.engine is not None
    for _ in stream:
        pass
    assert host.unload_if_idle() and host.engine is None
