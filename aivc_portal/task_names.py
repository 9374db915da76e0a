"""The dotted paths of the tasks that services queue, named once: a service in any app
queues another app's task by name without importing that app's tasks module (which would
turn the layers upside down)."""

RECONCILE_TASK = "containers.tasks.reconcile"
PREPARE_IMAGE_TASK = "containers.tasks.prepare_image"
USER_AUDIT_TASK = "containers.tasks.space_audit_user"
WAKER_TASK = "containers.tasks.wake_at_boundaries"
SCHEDULE_JOBS_TASK = "jobs.tasks.schedule_jobs"
BUILD_JOB_IMAGE_TASK = "jobs.tasks.build_job_image"
WAITLIST_TASK = "bookings.tasks.book_waiting_requests"
