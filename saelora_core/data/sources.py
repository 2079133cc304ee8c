"""Sources of (prompt, response) rows: the offline seed set, HelpSteer, and local files.

Every loader returns a `SourceData`: the usable rows plus the rows it skipped (with a location
such as `math.jsonl:12` and a reason), so one bad line never stops a run. A source with no usable
row at all raises `SourceError`.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saelora_core.data.config import DatasetConfig, SourceError, default_seed_dir

logger = logging.getLogger(__name__)

HELPSTEER = "nvidia/HelpSteer"


@dataclass(frozen=True)
class SourceRow:
    """One usable example: a user prompt and the original assistant response."""

    id: str
    prompt: str
    response: str
    topic: str = ""
    """The source's own topic label ("" when the source has none)."""
    response_fr: str | None = None
    """An authored French response (seed set), used by the offline backend."""


@dataclass(frozen=True)
class SkippedRow:
    """A row the loader could not use, and why."""

    location: str
    reason: str


@dataclass
class SourceData:
    """The rows of one source, in source order, plus the skipped ones."""

    name: str
    rows: list[SourceRow]
    skipped: list[SkippedRow] = field(default_factory=list)


@dataclass(frozen=True)
class Columns:
    """Column names to read from a record."""

    prompt: str = "prompt"
    response: str = "response"
    id: str = "id"
    topic: str = "topic"


class _Collector:
    """Validates records one at a time and keeps the good ones and the reasons for the rest."""

    def __init__(self, name: str, columns: Columns) -> None:
        self.name, self.columns = name, columns
        self.rows: list[SourceRow] = []
        self.skipped: list[SkippedRow] = []
        self._seen_ids: dict[str, str] = {}

    def skip(self, location: str, reason: str) -> None:
        self.skipped.append(SkippedRow(location, reason))

    def add(self, record: Any, location: str, default_id: str) -> None:
        if not isinstance(record, Mapping):
            self.skip(location, f"expected an object, got {type(record).__name__}")
            return
        c = self.columns
        texts: dict[str, str] = {}
        for column in (c.prompt, c.response):
            value = record.get(column)
            if value is None:
                self.skip(location, f"missing {column!r}")
                return
            if not isinstance(value, str):
                self.skip(location, f"{column!r} is {type(value).__name__}, not a string")
                return
            if not value.strip():
                self.skip(location, f"empty {column!r}")
                return
            texts[column] = value
        raw_id = record.get(c.id)
        row_id = (
            str(raw_id) if isinstance(raw_id, str | int) and str(raw_id).strip() else default_id
        )
        if row_id in self._seen_ids:
            self.skip(location, f"duplicate id {row_id!r} (first at {self._seen_ids[row_id]})")
            return
        self._seen_ids[row_id] = location
        topic = record.get(c.topic)
        french = record.get("response_fr")
        self.rows.append(
            SourceRow(
                id=row_id,
                prompt=texts[c.prompt],
                response=texts[c.response],
                topic=topic.strip() if isinstance(topic, str) else "",
                response_fr=french if isinstance(french, str) and french.strip() else None,
            )
        )

    def result(self) -> SourceData:
        if self.skipped:
            logger.warning(
                "%s: skipped %d malformed row(s), e.g. %s: %s",
                self.name,
                len(self.skipped),
                self.skipped[0].location,
                self.skipped[0].reason,
            )
        if not self.rows:
            sample = "; ".join(f"{s.location}: {s.reason}" for s in self.skipped[:5])
            raise SourceError(
                f"source {self.name!r} yielded no usable rows "
                f"({len(self.skipped)} skipped{': ' + sample if sample else ''})"
            )
        return SourceData(self.name, self.rows, self.skipped)


def _read_jsonl(path: Path, collector: _Collector) -> None:
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            location = f"{path.name}:{line_no}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                collector.skip(location, f"invalid JSON ({err.msg})")
                continue
            collector.add(record, location, f"{path.stem}-{line_no}")


