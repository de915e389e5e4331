"""Results pages are generated from records, never typed: the committed CSVs are as written from
their records (the checksum their pages state), and the pages (and the README's copy of a
table) render again from them identically; a page states where, when and how its figures were
measured; two runs that differ only in fine-tuning are never named the same."""

from __future__ import annotations

import copy
import json

import pytest

from harness.record import Keys, Record
from harness.report import results
from harness.report.__main__ import main as report_main
from harness.report.config import ReportConfig
from harness.report.records import points

from .conftest import REPO

COMMITTED = sorted((REPO / "docs" / "results").glob("*.csv"))


def _record(quant: str, acc: float, epochs: int, key: str, runtime: str = "llama_cpp") -> Record:
    return Record.from_json(
        {
            "status": "ok",
            "job": {
                "model": "smollm2_135m",
                "quant": quant,
                "format": quant.split("_")[0],
                "train": "full",
                "hardware": "cpu",
                "decoding": "free",
                "languages": ["de", "en"],
            },
            "runtime": {"name": runtime},
            "artifact": {"size_mib": 101.2},
            "metrics": {
                "n_samples": 520,
                "accuracy": acc,
                "accuracy_ci95": [acc - 0.03, acc + 0.03],
                "invalid_rate": 0.0,
                "accuracy_by_language": {"de": acc - 0.05, "en": acc + 0.05},
                "decode_tokens_per_s": 88.6,
                "decode_tokens_per_s_ci95": [84.0, 93.0],
                "latency_p50_ms": 225.0,
                "peak_rss_mib": 232.4,
                "batch_agreement": 1.0,
                "energy_j_per_query": None,
            },
            "config": {
                "hardware": {"device": "cpu"},
                "train": {"name": "full", "epochs": epochs},
                "paths": {"output_dir": f"/tmp/run{epochs}"},
            },
            "keys": {"record": key, "dataset": "dataset-abc"},
            "machine": {
                "cpu": {"model": "AMD EPYC", "flags": ["avx2", "avx512_bf16", "avx512f"]},
                "logical_cores": 2,
                "ram_gib": 24,
                "gpu": None,
            },
            "train": {"precision": "bf16"},
            "measure_version": 5,
            "environment": {"measured_at": "2026-12-04T16:00:00+00:00", "git_commit": "0123456789abcdef"},
        }
    )


def test_a_page_states_its_provenance_and_renders_again_from_its_csv_identically(tmp_path):
    rows = results.rows_from_records(
        [_record("fp32", 0.80, 1, "a", "transformers"), _record("gguf_q4km", 0.79, 1, "b")], "make run", ReportConfig()
    )
    csv_path = tmp_path / "default.csv"
    results.write_csv(rows, csv_path)
    written = results.checksum(csv_path)
    md = results.write_page(csv_path, "make run on the embedded model", written).read_text()
    assert f"Generated from `default.csv` (as written from its records, SHA-256 `{written}`)" in md
    assert "- command: `make run`" in md
    assert "- measured on: 2026-12-04, measurement version 5, commit 0123456789ab" in md
    assert "- test split: 520 queries (dataset dataset-abc)" in md
    # the machine with the instruction sets that picked its kernels, and how the fine-tune computed
    assert "- machine: AMD EPYC, 2 cores, AVX-512 + AVX512-BF16 (hardware=cpu)" in md
    assert "- CPU flags: avx2 avx512_bf16 avx512f" in md and "fine-tuning: full, training precision bf16" in md
    assert (
        "| gguf_q4km | llama_cpp | 101 | 0.790 (0.760-0.820) | 0.74 | 0.84 | 88.6 (84.0-93.0) | 225 | 232 RSS | 1.00 "
        "| unmeasured |" in md
    )
    first = md
    results.write_page(csv_path)  # the title and the checksum are kept from the page
    assert csv_path.with_suffix(".md").read_text() == first
    # a figure edited by hand renders, but the page's checksum is the CSV's before
    as_written = csv_path.read_text()
    csv_path.write_text(as_written.replace(",0.79,", ",0.81,"))
    edited = results.write_page(csv_path).read_text()
    assert "| gguf_q4km | llama_cpp | 101 | 0.810" in edited and results.stated_checksum(edited) == written
    assert results.checksum(csv_path) != written
    csv_path.write_text(as_written)

    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{results.README_BLOCK.format(name='default')}\nstale\n{results.README_END}\nafter\n")
    report_main(["--render", str(csv_path), "--readme", str(readme)])
    assert readme.read_text() == (
        f"intro\n{results.README_BLOCK.format(name='default')}\n{results.readme_tables(rows)}{results.README_END}\nafter\n"
    )


@pytest.mark.parametrize("csv_path", COMMITTED, ids=lambda p: p.stem)
def test_committed_results_pages_are_what_their_records_render(csv_path):
    rows = results.read_csv(csv_path)
    md = csv_path.with_suffix(".md").read_text(encoding="utf-8")
    assert results.stated_checksum(md) == results.checksum(csv_path), (
        f"{csv_path.name} is not the CSV its page says was written from the records: write both again from the "
        f"records (python -m harness.report DIR --results {csv_path.with_suffix('')} --command ...)"
    )
    title = md.splitlines()[0].removeprefix("# ")
    assert results.page(title, rows, csv_path.name, results.checksum(csv_path)) == md, (
        f"re-render it: python -m harness.report --render {csv_path}"
    )
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    if results.README_BLOCK.format(name=csv_path.stem) in readme:
        assert results.readme_with_table(readme, csv_path.stem, rows) == readme, "README's copy of the table differs"


def test_two_runs_that_differ_only_in_fine_tuning_are_named_for_the_difference(tmp_path, capsys):
    one, two = _record("gguf_q4km", 0.797, 1, "k1"), _record("gguf_q4km", 0.818, 2, "k2")
    assert [p.variant for p in points([one, two])] == ["gguf_q4km train.epochs=1", "gguf_q4km train.epochs=2"]
    other_data = copy.deepcopy(one)
    other_data.keys = Keys(record="k3", dataset="dataset-xyz")
    assert [p.variant for p in points([one, other_data])] == [
        "gguf_q4km data=dataset-abc",
        "gguf_q4km data=dataset-xyz",
    ]
    assert [p.variant for p in points([one, _record("fp32", 0.8, 1, "k4")])] == ["gguf_q4km", "fp32"]

    for name, record in (("a", one), ("b", two)):
        (tmp_path / name / "0_quant=gguf_q4km").mkdir(parents=True)
        (tmp_path / name / "0_quant=gguf_q4km" / "record.json").write_text(json.dumps(record.to_json()))
    assert report_main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "report")]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| gguf_q4km train.epochs=1 |" in md and "| gguf_q4km train.epochs=2 |" in md
