"""What the scheduler makes of an error it did not expect in one reservation's or job's
step: one answer for bookings (containers.lifecycle) and jobs (containers.job_lifecycle)."""


def may_pass(error: Exception) -> bool:
    """Whether another try may succeed: an OSError may pass (a full disk, a folder its owner
    can fix); anything else (an unreadable command, a bug) would fail the same way again."""
    return isinstance(error, OSError)


def stopped_by(error: Exception) -> str:
    return f"an unexpected error stopped it ({type(error).__name__}: {error}); a maintainer must look at it"
