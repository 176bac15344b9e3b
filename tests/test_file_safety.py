"""Every output kind onto everything a user may point it at (issue 11, D13-D16).

Outputs: `compile -o`, `compile --weights-out`, `render -o`, `run -o`, `train --metrics-json`
and checkpoints. Targets: a FIFO, a symbolic link, a 0700 file, device nodes like /dev/null
and /dev/full, the command's own input, and a full file system (a small tmpfs when this
process may mount one, else ENOSPC injected into the writer). The rules: devices and pipes
are written through and stay what they were, links stay links and their target gets the
data, a file keeps its mode, inputs are never overwritten, and a failed write is a non-zero
exit with a clear message that leaves nothing behind (the old file intact, no temporaries).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from cnndsl import files
from cnndsl.cli import main
from cnndsl.files import OutputConflict, refuse_inputs, write_outputs

DEFECTS = Path(__file__).parent / "data" / "defects"
NETWORK = """input 1x8x8
Conv(4, 3, pad=1), ReLU, flatten, FC(3)
"""


@dataclass
class Output:
    """One output kind: the command line that writes `target`, and the inputs it reads."""

    name: str
    command: Callable[[Path, Path], list[str]]
    """(work folder, target) -> CLI arguments."""
    inputs: Callable[[Path], list[Path]]


def _train(work: Path, extra: list[str]) -> list[str]:
    return [
        "train",
        str(work / "net.cnn"),
        "--data",
        "synthetic:24",
        "--backend",
        "numpy",
        "--epochs",
        "1",
        "--no-progress",
        *extra,
    ]


OUTPUTS = [
    Output("compile -o", lambda w, t: ["compile", str(w / "net.cnn"), "-o", str(t)], lambda w: [w / "net.cnn"]),
    Output(
        "compile --weights-out",
        lambda w, t: ["compile", str(w / "net.cnn"), "-o", str(w / "model.py"), "--weights-out", str(t)],
        lambda w: [w / "net.cnn"],
    ),
    Output("render -o", lambda w, t: ["render", str(w / "net.cnn"), "--format", "dot", "-o", str(t)], lambda w: [w / "net.cnn"]),
    Output(
        "run -o",
        lambda w, t: ["run", str(w / "net.cnn"), "--input", str(w / "x.npy"), "-o", str(t)],
        lambda w: [w / "net.cnn", w / "x.npy"],
    ),
    Output("train --metrics-json", lambda w, t: _train(w, ["--metrics-json", str(t)]), lambda w: [w / "net.cnn"]),
    # The checkpoint's name is fixed (D/checkpoint.npz): the target is put there as that file.
    Output("checkpoint", lambda w, t: _train(w, ["--checkpoint-dir", str(t.parent)]), lambda w: [w / "net.cnn"]),
]
IDS = [o.name for o in OUTPUTS]


def target_in(work: Path, output: Output, name: str = "out.bin") -> Path:
    return work / "ckpt" / "checkpoint.npz" if output.name == "checkpoint" else work / name


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "net.cnn").write_text(NETWORK)
    np.save(tmp_path / "x.npy", np.ones((2, 1, 8, 8), np.float32))
    (tmp_path / "ckpt").mkdir()
    return tmp_path


def invoke(args: list[str]) -> Result:
    return CliRunner().invoke(main, args)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".tmp", ".old")))


@pytest.mark.parametrize("output", OUTPUTS, ids=IDS)
def test_a_fifo_is_written_through_and_stays_a_fifo(work: Path, output: Output) -> None:
    target = target_in(work, output)
    os.mkfifo(target)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(target.read_bytes()), daemon=True)
    reader.start()
    result = invoke(output.command(work, target))
    reader.join(60)
    assert result.exit_code == 0, result.output
    assert stat.S_ISFIFO(os.lstat(target).st_mode)
    assert received and received[0], "the reader got nothing"
    assert leftovers(target.parent) == []


@pytest.mark.parametrize("output", OUTPUTS, ids=IDS)
def test_a_symlink_stays_a_link_and_its_target_gets_the_data(work: Path, output: Output) -> None:
    target = target_in(work, output)
    real = work / "elsewhere" / "real.out"
    real.parent.mkdir()
    real.write_bytes(b"old")
    os.chmod(real, 0o640)
    target.symlink_to(real)
    result = invoke(output.command(work, target))
    assert result.exit_code == 0, result.output
    assert target.is_symlink() and os.readlink(target) == str(real)
    assert real.read_bytes() not in (b"", b"old")
    assert stat.S_IMODE(os.stat(real).st_mode) == 0o640
    assert leftovers(real.parent) == [] and leftovers(target.parent) == []


@pytest.mark.parametrize("output", OUTPUTS, ids=IDS)
def test_a_private_executable_file_keeps_its_mode(work: Path, output: Output) -> None:
    target = target_in(work, output)
    target.write_bytes(b"old")
    os.chmod(target, 0o700)
    result = invoke(output.command(work, target))
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o700  # not 0644: not world-readable, still executable
    assert target.read_bytes() != b"old"


def test_a_new_file_gets_what_open_gives(work: Path) -> None:
    umask = os.umask(0o027)
    try:
        atomic_target = work / "new.txt"
        files.atomic_write(atomic_target, b"x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(os.stat(atomic_target).st_mode) == 0o640


@pytest.fixture
def devices(tmp_path: Path) -> dict[str, Path]:
    """Character devices like /dev/null and /dev/full: private nodes when this process may make them (root)."""
    folder = tmp_path / "dev"
    folder.mkdir()
    nodes = {"null": (1, 3), "full": (1, 7)}
    try:
        for name, (major, minor) in nodes.items():
            os.mknod(folder / name, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        return {name: folder / name for name in nodes}
    except (PermissionError, OSError):
        # No mknod here: the real nodes. A process that cannot make nodes cannot replace them either.
        return {name: Path(f"/dev/{name}") for name in nodes}


@pytest.mark.parametrize("output", OUTPUTS, ids=IDS)
def test_dev_null_is_written_through(work: Path, devices: dict[str, Path], output: Output) -> None:
    target = target_in(work, output)
    if output.name == "checkpoint":
        target.symlink_to(devices["null"])  # the checkpoint's name is fixed: point it at the device
    else:
        target = devices["null"]
    result = invoke(output.command(work, target))
    assert result.exit_code == 0, result.output
    assert stat.S_ISCHR(os.stat(devices["null"]).st_mode)
    assert leftovers(devices["null"].parent) == []


@pytest.mark.parametrize("output", OUTPUTS, ids=IDS)
def test_dev_full_is_an_error_and_stays_a_device(work: Path, devices: dict[str, Path], output: Output) -> None:
    target = target_in(work, output)
    if output.name == "checkpoint":
        target.symlink_to(devices["full"])
    else:
        target = devices["full"]
    result = invoke(output.command(work, target))
    assert result.exit_code == 1, result.output
    assert "No space left on device" in result.output and "Traceback" not in result.output
    assert "wrote" not in result.output
    assert stat.S_ISCHR(os.stat(devices["full"]).st_mode)
    if output.name == "compile --weights-out":
        assert not (work / "model.py").exists()  # written together with the weights, or not at all (D16)


@pytest.mark.parametrize("output", OUTPUTS, ids=IDS)
def test_an_input_is_never_overwritten(work: Path, output: Output) -> None:
    for source in output.inputs(work):
        before = source.read_bytes()
        if output.name == "checkpoint":
            # The checkpoint goes to D/checkpoint.npz: make that name the input (a hard link to it).
            target = work / "ckpt" / "checkpoint.npz"
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
            os.link(source, target)
        else:
            target = source
        result = invoke(output.command(work, target))
        assert result.exit_code in (1, 2), result.output  # render reports it as a bad -o value (a usage error)
        assert "refusing to overwrite" in result.output and "Traceback" not in result.output
        assert source.read_bytes() == before


def test_train_refuses_its_data_file_as_checkpoint_and_metrics(work: Path) -> None:
    data = work / "ckpt" / "checkpoint.npz"
    np.savez(data, x=np.zeros((20, 1, 8, 8), np.float32), y=np.arange(20) % 3)
    before = data.read_bytes()
    args = ["train", str(work / "net.cnn"), "--data", str(data), "--backend", "numpy", "--epochs", "1"]
    for extra in (["--checkpoint-dir", str(data.parent)], ["--metrics-json", str(data)]):
        result = invoke(args + extra)
        assert result.exit_code == 1 and "refusing to overwrite the input file" in result.output, result.output
        assert data.read_bytes() == before
    result = invoke(args + ["--metrics-json", str(work / "ckpt" / "checkpoint.npz"), "--checkpoint-dir", str(work / "other")])
    assert result.exit_code == 1


def test_outputs_that_coincide_are_refused(work: Path) -> None:
    result = invoke(["compile", str(work / "net.cnn"), "-o", str(work / "a.py"), "--weights-out", str(work / "a.py")])
    assert result.exit_code == 1 and "are the same file" in result.output
    (work / "b.py").write_text("")
    (work / "link.py").symlink_to(work / "b.py")
    with pytest.raises(OutputConflict, match="same file"):
        refuse_inputs([work / "b.py", work / "link.py"], [])


def test_a_directory_and_a_socket_are_refused(work: Path) -> None:
    with pytest.raises(IsADirectoryError):
        files.atomic_write(work / "ckpt", b"x")
    import socket

    path = work / "s.sock"
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(path))
        with pytest.raises(OSError, match="not a regular file"):
            files.atomic_write(path, b"x")
        assert stat.S_ISSOCK(os.stat(path).st_mode)
    finally:
        server.close()


# ---------------------------------------------------------------- a full file system


@pytest.fixture
def full_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on a file system with no space left, holding `old.bin` and an old `checkpoint.npz`.

    A filled 1 MiB tmpfs where this process may mount one (root), else ENOSPC injected into
    the writer for files in that folder after a partial write.
    """
    folder = tmp_path / "full"
    folder.mkdir()
    mounted = (
        os.geteuid() == 0
        and shutil.which("mount") is not None
        and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True).returncode == 0
    )
    try:
        (folder / "old.bin").write_bytes(b"old")
        (folder / "checkpoint.npz").write_bytes(b"old checkpoint")
        if mounted:
            with contextlib.suppress(OSError), open(folder / "filler", "wb") as filler:
                while True:
                    filler.write(b"\0" * 65536)
                    filler.flush()
        else:
            stage = files._stage

            def stage_then_fail(target: Path, content: files.Content) -> Path:
                if target.parent != folder:
                    return stage(target, content)

                def partial(handle) -> None:  # type: ignore[no-untyped-def]
                    handle.write(b"partial")
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

                return stage(target, partial)

            monkeypatch.setattr(files, "_stage", stage_then_fail)
        yield folder
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.parametrize("output", OUTPUTS, ids=IDS)
def test_a_full_file_system_leaves_the_old_file_and_no_temporaries(work: Path, full_folder: Path, output: Output) -> None:
    target = full_folder / ("checkpoint.npz" if output.name == "checkpoint" else "old.bin")
    before = target.read_bytes()
    result = invoke(output.command(work, target))
    assert result.exit_code == 1, result.output
    assert "No space left on device" in result.output and "Traceback" not in result.output
    assert target.read_bytes() == before
    assert leftovers(full_folder) == []
    if output.name == "compile --weights-out":
        assert not (work / "model.py").exists()  # the module, on a disk with room, is not left alone either (D16)


