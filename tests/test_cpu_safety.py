"""Runs on the CPU in hand: build flags without AMX, the self-test before the first answer, a test
run that survives a crash, and `research doctor`.

No CPU here has AMX, so its crash (llama.cpp issue 20824) cannot happen for real: the crash is a
real child process dying by a real SIGSEGV, and the flags are checked on the feature lists of
real CPUs (a Sapphire Rapids Xeon's /proc/cpuinfo flags, an AVX2-only laptop's).
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from research.engine import selftest
from research.errors import KitError
from research.llamacpp import flags as engine_build

ROOT = Path(__file__).resolve().parents[1]

#: /proc/cpuinfo flags of an Intel Xeon Platinum 8480+ (Sapphire Rapids) VM, the vector part.
SAPPHIRE_RAPIDS = set(
    "fpu sse sse2 ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand "
    "hypervisor lahf_lm abm 3dnowprefetch bmi1 avx2 bmi2 erms invpcid avx512f avx512dq rdseed adx "
    "avx512ifma clflushopt clwb avx512cd sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves "
    "avx_vnni avx512_bf16 avx512vbmi umip pku ospke waitpkg avx512_vbmi2 gfni vaes vpclmulqdq "
    "avx512_vnni avx512_bitalg avx512_vpopcntdq rdpid movdiri movdir64b serialize tsxldtrk "
    "amx_bf16 avx512_fp16 amx_tile amx_int8 arch_capabilities pni".split()
)
#: An AVX2 laptop (Intel Core i5-8250U): no AVX-512, no VNNI.
AVX2_ONLY = set("fpu sse sse2 ssse3 fma sse4_1 sse4_2 popcnt avx f16c bmi1 avx2 bmi2 pni".split())


def _flag(args, name):
    found = [a for a in args if a.startswith(f"-D{name}=")]
    assert len(found) == 1, (name, args)
    return found[0].split("=", 1)[1]


def test_flags_on_a_cpu_with_amx_keep_every_vector_feature_but_amx():
    args = engine_build.cmake_args("native", SAPPHIRE_RAPIDS, "x86_64")
    assert _flag(args, "GGML_NATIVE") == "OFF"  # -march=native would switch AMX on
    for on in ("SSE42", "AVX", "AVX2", "FMA", "F16C", "BMI2", "AVX_VNNI", "AVX512", "AVX512_VBMI"):
        assert _flag(args, f"GGML_{on}") == "ON", on
    assert _flag(args, "GGML_AVX512_VNNI") == _flag(args, "GGML_AVX512_BF16") == "ON"
    for amx in ("AMX_TILE", "AMX_INT8", "AMX_BF16"):
        assert _flag(args, f"GGML_{amx}") == "OFF"


def test_flags_on_an_older_cpu_name_only_what_it_has():
    args = engine_build.cmake_args("native", AVX2_ONLY, "x86_64")
    assert _flag(args, "GGML_AVX2") == "ON"
    for off in ("AVX512", "AVX512_VNNI", "AVX_VNNI", "AMX_INT8"):
        assert _flag(args, f"GGML_{off}") == "OFF", off
    # AVX-512 needs all five of F, CD, VL, DQ and BW
    assert _flag(engine_build.cmake_args("native", AVX2_ONLY | {"avx512f"}, "x86_64"), "GGML_AVX512") == "OFF"


def test_flags_on_arm_stay_native_and_the_phone_is_named():
    assert engine_build.cmake_args("native", {"asimd", "asimddp"}, "aarch64") == ["-DGGML_NATIVE=ON"]
    phone = engine_build.cmake_args("phone", set(), "aarch64")
    assert phone == ["-DGGML_NATIVE=OFF", "-DGGML_CPU_ARM_ARCH=armv8.2-a+dotprod+fp16"]
    with pytest.raises(KitError, match="arm64"):
        engine_build.cmake_args("phone", set(), "x86_64")
    with pytest.raises(KitError, match="unknown build target"):
        engine_build.cmake_args("nativ")


def test_unsafe_features_name_amx_and_what_the_cpu_lacks():
    compiled = ["SSE3", "AVX2", "AVX512", "AVX512_VNNI", "AMX_INT8", "REPACK"]
    assert engine_build.unsafe_features(compiled, SAPPHIRE_RAPIDS, "x86_64") == [
        "AMX_INT8 (llama.cpp issue 20824)"
    ]
    lacks = engine_build.unsafe_features(compiled[:4], AVX2_ONLY, "x86_64")
    assert lacks == ["AVX512 (this CPU lacks it)", "AVX512_VNNI (this CPU lacks it)"]
    assert engine_build.unsafe_features(["AMX_INT8"], set(), "aarch64") == []


def test_system_info_is_read_as_llama_cpp_prints_it():
    text = "CPU : SSE3 = 1 | AVX2 = 1 | AVX512 = 0 | AMX_INT8 = 1 | REPACK = 1 | "
    assert engine_build.system_info_features(text) == ["SSE3", "AVX2", "AMX_INT8", "REPACK"]


def test_the_installed_engine_was_built_by_the_kit_and_is_safe_here():
    """What `make install` leaves: an engine whose CPU library the kit's record names, compiled
    with this CPU's features and without AMX."""
    e = selftest.engine()
    assert e["cmake_args"] == engine_build.cmake_args("native"), "run make install"
    assert "AMX_INT8" not in e["compiled_features"]
    assert engine_build.unsafe_features(e["compiled_features"], engine_build.cpu_flags()) == []
    if "avx2" in engine_build.cpu_flags():
        assert "AVX2" in e["compiled_features"]  # the CPU's own features are kept