def _read_csv(path: Path, collector: _Collector) -> None:
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {collector.columns.prompt, collector.columns.response} - set(
            reader.fieldnames or []
        )
        if missing:
            raise SourceError(
                f"{path} has no column(s) {sorted(missing)}; columns: {reader.fieldnames}"
            )
        for index, record in enumerate(reader, start=1):
            # line_num is the physical line where this record ended (quoted fields can span lines).
            collector.add(record, f"{path.name}:{reader.line_num}", f"{path.stem}-{index}")


def _read_records(records: Iterable[Mapping[str, Any]], name: str, collector: _Collector) -> None:
    for index, record in enumerate(records):
        collector.add(record, f"{name} row {index}", f"{name.replace('/', '-')}-{index}")


def load_seed(seed_dir: str | Path | None = None) -> SourceData:
    """Load every `*.jsonl` file of the offline seed set (default: the repository's `data/seed/`).

    Rows are `{"id", "topic", "prompt", "response"}`, math rows also `"response_fr"`.
    """
    directory = Path(seed_dir) if seed_dir is not None else default_seed_dir()
    files = sorted(directory.glob("*.jsonl")) if directory.is_dir() else []
    if not files:
        raise SourceError(f"no seed files: {directory} has no *.jsonl files")
    collector = _Collector(f"seed:{directory}", Columns())
    for path in files:
        _read_jsonl(path, collector)
    return collector.result()


def dataset_to_source(dataset: Any, name: str, columns: Columns = Columns()) -> SourceData:
    """Turn a `datasets.Dataset` with prompt/response columns into a `SourceData`."""
    missing = {columns.prompt, columns.response} - set(dataset.column_names)
    if missing:
        raise SourceError(
            f"{name} has no column(s) {sorted(missing)}; columns: {dataset.column_names}"
        )
    wanted = [c for c in (columns.prompt, columns.response, columns.id, columns.topic)]
    wanted += ["response_fr"]
    dataset = dataset.select_columns(
        [c for c in dict.fromkeys(wanted) if c in dataset.column_names]
    )
    collector = _Collector(name, columns)
    _read_records(dataset, name, collector)
    return collector.result()


def load_helpsteer(split: str = "train") -> SourceData:
    """Load `nvidia/HelpSteer` from the Hugging Face Hub (cached by `datasets`)."""
    import datasets

    try:
        dataset = datasets.load_dataset(HELPSTEER, split=split)
    except Exception as err:  # network, auth or a bad split name: say which source failed
        raise SourceError(f"could not load {HELPSTEER} split {split!r}: {err}") from err
    return dataset_to_source(dataset, f"{HELPSTEER}[{split}]")


def load_local(path: str | Path, columns: Columns = Columns(), split: str = "train") -> SourceData:
    """Load a local JSONL file, CSV file, or `datasets` folder (a `Dataset` or a `DatasetDict`,
    whose `split` is used)."""
    path = Path(path)
    if not path.exists():
        raise SourceError(f"source not found: {path} (use 'seed', 'helpsteer' or a path)")
    if path.is_dir():
        import datasets

        try:
            loaded = datasets.load_from_disk(str(path))
        except Exception as err:  # not a saved dataset: explain what was expected
            raise SourceError(f"{path} is not a `datasets` folder: {err}") from err
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise SourceError(f"{path} has no split {split!r}; splits: {list(loaded)}")
            loaded = loaded[split]
        return dataset_to_source(loaded, str(path), columns)
    collector = _Collector(str(path), columns)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        _read_jsonl(path, collector)
    elif suffix == ".csv":
        _read_csv(path, collector)
    else:
        raise SourceError(f"unsupported source file {path}: use .jsonl, .csv or a datasets folder")
    return collector.result()


def load_source(cfg: DatasetConfig) -> SourceData:
    """Load the source `cfg.source` names: "seed", "helpsteer", or a local path."""
    if cfg.source == "seed":
        return load_seed(cfg.seed_dir)
    if cfg.source == "helpsteer":
        return load_helpsteer(cfg.source_split)
    columns = Columns(cfg.prompt_column, cfg.response_column, cfg.id_column, cfg.topic_column)
    return load_local(cfg.source, columns, cfg.source_split)
