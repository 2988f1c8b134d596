"""Nothing leaves the device, from any command: the session-wide network audit and offline switches.

The audit itself (tests/audit/research_netaudit.py, switched on by conftest.py for every process
of the session) is checked here to refuse and record what it must, and to let through what is this
device; then the commands that used to reach the network (eval through `datasets`) are run as a
user runs them.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import research_netaudit
from conftest import audit_records, off_device

from research import offline

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "host, here",
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("localhost", True),
        ("0.0.0.0", True),
        (None, True),
        (b"localhost", True),
        ("s3.amazonaws.com", False),
        ("huggingface.co", False),
        ("10.0.0.1", False),
        ("192.168.1.5", False),
        ("::ffff:8.8.8.8", False),
        ("localhost.example.com", False),
        ("127.0.0.1.nip.io", False),
        ("2130706433", False),  # 127.0.0.1 as one number: a name to resolve, not an address
    ],
)
def test_what_counts_as_this_device(host, here):
    assert research_netaudit.on_device(host) is here


@pytest.mark.tries_network
def test_the_audit_refuses_and_records_an_attempt_in_a_child(tmp_path):
    """A child of the session, started like any command, is audited: its lookup of a remote name
    and its connection to a remote address are refused before any packet is sent, and logged with
    the test that ran it; loopback goes through."""
    code = (
        "import socket\n"
        "for attempt in (lambda: socket.getaddrinfo('s3.amazonaws.com', 443),\n"
        "                lambda: socket.socket().connect(('192.0.2.1', 80))):\n"
        "    try:\n"
        "        attempt()\n"
        "    except OSError as e:\n"
        "        print('refused' if 'network audit' in str(e) else 'other: ' + str(e))\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
        "socket.create_connection(s.getsockname(), timeout=1).close(); print('loopback ok')\n"
    )
    before = len(audit_records())
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.split("\n")[:3] == ["refused", "refused", "loopback ok"], r.stdout + r.stderr
    new = off_device(audit_records()[before:])
    assert [(e["event"], e["host"]) for e in new] == [
        ("socket.getaddrinfo", "s3.amazonaws.com"),
        ("socket.connect", "192.0.2.1"),
    ]
    assert all("test_the_audit_refuses" in e["test"] for e in new)


@pytest.mark.tries_network
def test_the_audit_is_on_in_this_process_too():
    with pytest.raises(OSError, match="network audit"):
        socket.getaddrinfo("example.com", 80)


def test_the_kit_sets_its_offline_switches_in_every_process():
    code = (
        "import os, research; print(os.environ.get('HF_DATASETS_OFFLINE'), os.environ.get('HF_HUB_OFFLINE'))"
    )
    env = {k: v for k, v in os.environ.items() if k not in offline.SWITCHES}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert r.stdout.split() == ["1", "1"]


@pytest.mark.model
def test_eval_reaches_nothing_and_leaves_no_copy_in_a_hub_cache(tmp_path):
    """`research eval` on the kit's own questions, as a user runs it: no lookup (it used to look up
    s3.amazonaws.com through datasets on every run) and no copy of the questions under
    ~/.cache/huggingface."""
    home = tmp_path / "home"
    home.mkdir()
    env = os.environ | {"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")}
    env.pop("HF_HOME", None)
    before = len(audit_records())
    r = subprocess.run(
        [sys.executable, "-m", "research", "eval", "--limit", "2", "--out", str(tmp_path / "r.jsonl")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert off_device(audit_records()[before:]) == []
    assert not (home / ".cache" / "huggingface").exists()
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 2


def test_question_files_are_read_without_datasets(tmp_path):
    """JSON Lines, a JSON array, CSV (cells kept as text: "007" stays "007", an empty cell is
    empty) and Parquet, in a process where importing datasets would fail."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "q.jsonl").write_text('{"question": "Q1?", "answer": ["a", "b"], "id": 7}\n\n')
    (tmp_path / "q.json").write_text('[{"question": "Q1?", "answer": "a"}]')
    (tmp_path / "q.csv").write_text("id,question,answer,aliases\n007,Q1?,1.50,\n")
    pq.write_table(pa.table({"question": ["Q1?"], "answer": [["a", "b"]]}), tmp_path / "q.parquet")
    blocker = tmp_path / "block"
    (blocker / "datasets").mkdir(parents=True)
    (blocker / "datasets" / "__init__.py").write_text("raise ImportError('datasets must not be imported')")
    code = (
        "import json, sys\n"
        "from research.qa.questions import load_questions\n"
        "print(json.dumps([load_questions(p) for p in sys.argv[1:]]))\n"
    )
    files = [str(tmp_path / f"q.{s}") for s in ("jsonl", "json", "csv", "parquet")]
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(blocker), os.environ["PYTHONPATH"]])}
    r = subprocess.run(
        [sys.executable, "-c", code, *files], capture_output=True, text=True, env=env, timeout=60
    )
    assert r.returncode == 0, r.stderr
    jsonl, array, csv_, parquet = json.loads(r.stdout)
    assert jsonl[0]["id"] == "7" and jsonl[0]["references"] == ["a", "b"]
    assert array[0]["references"] == ["a"]
    assert csv_[0]["id"] == "007" and csv_[0]["references"] == ["1.50"]
    assert parquet[0]["references"] == ["a", "b"]


def test_a_question_file_that_is_not_objects_is_one_line(tmp_path):
    from research.errors import KitError
    from research.qa.questions import load_questions

    bad = tmp_path / "q.jsonl"
    bad.write_text('{"question": "Q?", "answer": "a"}\n[1, 2]\n')
    with pytest.raises(KitError, match=r"line 2: a question is a JSON object, not list"):
        load_questions(str(bad))
    (tmp_path / "q.json").write_text("[1, 2]")
    with pytest.raises(KitError, match="a list of objects"):
        load_questions(str(tmp_path / "q.json"))
    broken = tmp_path / "b.jsonl"
    broken.write_text('{"question": ')
    with pytest.raises(KitError, match="cannot read"):
        load_questions(str(broken))


def test_the_audit_log_names_each_process_and_its_command():
    """The summary counts processes and the subcommands run under the audit from these lines."""
    records = audit_records()
    starts = [r for r in records if "process" in r]
    assert starts and all(isinstance(r["orig_argv"], list) for r in starts)
    assert json.dumps(records)  # every line is JSON
