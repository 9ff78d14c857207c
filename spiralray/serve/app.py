"""The Ray Serve application: an HTTP ingress (FastAPI) in front of a segmenter deployment.

    client --HTTP--> proxy --> Ingress (decode, validate, encode; cheap, async)
                                 --handle--> Segmenter (@serve.batch: images of concurrent
                                             requests segmented together; CPU or GPU)

- The ingress refuses bad requests with 4xx ``{"error": "..."}`` before any engine work. It
  admits at most as many requests as the segmenter can hold (running + queued, ``admit``) and
  answers the rest 503 ``{"error": ...}`` at once, before reading their bodies; requests beyond
  the ingress's own bound get Ray's 503 from the proxy. Memory is bounded by ``admit x
  max_bytes`` of request bodies, not by the offered load.
- The segmenter's model, batch size and threads are its ``user_config``: changing them (e.g.
  ``generation`` + 1 to pick up a new alias target) reconfigures the running replicas in place:
  the new model loads beside the old one, which keeps serving until the swap.
- ``build_app(args)`` is the Serve application builder (``import_path:
  spiralray.serve.app:build_app`` in ``cluster/serve.yaml``); ``deploy.deploy`` runs it.
"""

# No ``from __future__ import annotations``: FastAPI reads the route annotations at runtime
# (through serve.ingress, where string annotations do not resolve).
import asyncio
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.serve.exceptions import BackPressureError
from starlette.exceptions import HTTPException

from ..core.engine import on_passing_thread
from ..errors import SpiralrayError
from ..io.planes import grey_of_colour
from ..pipeline.plan import check_pad_value, parse_diameter
from . import codecs
from .batching import Item, segment_many
from .config import ServeConfig

log = logging.getLogger("ray.serve")
SEGMENT_PARAMS = {"format", "mode", "channel", "plane", "ids", "exclude_border", "diameter", "pad_value"}
SEGMENT_PARAMS |= {"pixel_size", "invert"}

api = FastAPI(
    title="spiralray",
    version="1",  # the HTTP API's version (the /v1/ routes), not the package's
    description="SpiralNet nuclei segmentation. POST an image's bytes to /v1/segment; get its labels.",
)


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


@api.exception_handler(RequestValidationError)
async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    e = exc.errors()[0]
    where = ".".join(str(p) for p in e["loc"][1:]) or e["loc"][0]
    return _error(422, f"bad {e['loc'][0]} value {where}={e.get('input')!r}: {e['msg']}")


@api.exception_handler(HTTPException)
async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))


@api.exception_handler(Exception)
async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("internal error")  # a bug, never a user mistake: keep the traceback in the log
    return _error(500, f"internal error: {exc.__class__.__name__}: {exc}")


IMAGE_BODY = {"schema": {"type": "string", "format": "binary"}}
SEGMENT_OPENAPI = {
    "requestBody": {
        "required": True,
        "description": "The image's bytes: a TIFF, PNG or .npy file "
        "(2-D, or 3-D with ?channel=C or ?plane=Z).",
        "content": dict.fromkeys(codecs.MEDIA_TYPES, IMAGE_BODY),
    }
}
SEGMENT_RESPONSES = {
    200: {
        "description": "The labels (H x W: uint32 ids, or uint8 0/1 with mode=semantic), or the "
        "per-object table with format=json.",
        "content": {media: IMAGE_BODY for f, media in codecs.FORMATS.items() if f != "json"}
        | {"application/json": {}},
    },
    400: {"description": "empty or undecodable body"},
    413: {"description": "body or image over the configured limits"},
    415: {"description": "missing or unsupported Content-Type"},
    422: {"description": "unsupported dtype, dimensionality, image size or query value"},
    503: {"description": "queue full: retry later (Retry-After)"},
}


