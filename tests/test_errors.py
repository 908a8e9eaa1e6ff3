import subprocess
import sys

from lwzoo.errors import LwzooError


def test_lwzoo_error_is_an_exception_the_cli_prints_as_one_line():
    assert issubclass(LwzooError, Exception)
    proc = subprocess.run(
        [sys.executable, "-m", "lwzoo", "pretrain", "no_such_arch"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and proc.stderr.startswith("lwzoo: error: ")
