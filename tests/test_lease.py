"""One run at a time per output (``io.lease``). From a user test: a job submitted twice into one
output left images with empty labels, marked complete."""

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
import tifffile

from spiralray.data.synthetic import SyntheticSpec, generate
from spiralray.errors import SpiralrayError
from spiralray.io import lease as lease_mod
from spiralray.io.lease import LEASE, TTL, leased
from spiralray.io.output import Output


def _foreign(out: Output, **kw) -> None:
    """A lease as another run writes it."""
    held = {"token": "other", "host": "node-7", "pid": 4242, "started": None, "renewed": time.time()}
    out.put_json(LEASE, {**held, **kw})


def test_a_second_run_on_an_output_in_use_is_refused_and_the_first_finishes(tmp_path):
    """Two real runs: a CLI run in another process holds the output; this one is refused with
    one line, and the first one's output is complete and whole."""
    from spiralray.api import load_engine
    from spiralray.pipeline.run import Options
    from spiralray.pipeline.segment import segment

    image, _ = generate(SyntheticSpec(700, 700, density=0.0008), seed=5)
    tifffile.imwrite(tmp_path / "img.tif", image)
    out = tmp_path / "out.zarr"
    first = subprocess.Popen(
        [sys.executable, "-m", "spiralray", "segment", tmp_path / "img.tif", out, "--tile-size", "256"],
        env={**os.environ, "SPIRALRAY_LOG": os.devnull},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while not (out / LEASE).exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert (out / LEASE).exists(), first.communicate()
    with pytest.raises(SpiralrayError, match=r"out.zarr is in use by another run \(host .*, pid \d+") as e:
        segment(str(tmp_path / "img.tif"), str(out), load_engine(), Options(tile_size=256), executor="local")
    assert "run again in" not in str(e.value)  # this host: a stopped holder is seen at once
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert not (out / LEASE).exists()  # released
    manifest = json.loads((out / ".spiralray/manifest.json").read_text())
    assert manifest["complete"] is True and manifest["summary"]["objects"] > 5
    again = segment(str(tmp_path / "img.tif"), str(out), load_engine(), Options(tile_size=256))
    assert again["resumed"] == "already complete"


def test_a_stopped_or_silent_holder_frees_the_lease(tmp_path, monkeypatch):
    out = Output(str(tmp_path / "o.zarr"))
    # another host, renewed just now: refused, with when to try again
    _foreign(out)
    with pytest.raises(
        SpiralrayError, match=r"in use by another run \(host node-7, pid 4242.*run again in 1[12]\d s"
    ):
        with leased(out):
            pass
    # another host, silent for longer than TTL: its holder is dead
    _foreign(out, renewed=time.time() - TTL - 5)
    with leased(out):
        assert json.loads((tmp_path / "o.zarr" / LEASE).read_text())["pid"] == os.getpid()
    assert not any((tmp_path / "o.zarr").iterdir())  # nothing but the lease written: nothing left
    # this machine, a process that has ended (a killed job): free at once
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    here = {"host": socket.gethostname(), "machine": lease_mod._machine()}
    _foreign(out, pid=gone.pid, **here)
    with leased(out):
        pass
    # this machine, a live process whose lease was left unrenewed (a failed release): free too
    _foreign(out, pid=os.getppid(), renewed=time.time() - TTL - 5, **here)
    with leased(out):
        pass
    # the same hostname in another container (another pid namespace): judged by age alone
    _foreign(out, pid=gone.pid, host=socket.gethostname(), machine="other-container")
    with pytest.raises(SpiralrayError, match="in use by another run .*run again in"):
        with leased(out):
            pass
    # a folder the user made stays when a run leaves it empty; a refused or interrupted acquire
    # leaves no lease behind
    mine = tmp_path / "mine.zarr"
    mine.mkdir()
    with leased(Output(str(mine))):
        pass
    assert mine.is_dir() and not any(mine.iterdir())

    def interrupted(seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(lease_mod.time, "sleep", interrupted)
    with pytest.raises(KeyboardInterrupt):
        with leased(Output(str(mine))):
            pass
    assert not (mine / LEASE).exists()


def test_of_two_runs_that_start_together_one_goes_on(s3):
    out = Output("s3://spiralray-test/lease/together.zarr")
    results = []

    def take():
        try:
            with leased(out):
                time.sleep(0.5)
            results.append("ran")
        except SpiralrayError as exc:
            results.append(str(exc))

    runs = [threading.Thread(target=take) for _ in range(2)]
    for t in runs:
        t.start()
    for t in runs:
        t.join()
    assert sorted(r == "ran" for r in results) == [False, True], results
    assert "is in use by another run" in next(r for r in results if r != "ran")
    assert out.get_json(LEASE, "lease") is None  # released on the object store too


def test_a_run_whose_lease_was_taken_over_does_not_end_as_complete(tmp_path, monkeypatch):
    """A review's finding: the loss was said only after the run had marked the output complete
    and dropped the scratch the other run was assembling from."""
    monkeypatch.setattr(lease_mod, "RENEW", 0.05)
    monkeypatch.setattr(lease_mod, "FRESH", 0.0)  # the takeover below comes at once, not after TTL
    out = Output(str(tmp_path / "o.zarr"))
    image = Output(str(tmp_path / "o.zarr" / "plate" / "A1.zarr"))  # an archive's image output
    with pytest.raises(SpiralrayError, match="was taken over by another run .*--overwrite"):
        with leased(out):
            _foreign(out)  # a run that saw this one silent for TTL took the output
            for step in (lambda: image.write_manifest({"complete": True}), image.drop_scratch):
                with pytest.raises(SpiralrayError, match="this run stops before finishing it"):
                    step()
            image.write_manifest({"complete": False})  # work in progress is not refused
    assert out.get_json(LEASE, "lease")["token"] == "other"  # the other run's lease is left
    assert image.manifest() == {"complete": False}


def test_an_archive_run_and_a_one_image_run_inside_its_output_keep_apart(tmp_path, s3):
    """An archive run's lease is on its output root, a one-image run's on the image's output:
    each looks at the other's, so neither writes an image the other is writing."""
    from spiralray.api import load_engine
    from spiralray.pipeline.run import Options, check_image_run

    for root in (str(tmp_path / "archive_out"), "s3://spiralray-test/lease/archive_out"):
        _foreign(Output(root))  # an archive run (on another node) writing root
        inner = Output(f"{root}/plate/a1.zarr")
        with pytest.raises(SpiralrayError, match=r"a1.zarr is inside .*archive_out, which is in use by"):
            with leased(inner, above=True):
                pass
        assert inner.get_json(LEASE, "lease") is None  # the refused run left nothing behind
        if not root.startswith("s3://"):  # not even the folders it made on the way (a review)
            assert sorted(p.name for p in (tmp_path / "archive_out").iterdir()) == [".spiralray"]
        Output(root).put_json(LEASE, {"renewed": None})  # a damaged lease holds nothing
        with leased(inner, above=True):  # the archive run ended: the image run goes on
            pass
        Output(root).delete(LEASE)
    # interrupted while looking above (Ctrl-C during an S3 scan): no lease left held
    solo = Output(str(tmp_path / "solo.zarr"))

    def interrupted(out):
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lease_mod, "_held_above", interrupted)
        with pytest.raises(KeyboardInterrupt):
            with leased(solo, above=True):
                pass
    assert solo.get_json(LEASE, "lease") is None and not lease_mod._ACTIVE
    # an archive run reaching an image output a one-image run holds: that image is refused
    image, _ = generate(SyntheticSpec(300, 300, density=0.0008), seed=2)
    tifffile.imwrite(tmp_path / "a1.tif", image)
    held = Output(str(tmp_path / "archive_out" / "a1.zarr"))
    _foreign(held)
    net = load_engine().net
    with pytest.raises(SpiralrayError, match=r"a1.zarr is in use by another run \(host node-7"):
        check_image_run(str(tmp_path / "a1.tif"), held.url, net, Options(), in_archive=True)
    held.delete(LEASE)  # that run released it (and its empty folder went with it)
    held.remove_empty(root=True)
    check_image_run(str(tmp_path / "a1.tif"), held.url, net, Options(), in_archive=True)


def test_an_images_last_steps_read_the_lease_once(tmp_path, monkeypatch):
    """Finalize, complete and drop the scratch each verify the lease: a read that found it this
    run's serves the next FRESH seconds (another run can take it only after TTL unrenewed)."""
    out = Output(str(tmp_path / "o.zarr"))
    reads = []
    real = Output.get_json
    monkeypatch.setattr(
        Output, "get_json", lambda self, key, what: reads.append(key) or real(self, key, what)
    )
    with leased(out):
        before = len(reads)
        for _ in range(3):
            lease_mod.verify(out.url + "/img.zarr")
        assert len(reads) == before  # the acquire's read-back has just found it
        monkeypatch.setattr(lease_mod, "FRESH", 0.0)
        lease_mod.verify(out.url + "/img.zarr")
        assert len(reads) == before + 1
