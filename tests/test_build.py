"""Building llama.cpp: source discovery, toolchains, error messages, the build record and --check."""

import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import LLAMA_TOOLS

from research.errors import KitError
from research.llamacpp import build

ROOT = Path(__file__).resolve().parents[1]


def fake_source(tmp_path: Path, cmakelists: str) -> Path:
    src = tmp_path / "llama.cpp"
    (src / "include").mkdir(parents=True)
    (src / "include" / "llama.h").write_text("// header\n")
    (src / "ggml").mkdir()
    (src / "ggml" / "CMakeLists.txt").write_text("")
    (src / "CMakeLists.txt").write_text(cmakelists)
    return src


def test_folder_that_is_not_llama_cpp(tmp_path):
    (tmp_path / "README.md").write_text("hello")
    with pytest.raises(KitError, match="is not llama.cpp source"):
        build.find_source(tmp_path)
    with pytest.raises(KitError, match="no such folder"):
        build.find_source(tmp_path / "missing")


def test_llama_cpp_python_tree_is_accepted(tmp_path):
    src = fake_source(tmp_path / "llama_cpp_python-9.9.9" / "vendor", "")
    (tmp_path / "llama_cpp_python-9.9.9" / "CHANGELOG.md").write_text(
        "## [Unreleased]\n\n## [9.9.9]\n\n- feat: update llama.cpp to ggml-org/llama.cpp@abcdef123\n\n"
        "## [9.9.8]\n"
        "- feat: update llama.cpp to ggml-org/llama.cpp@111111111\n"
    )
    found = build.find_source(tmp_path / "llama_cpp_python-9.9.9")
    assert found.path == src.resolve() and found.commit == "abcdef123" and found.llama_cpp_python == "9.9.9"


