"""``spiralray segment`` for any input: one image or an archive, in this process or on Ray.

The executor is a scheduling choice, never an answer-changing one. ``auto`` picks Ray for an
archive, a URL, a large image (over ``RAY_PIXELS``) and whenever a Ray address is given (the
``--address`` option or ``RAY_ADDRESS``), and stays in this process for one small local image
(starting Ray costs ~5 s). In an archive, an image that cannot be read is reported and the
others are finished.
"""

from __future__ import annotations

import logging
import os
import time

from ..errors import SpiralrayError
from ..io.archive import Entry, indexed, is_archive, list_images, output_for
from ..io.readers import is_url, redact
from .run import NotAnImage, Options, OtherRun, check_image_run, output_lease, preflight, start_image_run

log = logging.getLogger(__name__)

RAY_PIXELS = 64 * 2**20
EXECUTORS = ("auto", "local", "ray")


def choose_executor(input: str, executor: str, address: str | None, shape=None) -> str:
    if executor not in EXECUTORS:
        raise SpiralrayError(f"unknown executor {executor!r} (use {', '.join(EXECUTORS)})")
    if executor != "auto":
        return executor
    if address or os.environ.get("RAY_ADDRESS") or is_url(input) or is_archive(input):
        return "ray"
    if shape is not None and shape[0] * shape[1] > RAY_PIXELS:
        return "ray"
    return "local"


def check_output(input: str, output: str, opts: Options) -> None:
    """The checks that need no model: an image's output kind and place; an archive's output
    never inside its input (nor the input inside the output)."""
    if is_archive(input):
        from ..io.archive import check_archive_output
        from ..io.storage import check_parent
        from .run import check_apart

        check_apart(input, output)
        check_parent(output)
        check_archive_output(output, input)
        return
    preflight(input, output, opts)


def segment(
    input: str,
    output: str,
    engine,
    opts: Options,
    model: str | None = None,
    executor: str = "auto",
    address: str | None = None,
    ropts=None,
    progress=None,
) -> dict:
    """Segment ``input`` (an image or an archive) into ``output``; returns the summary."""
    from ..io.readers import check_protocol, open_image

    check_protocol(input)
    archive = is_archive(input)
    entries = list_images(input) if archive else [Entry("", input)]
    shape = None
    if archive:
        check_output(input, output, opts)  # before the archive's index is written there
    if not archive:
        preflight(input, output, opts)
        # opened here, before any Ray starts: a missing or unreadable image is one line at once
        shape = open_image(input, opts.channel, opts.plane).shape
    chosen = choose_executor(input, executor, address, shape)
    if chosen == "local" and archive:
        raise SpiralrayError("an archive runs on Ray: use --executor ray (or auto)")
    with output_lease(output, archive):  # one run at a time per output
        if chosen == "local":
            from .local import segment_image_file

            return {**segment_image_file(input, output, engine, opts, model, progress), "executor": "local"}
        return _on_ray(entries, archive, input, output, engine, opts, model, address, ropts, progress)