@serve.deployment(name="Segmenter")
class Segmenter:
    """Holds the engine; ``run_batch`` segments the images of concurrent requests together."""

    def __init__(self, defaults: dict):
        self.defaults = defaults  # the builder's settings; a user_config may override some
        # Every batch's torch work runs on this one thread (see batching: torch from several
        # threads makes OpenMP's parallel regions sleep between calls).
        self.compute = ThreadPoolExecutor(1, thread_name_prefix="spiralray-engine")
        self.engine = None
        self.info: dict = {}
        self.key = None
        self.reload_error: dict | None = None
        self.applied: dict = {}

    async def reconfigure(self, user_config: dict) -> None:
        cfg = ServeConfig.from_dict({**self.defaults, **(user_config or {})})
        if cfg.threads:
            import torch

            # OpenMP's thread count is per calling thread: set it where the engine runs.
            await self._on_compute(torch.set_num_threads, cfg.threads)
        key = (cfg.model, cfg.tracking_uri, cfg.generation, cfg.device, cfg.engine_batch_size)
        if key != self.key:
            try:  # off the event loop: requests keep being served by the current engine
                engine, info = await asyncio.to_thread(on_passing_thread, load_model, cfg)
            except Exception as exc:
                if self.engine is None:
                    raise  # nothing to serve with: the replica must not start
                # Keep serving the model that works; say why the new one is not served.
                self.reload_error = {"model": cfg.model, "generation": cfg.generation, "error": str(exc)}
                log.exception("model reload failed; still serving %s", self.info.get("source"))
            else:
                # One assignment each: a running batch keeps the engine it started with.
                self.engine, self.info, self.key, self.reload_error = engine, info, key, None
        self.run_batch.set_max_batch_size(cfg.max_batch_size)
        self.run_batch.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)
        self.applied = cfg.user_config()  # what deploy.wait_model waits for

    async def segment(self, item: Item) -> dict:
        return await self.run_batch(item)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def run_batch(self, items: list[Item]) -> list[dict]:
        engine, info = self.engine, self.info
        t0 = time.perf_counter()
        results = await self._on_compute(segment_many, engine, items)
        seconds = time.perf_counter() - t0
        return [_reply(r, len(items), seconds, info) for r in results]

    async def _on_compute(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.compute, fn, *args)

    def model(self) -> dict:
        return {**self.info, "reload_error": self.reload_error, "applied": self.applied, "pid": os.getpid()}


def _reply(result, batch: int, seconds: float, info: dict) -> dict:
    if isinstance(result, SpiralrayError):
        return {"error": str(result), "status": getattr(result, "status", 422)}
    if isinstance(result, Exception):
        log.error("segmenting failed", exc_info=result)
        return {"error": f"internal error: {result.__class__.__name__}: {result}", "status": 500}
    return {
        "labels": result.labels,
        "table": result.table,
        "objects": len(result.table["id"]),
        "regions": result.regions,
        "batch": batch,
        "seconds": seconds,
        "version": info.get("version"),
        "diameter": result.diameter,
    }


def load_model(cfg: ServeConfig):
    """(engine, description) for ``cfg.model``; a registry alias is resolved to its version first
    so the description names exactly the weights loaded."""
    from .. import api as spiral_api
    from .. import modelzoo
    from ..io import storage

    model = cfg.model
    if model and model.startswith("models:/"):
        from ..train import registry

        if cfg.tracking_uri:  # the registry's only setting is this variable (registry.tracking_uri)
            os.environ["MLFLOW_TRACKING_URI"] = cfg.tracking_uri

        info = registry.describe(model)
        path = info["pinned"]
        info = {**info, "source": model}
    else:
        path = modelzoo.default_model_dir() if model in (None, "", "default") else model
        meta = storage.load_model_dir(path)[1] if os.path.isdir(path) else {}
        info = {
            "name": os.path.basename(os.path.normpath(path)),
            "version": None,
            "source": model or "shipped",
            "metrics": {k: v for k, v in meta.items() if k != "spiralnet"},
        }
    engine = spiral_api.load_engine(path, device=cfg.device, batch_size=cfg.engine_batch_size)
    info.update(config=engine.cfg.to_dict(), device=str(engine.device), generation=cfg.generation)
    return engine, info


