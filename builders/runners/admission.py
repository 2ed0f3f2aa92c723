"""Admission at a pipeline's entrance: a token bucket the guard takes one token from per request.

Triton 2.51's ensembles have no backpressure: a request refused at the pipeline's slowest
step has already been decoded by the steps before it. The guard (``image_guard_step``)
admits at most ``rate`` requests/s (what the pipeline serves, ``builders/load_shedding.py``)
with a burst of ``BURST_S`` of them, and refuses the rest before any later step runs.

Every instance of the guard is a process of its own (a python-backend stub), so the bucket
lives in a 16-byte file named after the server's process (the stubs' parent) and the model,
read and written under ``flock``: all instances admit from one rate. ``time.monotonic`` is the
system-wide CLOCK_MONOTONIC on Linux, the same clock in every stub. An instance that stops
removes the file; the files of servers that exited hard (their stubs killed unstopped) are
removed when a guard of the same name starts. Standard library only.
"""
import fcntl
import glob
import math
import os
import struct
import tempfile
import time

BURST_S = 0.5  # the bucket holds what the rate admits in this long: a burst after a pause
STATE = struct.Struct("dd")  # tokens left, time of the last refill
PREFIX = "triton-admission-"  # then the server's process id, "-" and the model


def burst(rate):
    return max(1, math.ceil(rate * BURST_S))


def parse_rate(text, owner):
    """The config parameter ``admission_rps`` of ``owner``: requests/s, 0 for no gate."""
    try:
        rate = float(text)
    except ValueError:
        rate = math.nan
    if not 0 <= rate < math.inf:
        raise ValueError(f"parameter admission_rps of {owner} is {text!r}: write the requests/s the pipeline "
                         "serves, or 0 for no admission gate")
    return rate


def shared_path(owner):
    """One file per served model and server: the stubs of one tritonserver share their parent."""
    return os.path.join(tempfile.gettempdir(), f"{PREFIX}{os.getppid()}-{owner}")


def remove_stale(owner):
    """The files of servers that are gone: a stub killed at a server's hard exit never closes its bucket."""
    for path in glob.glob(os.path.join(tempfile.gettempdir(), f"{PREFIX}*-{owner}")):
        server = os.path.basename(path)[len(PREFIX):].split("-", 1)[0]
        if server.isdigit() and not alive(int(server)):
            unlink(path)


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, and someone else's
        pass
    return True


class TokenBucket:
    def __init__(self, rate, path):
        self.rate, self.capacity, self.path = rate, burst(rate), path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def admit(self, count):
        """How many of ``count`` requests arriving now are admitted (the first ones)."""
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            now = time.monotonic()
            tokens = self._tokens(now)
            admitted = min(count, int(tokens))
            os.pwrite(self.fd, STATE.pack(tokens - admitted, now), 0)
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        return admitted

    def _tokens(self, now):
        state = os.pread(self.fd, STATE.size, 0)
        if len(state) < STATE.size:  # a new file: the bucket starts full
            return self.capacity
        tokens, then = STATE.unpack(state)
        return min(self.capacity, tokens + max(0.0, now - then) * self.rate)

    def close(self):
        os.close(self.fd)
        unlink(self.path)


def unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:  # another instance of the model removed it first
        pass
