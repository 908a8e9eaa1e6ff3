import os
import stat
import subprocess
import sys
import textwrap

import pytest

from lwzoo.errors import LwzooError
from lwzoo.files import RunLock, atomic_write_text, check_writable_dir, remove_stale_temps, replace_dir


def test_a_run_lock_refuses_a_second_holder_and_frees_on_release(tmp_path):
    with RunLock(tmp_path / "run"), pytest.raises(LwzooError, match=r"in use by another lwzoo process \(pid \d+"):
        RunLock(tmp_path / "run").acquire()
    RunLock(tmp_path / "run").acquire().release()  # free again once released


def test_a_run_lock_dies_with_its_process(tmp_path):
    """kill -9 of the holder frees the lock: a crashed run never leaves its folder locked."""
    script = textwrap.dedent(f"""
        import sys, time
        from lwzoo.files import RunLock
        RunLock({str(tmp_path / "run")!r}).acquire()
        print("locked", flush=True)
        time.sleep(60)
    """)
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LwzooError, match=f"pid {holder.pid}"):
            RunLock(tmp_path / "run").acquire()
    finally:
        holder.kill()
        holder.wait()
    RunLock(tmp_path / "run").acquire().release()


def test_stale_temps_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    (tmp_path / "checkpoint-last.pt").write_bytes(b"good")
    (tmp_path / f".checkpoint-last.pt.tmp{dead_pid}").write_bytes(b"half")
    (tmp_path / f".checkpoint-last.pt.tmp{os.getpid()}").write_bytes(b"mine, being written")
    (tmp_path / f".export.tmp-{dead_pid}").mkdir()
    (tmp_path / "notes.tmp123").write_text("a user's file, not lwzoo's pattern")
    removed = remove_stale_temps(tmp_path)
    assert sorted(p.name for p in removed) == sorted([f".checkpoint-last.pt.tmp{dead_pid}", f".export.tmp-{dead_pid}"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["checkpoint-last.pt", f".checkpoint-last.pt.tmp{os.getpid()}", "notes.tmp123"]
    )


def test_a_folder_set_aside_by_a_killed_replace_is_restored(tmp_path):
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True).stdout)
    (tmp_path / f".export.old-{dead}").mkdir()
    (tmp_path / f".export.old-{dead}" / "model.onnx").write_bytes(b"last good")
    remove_stale_temps(tmp_path, of="export")
    assert (tmp_path / "export" / "model.onnx").read_bytes() == b"last good"


def test_stale_temps_of_other_entries_are_left_alone_when_asked(tmp_path):
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True).stdout)
    (tmp_path / f".mine.tmp-{dead}").mkdir()
    (tmp_path / f".theirs.tmp-{dead}").mkdir()
    remove_stale_temps(tmp_path, of="mine")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".theirs.tmp-{dead}"]


def test_writable_dir_checks(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(LwzooError, match="is a file"):
        check_writable_dir(tmp_path / "file" / "sub", "export")
    with pytest.raises(LwzooError, match="is a file, not a folder"):
        check_writable_dir(tmp_path / "file", "export")
    with pytest.raises(LwzooError, match="cannot write the export under '/proc'"):
        check_writable_dir("/proc/lwzoo-test/out", "export")
    assert check_writable_dir(tmp_path / "new" / "deeper", "export") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # checking creates nothing


def test_atomic_writes_leave_the_old_content_on_failure(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "old")
    with pytest.raises(TypeError):
        atomic_write_text(target, 123)  # type: ignore[arg-type]
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_replace_dir_swaps_whole_folders(tmp_path):
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "f").write_text("new")
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "f").write_text("old")
    replace_dir(tmp_path / "new", tmp_path / "dest")
    assert (tmp_path / "dest" / "f").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["dest"]
