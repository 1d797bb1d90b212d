"""bench_training_device.py on the CPU alone (a CUDA row needs a GPU): one short iteration, the record."""

import json

from bench_training_device import main


def test_the_cpu_row_is_timed_and_written_only_when_asked(tmp_path, capsys):
    out = tmp_path / "record.json"
    assert main(["--devices", "cpu", "--episodes", "4", "--ticks", "20", "--critic-steps", "3",
                 "--policy-steps", "3", "--threads", "1", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    (row,) = record["rows"]
    assert row["device"] == "cpu" and row["seconds"] > 0 and row["speedup_vs_cpu"] == 1.0
    assert record["chunks"] == 4 * 20 and record["critic_steps"] == 3 and "--devices cpu" in record["command"]
    assert "cpu:" in capsys.readouterr().out
    assert main(["--devices", "cpu", "--episodes", "2", "--ticks", "12", "--critic-steps", "1",
                 "--policy-steps", "1", "--threads", "1"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]
