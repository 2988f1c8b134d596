"""Every CMake flag the kit sets is explained; llama-cli's answer and speed line are read."""

from research.llamacpp import build
from research.llamacpp import notes as build_notes


def test_every_flag_of_every_build_kind_is_explained(monkeypatch, tmp_path):
    src = build.Source(tmp_path, "abc1234", "dir")
    ndk = tmp_path / "ndk"
    (ndk / "build" / "cmake").mkdir(parents=True)
    (ndk / "build" / "cmake" / "android.toolchain.cmake").write_text("")
    kinds = ["native", "termux", "android"]
    try:
        build.cmake_flags(src, "aarch64-linux")
        kinds.append("aarch64-linux")
    except Exception:
        pass  # no ARM cross compiler here
    for kind in kinds:
        flags = build.cmake_flags(src, kind, ndk if kind == "android" else None)
        missing = [f for f, why in build_notes.explain(flags) if why == "(not explained here)"]
        assert not missing, f"{kind}: {missing}"
    assert build_notes.explain(["-DNOT_A_FLAG=1"]) == [("-DNOT_A_FLAG=1", "(not explained here)")]


def test_termux_is_detected_from_its_environment(monkeypatch):
    monkeypatch.delenv("TERMUX_VERSION", raising=False)
    monkeypatch.setenv("PREFIX", "/usr")
    assert build_notes.build_kind(None) == "native"
    monkeypatch.setenv("TERMUX_VERSION", "0.118")
    assert build_notes.build_kind(None) == "termux"
    assert build_notes.build_kind("aarch64-linux") == "aarch64-linux"


def test_llama_cli_answers_with_its_speed_line(llama_tools):
    out = build_notes.cli_run("What is the capital of France?", n_predict=8, threads=1)
    assert out["answer"] and "[ Prompt:" not in out["answer"]
    assert out["speed_line"].startswith("[ Prompt:")
    assert out["prompt_tps"] > 0 and out["decode_tps"] > 0
