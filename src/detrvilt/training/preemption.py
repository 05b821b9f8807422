"""Stopping a run cleanly when the job is told to stop: SIGTERM (what SLURM, Kubernetes and cloud preemption send
before killing) and SIGUSR1 (what `sbatch --signal=USR1@<seconds>` sends before the time limit).

[`StopRequest`] turns the signals into a flag; the training loop reads it after each optimizer step (all processes
agree through the step's own reduction), saves a checkpoint and raises [`TrainingStopped`], a `SystemExit` with
status [`RESUMABLE_EXIT_CODE`] (75, `EX_TEMPFAIL` of sysexits.h: "try again later"). A job script requeues itself on
that status and runs the same command with `--resume_from_checkpoint latest`.
"""

from __future__ import annotations

import signal
import threading

RESUMABLE_EXIT_CODE = 75
STOP_SIGNALS = ("SIGTERM", "SIGUSR1")


class TrainingStopped(SystemExit):
    """Raised after a stop signal once the checkpoint is saved; uncaught, the process exits with status 75."""

    def __init__(self, step: int, signal_name: str, checkpoint: str | None):
        self.step, self.signal_name, self.checkpoint = step, signal_name, checkpoint
        saved = (f"checkpoint saved to {checkpoint}; resume with --resume_from_checkpoint latest" if checkpoint
                 else "no checkpoint saved (no output_dir)")
        self.message = f"stopped, resumable: {signal_name} received, training stopped after step {step}, {saved}"
        super().__init__(RESUMABLE_EXIT_CODE)

    def __str__(self) -> str:
        return self.message


class StopRequest:
    """A context manager that catches SIGTERM and SIGUSR1 while it is open (previous handlers restored on exit).

    `requested` becomes true at the first signal and `signal_name` names it. Handlers can only be installed from the
    main thread; elsewhere (e.g. a notebook's worker thread) the request stays off and signals keep their old effect.
    """

    def __init__(self, signal_names=STOP_SIGNALS):
        self.signal_names = tuple(name for name in signal_names if hasattr(signal, name))
        self.requested = False
        self.signal_name: str | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if not self.requested:
            self.requested, self.signal_name = True, signal.Signals(signum).name

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for name in self.signal_names:
                number = getattr(signal, name)
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}