def test_compile_to_a_full_disk_leaves_no_weights_file(work: Path, full_folder: Path) -> None:
    """D16: the weights are on a disk with room, the module on a full one: neither is written."""
    weights = work / "w.pt"
    result = invoke(["compile", str(work / "net.cnn"), "-o", str(full_folder / "m.py"), "--weights-out", str(weights)])
    assert result.exit_code == 1 and "No space left on device" in result.output, result.output
    assert not weights.exists() and leftovers(work) == []


def test_a_failed_rename_puts_back_the_files_already_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.write_bytes(b"old a")
    replace = os.replace
    calls = []

    def failing_second(src, dst):  # type: ignore[no-untyped-def]
        calls.append(dst)
        if Path(dst) == second:
            raise OSError(errno.EIO, "Input/output error")
        return replace(src, dst)

    monkeypatch.setattr(files.os, "replace", failing_second)
    with pytest.raises(OSError, match="Input/output error"):
        write_outputs({first: b"new a", second: b"new b"})
    monkeypatch.setattr(files.os, "replace", replace)
    assert first.read_bytes() == b"old a" and not second.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_run_output_is_the_exact_path_and_a_valid_array(work: Path) -> None:
    target = work / "out"  # np.save(path) would have written out.npy
    result = invoke(["run", str(work / "net.cnn"), "--input", str(work / "x.npy"), "-o", str(target)])
    assert result.exit_code == 0 and f"wrote {target}" in result.output
    assert np.load(target, allow_pickle=False).shape == (2, 3) and not (work / "out.npy").exists()


