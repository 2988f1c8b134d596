"""The page's speed as painted: thread choice on big.LITTLE phones, and the paint log's figures."""

import pytest

from research import device
from research.measure import page_speed


def cpus(root, capacities, online=None):
    base = root / "sys/devices/system/cpu"
    for n, cap in enumerate(capacities):
        (base / f"cpu{n}").mkdir(parents=True)
        if cap is not None:
            (base / f"cpu{n}" / "cpu_capacity").write_text(f"{cap}\n")
    (base / "online").write_text(online or f"0-{len(capacities) - 1}\n")
    return root


def test_little_cores_are_left_out_and_one_fast_core_goes_to_the_browser(tmp_path):
    # A Snapdragon 888: four Cortex-A55 (little), three A78 and one X1.
    phone = cpus(tmp_path / "phone", [325, 325, 325, 325, 870, 870, 870, 1024])
    assert device.fast_cores(phone) == 4
    assert device.default_threads(phone) == 4  # the engine alone: the big cores only
    threads, why = device.page_threads(phone)
    assert threads == 3 and "4 slow ones left out" in why and "browser" in why


def test_equal_cores_all_count_and_a_lone_core_is_shared(tmp_path):
    pc = cpus(tmp_path / "pc", [1024, 1024, 1024, 1024])
    assert device.fast_cores(pc) == 4
    one = cpus(tmp_path / "one", [1024])
    assert device.fast_cores(one) == 1
    assert device.page_threads(one) == (1, "1 fast core: the browser runs beside the model")
    two = cpus(tmp_path / "two", [1024, 1024])  # the browser's share of a core is less than a thread's
    assert device.page_threads(two) == (2, "2 fast cores: the browser runs beside the model")


def test_offline_cores_and_missing_capacities(tmp_path):
    half = cpus(tmp_path / "half", [1024, 1024, 1024, 1024], online="0-1\n")
    assert device.core_speeds(half) == {0: 1024, 1: 1024}
    freq = cpus(tmp_path / "freq", [None, None])
    for n, khz in enumerate((1_200_000, 2_800_000)):
        (freq / f"sys/devices/system/cpu/cpu{n}/cpufreq").mkdir()
        (freq / f"sys/devices/system/cpu/cpu{n}/cpufreq/cpuinfo_max_freq").write_text(f"{khz}\n")
    assert device.fast_cores(freq) == 1  # 1.2 GHz is under 60 % of 2.8 GHz


def test_painted_speed_and_first_paint_from_a_paint_log():
    paints = [
        [100.0, 15, False, 1, "Loading content"],  # the bubble before the first piece: not text
        [150.0, 0, False, 1, ""],
        [300.0, 40, False, 1, "Once upon a time"],
        [1300.0, 240, False, 1, "Once upon a time"],
        [2300.0, 440, False, 1, "Once upon a time"],
        [2350.0, 520, True, 1, "Once upon a time"],  # the figures line: not the answer's text
    ]
    got = page_speed.painted(paints, asked=50.0, tokens=110)
    assert got["first_paint_ms"] == pytest.approx(250.0)
    # 400 of 440 characters painted over 2.0 s after the first paint: 100 of 110 tokens -> 50 t/s
    assert got["painted_tps"] == pytest.approx(110 * 400 / 440 / 2.0)
    assert got["paints"] == 3
    # What the reader lives: all 110 tokens from Ask (50 ms) to the last text paint (2300 ms).
    assert got["seen_tps"] == pytest.approx(110 / 2.25) and got["last_paint_ms"] == pytest.approx(2250.0)
    assert got["seen_tps"] < got["painted_tps"]  # the wait before the first paint counts


def test_a_short_answer_in_one_piece_gives_its_first_paint_but_no_speed():
    paints = [
        [100.0, 15, False, 1, "Loading content"],
        [420.0, 90, True, 1, "Paris is the capital of France."],  # text and figures in one paint
    ]
    got = page_speed.painted(paints, asked=50.0, tokens=9, speed=False)
    assert got["first_paint_ms"] == pytest.approx(370.0) and got["painted_tps"] is None
    assert got["seen_tps"] is None and got["last_paint_ms"] == pytest.approx(370.0)
    with pytest.raises(page_speed.KitError, match="one piece"):
        page_speed.painted(paints, asked=50.0, tokens=9)
