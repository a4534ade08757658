"""`trainrun ...` in a fresh process without paying its imports each time.

Each training subprocess a test starts spent ~5.5 s of its ~8 s importing torch and torch._dynamo (which torch's
own optimizers import on their first step). This server imports them once, then forks a child per command: the
child is a new process, as a user's `trainrun` is (its own pid, cwd, environment, stdout, stderr and exit code),
that runs the console script's own `main` with the command's argv.

Only what is read once at import may differ from a cold start (OMP_NUM_THREADS, read when torch loads): a test
that sets its own environment beside TRAINRUN_DATA runs a cold `python -m trainrun` instead (conftest.cli).

Protocol, one JSON line each way: {"argv", "cwd", "env", "stdout", "stderr"} -> {"pid"}, then {"status"}.
"""
from __future__ import annotations

import json
import os
import sys

PRELOAD = ("torch", "torch._dynamo", "torch.utils.tensorboard", "trainrun.cli", "trainrun.run.trainer")


def child(request: dict) -> None:
    """In the forked child: become the command and run it."""
    os.setsid()  # its own process group, so a timeout kills what it started too
    stdin = os.open(os.devnull, os.O_RDONLY)
    os.dup2(stdin, 0)
    os.dup2(os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 1)
    os.dup2(os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
    sys.stdin, sys.stdout, sys.stderr = (open(fd, mode, closefd=False, buffering=1 if fd else -1)
                                         for fd, mode in ((0, "r"), (1, "w"), (2, "w")))
    os.chdir(request["cwd"])
    sys.path[0] = os.getcwd()  # as `python -m trainrun` puts it: the user's own modules import from there
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = list(request["argv"])
    from trainrun.cli import main

    main()


def serve() -> None:
    for name in PRELOAD:
        __import__(name)
    requests, replies = sys.stdin, sys.stdout
    replies.write("ready\n")
    replies.flush()
    for line in requests:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:  # the child ends as the command would: its SystemExit or exception leaves through the
            child(request)  # interpreter's own exit (threads joined, loky's workers stopped, atexit run, files flushed)
            sys.exit()
        replies.write(json.dumps({"pid": pid}) + "\n")
        replies.flush()
        _, status = os.waitpid(pid, 0)
        replies.write(json.dumps({"status": status}) + "\n")
        replies.flush()


if __name__ == "__main__":
    serve()
