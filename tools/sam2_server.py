#!/usr/bin/env python3
"""A reference segmentation server: SAM 2 behind cocoflow's segmentation protocol (version 1).

The protocol is defined in the module docs of ``tasks/src/segment/mod.rs``; in short:

- ``POST /v1/segment`` with ``{"image": "<base64 PNG or JPEG>", "box": [x0, y0, x1, y1]}``
  (pixels, x0/y0 inclusive, x1/y1 exclusive, ``0 <= x0 < x1 <= width``,
  ``0 <= y0 < y1 <= height``) answers ``200 {"mask": "<base64 8-bit greyscale PNG>",
  "score": s}``: a mask of the whole image's size, 255 = object, nothing outside the box
  white, ``s`` in [0, 1] (SAM's predicted IoU, clamped).
- ``400 {"error": {"message": ..., "code": 400}}`` for a body that is not such a request, an
  image that does not decode or a bad box, with the messages of the Rust server
  (``BoxError``'s, e.g. "box: x1 = 70 is past the image width 64");
  ``422`` (same shape) when the mask is empty ("no object found in the box: ...");
  ``500`` if the model fails (the client retries 5xx).
- ``GET /health`` answers ``200 {"status": "ok", "segmenter": "<description>"}``.

One model, one image at a time: predictions are serialised by a lock (health checks and bad
requests are answered meanwhile). The box goes to ``SAM2ImagePredictor.predict`` as is (SAM
takes continuous XYXY coordinates, so the exclusive pixel bounds x1/y1 are the box's right and
bottom edges), with ``multimask_output=False``; the predictor thresholds the mask logits at
``--mask-threshold`` (SAM's default 0.0); the server then clears everything outside the box.
One line per request goes to stderr.

Install (the project venv; ``scripts/setup.sh`` does this)::

    bash scripts/setup.sh
    # = torch 2.11.0 (what tch needs) + torchvision 0.26.0, hydra-core, iopath, ... from
    # scripts/requirements.txt, then sam2 1.1.0 from scripts/requirements-sam2.txt with
    #   SAM2_BUILD_CUDA=0 .venv/bin/pip install --no-build-isolation \\
    #       -r scripts/requirements-sam2.txt -c scripts/constraints.txt
    # (a plain `pip install sam2` builds it against, and upgrades to, the newest torch).

Run with real weights: download a SAM 2.1 checkpoint from the SAM 2 release page
(https://github.com/facebookresearch/sam2, "Download Checkpoints", whose
checkpoints/download_ckpts.sh fetches them from
https://dl.fbaipublicfiles.com/segment_anything_2/092824/: sam2.1_hiera_tiny.pt, _small,
_base_plus, _large) and pass the matching config (a name inside the sam2 package,
``configs/sam2.1/sam2.1_hiera_{t,s,b+,l}.yaml``, or the path of a YAML file)::

    curl -LO https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_tiny.pt
    .venv/bin/python tools/sam2_server.py --checkpoint sam2.1_hiera_tiny.pt \\
        --config configs/sam2.1/sam2.1_hiera_t.yaml --device cuda --host 0.0.0.0 --port 8090

then point cocoflow's ``curate`` task at it, e.g.
``segmenter: {kind: http, base_url: "http://HOST:8090", model: "sam2.1-hiera-tiny"}``
(``model`` is part of the client's response-cache key: name the weights there). The server has
no authentication: listen on 0.0.0.0 only inside a trusted network.

Plumbing tests (no weights): ``--random-init`` builds a randomly initialised model from the
config (seeded by ``--seed``, so answers repeat); ``--port 0`` picks a free port and
``--port-file PATH`` writes it (atomically) once the server listens. See
``tasks/tests/sam2_server.rs``. SIGTERM / SIGINT stop the server cleanly (exit status 0).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import io
import json
import math
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Bodies above this are refused (413): a 4096×4096 PNG is far smaller.
MAX_BODY_BYTES = 64 * 1024 * 1024
NAMES = ("x0", "y0", "x1", "y1")
U32_MAX = 2**32 - 1


def log(msg: str) -> None:
    sys.stderr.write(f"[sam2-server] {msg}\n")
    sys.stderr.flush()


class Interrupted(BaseException):  # not caught by `except Exception` in sam2 or hydra
    """SIGTERM/SIGINT while the model is being built."""


class RequestError(Exception):
    """An answer other than 200: the HTTP status and the error message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# ---------------------------------------------------------------------------------------------
