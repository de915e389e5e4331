"""The user's own labelled queries: files (CSV with or without a byte-order mark, TSV, JSONL,
Parquet, Excel xlsx; the reader chosen by each file's extension), or a Hugging Face dataset.

Rows are checked before anything is trained on them; each problem is reported with the
file, the row number and the fix. Duplicates are reported, not dropped: whether a repeated
query is a mistake or the data's real distribution is the user's call.
"""

from __future__ import annotations

import csv
import json
import logging
import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from harness.data.config import FILE_EXTENSIONS, SPLIT_NAMES, DatasetConfig
from harness.errors import choices

log = logging.getLogger(__name__)


class DataError(ValueError):
    """A dataset problem; the message names the file, the row and the fix."""


# utf-8-sig: files saved by Excel and Notepad start with a byte-order mark, which plain utf-8
# would glue to the first column's name.
def _jsonl_records(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    with open(path, encoding="utf-8-sig") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{path}, row {number}: not valid JSON ({exc.msg}); each line must be one JSON object"
                ) from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}, row {number}: a JSON object per line is expected, got {type(obj).__name__}")
            yield number, obj


def _csv_records(path: Path, delimiter: str = ",") -> Iterable[tuple[int, dict[str, Any]]]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        # Row 1 is the header, so data rows are numbered as a spreadsheet shows them.
        for number, obj in enumerate(csv.DictReader(f, delimiter=delimiter), start=2):
            yield number, obj


