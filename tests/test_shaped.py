"""Random-weight files of a chosen llama shape, quantized and summarised (research.paper.shaped)."""

import pytest

from research.models.gguf import read_gguf
from research.paper import shaped

SMALL = dict(n_layer=2, n_embd=128, n_ff=256, n_head=4, n_head_kv=4, n_vocab=512)


def test_orca_mini_3b_has_its_published_parameter_count():
    assert shaped.n_params(**shaped.ORCA_MINI_3B) == 3_426_473_600


def test_a_written_file_has_the_shape_asked_and_llama_cpp_runs_it(tmp_path):
    path = shaped.write_random_llama(tmp_path / "small.gguf", **SMALL)
    info = read_gguf(path)
    assert info.architecture == "llama"
    assert info.n_params == shaped.n_params(**SMALL)
    assert (info.block_count, info.embedding_length, info.head_count) == (2, 128, 4)
    from llama_cpp import Llama

    llm = Llama(str(path), n_ctx=64, n_threads=1, verbose=False)
    try:
        assert llm.n_vocab() == SMALL["n_vocab"]
        tokens = llm.tokenize(b"The capital of France")
        assert tokens[0] == 1 and len(tokens) > 2  # BOS, then SentencePiece pieces
        llm.eval(tokens)
        assert llm.scores[len(tokens) - 1].shape == (SMALL["n_vocab"],)
    finally:
        llm.close()


def test_shaped_files_are_quantized_and_the_f16_source_removed(tmp_path, monkeypatch):
    monkeypatch.setattr(shaped, "ORCA_MINI_3B", SMALL)
    made = shaped.orca_shaped(tmp_path, types=("Q4_0", "Q8_0"), progress=lambda s: None)
    assert [q.type for q in made] == ["Q4_0", "Q8_0"]
    assert not list(tmp_path.glob("*.F16.gguf"))  # 6.9 GB at full size: deleted
    q4 = read_gguf(made[0].path)
    assert q4.n_params == shaped.n_params(**SMALL)
    assert 4.5 <= q4.bits_per_weight < made[1].bits_per_weight
    again = shaped.orca_shaped(tmp_path, types=("Q4_0", "Q8_0"), progress=lambda s: None)
    assert all(q.reused for q in again)  # the files are reused, no new F16 written


def test_summary_rows_join_memory_and_speed_by_file():
    result = {
        "files": [{"path": "/x/a.Q5_0.gguf", "type": "Q5_0", "size_mb": 2284.0, "bits_per_weight": 5.59}],
        "memory": [
            {
                "model": "/x/a.Q5_0.gguf",
                "n_ctx": 512,
                "predicted_mb": 2500.0,
                "measured_mb": 2450.0,
                "error": 0.02,
                "measured_runtime_mb": 61.0,
            },
            {"model": "/y/b.gguf", "n_ctx": 512, "predicted_mb": 1.0, "measured_mb": 1.0, "error": 0.0},
        ],
        "bench": [
            {"model_filename": "/x/a.Q5_0.gguf", "backend": "kit", "test": "tg16", "avg_ts": 1.5},
            {"model_filename": "/x/a.Q5_0.gguf", "backend": "llama-bench", "test": "pp64", "avg_ts": 20.0},
        ],
    }
    (row,) = shaped.summary_rows(result)
    assert row["measured_512_mb"] == 2450.0 and row["predicted_512_mb"] == 2500.0
    assert row["runtime_512_mb"] == 61.0  # the process before it loaded the model
    assert row["kit_tg_tps"] == 1.5 and row["llama-bench_pp_tps"] == 20.0


def test_recorded_is_none_without_a_run(tmp_path):
    assert shaped.recorded(tmp_path / "missing.json") is None
    path = shaped.save({"files": []}, tmp_path / "r.json")
    assert shaped.recorded(path) == {"files": []}


@pytest.mark.parametrize("argv", [["--types", "Q9_9"]])
def test_the_command_refuses_an_unknown_type_before_writing_anything(tmp_path, argv):
    from research.errors import KitError

    with pytest.raises(KitError):
        shaped.main([str(tmp_path), *argv])
    assert not list(tmp_path.iterdir())
