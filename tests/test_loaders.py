"""External datasets: good files load, each bad case fails early with its file, row and fix."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness.data.config import DatasetConfig
from harness.data.dataset import build_dataset, read_labels, read_split
from harness.data.loaders import DataError, load_external, stratified_cut
from harness.errors import ConfigError


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _rows(n_per_label=10, labels=("buy", "sell", "ask")):
    return [
        {"text": f"query {label} {i}", "intent": label, "language": "en"}
        for label in labels
        for i in range(n_per_label)
    ]


def test_jsonl_without_test_split_gets_a_seeded_stratified_one(tmp_path):
    spec = DatasetConfig(name="mine", kind="jsonl", files={"train": str(_jsonl(tmp_path / "t.jsonl", _rows()))})
    d = build_dataset(spec, ["en"], tmp_path / "cache")
    test, train = read_split(d, "test"), read_split(d, "train")
    assert read_labels(d) == ["ask", "buy", "sell"]
    assert {r["intent"] for r in test} == {"ask", "buy", "sell"} and len(test) == 6
    assert len(train) + len(test) + len(read_split(d, "validation")) == 30
    assert not {r["text"] for r in test} & {r["text"] for r in train}
    again = build_dataset(spec, ["en"], tmp_path / "cache2")
    assert (again / "test.jsonl").read_bytes() == (d / "test.jsonl").read_bytes()


def test_csv_with_own_column_names_and_no_language(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text(
        "query,label\n" + "".join(f"q{i} {label},{label}\n" for label in ("a", "b") for i in range(6)), encoding="utf-8"
    )
    spec = DatasetConfig(
        kind="csv",
        files={"train": str(path)},
        text_column="query",
        label_column="label",
        language_column=None,
        default_language="hr",
    )
    rows, labels, _ = load_external(spec, ["hr"])
    assert labels == ["a", "b"] and {r["language"] for r in rows["train"]} == {"hr"}


def test_duplicates_are_reported_not_dropped(tmp_path):
    rows = _rows() + [{"text": "Query buy 1", "intent": "buy", "language": "en"}]
    spec = DatasetConfig(kind="jsonl", files={"train": str(_jsonl(tmp_path / "t.jsonl", rows))})
    split_rows, _, report = load_external(spec, ["en"])
    assert sum(len(v) for v in split_rows.values()) == 31
    assert len(report["duplicates"]) == 1 and len(report["duplicates"][0]["at"]) == 2


@pytest.mark.parametrize(
    "rows, kwargs, message",
    [
        ([{"text": "hi", "label": "a"}], {}, r"t.jsonl, row 1: no column 'intent' .*set dataset.label_column"),
        ([{"text": " ", "intent": "a"}], {}, r"t.jsonl, row 1: empty text in column 'text'"),
        (
            _rows(3) + [{"text": "x", "intent": "zzz"}],
            {"labels": ["buy", "sell", "ask"]},
            r"t.jsonl, row 10: label 'zzz' is not in dataset.labels",
        ),
        ([{"text": f"q{i}", "intent": "only"} for i in range(5)], {}, r"only one label \(only\)"),
        (
            _rows(3),
            {"language_column": "language", "default_language": "en"},
            r"split 'train' has no rows after selecting languages de",
        ),
    ],
)
def test_bad_rows_name_file_row_and_fix(tmp_path, rows, kwargs, message):
    spec = DatasetConfig(kind="jsonl", files={"train": str(_jsonl(tmp_path / "t.jsonl", rows))}, **kwargs)
    languages = ["de"] if "after selecting" in message else ["en"]
    with pytest.raises(DataError, match=message):
        load_external(spec, languages)


def test_broken_json_line_and_missing_file(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a", "intent": "x"}\n{"text": oops}\n')
    with pytest.raises(DataError, match=r"t.jsonl, row 2: not valid JSON"):
        load_external(DatasetConfig(kind="jsonl", files={"train": str(path)}), ["en"])
    with pytest.raises(DataError, match=r"dataset.files.train='nope.jsonl': no such file"):
        build_dataset(DatasetConfig(kind="jsonl", files={"train": "nope.jsonl"}), ["en"], tmp_path)


def test_empty_given_split_is_an_error(tmp_path):
    train = _jsonl(tmp_path / "t.jsonl", _rows())
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    spec = DatasetConfig(kind="jsonl", files={"train": str(train), "test": str(empty)})
    with pytest.raises(DataError, match="split 'test' has no rows"):
        load_external(spec, ["en"])


def test_config_demands_files_for_file_kinds():
    with pytest.raises(ConfigError, match=r"needs dataset.files.train"):
        DatasetConfig(kind="csv")


def test_hf_offline_is_a_clear_error(monkeypatch):
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    # both libraries read the variables once, at import: an earlier test may have imported them
    # (then only these constants make the load offline, instead of retrying the network for 20 s)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    with pytest.raises(DataError, match=r"cannot load it .*dataset.kind=jsonl"):
        load_external(DatasetConfig(kind="hf", hf_name="nobody/no-such-intents"), ["en"])


def test_stratified_cut_keeps_every_label_and_is_seeded():
    rows = [{"text": str(i), "intent": "ab"[i % 2]} for i in range(20)]
    kept, cut = stratified_cut(rows, 0.2, seed=1, split="test")
    assert {r["intent"] for r in cut} == {"a", "b"} and len(cut) == 4 and len(kept) == 16
    assert stratified_cut(rows, 0.2, seed=1, split="test") == (kept, cut)


def test_csv_saved_with_a_byte_order_mark_loads(tmp_path):
    """Excel's "CSV UTF-8" starts with a BOM; it must not become part of the first header."""
    path = tmp_path / "excel.csv"
    rows = "".join(f"q{i} {label},{label}\n" for label in ("a", "b") for i in range(6))
    path.write_text("text,intent\n" + rows, encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    spec = DatasetConfig(kind="csv", files={"train": str(path)}, language_column=None)
    d = build_dataset(spec, ["en"], tmp_path / "cache")
    assert {r["intent"] for r in read_split(d, "train")} == {"a", "b"}


def test_a_column_name_with_an_invisible_character_is_shown_as_it_is(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text("text\u00a0,intent\nhello,a\n", encoding="utf-8")
    spec = DatasetConfig(kind="csv", files={"train": str(path)}, language_column=None)
    with pytest.raises(DataError, match=r"no column 'text' \(it has: 'text\\xa0', 'intent'\)"):
        load_external(spec, ["en"])


ROWS = [(f"query {i} about {label}", label) for label in ("order_status", "refund") for i in range(6)]


def _write(path, fmt: str) -> None:
    """The same rows as a spreadsheet or data tool would save them."""
    if fmt == "csv_bom":
        path.write_text("text,intent\n" + "".join(f"{t},{label}\n" for t, label in ROWS), encoding="utf-8-sig")
    elif fmt == "tsv":
        path.write_text("text\tintent\n" + "".join(f"{t}\t{label}\n" for t, label in ROWS), encoding="utf-8")
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"text": [t for t, _ in ROWS], "intent": [label for _, label in ROWS]}), path)
    else:
        from openpyxl import Workbook

        book = Workbook()
        book.active.append(["text", "intent"])
        for row in ROWS:
            book.active.append(list(row))
        book.active.append([None, None])  # a blank row at the end, as sheets often have
        book.save(path)


