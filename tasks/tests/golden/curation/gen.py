"""Packs the raw synthetic triplets in `tests/golden/curation/raw/` (12 samples of
`synth-data` with seed 7, size 32, drift 0.35, `raw: true`; its `extra` dropped) into a parquet
file in the Hugging Face `datasets` layout, for `tasks/tests/curate.rs` (the `curate` kind's
parquet reader).

Run from the repository root (needs pyarrow, not in scripts/requirements.txt; any venv:
`python3 -m venv /tmp/pa && /tmp/pa/bin/pip install pyarrow==22.0.0`):
    /tmp/pa/bin/python tasks/tests/golden/curation/gen.py
The output is checked in, so the tests need neither. Rerunning leaves `git status` clean.

`parquet/train-00000-of-00001.parquet`, snappy, columns:
  id            string   the manifest key
  source_image  struct<bytes: binary, path: string>   (the `datasets` Image feature)
  edited_image  struct<bytes: binary, path: string>
  instruction   list<string>   (the first is the instruction, as OmniEdit-style lists)
  edit_type     string
Rows: the 12 samples in manifest order, then four bad rows:
  bad-image     `edited_image.bytes` is not an image            (a corrupt-image rejection)
  bad-instr     `instruction` is null                           (an unreadable row)
  bad-path      `source_image` has only a path, `../../etc/passwd` (escapes: unreadable)
  bad-nothing   `edited_image` has neither bytes nor path       (unreadable)
"""
import json
import pathlib

import pyarrow as pa
import pyarrow.parquet as pq

root = pathlib.Path(__file__).resolve().parent
raw = root / "raw"
rows = [json.loads(l) for l in (raw / "manifest.jsonl").read_text().splitlines() if l.strip()]


def image(rel):
    return {"bytes": (raw / rel).read_bytes(), "path": None}


ids, srcs, edits, instrs, types = [], [], [], [], []
for r in rows:
    ids.append(r["key"])
    srcs.append(image(r["source"]))
    edits.append(image(r["target"]))
    instrs.append([r["instruction"], "an alternative phrasing that is ignored"])
    types.append(r.get("edit_type"))
good = rows[0]
bad = [
    ("bad-image", image(good["source"]), {"bytes": b"not an image at all", "path": None}, [good["instruction"]]),
    ("bad-instr", image(good["source"]), image(good["target"]), None),
    ("bad-path", {"bytes": None, "path": "../../etc/passwd"}, image(good["target"]), [good["instruction"]]),
    ("bad-nothing", image(good["source"]), {"bytes": None, "path": None}, [good["instruction"]]),
]
for key, s, e, i in bad:
    ids.append(key)
    srcs.append(s)
    edits.append(e)
    instrs.append(i)
    types.append("replace")

img = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
table = pa.table(
    {
        "id": pa.array(ids, pa.string()),
        "source_image": pa.array(srcs, img),
        "edited_image": pa.array(edits, img),
        "instruction": pa.array(instrs, pa.list_(pa.string())),
        "edit_type": pa.array(types, pa.string()),
    }
)
out = root / "parquet" / "train-00000-of-00001.parquet"
out.parent.mkdir(parents=True, exist_ok=True)
pq.write_table(table, out, compression="snappy", row_group_size=5, write_statistics=False)
print(f"wrote {out} ({out.stat().st_size} bytes, {table.num_rows} rows)")
