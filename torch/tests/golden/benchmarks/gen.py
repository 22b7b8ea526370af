"""Writes tiny fixtures in the published layouts of GEdit-Bench and ImgEdit-Bench, for
`tasks/tests/benchmarks.rs` (the `bench-import` kind and the `eval` protocols).

Run from the repository root (needs pyarrow and pillow, not in scripts/requirements.txt:
`.venv/bin/pip install pyarrow`):  .venv/bin/python torch/tests/golden/benchmarks/gen.py

The fixtures are checked in, so the tests need neither. Rerunning must leave `git status` clean
(fixed colours, fixed PNG/JPEG encoder settings, one pinned writer configuration).

GEdit-Bench (Hugging Face dataset `stepfun-ai/GEdit-Bench`, split `train`; its parquet
export has these columns, as the Step1X-Edit repo's `GEdit-Bench/generate_image_example.py`
lists them): `task_type`, `key`, `instruction`, `instruction_language` (`en` | `cn`),
`input_image` and `input_image_raw` (the `datasets` Image feature: struct<bytes: binary,
path: string>), `Intersection_exist` (bool). Snappy compression (the pyarrow / `datasets`
default). Written to `gedit/data/train-00000-of-00001.parquet`, with the `huggingface`
schema metadata `datasets` writes. Rows:
  g-add-1     subject-add     en  16x16 red     mask: keep the left half
  g-add-2     subject-add     en  16x16 green   no mask
  g-style-1   style_change    en  16x16 blue    mask: keep everything (global type: unscored)
  g-add-1-cn  subject-add     cn  (left out by the language filter)
  g-bad-img   subject-remove  en  `input_image` bytes are not an image (a row error)
  g-no-instr  color_alter     en  `instruction` is null (a row error)
Masks in `gedit/masks/<key>_mask.png` (CoCoEdit's annotations: white = keep).

ImgEdit-Bench (GitHub PKU-YuanGroup/ImgEdit, `Benchmark/Basic/basic_edit.json`: key ->
{id: image path under the image root, prompt, edit_type}; images under `singleturn/`, as in
the released `Benchmark.tar`). Written to `imgedit/basic_edit.json` and
`imgedit/singleturn/...` (16x16 JPEGs, like the real `.jpg` files). Keys:
  1  add      animal/000001.jpg          mask: keep the top half
  2  remove   daily object/000002.jpg    mask of the wrong size (8x8: a mask error)
  3  style    style/000003.jpg            24x16 (another size: `eval` batches by size)
  4  add      animal/missing.jpg         (the image does not exist: a row error)
  5  remove   id is a number             (a row error)
  6  add      no id                      (a row error)
  7  add      animal/000001.jpg          (shares its image with key 1, as real keys do)
Masks in `imgedit/masks/<key>_mask.png` (white = keep).

`malformed/no-language.parquet`: GEdit's columns without `instruction_language`.
"""

import io
import json
import pathlib

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

HERE = pathlib.Path(__file__).resolve().parent
S = 16


