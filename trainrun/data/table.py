"""data=table: a CSV or Parquet file of the user's (pyarrow parses it), one row per sample."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .types import Loaded


def table(cfg, g, path, target, max_classes, missing, task, features=None):
    """A CSV or Parquet file (pyarrow parses it): one row per sample. Numeric and boolean columns are features as
    they are (data.normalize standardizes them with train statistics), text and categorical ones one-hot; the
    categories and the fill for missing numbers come from the train rows alone (TableRows.fit)."""
    import pyarrow.compute as pc

    file, frame = read_table(path, "data.path")
    columns = frame.column_names
    if target not in columns:
        raise DataError(f"data.target={target} is not a column of {file.name}; its columns: {', '.join(columns)}")
    features = list(features) if features else [c for c in columns if c != target]
    unknown = [c for c in features if c not in columns]
    if unknown:
        raise DataError(f"data.features: {file.name} has no column {unknown[0]}; its columns: {', '.join(columns)}")
    frame = frame.select([*features, target])
    nulls = {c: pc.sum(pc.is_null(frame[c], nan_is_null=True)).as_py() for c in frame.column_names}
    if nulls[target] or (missing == "drop" and any(nulls.values())):
        keep = pc.invert(pc.is_null(frame[target], nan_is_null=True))
        for c in features if missing == "drop" else ():
            keep = pc.and_(keep, pc.invert(pc.is_null(frame[c], nan_is_null=True)))
        if missing == "error" and nulls[target]:
            rows = np.flatnonzero(~np.asarray(keep))[:5].tolist()
            raise DataError(f"column {target} (the target) has {nulls[target]} missing values (rows {rows}); "
                            "set data.missing=drop")
        dropped = len(frame) - pc.sum(keep).as_py()
        frame = frame.filter(keep)
        if len(frame) == 0:
            with_nulls = [c for c in frame.column_names if nulls[c]]
            raise DataError(f"data.missing=drop dropped every row of {file.name} ({dropped}): each has a missing "
                            f"value in {', '.join(with_nulls[:5])}; use data.missing=mean or data.features=[...]")
    if missing == "error":
        for c in features:
            if nulls[c]:
                rows = np.flatnonzero(np.asarray(pc.is_null(frame[c], nan_is_null=True)))[:5].tolist()
                raise DataError(f"column {c} has {nulls[c]} missing values (rows {rows}); "
                                "set data.missing=drop or data.missing=mean")
    y, class_names = _table_target(frame[target], target, task, max_classes)
    return Loaded(TableRows(frame.select(features)), y, class_names=class_names)


def read_table(path, key: str):
    """(file, pyarrow Table) of a CSV or Parquet file; one line naming `key` for a file that is not one."""
    try:
        import pyarrow as pa
        import pyarrow.csv
        import pyarrow.parquet
    except ImportError:
        raise ConfigError("tables are read with pyarrow: pip install 'trainrun[table]'") from None
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"{key}={path}: no such file")
    parquet = file.suffix in (".parquet", ".pq")
    try:
        return file, pyarrow.parquet.read_table(file) if parquet else pyarrow.csv.read_csv(file)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{key}={path}: not a readable {'Parquet' if parquet else 'CSV'} file "
                        f"({' '.join(str(e).split())[:120]})") from None


def _table_target(column, name: str, task: str, max_classes: int):
    import pyarrow as pa

    kind = column.type
    textual = pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_dictionary(kind) \
        or pa.types.is_boolean(kind)
    values = np.asarray(column.to_pylist(), dtype=object if textual else None)
    distinct = np.unique(values)
    if len(distinct) < 2:
        raise DataError(f"data.target={name} has one value ({distinct[0] if len(distinct) else 'none'}): nothing to learn")
    if task == "auto":
        task = "classification" if textual or (pa.types.is_integer(kind) and len(distinct) <= max_classes) \
            else "regression"
    if task == "classification":
        return torch.from_numpy(np.searchsorted(distinct, values).astype(np.int64)), [str(v) for v in distinct]
    if textual:
        raise DataError(f"data.task=regression: data.target={name} holds text, not numbers")
    return torch.from_numpy(values.astype(np.float32).reshape(-1, 1)), None


class TableRows:
    """A table's feature columns before encoding. load() slices them like tensors (x[rows]) and fits the
    encoding on the train rows once it knows them: a category or a mean seen only in the test rows must not
    shape the inputs."""

    def __init__(self, frame):
        self.frame = frame

    def __len__(self) -> int:
        return self.frame.num_rows

    def __getitem__(self, rows) -> "TableRows":
        return TableRows(self.frame.take(np.asarray(rows)))

    def fit(self) -> "TableEncoding":
        return TableEncoding([_fit_column(self.frame[name], name) for name in self.frame.column_names])


def _fit_column(column, name: str) -> dict:
    """Numbers: their mean fills a missing value; text: its categories (one-hot, sorted)."""
    import pyarrow as pa

    kind = column.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind) \
            or pa.types.is_decimal(kind):
        values = np.asarray(column.to_pylist(), dtype=np.float64)
        present = values[~np.isnan(values)]
        return {"name": name, "kind": "number", "fill": float(present.mean()) if len(present) else 0.0}
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_dictionary(kind):
        values = [v for v in column.to_pylist() if v is not None]
        return {"name": name, "kind": "text", "categories": sorted({str(v) for v in values})}
    raise DataError(f"column {name} is of type {kind}: neither numbers nor text; leave it out with data.features")


class TableEncoding:
    """The fitted columns, in order, as written to the run's preprocessing.json: rows -> float32 features."""

    def __init__(self, columns: list[dict]):
        self.columns = columns

    def record(self) -> dict:
        return {"kind": "table", "columns": self.columns}

    @staticmethod
    def feature_names(record: dict | None) -> list[str] | None:
        """Each encoded feature's column (a text column's one-hot features all name it), from record()."""
        if not record or record.get("kind") != "table":
            return None
        return [c["name"] for c in record["columns"] for _ in range(1 if c["kind"] == "number" else len(c["categories"]))]

    def encode(self, frame, source: str = "", unseen: str = "error") -> tuple[torch.Tensor, int]:
        """Features of `frame`'s rows (columns found by name) and how many text values were not seen in
        training: refused naming the first, or (unseen=zeros) encoded as all zeros."""
        blocks, unseen_count = [], 0
        for column in self.columns:
            values = frame[column["name"]].to_pylist()
            if column["kind"] == "number":
                block = np.array([column["fill"] if v is None else v for v in values], dtype=np.float64)
                blocks.append(np.where(np.isnan(block), column["fill"], block).reshape(-1, 1))
                continue
            index = {c: i for i, c in enumerate(column["categories"])}
            block = np.zeros((len(values), len(index)), dtype=np.float32)
            for row, v in enumerate(values):
                if v is None:  # missing text: no category
                    continue
                if str(v) not in index:
                    if unseen == "error":
                        raise DataError(f"{source}column {column['name']}, row {row}: the value {v!r} was not seen "
                                        "in training; pass --unseen=zeros to encode such values as all zeros")
                    unseen_count += 1
                    continue
                block[row, index[str(v)]] = 1
            blocks.append(block)
        x = np.concatenate(blocks, axis=1).astype(np.float32) if blocks else np.zeros((frame.num_rows, 0), np.float32)
        return torch.from_numpy(x), unseen_count