# The request: the same checks, in the same order and with the same messages, as the Rust server
# (tasks/src/segment/server.rs and BoxPx::from_wire / BoxError in tasks/src/segment/mod.rs).


def json_text(v) -> str:
    """A JSON value as serde_json writes it (for "x0 = <value>" messages)."""
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"))


def parse_request(body: bytes) -> tuple[str, list]:
    """The body's ``image`` and ``box``; 400 if it is not a segment request."""

    def bad(reason: str) -> RequestError:
        return RequestError(400, f'not a segment request {{"image", "box"}}: {reason}')

    try:
        req = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise bad(f"not JSON: {e}") from None
    if not isinstance(req, dict):
        raise bad(f"expected a JSON object, got {type(req).__name__}")
    if "image" not in req:
        raise bad("missing field `image`")
    if "box" not in req:
        raise bad("missing field `box`")
    if not isinstance(req["image"], str):
        raise bad("`image` must be a string (base64 PNG or JPEG)")
    if not isinstance(req["box"], list):
        raise bad("`box` must be an array [x0, y0, x1, y1]")
    return req["image"], req["box"]


def decode_image(b64: str):
    """The image as an HxWx3 uint8 array; 400 if it is not base64 PNG/JPEG."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        data = base64.b64decode(b64.strip(), validate=True)
    except (binascii.Error, ValueError) as e:
        raise RequestError(400, f"image is not base64: {e}") from None
    try:
        with Image.open(io.BytesIO(data), formats=["PNG", "JPEG"]) as im:
            im.load()
            rgb = im.convert("RGB")
    except UnidentifiedImageError:
        raise RequestError(400, "image does not decode: not a PNG or JPEG image") from None
    except Exception as e:  # truncated data, decompression bombs, ...
        raise RequestError(400, f"image does not decode: {e}") from None
    return np.array(rgb, dtype=np.uint8)  # a writable copy (torch warns on read-only arrays)


def parse_box(v: list, width: int, height: int) -> tuple[int, int, int, int]:
    """``[x0, y0, x1, y1]`` checked against a ``width × height`` image (400: BoxError's text)."""
    if len(v) != 4:
        raise RequestError(400, f"box: expected 4 numbers [x0, y0, x1, y1], got {len(v)}")
    c = []
    for name, x in zip(NAMES, v):
        # serde_json's as_u64: a non-negative integer (not 3.0, not true).
        if isinstance(x, bool) or not isinstance(x, int) or not 0 <= x <= U32_MAX:
            raise RequestError(
                400,
                f"box: {name} = {json_text(x)} is not a pixel coordinate (a non-negative integer)",
            )
        c.append(x)
    x0, y0, x1, y1 = c
    if x1 > width:
        raise RequestError(400, f"box: x1 = {x1} is past the image width {width}")
    if y1 > height:
        raise RequestError(400, f"box: y1 = {y1} is past the image height {height}")
    if x0 >= x1:
        raise RequestError(
            400, f"box: x0 = {x0} must be less than x1 = {x1} (x1/y1 are exclusive)"
        )
    if y0 >= y1:
        raise RequestError(
            400, f"box: y0 = {y0} must be less than y1 = {y1} (x1/y1 are exclusive)"
        )
    return x0, y0, x1, y1


def encode_mask(mask) -> str:
    """Base64 of an 8-bit greyscale PNG of a HxW uint8 array."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(mask).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


# ---------------------------------------------------------------------------------------------
# The model.


class Sam2Segmenter:
    """SAM 2's image predictor for one box at a time (thread-safe: a lock around each call)."""

    def __init__(self, args: argparse.Namespace):
        import torch
        from sam2.build_sam import build_sam2
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        self.torch = torch
        config = resolve_config(args.config)
        if args.random_init:
            torch.manual_seed(args.seed)
            weights = f"random init (seed {args.seed})"
        else:
            weights = f"checkpoint {os.path.basename(args.checkpoint)}"
        model = build_sam2(config, args.checkpoint, device=args.device)
        self.predictor = SAM2ImagePredictor(model, mask_threshold=args.mask_threshold)
        self.lock = threading.Lock()
        self.description = (
            f"sam2 {args.config}, {weights}, {args.device}, mask threshold {args.mask_threshold:g}"
        )

    def segment(self, image, box: tuple[int, int, int, int]):
        """The 0/255 mask (HxW uint8, zero outside the box) and the score in [0, 1]."""
        import numpy as np

        x0, y0, x1, y1 = box
        with self.lock, self.torch.inference_mode():
            self.predictor.set_image(image)
            masks, scores, _ = self.predictor.predict(
                box=np.array([x0, y0, x1, y1], dtype=np.float32), multimask_output=False
            )
            self.predictor.reset_predictor()
        inside = np.zeros(masks.shape[-2:], dtype=bool)
        inside[y0:y1, x0:x1] = True
        mask = np.where((masks[0] > 0) & inside, 255, 0).astype(np.uint8)
        score = float(scores[0])
        score = min(max(score, 0.0), 1.0) if math.isfinite(score) else 0.0
        return mask, score


def resolve_config(config: str) -> str:
    """A config name for sam2's hydra: one of the package's (``configs/...``) or a YAML file."""
    from importlib.resources import files

    if not os.path.isabs(config) and (files("sam2") / config).is_file():
        return config
    if os.path.isfile(config):
        from hydra import initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra

        GlobalHydra.instance().clear()
        initialize_config_dir(
            config_dir=os.path.dirname(os.path.abspath(config)), version_base="1.2"
        )
        return os.path.basename(config)
    raise SystemExit(
        f"error: --config {config}: neither a config of the sam2 package "
        "(e.g. configs/sam2.1/sam2.1_hiera_t.yaml) nor a file"
    )


# ---------------------------------------------------------------------------------------------
# HTTP.


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every answer has a Content-Length
    server_version = "cocoflow-sam2-server/1"
    segmenter: Sam2Segmenter  # set on the subclass made in main()

    def log_message(self, format, *args):  # noqa: A002 (BaseHTTPRequestHandler's signature)
        pass  # one line per request is written by handle_request instead

    def log_error(self, format, *args):  # noqa: A002 (malformed requests, timeouts)
        log(f"{self.client_address[0]} " + format % args)

    def reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def handle_request(self, route) -> None:
        start = time.monotonic()
        detail = ""
        try:
            status, body, detail = route()
        except RequestError as e:
            status, body, detail = e.status, error_body(e.status, e.message), e.message
        except Exception as e:  # the model failed: a transient error for the client
            msg = f"the segmenter failed: {type(e).__name__}: {e}"
            status, body, detail = 500, error_body(500, msg), msg
        try:
            self.reply(status, body)
        except (BrokenPipeError, ConnectionResetError):
            detail += " (client gone)"
        ms = (time.monotonic() - start) * 1000
        log(f"{self.client_address[0]} {self.command} {self.path} {status} {ms:.0f} ms {detail}")

    def do_GET(self):
        def route():
            if self.path == "/health":
                return 200, {"status": "ok", "segmenter": self.segmenter.description}, ""
            raise RequestError(404, f"no route for GET {self.path}")

        self.handle_request(route)

    def do_POST(self):
        def route():
            body = self.read_body()
            if self.path != "/v1/segment":
                raise RequestError(404, f"no route for POST {self.path}")
            b64, wire_box = parse_request(body)
            image = decode_image(b64)
            height, width = image.shape[:2]
            box = parse_box(wire_box, width, height)
            mask, score = self.segmenter.segment(image, box)
            n = int((mask > 0).sum())
            where = f"image {width}x{height} box {list(box)}"
            if n == 0:
                raise RequestError(
                    422,
                    f"no object found in the box: the mask is empty (score {score:.3f}); {where}",
                )
            answer = {"mask": encode_mask(mask), "score": score}
            return 200, answer, f"{where}: {n} px, score {score:.3f}"

        self.handle_request(route)

    def no_route(self):
        def route():
            if self.headers.get("Content-Length") is not None:
                self.read_body()  # keeps the connection usable
            raise RequestError(404, f"no route for {self.command} {self.path}")

        self.handle_request(route)

    do_PUT = do_DELETE = do_PATCH = no_route

    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise RequestError(411, "a Content-Length is needed (chunked bodies are not read)")
        length = self.headers.get("Content-Length")
        if length is None:
            self.close_connection = True
            raise RequestError(411, "a Content-Length is needed")
        try:
            n = int(length)
        except ValueError:
            self.close_connection = True
            raise RequestError(400, f"bad Content-Length {length!r}") from None
        if n < 0 or n > MAX_BODY_BYTES:
            self.close_connection = True
            raise RequestError(413, f"body of {n} bytes (at most {MAX_BODY_BYTES})")
        return self.rfile.read(n)


def error_body(status: int, message: str) -> dict:
    return {"error": {"message": message, "code": status}}


# ---------------------------------------------------------------------------------------------
# Main.


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="SAM 2 behind cocoflow's segmentation protocol "
        "(POST /v1/segment, GET /health).",
        epilog="Give negative thresholds in the = form: --mask-threshold=-1e9",
    )
    p.add_argument(
        "--config",
        default="configs/sam2.1/sam2.1_hiera_t.yaml",
        help="sam2 model config: a name inside the sam2 package or a YAML file "
        "(default: %(default)s)",
    )
    weights = p.add_mutually_exclusive_group(required=True)
    weights.add_argument("--checkpoint", metavar="PATH", help="SAM 2 weights (a .pt file)")
    weights.add_argument(
        "--random-init",
        action="store_true",
        help="no weights: a randomly initialised model (plumbing tests)",
    )
    p.add_argument("--seed", type=int, default=0, help="torch seed of --random-init (default 0)")
    p.add_argument(
        "--device", default=None, help="torch device (default: cuda if available, else cpu)"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    p.add_argument(
        "--port", type=int, default=8090, help="port; 0 picks a free one (default %(default)s)"
    )
    p.add_argument(
        "--port-file",
        metavar="PATH",
        help="write the bound port there (atomically) once listening; removed on exit",
    )
    p.add_argument(
        "--mask-threshold",
        type=float,
        default=0.0,
        help="mask logit threshold of SAM2ImagePredictor: pixels whose logit is above it are "
        "object (default %(default)s)",
    )
    args = p.parse_args(argv)
    if args.checkpoint is not None and not os.path.isfile(args.checkpoint):
        p.error(f"--checkpoint {args.checkpoint}: no such file")
    if math.isnan(args.mask_threshold):
        p.error("--mask-threshold must be a number")
    if not 0 <= args.port <= 65535:
        p.error(f"--port {args.port} is not a port number")
    return args


def write_port_file(path: str, port: int) -> None:
    path = os.path.abspath(path)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(f"{port}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        import torch

        import sam2  # noqa: F401
    except ImportError as e:
        log(f"error: cannot import {e.name or e} ({e}); install it with `bash scripts/setup.sh`")
        return 1
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"

    stop = threading.Event()
    starting = True

    def on_signal(signum, _frame):
        log(f"{signal.Signals(signum).name}: stopping")
        stop.set()
        if starting:  # abort the model's build rather than wait for it
            raise Interrupted()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    t0 = time.monotonic()
    try:
        try:
            segmenter = Sam2Segmenter(args)
        except (SystemExit, Interrupted):
            raise
        except Exception as e:
            log(
                f"error: cannot build the model ({args.config}, "
                f"{args.checkpoint or 'random init'}): {type(e).__name__}: {e}"
            )
            return 1
        log(f"model ready in {time.monotonic() - t0:.1f} s: {segmenter.description}")
        handler = type("Sam2Handler", (Handler,), {"segmenter": segmenter})
        try:
            server = ThreadingHTTPServer((args.host, args.port), handler)
        except OSError as e:
            log(f"error: cannot listen on {args.host}:{args.port}: {e}")
            return 1
        starting = False
    except Interrupted:
        log("stopped before listening")
        return 0

    server.daemon_threads = True
    host, port = server.server_address[:2]
    thread = threading.Thread(target=server.serve_forever, args=(0.2,), name="http", daemon=True)
    thread.start()
    if args.port_file:
        write_port_file(args.port_file, port)
    log(f"listening on http://{host}:{port}")
    print(f"sam2 segment server listening on http://{host}:{port}", flush=True)

    status = 0
    while not stop.wait(1.0):
        if not thread.is_alive():
            log("error: the HTTP server thread died")
            status = 1
            break
    server.shutdown()
    server.server_close()
    if args.port_file:
        try:
            os.remove(args.port_file)
        except OSError:
            pass
    log("stopped")
    return status


if __name__ == "__main__":
    sys.exit(main())
