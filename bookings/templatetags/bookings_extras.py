from datetime import timedelta

from django import template
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import mark_safe
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

register = template.Library()

# Reservation.Status values as people read them, translated.
STATUS_LABELS = {
    "scheduled": _("Scheduled"),
    "starting": _("Starting"),
    "running": _("Running"),
    "ended": _("Ended"),
    "cancelled": _("Cancelled"),
    "failed": _("Failed"),
    "blocked": _("Blocked"),
}


@register.filter
def status_label(status: str) -> str:
    return STATUS_LABELS.get(status, status)


@register.filter
def student_log_line(event) -> str:
    """A monitor-log line as a student reads it, in their language (ContainerEvent.sentence):
    errors carry the engine's raw words, which stay for maintainers in admin; the student
    gets the time, the sign and a plain line."""
    stamp = timezone.localtime(event.created_at).strftime("%Y%m%d %H:%M")
    if event.level != "ERROR":
        sentence = event.sentence()
        # A translation ends with its own full stop ("。"); the English pattern has none.
        sentence = sentence if sentence.endswith((".", "。")) else f"{sentence}."
        sign = f"{event.sign}, " if event.sign and event.level != "INFO" else ""
        return f"{stamp} [{event.level}] {sign}{sentence}"
    plain = gettext("Something went wrong with your container; the maintainers have the details.")
    return f"{stamp} [ERROR] {event.sign or 'Error'}, {plain}"


# The timeline holds thousands of blocks; building their few attributes here is several
# times faster than a template loop over them, and the page must come back in well under
# 100 ms with 2,000 reservations.
_PLACEHOLDER_PK = 2_147_483_647


@register.simple_tag
def timeline_blocks(blocks: list) -> str:
    detail_url = reverse("reservation-detail", args=[_PLACEHOLDER_PK])
    zone = timezone.get_current_timezone()
    labels: dict = {}  # Blocks share boundaries on the grid: format each one once.

    def label(moment):
        if moment not in labels:
            labels[moment] = f"{moment.astimezone(zone):%m-%d %H:%M}"
        return labels[moment]

    jobs_url = reverse("job-list")
    job_word = gettext("job")
    parts = []
    for block in blocks:
        who = f"{block.username} {job_word}".strip() if block.is_job else block.username
        title = escape(f"{who} {label(block.start)} - {label(block.end)}")
        name = escape(who)
        place = f"grid-column: {block.column + 1} / span {block.span}"
        job_class = " job" if block.is_job else ""
        if block.own:
            url = (
                jobs_url
                if block.is_job
                else detail_url.replace(str(_PLACEHOLDER_PK), str(block.reservation_id))
            )
            parts.append(
                f'<a class="tl-block own{job_class}" href="{url}" style="{place}" title="{title}" '
                f'aria-label="{title}">{name}</a>'
            )
        else:
            parts.append(f'<span class="tl-block{job_class}" style="{place}" title="{title}">{name}</span>')
    return mark_safe("".join(parts))  # noqa: S308 - every interpolated text is escaped above


@register.simple_tag
def timeline_headroom(runs: list, kind: str) -> str:
    label = escape(gettext("CPUs free") if kind == "cpus" else gettext("Memory free"))
    parts = []
    for run in runs:
        if kind == "cpus":
            value, level = run.cpus_text, run.cpus_level
        else:
            value, level = f"{run.memory_gb} GiB", run.memory_level
        if level == "over":
            value = gettext("over by %(amount)s") % {"amount": value.lstrip("-")}
        parts.append(
            f'<span class="free-{level}" style="grid-column: {run.column + 1} / span {run.span}" '
            f'title="{label}: {value}">{value}</span>'
        )
    return mark_safe("".join(parts))  # noqa: S308 - numbers and a translated, escaped label


@register.filter
def duration(value) -> str:
    """A length of time as people read it ("2 h 05 min", "38 s", "3 d 4 h"): a timedelta,
    or a number of hours (the reports' unit). Empty stays "—". The one way every page
    writes a duration."""
    if value is None or value == "":
        return "—"
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value) * 3600
    sign, seconds = ("-" if seconds < 0 else ""), round(abs(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        text = gettext("%(days)d d %(hours)d h") % {"days": days, "hours": hours}
    elif hours:
        text = gettext("%(hours)d h %(minutes)02d min") % {"hours": hours, "minutes": minutes}
    elif minutes:
        text = gettext("%(minutes)d min %(seconds)02d s") % {"minutes": minutes, "seconds": secs}
    else:
        text = gettext("%(seconds)d s") % {"seconds": secs}
    return sign + text
