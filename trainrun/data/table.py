"""data=table: a CSV or Parquet file of the user's (pyarrow parses it), one row per sample."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .types import Loaded


def table(cfg, g, path, target, max_classes, missing, task, features=None):
    """A CSV or Parquet file (pyarrow parses it): one row per sample. Numeric and boolean columns are features as
    they are (data.normalize standardizes them with train statistics), text and categorical ones one-hot."""
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.csv
        import pyarrow.parquet
    except ImportError:
        raise ConfigError("data=table reads files with pyarrow: pip install 'trainrun[table]'") from None
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"data.path={path}: no such file")
    parquet = file.suffix in (".parquet", ".pq")
    try:
        frame = pyarrow.parquet.read_table(file) if parquet else pyarrow.csv.read_csv(file)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"data.path={path}: not a readable {'Parquet' if parquet else 'CSV'} file "
                        f"({' '.join(str(e).split())[:120]})") from None
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
    blocks = [_table_feature(frame[c], c) for c in features]
    return Loaded(torch.from_numpy(np.concatenate(blocks, axis=1)), y, class_names=class_names)


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


def _table_feature(column, name: str) -> np.ndarray:
    """A column as float32 features: numbers as they are (missing ones: the column's mean), text one-hot."""
    import pyarrow as pa

    kind = column.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind) \
            or pa.types.is_decimal(kind):
        values = np.asarray(column.to_pylist(), dtype=np.float64)
        values = np.where(np.isnan(values), np.nanmean(values), values)
        return values.astype(np.float32).reshape(-1, 1)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_dictionary(kind):
        values = np.asarray([str(v) for v in column.to_pylist()])
        categories = np.unique(values[values != "None"])
        return (values[:, None] == categories[None, :]).astype(np.float32)
    raise DataError(f"column {name} is of type {kind}: neither numbers nor text; leave it out with data.features")
