"""Two searches on one output: the second is refused at once, naming the first."""
from __future__ import annotations

import signal
import subprocess
import sys

from e3d_zoo.cli.search import main
from testkit import wait_for_file

_CLI = "import sys; from e3d_zoo.cli.search import main; sys.exit(main(sys.argv[1:]))"


def test_a_second_search_on_the_same_out_is_refused_while_the_first_runs(tmp_path, capsys):
    out = tmp_path / "s.json"
    args = ["--budget-flops", "2e9", "--population", "16", "--out", str(out), "--no-plots",
            "--no-progress"]
    first = subprocess.Popen([sys.executable, "-c", _CLI, *args, "--candidates", "100000000",
                              "--checkpoint-every", "5000"], stderr=subprocess.PIPE, text=True)
    try:
        # the first one holds the lock once its search loop starts
        wait_for_file(tmp_path / ".s.json.lock.owner", first, "the first search's lock")
        rc = main(args + ["--candidates", "10"])
        err = capsys.readouterr().err
        assert rc == 2 and f"in use by pid {first.pid}" in err and "Traceback" not in err
    finally:
        first.send_signal(signal.SIGINT)  # Ctrl-C: it checkpoints and exits 130
        _, first_err = first.communicate(timeout=120)
    assert first.returncode == 130, first_err
    assert not out.exists()  # it was interrupted; the refused one wrote nothing either
    assert main(args + ["--candidates", "10", "--json"]) == 0  # free again
    assert out.is_file()