def test_engine_key_changes_with_anything_that_changes_the_binary():
    base = engine_build.engine_key("0.3.36", ["-DGGML_NATIVE=ON"], "x86_64", "gcc 12")
    assert base == engine_build.engine_key("0.3.36", ["-DGGML_NATIVE=ON"], "x86_64", "gcc 12")
    for other in (
        ("0.3.37", ["-DGGML_NATIVE=ON"], "x86_64", "gcc 12"),
        ("0.3.36", ["-DGGML_NATIVE=OFF"], "x86_64", "gcc 12"),
        ("0.3.36", ["-DGGML_NATIVE=ON"], "aarch64", "gcc 12"),
        ("0.3.36", ["-DGGML_NATIVE=ON"], "x86_64", "clang 16"),
    ):
        assert engine_build.engine_key(*other) != base


def test_an_engine_the_kit_did_not_build_is_replaced_not_kept(tmp_path, monkeypatch):
    """The install tells a stale engine (pip's cached wheel, built with -march=native) from its
    own by the SHA-256 of the CPU library, never by the version, which both share."""
    monkeypatch.setenv("RESEARCH_CACHE_DIR", str(tmp_path))
    folder = engine_build.engine_root() / "k"
    folder.mkdir(parents=True)
    record = {"key": "k", "cpu_library_sha256": "a" * 64}
    assert engine_build.plan_install(record, "a" * 64, [], rebuild=False) == "keep"
    assert engine_build.plan_install(record, "b" * 64, [], rebuild=False) == "build"
    assert engine_build.plan_install(record, "b" * 64, [folder / "x.whl"], rebuild=False) == "install"
    assert engine_build.plan_install(None, None, [folder / "x.whl"], rebuild=False) == "install"
    assert engine_build.plan_install(record, "a" * 64, [folder / "x.whl"], rebuild=True) == "build"
    (folder / "record.json").write_text(json.dumps(record))
    assert engine_build.find_record("a" * 64) == record
    assert engine_build.find_record("b" * 64) is None


