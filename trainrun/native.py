"""What native libraries write to the process's stderr themselves, beside the exceptions they raise: libpng's
"libpng error: IHDR: CRC error" for a damaged PNG (torchvision raises only "Internal error."), the profiler's
"profiler_start" lines. Written by C code to file descriptor 2, they reach the terminal past Python's sys.stderr,
even for a file skipped on purpose."""
from __future__ import annotations

import fcntl
import os
import sys
import tempfile


class NativeStderr:
    """While open, file descriptor 2 goes to a temporary file: lines starting with one of `dropped` are held back
    (a caller may read them, as the reason of a failure), the rest are passed on when it closes. Opened around a
    batch of work, not each call: two system calls a file would cost a tenth of a small PNG's decode."""

    def __init__(self, dropped: tuple[str, ...]):
        self.dropped = dropped

    def __enter__(self) -> NativeStderr:
        sys.stderr.flush()
        self.file = tempfile.TemporaryFile()
        flags = fcntl.fcntl(self.file.fileno(), fcntl.F_GETFL)
        fcntl.fcntl(self.file.fileno(), fcntl.F_SETFL, flags | os.O_APPEND)  # writes land at the end, reads anywhere
        self.saved = os.dup(2)
        os.dup2(self.file.fileno(), 2)
        return self

    def written(self) -> int:
        """How much has been written so far: a mark for since()."""
        return os.fstat(self.file.fileno()).st_size

    def since(self, start: int) -> str:
        return os.pread(self.file.fileno(), 1 << 16, start).decode(errors="replace")

    def __exit__(self, *exc) -> None:
        sys.stderr.flush()
        os.dup2(self.saved, 2)
        os.close(self.saved)
        rest = [line for line in self.since(0).splitlines(keepends=True) if not line.startswith(self.dropped)]
        if rest:
            os.write(2, "".join(rest).encode())
        self.file.close()