@serve.deployment(name="Ingress")
@serve.ingress(api)
class Ingress:
    def __init__(self, segmenter, limits: dict):
        self.segmenter = segmenter
        self.max_bytes = int(limits["max_bytes"])
        self.max_pixels = int(limits["max_pixels"])
        self.admit = int(limits["admit"])  # requests the segmenter can hold, running + queued
        self.admitted = 0  # one event loop: no lock needed

    @api.get("/healthz", summary="200 when the model is loaded and the segmenter answers")
    async def healthz(self):
        try:
            info = await asyncio.wait_for(self.segmenter.model.remote(), timeout=2)
        except Exception as exc:
            return _error(503, f"not ready: {exc.__class__.__name__}")
        return {"status": "ok", "model": info.get("name"), "version": info.get("version")}

    @api.get("/v1/model", summary="The served model: name, version, aliases, config, metrics")
    async def model(self):
        info = await self.segmenter.model.remote()
        # The replica's process and the registry's address (it may hold credentials) are the
        # cluster's business, not a client's.
        info.pop("pid", None)
        applied = info.pop("applied", {})
        info["batching"] = {k: applied.get(k) for k in ("max_batch_size", "batch_wait_timeout_s")}
        limits = {"max_bytes": self.max_bytes, "max_pixels": self.max_pixels, "admit": self.admit}
        return {**info, "limits": limits}

    @api.post(
        "/v1/segment",
        summary="Segment one image",
        openapi_extra=SEGMENT_OPENAPI,
        responses=SEGMENT_RESPONSES,
        response_class=Response,
    )
    async def segment(
        self,
        request: Request,
        format: Literal["tiff", "png", "npy", "json"] = Query("tiff", description="response format"),
        mode: Literal["instance", "semantic"] = Query("instance", description="ids or a 0/1 mask"),
        channel: int | None = Query(None, ge=0, description="channel of a 3-D image"),
        plane: int | None = Query(None, ge=0, description="plane of a Z x H x W stack (its first axis)"),
        ids: Literal["sequential", "seed"] = Query("sequential", description="1..N or seed-pixel ids"),
        exclude_border: bool = Query(False, description="drop objects touching the image border"),
        diameter: str = Query(
            "auto",
            description="nuclei's diameter in px, a length (e.g. 8um: converted by pixel_size or the "
            "TIFF's OME / ImageJ calibration), or auto (estimated): far from the model's size, the "
            "image is segmented resampled and its labels come back at its resolution",
        ),
        pixel_size: float | None = Query(
            None, gt=0, description="the pixel's side in micrometers, for a diameter given as a length"
        ),
        pad_value: str | None = Query(
            None,
            description="a fill value that is not data (e.g. 0 or nan where the image was stitched or "
            "padded): left out of the intensity statistics and read as background",
        ),
        invert: bool = Query(
            False, description="nuclei darker than the background (brightfield): inverted first"
        ),
    ):
        if self.admitted >= self.admit:  # refuse before reading the body: fast, no memory
            return _error(503, "server busy: the request queue is full, retry later", {"Retry-After": "1"})
        self.admitted += 1
        try:
            options = {"exclude_border": exclude_border, "invert": invert, "pixel_size": pixel_size}
            return await self._segment(
                request, format, mode, channel, plane, ids, diameter, pad_value, options
            )
        finally:
            self.admitted -= 1

    async def _segment(
        self, request, format, mode, channel, plane, ids, diameter, pad_value, options
    ) -> Response:
        t0 = time.perf_counter()
        try:  # before the body is read: a bad value costs nothing
            pad = check_pad_value(pad_value)
            size = parse_diameter(diameter, "diameter")
        except SpiralrayError as exc:
            return _error(422, str(exc))
        try:
            # the body's own calibration, only where it is used: a length to convert, or the
            # table's micrometer columns
            length = isinstance(size, str) and size != "auto"
            calibration = (length or format == "json") and options["pixel_size"] is None
            image, recorded = await self._read_image(request, channel, plane, calibration)
            if format == "png" and mode == "instance" and ids == "seed":
                raise codecs.RequestError(422, "seed ids do not fit 16-bit PNG: use format=tiff or npy")
        except codecs.RequestError as exc:
            return _error(exc.status, str(exc))
        try:
            pixel_size = options["pixel_size"] or recorded
            item = Item(
                image, channel, ids, options["exclude_border"], size, pad, pixel_size, options["invert"]
            )
            reply = await self.segmenter.segment.remote(item)
        except BackPressureError:  # the handle's own bound (several ingress replicas share it)
            return _error(503, "server busy: the request queue is full, retry later", {"Retry-After": "1"})
        if "error" in reply:
            return _error(reply["status"], reply["error"])
        labels = reply["labels"] if mode == "instance" else (reply["labels"] > 0).astype(np.uint8)
        headers = {
            "X-Objects": str(reply["objects"]),
            "X-Batch-Images": str(reply["batch"]),
            "X-Model-Version": str(reply["version"]),
            **codecs.polarity_headers(reply.get("diameter"), options["invert"]),
        }
        try:
            if format == "json":
                body = json.dumps(codecs.table_json(reply["table"], labels.shape), allow_nan=False).encode()
            else:
                body = await asyncio.to_thread(codecs.encode, labels, format)
        except codecs.RequestError as exc:
            return _error(exc.status, str(exc))
        headers["X-Seconds"] = f"{time.perf_counter() - t0:.4f}"
        return Response(body, media_type=codecs.FORMATS[format], headers=headers)

    async def _read_image(
        self, request: Request, channel: int | None, plane: int | None, calibration: bool = False
    ) -> tuple[np.ndarray, float | None]:
        """(the plane to segment, the pixel size in micrometers a TIFF body records, read when
        ``calibration`` asks for it, else None)."""
        unknown = sorted(set(request.query_params) - SEGMENT_PARAMS)
        if unknown:
            raise codecs.RequestError(
                422, f"unknown query parameter(s) {unknown} (known: {', '.join(sorted(SEGMENT_PARAMS))})"
            )
        kind = codecs.media_kind(request.headers.get("content-type"))
        declared = request.headers.get("content-length")
        if declared and declared.isdigit():
            codecs.check_length(int(declared), self.max_bytes)  # refuse before reading the body
        chunks, size = [], 0
        async for chunk in request.stream():  # a chunked body is counted as it arrives
            size += len(chunk)
            codecs.check_length(size, self.max_bytes)
            chunks.append(chunk)
        data = b"".join(chunks)
        image = await asyncio.to_thread(codecs.decode, data, kind, self.max_pixels)
        if kind == "png" and channel is None and (grey := grey_of_colour(image)) is not None:
            image = grey  # a grey PNG saved as RGB(A), as the CLI reads it
        image = codecs.take_plane(image, plane, channel)
        codecs.check_channel(image.shape, channel)
        wanted = calibration and kind == "tiff"
        return image, (await asyncio.to_thread(codecs.tiff_pixel_size, data) if wanted else None)


