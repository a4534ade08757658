"""preprocessing.json: a run's record of how its inputs were read and normalized (the statistics fitted on its
training split, the input shape and dtype, the class names), written by the run and read by predict, export and
a run that starts from its weights."""
from __future__ import annotations

import json
from pathlib import Path



def write_preprocessing(path: Path, record: dict) -> None:
    """One top-level key per line (long lists of statistics stay on theirs), written whole or not at all."""
    text = "{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in record.items()) + "\n}\n"
    path.with_name(path.name + ".tmp").write_text(text)
    path.with_name(path.name + ".tmp").replace(path)