def test_git_checkout_reports_its_commit(tmp_path):
    src = fake_source(tmp_path, "")
    git = ["git", "-C", str(src), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    head = subprocess.run(
        [*git, "rev-parse", "--short=9", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    found = build.find_source(src)
    assert found.origin == "git" and found.commit == head


def test_android_needs_a_real_ndk(tmp_path):
    with pytest.raises(KitError, match="needs the NDK"):
        build.toolchain("android")
    with pytest.raises(KitError, match="is not an Android NDK"):
        build.toolchain("android", tmp_path)
    ndk = tmp_path / "ndk"
    (ndk / "build" / "cmake").mkdir(parents=True)
    (ndk / "build" / "cmake" / "android.toolchain.cmake").write_text("")
    flags, _ = build.toolchain("android", ndk)
    assert "-DANDROID_ABI=arm64-v8a" in flags and "-DGGML_NATIVE=OFF" in flags
    assert f"-DGGML_CPU_ARM_ARCH={build.PHONE_ARCH}" in flags and "dotprod" in build.PHONE_ARCH


def test_missing_cmake_and_cross_compiler_named(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(KitError, match="cmake is missing.*apt-get install cmake"):
        build.toolchain("native")
    (tmp_path / "cmake").write_text("#!/bin/sh\n")
    (tmp_path / "cmake").chmod(0o755)
    with pytest.raises(KitError, match="aarch64-linux-gnu-gcc is missing.*gcc-aarch64-linux-gnu"):
        build.toolchain("aarch64-linux")


def test_unknown_kind_and_target():
    with pytest.raises(KitError, match="unknown build kind"):
        build.toolchain("ios")
    with pytest.raises(KitError, match="unknown target"):
        build.build(["llama-everything"])


def test_flags_never_fetch_anything(tmp_path):
    flags = build.cmake_flags(build.Source(tmp_path, "abc123456", "dir"), "native")
    assert "-DLLAMA_USE_PREBUILT_UI=OFF" in flags and "-DLLAMA_OPENSSL=OFF" in flags
    assert "-DLLAMA_BUILD_COMMIT=abc123456" in flags


def test_native_tools_are_built_with_this_cpus_safe_flags(tmp_path):
    """The tools take the engine's flags: this CPU's own vector features, never AMX on x86, where
    -march=native would compile llama.cpp's crashing AMX kernels in (llama.cpp issue 20824)."""
    from research.llamacpp import flags as engine_build

    flags = build.cmake_flags(build.Source(tmp_path, "abc123456", "dir"), "native")
    assert set(engine_build.cmake_args("native")) <= set(flags)
    if platform.machine() == "x86_64":
        assert "-DGGML_NATIVE=OFF" in flags and "-DGGML_AMX_INT8=OFF" in flags
        assert "-DGGML_NATIVE=ON" not in flags
    termux = build.cmake_flags(build.Source(tmp_path, "abc123456", "dir"), "termux")
    assert "-DGGML_OPENMP=OFF" in termux


@pytest.mark.model
def test_tools_built_with_unsafe_flags_are_not_taken_as_current(native, tmp_path, monkeypatch):
    """A record of tools built -march=native (as before this kit named the flags) fails the
    check, so bench and quality rebuild them instead of running crashing binaries."""
    old = [f for f in native["cmake_flags"] if "GGML" not in f] + ["-DGGML_NATIVE=ON"]
    record = dict(native, cmake_flags=old)
    monkeypatch.setenv("RESEARCH_BUILD_DIR", str(tmp_path))
    (tmp_path / "native.json").write_text(json.dumps(record))
    ok, lines = build.check()
    assert platform.machine() != "x86_64" or (not ok and "rebuild" in lines[-1] and "AMX" in lines[-1])


def test_failed_build_shows_its_tail_and_log(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RESEARCH_BUILD_DIR", str(tmp_path / "cache"))
    src = fake_source(
        tmp_path,
        "cmake_minimum_required(VERSION 3.14)\nproject(x C)\n"
        'message(FATAL_ERROR "deliberately broken source")\n',
    )
    with pytest.raises(KitError, match="build failed.*full log: .*build.log"):
        build.build(["llama-cli"], src)
    assert "deliberately broken source" in capsys.readouterr().err


def test_check_without_a_build_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("RESEARCH_BUILD_DIR", str(tmp_path))
    ok, lines = build.check()
    assert not ok and "nothing built yet" in lines[0]


@pytest.fixture(scope="module")
def native(llama_tools):
    """A real native build (conftest's llama_tools: llama-cli with the other tools the tests run)."""
    return llama_tools


@pytest.mark.model
def test_native_build_record_and_check(native):
    assert native["llama_cpp_commit"] != "unknown"
    assert native["llama_cpp_python"] == build.installed_version()
    record = json.loads((Path(native["bin_dir"]) / "build.json").read_text())
    assert record["requested"] == list(LLAMA_TOOLS) and set(LLAMA_TOOLS) <= set(record["targets"])
    assert record["compiler"] and record["cpu_features"]
    version = subprocess.run([str(build.tool_path("llama-cli")), "--version"], capture_output=True, text=True)
    assert native["llama_cpp_commit"] in version.stdout + version.stderr
    r = subprocess.run(
        [sys.executable, "-m", "research", "build", "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert r.returncode == 0 and "matches the installed" in r.stdout, r.stdout + r.stderr


@pytest.mark.model
def test_llama_cli_answers_from_the_bundled_model(native):
    text = build.cli_answer("What is the capital of France?", n_predict=16)
    assert text.strip()


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("qemu-aarch64"), reason="needs qemu-user and gcc-aarch64-linux-gnu")
def test_aarch64_cross_build_answers_under_qemu():
    record = build.build(["llama-cli"], kind="aarch64-linux")
    exe = Path(record["bin_dir"]) / "llama-cli"
    with open(exe, "rb") as f:
        header = f.read(20)
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183  # EM_AARCH64
    text = build.cli_answer(
        "What is the capital of France?", n_predict=8, kind="aarch64-linux", runner=["qemu-aarch64"]
    )
    assert text.strip()