# --- the self-test --------------------------------------------------------------------------


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """The self-test's verdicts in a folder of this test (the engine's record stays found)."""
    real = engine_build.engine_root()
    monkeypatch.setenv("RESEARCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(engine_build, "engine_root", lambda: real)
    return tmp_path


def _prepared(**config):
    from research.engine import EngineConfig, prepare

    return prepare(None, EngineConfig(n_ctx=512, n_threads=2, **config))


def crashing(when_extra=None):
    """A child command that dies by a real SIGSEGV (with extra buffer types on only, if asked)."""

    def command(path, config, extra_bufts):
        crash = when_extra is None or extra_bufts == when_extra
        code = "import ctypes; ctypes.string_at(0)" if crash else "pass"
        return [sys.executable, "-c", code]

    return command


@pytest.mark.model
def test_the_self_test_runs_the_model_in_a_child_once_per_engine_and_cpu(fresh_cache):
    ref, info, config = _prepared()
    first = selftest.ensure(ref.path, info, config, trusted=True)
    assert first.tested and first.extra_bufts and first.warning is None
    again = selftest.ensure(ref.path, info, config, trusted=True)
    assert not again.tested  # remembered: no child this time
    assert (fresh_cache / selftest.CACHE_NAME).is_file()
    other = _prepared(kv_type="q8_0")  # other kernels: tested again
    assert selftest.ensure(other[0].path, other[1], other[2], trusted=True).tested


@pytest.mark.model
def test_a_file_the_kit_cannot_vouch_for_is_tried_at_every_load(fresh_cache, tmp_path):
    from research.engine import EngineConfig, prepare

    copy = tmp_path / "copy.gguf"
    ref, info, config = _prepared()
    copy.write_bytes(ref.path.read_bytes())
    ref, info, config = prepare(str(copy), EngineConfig(n_ctx=512, n_threads=2))
    assert selftest.ensure(ref.path, info, config, trusted=False).tested
    assert selftest.ensure(ref.path, info, config, trusted=False).tested


@pytest.mark.model
def test_an_engine_that_crashes_gets_one_line_naming_the_cpu_and_the_fix(fresh_cache, tmp_path):
    ref, info, config = _prepared()
    with pytest.raises(KitError) as e:
        selftest.ensure(ref.path, info, config, trusted=True, command=crashing())
    line = str(e.value)
    assert "\n" not in line and "crashed (SIGSEGV)" in line and "make install" in line
    assert "the engine build is the likely cause" in line
    assert "research doctor" in line
    assert not list(Path.cwd().glob("core*")) and not list(tmp_path.glob("core*"))  # no core dump
    assert selftest.cached(selftest.test_key(info, config)) is None  # a crash is never remembered


@pytest.mark.model
def test_a_crash_on_a_cpu_with_amx_names_amx(fresh_cache, monkeypatch):
    """As it would read on a Sapphire Rapids VM with an engine built -march=native."""
    ref, info, config = _prepared()
    real = selftest.engine()
    monkeypatch.setattr(selftest, "engine", lambda: real | {"compiled_features": ["AVX512", "AMX_INT8"]})
    monkeypatch.setattr(engine_build, "cpu_flags", lambda cpuinfo=None: SAPPHIRE_RAPIDS)
    with pytest.raises(KitError, match=r"holds AMX_INT8 \(llama.cpp issue 20824\).*make install"):
        selftest.ensure(ref.path, info, config, trusted=True, command=crashing())


@pytest.mark.model
def test_an_engine_whose_extra_layouts_crash_answers_without_them(fresh_cache):
    """The fallback: the test again with llama.cpp's extra buffer types off; if that works, the
    model loads so (and says why), and the verdict is remembered."""
    from research.engine import Engine, EngineConfig, Sampling, conversation

    ref, info, config = _prepared()
    verdict = selftest.ensure(ref.path, info, config, trusted=True, command=crashing(when_extra=True))
    assert verdict.extra_bufts is False and "make install" in verdict.warning
    assert "SIGSEGV" in verdict.warning
    assert selftest.cached(selftest.test_key(info, config)).extra_bufts is False
    # The real engine, loaded as the verdict says, really runs without them and answers as before.
    engine = Engine.load(None, EngineConfig(n_ctx=512, n_threads=2))
    assert engine.backend.extra_bufts is False and engine.backend.llm.model_params.use_extra_bufts is False
    assert engine.warning and "extra weight layouts" in engine.warning
    question = conversation("What is the capital of France?")
    answer, _ = engine.answer(question, Sampling(temperature=0, max_tokens=12))
    engine.close()
    selftest._remember(selftest.test_key(info, config), selftest.Verdict(), ref.path.name)
    normal = Engine.load(None, EngineConfig(n_ctx=512, n_threads=2))
    assert normal.backend.extra_bufts is True
    assert normal.answer(question, Sampling(temperature=0, max_tokens=12))[0] == answer
    normal.close()


@pytest.mark.model
def test_chat_crashing_on_its_engine_prints_one_line_not_a_core_dump(tmp_path):
    """`research chat` as a user runs it, with the self-test's child dying by SIGSEGV."""
    code = textwrap.dedent(
        """
        import sys
        from research.engine import selftest
        selftest.child_command = lambda p, c, e: [sys.executable, "-c", "import ctypes; ctypes.string_at(0)"]
        from research.cli.commands import main
        sys.exit(main(["chat", "--prompt", "Hi", "--json", "--ctx", "512"]))
        """
    )
    env = os.environ | {"RESEARCH_CACHE_DIR": str(tmp_path), "RESEARCH_BUILD_DIR": str(tmp_path / "b")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 1, r.stderr
    assert r.stdout == "" and "Traceback" not in r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("error: llama.cpp crashed (SIGSEGV)") and "make install" in line


@pytest.mark.model
def test_chat_json_names_the_engine_build():
    r = subprocess.run(
        [sys.executable, "-m", "research", "chat", "--prompt", "Hi", "--json", "--temperature", "0"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr
    made = json.loads(r.stdout)["provenance"]["engine_build"]
    assert made["cmake_args"] == engine_build.cmake_args("native")
    assert "AMX_INT8" not in made["compiled_features"] and made["extra_bufts"] is True


# --- the test run survives a crash ----------------------------------------------------------


def test_a_test_that_kills_its_process_fails_by_name_and_the_rest_run(tmp_path):
    """`make test` as configured in pyproject.toml: a test that dies by a signal (as llama.cpp on
    an unsafe build does) is one failure with its name, and the tests after it still run."""
    (tmp_path / "test_inner.py").write_text(
        textwrap.dedent(
            """
            import ctypes

            def test_before():
                pass

            def test_engine_crash():
                ctypes.string_at(0)  # SIGSEGV, as in ggml_backend_amx_mul_mat

            def test_after():
                pass
            """
        )
    )
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_inner.py"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env=os.environ | {"PYTHONFAULTHANDLER": ""},
    )
    out = r.stdout
    assert r.returncode == 1, out
    assert "test_inner.py::test_engine_crash" in out and "crashed" in out
    assert "2 passed" in out and "1 failed" in out


# --- research doctor ------------------------------------------------------------------------


@pytest.mark.model
def test_doctor_checks_this_machine_one_line_each():
    r = subprocess.run(
        [sys.executable, "-m", "research", "doctor", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    found = {c["name"]: c for c in json.loads(r.stdout)}
    for name in (
        "system",
        "cpu",
        "engine",
        "self-test",
        "tools",
        "memory",
        "disk",
        "data",
        "cache",
        "offline",
    ):
        assert name in found, name
        assert found[name]["status"] in ("ok", "warn"), found[name]
        assert "\n" not in found[name]["found"]
    assert found["engine"]["status"] == "ok" and "built by the kit" in found["engine"]["found"]
    assert "decoded" in found["self-test"]["found"]
    assert "HF_DATASETS_OFFLINE=1" in found["offline"]["found"]
    text = subprocess.run(
        [sys.executable, "-m", "research", "doctor", "--no-selftest"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    lines = text.stdout.strip().splitlines()
    assert lines[-1] == "No problem found." and all(len(line) < 400 for line in lines)


def test_doctor_says_fail_and_the_fix_for_an_unsafe_engine(monkeypatch):
    from research.cli import doctor

    real = selftest.engine()
    monkeypatch.setattr(selftest, "engine", lambda: real | {"compiled_features": ["AVX2", "AMX_INT8"]})
    monkeypatch.setattr(engine_build, "cpu_flags", lambda cpuinfo=None: SAPPHIRE_RAPIDS)
    found = {c.name: c for c in doctor.checks(run_selftest=False)}
    assert found["engine"].status == "FAIL" and "AMX_INT8" in found["engine"].found
    assert "make install" in found["engine"].fix
    assert found["cpu"].status == "ok" and "amx_int8" in found["cpu"].found


def test_doctor_warns_of_a_data_folder_others_can_read(tmp_path, monkeypatch):
    from research.cli import doctor

    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    monkeypatch.setenv("RESEARCH_HOME", str(home))
    found = {c.name: c for c in doctor.checks(run_selftest=False)}
    assert found["data"].status == "warn" and f"chmod 700 {home}" == found["data"].fix
    home.chmod(0o700)
    assert {c.name: c for c in doctor.checks(run_selftest=False)}["data"].status == "ok"


def test_signal_names_in_messages_are_the_real_ones():
    assert selftest._signal_name(-signal.SIGSEGV) == "SIGSEGV"
    assert selftest._signal_name(-signal.SIGILL) == "SIGILL"


def test_the_arm_rehearsals_record_reads_the_pages_answers():
    """The page's /ask reply (Gradio 6: a message's content is a list of typed parts) becomes the
    answer's text, without its figures; the record shows the browser's answer and its times."""
    from research.measure import arm, arm_record

    part = {"text": "Paris \\[1].\n\n<sub>◷ 3 t/s</sub>", "type": "text"}
    reply = ([{"role": "assistant", "content": [part]}], "")
    assert arm._text(reply) == "Paris [1]."
    record = {
        "date": "2026-12-07",
        "host": {"cpu": "x", "cores": 2},
        "qemu": "qemu-aarch64 version 7.2",
        "engine": {"cross_args": ["-DGGML_NATIVE=OFF"], "cross_compile": {"seconds": 792.0, "date": "d"}},
        "kit_install_s": 510.0,
        "chat": {"wall_s": 180.0, "decode_tps": 0.2, "prompt_tps": 1.0, "answer": "Paris.",
                 "completion_tokens": 3, "engine_build": {"compiled_features": ["NEON"]}},
        "page": {"start_s": 110.0, "http_answer_s": 68.1, "http_answer": "Paris.",
                 "browser": {"total_s": 75.5, "painted_tps": 0.22, "answer": "The capital is Paris."}},
        "doctor": ["ok    cpu"],
        "total_s": 1038.0,
    }  # fmt: skip
    md = arm_record.markdown(record)
    assert "| page: one answer in Chromium (Enter to its figures painted) | 75.5 s |" in md
    assert "0.22 t/s" in md and "'The capital is Paris.' in Chromium" in md
