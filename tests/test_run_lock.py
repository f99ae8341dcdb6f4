"""Issue 23, finding 10: a run folder is locked while a process writes it (``flock`` on ``<run>/.segcore.lock``,
`segcore.io.lock_folder`); a second ``segcore run`` there exits 2 naming the holder (pid, host, start time, command)
instead of deleting its in-progress checkpoint, and the kernel frees the lock when the holder is killed. Under
torchrun only rank 0 prepares the run folder, so only it locks (tests/test_reliability_dist.py runs two ranks)."""

from __future__ import annotations

import gc
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from segcore.cli.main import main
from segcore.errors import FolderInUseError
from segcore.io import LOCK, lock_folder

PIPELINE = (Path(__file__).parent / "data" / "small.toml").read_text()  # 4 steps, checkpoints at 2 and 4
ENV = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")} | {"OMP_NUM_THREADS": "1"}


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def probe(folder: Path) -> subprocess.CompletedProcess:
    """Another process trying to lock *folder*."""
    code = f"from segcore.io import lock_folder\nlock_folder({str(folder)!r}, what='probe', hint='Wait.')"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)


def holder(folder: Path) -> dict | None:
    try:
        return json.loads((folder / LOCK).read_text())
    except (OSError, ValueError):
        return None


@pytest.mark.slow  # ~9 s: two segcore processes on 2 idle AVX2 cores
def test_a_second_run_in_a_locked_folder_exits_2_naming_the_holder_and_the_kill_frees_it(tmp_path, capsys):
    long = write(tmp_path / "long.toml", PIPELINE.replace("iters = 4", "iters = 100000"))
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "segcore", "run", str(long), "-q", "--out-dir", str(out)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not (list(out.glob("checkpoints/ckpt-*")) and (holder(out) or {}).get("pid") == first.pid):
            assert first.poll() is None, first.stderr.read()
            assert time.monotonic() < deadline, "the first run wrote no checkpoint in 180 s"
            time.sleep(0.2)
        started = holder(out)["started"]
        for flags in ((), ("--resume",), ("--overwrite",)):
            code = main(["run", str(long), "-q", "--out-dir", str(out), *flags])
            err = capsys.readouterr().err
            assert code == 2 and "Traceback" not in err
            assert err.startswith(f"error: segcore run: {out} is being written by another process (pid {first.pid} on "
                                  f"host {socket.gethostname()}, since {started}: ")  # fmt: skip
            assert f"segcore run {long} -q --out-dir {out}). Wait for it to end (or stop it), or choose another" in err
        assert first.poll() is None  # the first run goes on, its checkpoints untouched
    finally:
        first.kill()
        first.wait()
        first.stderr.close()
    short = write(tmp_path / "short.toml", PIPELINE.replace("iters = 4", "iters = 2"))
    assert main(["run", str(short), "-q", "--out-dir", str(out), "--overwrite"]) == 0, capsys.readouterr().err
    assert holder(out)["pid"] == os.getpid()


def test_the_lock_is_reentrant_in_a_process_and_released_with_its_last_handle(tmp_path):
    folder = tmp_path / "f"
    lock = lock_folder(folder, what="w", hint="Wait.")
    again = lock_folder(folder, what="w", hint="Wait.")  # the same process: a second handle, no refusal
    refused = probe(folder)
    assert refused.returncode == 1 and FolderInUseError.__name__ in refused.stderr
    assert f"probe: {folder} is being written by another process (pid {os.getpid()} on host" in refused.stderr
    lock.release()
    assert probe(folder).returncode == 1  # `again` still holds it
    del again
    gc.collect()
    assert probe(folder).returncode == 0, "the last handle went: another process takes the lock"


@pytest.mark.parametrize("end", ["returns", "interrupted", "fails to start"])
def test_a_run_lets_go_of_its_folder_when_it_ends_not_when_collected(tmp_path, registry, monkeypatch, end):
    """run_pipeline releases the run folder's lock as the run ends, however it ends, while something still holds the
    trainer (a hook keeping a bound method, the traceback of the exception): a sweep trains many runs in one
    process, and the next command in the folder must not be refused."""
    from segcore.config import load_pipeline
    from segcore.engine.run import run_pipeline
    from segcore.engine.trainer import Interrupted, Trainer
    from segcore.errors import ConfigError

    kept = []
    fit, init = Trainer.fit, Trainer.__init__

    def keeping_fit(self):
        kept.append(self)
        result = fit(self)
        if end == "interrupted":
            raise Interrupted("interrupted at the end (this test)")
        return result

    def failing_init(self, *args, **kw):
        init(self, *args, **kw)
        kept.append(self)
        raise ConfigError("train.start_iter: out of range (this test)")

    monkeypatch.setattr(Trainer, "fit", keeping_fit)
    if end == "fails to start":
        monkeypatch.setattr(Trainer, "__init__", failing_init)
    out = tmp_path / "run"
    text = PIPELINE.replace("iters = 4", "iters = 1").replace("[run]\n", f'[run]\nout_dir = "{out}"\n')
    cfg = load_pipeline(write(tmp_path / "short.toml", text), registry=registry)
    if end == "returns":
        run_pipeline(cfg, registry, progress=False)
        assert (out / "metrics.json").is_file()
    else:
        with pytest.raises((Interrupted, ConfigError)) as caught:  # the traceback keeps the frames and the trainer
            run_pipeline(cfg, registry, progress=False)
        assert "(this test)" in str(caught.value)
    assert (out / LOCK).is_file() and len(kept) == 1
    assert probe(out).returncode == 0, "the ended run still holds its folder"
