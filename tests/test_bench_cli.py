"""`dequiformer bench solver` end to end on a tiny batch."""
import json

from dequiformer.cli.main import main


def test_bench_solver_json_fields(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", "solver", "--molecules", "3", "--max-iter", "4", "--repeats", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [c["solver"] for c in report["cases"]] == ["anderson", "forward", "torchdeq_anderson"]
    for case in report["cases"]:
        assert set(case) >= {"solver", "f_evals_mean", "seconds", "residual_max"}
        assert 1 <= case["f_evals_mean"] <= 4 and case["seconds"] > 0 and case["residual_max"] >= 0
    assert report["num_graphs"] == 3
