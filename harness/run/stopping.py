"""A polite stop: SIGTERM or SIGINT asks the training loop to finish its step, save a checkpoint and end.

Inside a submitit job SIGTERM is otherwise ignored (submitit waits for its own SIGUSR2, which requeues from the
last checkpoint); Slurm sends SIGTERM on scancel and at the time limit, then SIGKILL after its KillWait, and a local
cancel or Ctrl-C sends SIGINT (often twice: the terminal's and the launcher's; submitit's local controller sends
SIGKILL a second later, so a slow step may end without its checkpoint: resume is exact from the one before).
Further signals change nothing: the step in flight still ends cleanly."""
import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequests:
    """Context manager: `.requested` is the name of the first stop signal received, or None."""

    def __init__(self):
        self.requested, self._previous = None, {}

    def _handle(self, signum, frame):
        self.requested = self.requested or signal.Signals(signum).name
        outer = self._previous.get(signum)
        if isinstance(getattr(outer, "__self__", None), StopRequests):  # nested (a debug job in the launcher)
            outer(signum, frame)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False