def test_the_review_sample_compiles_onto_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    result = invoke(["compile", str(DEFECTS / "conv.cnn"), "-o", str(fifo)])
    reader.join(60)
    assert result.exit_code == 0 and b"import torch" in received[0] and stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_train_never_writes_over_an_image_of_its_data_folder(work: Path) -> None:
    image = work / "pics" / "cat" / "1.png"
    image.parent.mkdir(parents=True)
    image.write_bytes(b"an image")
    args = ["train", str(work / "net.cnn"), "--data", str(work / "pics"), "--metrics-json", str(image)]
    result = invoke(args)
    assert result.exit_code == 1 and "an image inside the --data folder" in result.output, result.output
    assert image.read_bytes() == b"an image"


def test_numpy_model_save_goes_through_the_writer(work: Path) -> None:
    import cnndsl

    model = cnndsl.parse(NETWORK).to_numpy()
    link = work / "weights.npz"
    (work / "real.npz").write_bytes(b"old")
    link.symlink_to(work / "real.npz")
    model.save(link)
    assert link.is_symlink() and set(np.load(work / "real.npz").files) == set(model.state_dict())


def test_two_outputs_onto_one_device_are_no_conflict(work: Path, devices: dict[str, Path]) -> None:
    null = str(devices["null"])
    result = invoke(["compile", str(work / "net.cnn"), "-o", null, "--weights-out", null])
    assert result.exit_code == 0, result.output
    assert stat.S_ISCHR(os.stat(null).st_mode)


def test_outputs_are_written_together_without_hard_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file system without hard links (no backups to put back) still gets both files."""
    (tmp_path / "a").write_bytes(b"old")

    def no_links(src: object, dst: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(files.os, "link", no_links)
    write_outputs({tmp_path / "a": b"new a", tmp_path / "b": b"new b"})
    assert (tmp_path / "a").read_bytes() == b"new a" and (tmp_path / "b").read_bytes() == b"new b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]