def png(colour, size=S):
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def mask(path, size, keep):
    """A grey mask, white where keep(x, y)."""
    m = Image.new("L", (size, size), 0)
    for y in range(size):
        for x in range(size):
            if keep(x, y):
                m.putpixel((x, y), 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    m.save(path, format="PNG", optimize=False)


def gedit():
    root = HERE / "gedit"
    rows = [
        # (task_type, key, instruction, language, image bytes, raw colour)
        ("subject-add", "g-add-1", "Add a red hat to the cat.", "en", png((200, 30, 30)), (200, 30, 30)),
        ("subject-add", "g-add-2", "Add a bird to the sky.", "en", png((30, 200, 30)), (30, 200, 30)),
        ("style_change", "g-style-1", "Turn the photo into a watercolor painting.", "en", png((30, 30, 200)), (30, 30, 200)),
        ("subject-add", "g-add-1-cn", "给猫加一顶红帽子。", "cn", png((200, 200, 30)), (200, 200, 30)),
        ("subject-remove", "g-bad-img", "Remove the dog.", "en", b"not an image", (9, 9, 9)),
        ("color_alter", "g-no-instr", None, "en", png((30, 200, 200)), (30, 200, 200)),
    ]
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema(
        [
            ("task_type", pa.string()),
            ("key", pa.string()),
            ("instruction", pa.string()),
            ("instruction_language", pa.string()),
            ("input_image", image),
            ("input_image_raw", image),
            ("Intersection_exist", pa.bool_()),
        ]
    )
    features = {
        "task_type": {"dtype": "string", "_type": "Value"},
        "key": {"dtype": "string", "_type": "Value"},
        "instruction": {"dtype": "string", "_type": "Value"},
        "instruction_language": {"dtype": "string", "_type": "Value"},
        "input_image": {"_type": "Image"},
        "input_image_raw": {"_type": "Image"},
        "Intersection_exist": {"dtype": "bool", "_type": "Value"},
    }
    schema = schema.with_metadata(
        {"huggingface": json.dumps({"info": {"features": features}}, separators=(",", ":"))}
    )
    table = pa.table(
        {
            "task_type": [r[0] for r in rows],
            "key": [r[1] for r in rows],
            "instruction": [r[2] for r in rows],
            "instruction_language": [r[3] for r in rows],
            "input_image": [{"bytes": r[4], "path": None} for r in rows],
            "input_image_raw": [{"bytes": png(r[5], 2 * S), "path": None} for r in rows],
            "Intersection_exist": [i % 2 == 0 for i in range(len(rows))],
        },
        schema=schema,
    )
    out = root / "data" / "train-00000-of-00001.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out, compression="snappy", write_statistics=False, store_schema=True)
    mask(root / "masks" / "g-add-1_mask.png", S, lambda x, y: x < S // 2)
    mask(root / "masks" / "g-style-1_mask.png", S, lambda x, y: True)


def jpeg(path, colour, size=(S, S)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format="JPEG", quality=95, optimize=False)


def imgedit():
    root = HERE / "imgedit"
    entries = {
        "1": {"id": "animal/000001.jpg", "prompt": "Add a red hat to the dog.", "edit_type": "add"},
        "2": {"id": "daily object/000002.jpg", "prompt": "Remove the cup from the table.", "edit_type": "remove"},
        "3": {"id": "style/000003.jpg", "prompt": "Transfer the image into a watercolor style.", "edit_type": "style"},
        "4": {"id": "animal/missing.jpg", "prompt": "Add a bird.", "edit_type": "add"},
        "5": {"id": 42, "prompt": "Remove the tree.", "edit_type": "remove"},
        "6": {"prompt": "Add a boat.", "edit_type": "add"},
        "7": {"id": "animal/000001.jpg", "prompt": "Make the dog wear sunglasses.", "edit_type": "add"},
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "basic_edit.json").write_text(json.dumps(entries, indent=4) + "\n", encoding="utf-8")
    jpeg(root / "singleturn" / "animal" / "000001.jpg", (220, 40, 40))
    jpeg(root / "singleturn" / "daily object" / "000002.jpg", (40, 220, 40))
    jpeg(root / "singleturn" / "style" / "000003.jpg", (40, 40, 220), size=(24, S))
    mask(root / "masks" / "1_mask.png", S, lambda x, y: y < S // 2)
    mask(root / "masks" / "2_mask.png", S // 2, lambda x, y: True)


def malformed():
    """A GEdit-like file without `instruction_language` (a file-level error)."""
    out = HERE / "malformed" / "no-language.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {
            "task_type": ["subject-add"],
            "key": ["m-1"],
            "instruction": ["Add a hat."],
            "input_image": pa.array([{"bytes": png((1, 2, 3)), "path": None}], type=image),
        }
    )
    pq.write_table(table, out, compression="snappy", write_statistics=False, store_schema=True)


if __name__ == "__main__":
    gedit()
    imgedit()
    malformed()