@pytest.mark.parametrize(
    "fmt, suffix", [("csv_bom", ".csv"), ("tsv", ".tsv"), ("parquet", ".parquet"), ("xlsx", ".xlsx")]
)
def test_each_file_format_loads_through_the_data_command(fmt, suffix, tmp_path):
    from .conftest import REPO

    path = tmp_path / f"queries{suffix}"
    _write(path, fmt)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.data",
            "dataset=files",
            f"dataset.files.train={path}",
            "dataset.language_column=null",
            "language=en",
            f"paths.output_dir={tmp_path}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "order_status" in done.stdout and "refund" in done.stdout
    (data_dir,) = (tmp_path / "cache" / "dataset").glob("*/")
    rows = [r for split in ("train", "validation", "test") for r in read_split(data_dir, split)]
    assert sorted((r["text"], r["intent"]) for r in rows) == sorted(ROWS)


def test_a_file_whose_format_cannot_be_told_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot tell its format from the extension \.txt; name it \.csv"):
        DatasetConfig(kind="files", files={"train": str(tmp_path / "queries.txt")})
    with pytest.raises(ConfigError, match=r"extension \(none\)"):
        DatasetConfig(kind="csv", files={"train": "data.d/queries"})
    broken = tmp_path / "queries.xlsx"
    broken.write_bytes(b"not a workbook")
    with pytest.raises(DataError, match="not a readable xlsx workbook"):
        load_external(DatasetConfig(kind="files", files={"train": str(broken)}), ["en"])


def test_language_all_keeps_every_language_of_your_own_data(tmp_path):
    """The sample CSV holds Portuguese, none of the study's six: language=all keeps it (and
    says nothing is left out); a list keeps what it names."""
    from hydra import compose, initialize_config_dir

    from harness.config import register_configs, to_job_config

    from .conftest import REPO

    register_configs()
    sample = str(REPO / "docs" / "examples" / "queries.csv")
    for language, expected in (("all", {"en", "de", "pt"}), ("[en,de]", {"en", "de"})):
        overrides = ["dataset=files", f"dataset.files.train={sample}", f"language={language}"]
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            job = to_job_config(compose("config", overrides=overrides), overrides)
        data = build_dataset(job.dataset, job.language.selection(job.dataset.kind), tmp_path / "cache")
        rows = [r for split in ("train", "validation", "test") for r in read_split(data, split)]
        assert {r["language"] for r in rows} == expected
        assert len(rows) == 16 * len(expected)
    # the synthetic generator still writes the six it knows
    assert job.language.selection("synthetic") == ["de", "en"]