def _tsv_records(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    return _csv_records(path, delimiter="\t")


def _parquet_records(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises its own ArrowInvalid and OSError types
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
    return enumerate(table.to_pylist(), start=1)


def _xlsx_records(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    """The first sheet, its first row the header; rows numbered as Excel shows them."""
    import zipfile

    from openpyxl import load_workbook

    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise DataError(f"{path}: not a readable xlsx workbook ({exc})") from None
    try:
        rows = book.worksheets[0].iter_rows(values_only=True)
        header = [str(c) if c is not None else "" for c in next(rows, ())]
        for number, values in enumerate(rows, start=2):
            if any(v is not None for v in values):
                yield number, dict(zip(header, values))
    finally:
        book.close()  # a read-only workbook keeps its file open until closed


# What each file extension is read as; a file's own extension decides, whatever the preset.
READERS = {
    ".csv": _csv_records,
    ".tsv": _tsv_records,
    ".tab": _tsv_records,
    ".jsonl": _jsonl_records,
    ".ndjson": _jsonl_records,
    ".parquet": _parquet_records,
    ".xlsx": _xlsx_records,
}
assert set(READERS) == set(FILE_EXTENSIONS)


def _normalise(source: str, number: int, obj: dict[str, Any], spec: DatasetConfig, split: str) -> dict[str, Any]:
    where = f"{source}, row {number}"
    for column, option in ((spec.text_column, "text_column"), (spec.label_column, "label_column")):
        if column not in obj:
            raise DataError(
                # repr: an invisible character in a header (a BOM, a space) shows
                f"{where}: no column {column!r} (it has: {', '.join(repr(str(c)) for c in obj)}); "
                f"set dataset.{option} to the right column name"
            )
    text = str(obj[spec.text_column] or "").strip()
    if not text:
        raise DataError(f"{where}: empty text in column {spec.text_column!r}; fill it in or remove the row")
    label = str(obj[spec.label_column] or "").strip()
    if not label:
        raise DataError(f"{where}: empty label in column {spec.label_column!r}; fill it in or remove the row")
    if spec.labels and label not in spec.labels:
        raise DataError(
            f"{where}: label {label!r} is not in dataset.labels ({', '.join(spec.labels)}); "
            f"fix the row or add the label to dataset.labels"
        )
    language = obj.get(spec.language_column) if spec.language_column else None
    return {
        "text": text,
        "intent": label,
        "language": str(language).strip() if language else spec.default_language,
        "split": split,
        "source": where,
    }


def _read_files(spec: DatasetConfig) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for split, name in spec.files.items():
        path = Path(name)
        reader = READERS[path.suffix.lower()]  # DatasetConfig accepts only these extensions
        if not path.is_file():
            raise DataError(f"dataset.files.{split}={name!r}: no such file; give an existing path")
        out[split] = [_normalise(str(path), n, obj, spec, split) for n, obj in reader(path)]
    return out


def _read_hf(spec: DatasetConfig) -> dict[str, list[dict[str, Any]]]:
    try:
        from datasets import load_dataset

        loaded = load_dataset(spec.hf_name, spec.hf_config)
    except Exception as exc:  # the hub and datasets raise many types for "cannot get it"
        raise DataError(
            f"dataset.hf_name={spec.hf_name!r}: cannot load it ({type(exc).__name__}: {exc}); offline, only "
            f"datasets already in the Hugging Face cache load; or export it to JSONL and use dataset.kind=jsonl"
        ) from None
    aliases = {"valid": "validation", "dev": "validation", "eval": "validation"}
    out: dict[str, list[dict[str, Any]]] = {}
    for hf_split, rows in loaded.items():
        split = aliases.get(hf_split, hf_split)
        if split not in SPLIT_NAMES:
            log.warning("dataset %s: split %r ignored (not train/validation/test)", spec.hf_name, hf_split)
            continue
        source = f"{spec.hf_name}[{hf_split}]"
        out[split] = [_normalise(source, n, dict(obj), spec, split) for n, obj in enumerate(rows, start=1)]
    return out


def stratified_cut(rows: Sequence[dict], fraction: float, seed: int, split: str) -> tuple[list[dict], list[dict]]:
    """(kept, cut): a seeded `fraction` of each label's rows moved to `split`, at least one
    per label that has two or more rows."""
    by_label: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_label[row["intent"]].append(row)
    rng = random.Random(f"{seed}/{split}")
    kept, cut = [], []
    for label in sorted(by_label):
        group = list(by_label[label])
        rng.shuffle(group)
        n = max(1, round(len(group) * fraction)) if len(group) > 1 else 0
        cut += [{**r, "split": split} for r in group[:n]]
        kept += group[n:]
    return kept, cut


def duplicates(rows_by_split: dict[str, list[dict]]) -> list[dict[str, Any]]:
    """Texts that occur more than once, within or across splits (case-insensitive)."""
    seen: dict[str, list[str]] = defaultdict(list)
    for rows in rows_by_split.values():
        for row in rows:
            seen[row["text"].casefold()].append(row["source"])
    return [{"text": text, "at": where} for text, where in seen.items() if len(where) > 1]


def _in_languages(name: str, rows: dict[str, list[dict]], languages: Optional[Sequence[str]]) -> dict[str, list[dict]]:
    """Each split's rows in `languages` (None: all of them); how many were left out is logged."""
    if languages is None:
        return rows
    dropped = Counter(
        r["language"] for split_rows in rows.values() for r in split_rows if r["language"] not in languages
    )
    if dropped:
        log.warning("dataset %s: %s rows left out by the language selection", name, dict(dropped))
    return {split: [r for r in split_rows if r["language"] in languages] for split, split_rows in rows.items()}


def _with_missing_splits(spec: DatasetConfig, rows: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """The splits with a missing test or validation split cut from train."""
    rows = dict(rows)
    for split in ("test", "validation"):
        if split not in rows:
            fraction = spec.test_fraction if split == "test" else spec.validation_fraction
            rows["train"], rows[split] = stratified_cut(rows["train"], fraction, spec.seed, split)
    return rows


def _label_set(spec: DatasetConfig, rows: dict[str, list[dict]]) -> list[str]:
    """dataset.labels, or else train's labels; refused where a classifier could not learn them."""
    labels = list(spec.labels) or sorted({r["intent"] for r in rows["train"]})
    if len(labels) < 2:
        raise DataError(f"dataset {spec.name}: only one label ({labels[0]}) in train; a classifier needs at least 2")
    for split in ("validation", "test"):
        unseen = sorted({r["intent"] for r in rows[split]} - set(labels))
        if unseen:
            raise DataError(
                f"dataset {spec.name}: labels {', '.join(unseen)} occur in {split} but never in train; "
                f"add training rows for them or list them in dataset.labels"
            )
    return labels


def load_external(
    spec: DatasetConfig, languages: Optional[Sequence[str]]
) -> tuple[dict[str, list[dict]], list[str], dict]:
    """(rows per split, label set, report) for a jsonl / csv / hf dataset; `languages` None keeps all."""
    rows = _read_hf(spec) if spec.kind == "hf" else _read_files(spec)
    if not rows.get("train"):
        raise DataError(f"dataset {spec.name}: the train split has no rows; it must hold the training examples")
    rows = _with_missing_splits(spec, _in_languages(spec.name, rows, languages))
    for split in SPLIT_NAMES:
        if not rows[split]:
            raise DataError(
                f"dataset {spec.name}: split {split!r} has no rows after selecting languages "
                f"{choices(languages or [])}; check dataset.files / dataset.language_column or the language selection"
            )
    labels = _label_set(spec, rows)
    dups = duplicates(rows)
    if dups:
        log.warning(
            "dataset %s: %d texts occur more than once (kept; listed in stats.json), e.g. %s",
            spec.name,
            len(dups),
            dups[0],
        )
    ordered = {split: rows[split] for split in SPLIT_NAMES}
    return ordered, labels, {"duplicates": dups}