def build_app(args: dict | ServeConfig | None = None):
    """The Serve application for a config (a ``ServeConfig`` or the Serve config's ``args``)."""
    cfg = args if isinstance(args, ServeConfig) else ServeConfig.from_dict(args)
    scale = {"autoscaling_config": cfg.autoscaling} if cfg.autoscaling else {"num_replicas": cfg.replicas}
    # max_surge_percent: a restart (new code or args) starts replacements before stopping the
    # old replicas, so it has no downtime either when the cluster has room for them.
    segmenter = Segmenter.options(
        ray_actor_options={"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus},
        max_ongoing_requests=cfg.segmenter_max_ongoing,
        # A backstop only: the ingress admits at most ``admit`` requests. The handle also counts
        # requests waiting while it probes a busy replica, so a bound of max_queued alone would
        # refuse requests the replica has room for.
        max_queued_requests=cfg.admit,
        user_config=cfg.user_config(),
        max_surge_percent=100,
        **scale,
    ).bind(cfg.user_config())
    limits = {"max_bytes": cfg.max_bytes, "max_pixels": cfg.max_pixels, "admit": cfg.admit}
    return Ingress.options(
        num_replicas=cfg.ingress_replicas,
        ray_actor_options={"num_cpus": cfg.ingress_num_cpus},
        max_ongoing_requests=cfg.ingress_max_ongoing,
        max_queued_requests=cfg.ingress_max_queued,
        backpressure_config={"retry_after_s": 1},
        max_surge_percent=100,
    ).bind(segmenter, limits)