def _on_ray(entries, archive, input, output, engine, opts, model, address, ropts, progress) -> dict:
    import ray

    from .local import usable_cpus
    from .ray_exec import RayOptions, check_resources, init_ray, run_images

    t0 = time.perf_counter()
    ropts = ropts or RayOptions()
    embedded = init_ray(address, None if (address or os.environ.get("RAY_ADDRESS")) else usable_cpus())
    runs, finished, failed, paths, refused = [], [], [], {}, []
    for index, e in indexed(output, entries, source=input) if archive else enumerate(entries):
        paths[index] = e.path
        try:
            if archive:
                run = check_image_run(
                    e.url, output_for(output, e), engine.net, opts, model, index=index, in_archive=True
                )
            else:
                run = check_image_run(e.url, output, engine.net, opts, model, index=index)
        except NotAnImage as exc:  # an output spiralray wrote, found among the images
            log.info("%s", exc)
            continue
        except SpiralrayError as exc:
            if not archive:
                raise
            failed.append({"input": redact(e.url), "error": str(exc)})
            if isinstance(exc, OtherRun):  # the output's parameters differ
                refused.append(exc.differs)
            continue
        (finished if run.finished is not None else runs).append(run)
    _same_refusal(output, refused, runs + finished)
    if runs:  # work to do: the actors must fit somewhere (a finished archive needs none)
        check_resources(ropts, embedded)
    # per-image statistics are a pass over each image's chunks: one Ray task per image
    plan_task = ray.remote(num_cpus=0.5)(_plan)
    pending = {
        id(r): plan_task.remote(r.input, opts, engine.cfg, r.index, r.reader.missing_chunks)
        for r in runs
        if r.plan is None
    }
    started = []
    for r in runs:
        try:
            try:
                plan = ray.get(pending[id(r)]) if id(r) in pending else None
            except ray.exceptions.RayTaskError as exc:  # its cause is the one-line user error
                if isinstance(exc.cause, SpiralrayError):
                    raise exc.cause from None
                raise
            start_image_run(r, plan)
            started.append(r)
        except SpiralrayError as exc:
            if not archive:
                raise
            failed.append({"input": redact(r.input), "error": str(exc)})
    result = (
        run_images(started, engine.net, opts, ropts, progress) if started else {"images": [], "failed": []}
    )
    if result["failed"] and not archive:
        raise SpiralrayError(result["failed"][0]["error"])
    images = [r.finished for r in finished] + result["images"]
    failed += result["failed"]
    summary = {
        "executor": "ray",
        "input": redact(input) if is_url(input) else input,
        "output": output,
        "images": len(images),
        "failed": failed,
        "objects": sum(i.get("objects", 0) for i in images),
        "tiles": sum(i.get("tiles", 0) for i in images),
        "regions": sum(i.get("regions", 0) for i in images),
        "busy_seconds": result.get("busy_seconds", {}),
        "regions_by_actor": result.get("regions_by_actor", {}),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if archive:
        summary.update(_archive_root(output, paths, finished + started, failed))
    if not archive and images:
        summary = {
            **images[0],
            **{k: summary[k] for k in ("executor", "busy_seconds", "regions_by_actor", "seconds")},
        }
    else:
        summary["per_image"] = images
    return summary


def _same_refusal(output: str, differs: list[str], others: list) -> None:
    """A re-run whose parameters differ from the output's is refused for every image alike: one
    line, a mistake in the command (exit 2), not one failure per image (an image that failed
    for another reason is reported once the command is right). Where other images have work or
    are finished, each refused image is reported with them."""
    if len(differs) > 1 and not others and len(set(differs)) == 1:
        raise SpiralrayError(
            f"output {redact(output)} holds another run of its {len(differs)} images "
            f"({differs[0]} differ): use --overwrite to replace them"
        )


def _archive_root(output: str, paths: dict, runs: list, failed: list[dict]) -> dict:
    """Make the archive's output one zarr hierarchy and write its object table: the rows of the
    images this run finished or found finished (a failed image's are left out, as its labels
    are; when every image failed, as when a re-run's parameters differ, nothing is touched).
    Returns the summary's ``objects_table`` (None: no image finished), and its
    ``objects_table_error`` when the table could not be written: the images stay finished."""
    from ..io.archive_root import OBJECTS, write_groups, write_objects

    bad = {f["input"] for f in failed}
    done = [(r.index, paths[r.index], r.output) for r in runs if redact(r.input) not in bad]
    if not done:  # every image refused or failed: an earlier run's table stays as it was
        return {"objects_table": None}
    try:
        write_groups(output, [url[len(output.rstrip("/")) + 1 :] for _, _, url in done])
        write_objects(output, done)
    except SpiralrayError as exc:
        return {"objects_table": None, "objects_table_error": str(exc)}
    return {"objects_table": f"{output.rstrip('/')}/{OBJECTS}"}


def _plan(url: str, opts: Options, cfg, index: int, missing: int):
    """A Ray task: one image's plan (its exact statistics need a pass over all its chunks).
    ``missing``: its missing chunks, which the driver counted from its listing of the store
    (a big archive's images are not listed twice)."""
    from ..io.readers import open_image
    from .plan import make_plan

    reader = open_image(url, opts.channel, opts.plane)
    reader._missing = missing
    return make_plan(
        reader,
        cfg,
        opts.tile_size,
        index,
        opts.diameter,
        opts.pad_value,
        opts.invert,
    )
