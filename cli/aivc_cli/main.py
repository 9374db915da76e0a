"""`aivc`: the old booking CLI's commands over the portal's API.

Exit codes (docs/api.md): 0 done, 1 other error, 2 wrong usage, 3 not logged in or bad
token, 4 refused by the booking rules or bad input, 5 not found (or not yours), 6 not
allowed, 7 throttled, 8 portal unreachable or failing."""

import json
import os
import shlex
import shutil
import socket
import sys

import click

from aivc_cli import client, config
from aivc_cli.client import ApiError

LIVE = ("scheduled", "starting", "running", "blocked")


def _short(moment: str | None) -> str:
    """An API time (ISO 8601 in the portal's time zone) as `YYYY-MM-DD HH:MM`."""
    return moment[:16].replace("T", " ") if moment else "-"


class Output:
    """Prints either for people or, with --json, one JSON document on stdout."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def done(self, data: object, text: str | None = None) -> None:
        if self.as_json:
            click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        elif text is not None:
            click.echo(text)

    def fail(self, error: ApiError) -> None:
        if self.as_json:
            click.echo(json.dumps(error.body, indent=2, ensure_ascii=False))
        else:
            click.echo(f"error: {error.message}", err=True)
            for field, messages in (error.body.get("errors") or {}).items():
                if len(error.body["errors"]) > 1 or field != "non_field_errors":
                    for message in messages:
                        click.echo(f"  {field}: {message}", err=True)
        sys.exit(error.exit_code)


class AivcGroup(click.Group):
    """Turns ApiError from any command into its message and exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ApiError as error:
            output = ctx.find_object(Output) or Output(False)
            output.fail(error)


@click.group(cls=AivcGroup)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (also for errors).")
@click.version_option("1.0.0", prog_name="aivc")
@click.pass_context
def cli(ctx: click.Context, as_json: bool) -> None:
    """Book the lab's GPU servers from a shell. Start with `aivc login`."""
    ctx.obj = Output(as_json)


pass_output = click.make_pass_decorator(Output)


# Account -------------------------------------------------------------------------------


@cli.command()
@click.option("--url", help="The portal, e.g. https://portal.lab.example (default: $AIVC_URL or saved).")
@click.option("--username", help="Your lab account id.")
@click.option(
    "--with-token",
    is_flag=True,
    help="Use a token made on the profile page instead of a password, asked for without echo "
    "or read from standard input (`aivc login --with-token < token.txt`).",
)
@click.option("--token", "token_on_command_line", hidden=True)
@click.option("--name", default=None, help="A name for the new token (default: aivc on <this machine>).")
@pass_output
def login(
    out: Output,
    url: str | None,
    username: str | None,
    with_token: bool,
    token_on_command_line: str | None,
    name: str | None,
) -> None:
    """Log in and keep a personal access token in your config file (mode 0600)."""
    if token_on_command_line is not None:
        # Anyone on the machine sees a command line (`ps`), and the shell keeps it.
        raise click.UsageError("A token on the command line is readable by others; use --with-token.")
    base = client.portal_url(url)
    if with_token:
        # Asked for without echo at a terminal; read as the first line of a redirect or pipe
        # (getpass would read the terminal and ignore it).
        if sys.stdin.isatty():
            given_token = click.prompt("Token", hide_input=True).strip()
        else:
            given_token = sys.stdin.readline().strip()
        if not given_token:
            raise click.UsageError("No token was given on standard input.")
        saved = {"url": base, "token": given_token}
        profile = client.get("profile/", url=base, bearer=given_token)
        username = profile["username"]
    else:
        username = username or click.prompt("Account id")
        password = click.prompt("Password", hide_input=True)
        body = {"username": username, "password": password, "name": name or f"aivc on {socket.gethostname()}"}
        made = client.post("auth/token/", url=base, json=body, auth=False)
        saved = {"url": base, "token": made["token"], "token_id": made["id"]}
    path = config.save(saved)
    out.done(
        {"username": username, "url": base, "config": str(path)},
        f"Logged in as {username}; token saved in {path}.",
    )


@cli.command()
@pass_output
def logout(out: Output) -> None:
    """Revoke this machine's token on the portal and forget it here."""
    token_id = config.load().get("token_id")
    if token_id:
        try:
            client.request("DELETE", f"tokens/{token_id}/")
        except ApiError as error:
            if error.exit_code not in (client.EXIT_AUTH, client.EXIT_NOT_FOUND):
                raise
    config.forget()
    out.done({"logged_out": True}, "Logged out.")


@cli.command()
@pass_output
def usage(out: Output) -> None:
    """Your GPU-hours this week against your budget, and what you hold now against your caps."""
    body = client.get("me/usage/")
    budget = body.get("gpu_hours_per_week")
    budget = f"{budget:g}" if budget is not None else "no budget"
    left = f" ({body['gpu_hours_left']:g} left)" if body.get("gpu_hours_left") is not None else ""
    lines = [
        f"GPU-hours, last 7 days: {body['gpu_hours_week']:g} / {budget}{left}",
        f"GPU-hours booked, next 7 days: {body['gpu_hours_ahead']:g}",
    ]
    for name, held, cap in (
        ("GPUs", "gpus_now", "gpus_at_once"),
        ("CPUs", "cpus_now", "cpus_at_once"),
        ("memory GiB", "memory_gb_now", "memory_gb_at_once"),
    ):
        lines.append(f"{name} held now: {body[held]:g} / {body[cap] if body[cap] is not None else 'no cap'}")
    out.done(body, "\n".join(lines))


# Reservations ----------------------------------------------------------------------------


def _reservation_line(row: dict) -> str:
    gpus = ",".join(str(index) for index in row.get("gpu_indices", [])) or "-"
    return (
        f"#{row['id']:<6} {row['host']:<12} {_short(row['start'])} -> {_short(row['end'])}  "
        f"{row['status']:<9} cpus={row['cpus']:g} memory={row['memory_gb']}G gpus={gpus}"
    )


def _pick_host(host: str | None) -> str:
    if host:
        return host
    hosts = client.get("hosts/")
    if len(hosts) == 1:
        return hosts[0]["name"]
    names = ", ".join(row["name"] for row in hosts) or "none"
    raise ApiError(f"Choose a host with --host ({names}).", exit_code=client.EXIT_USAGE)


@cli.command()
@click.option("--host", help="Host name (default: the only host, if there is one).")
@click.option("--gpus", "gpu_count", type=int, default=0, show_default=True)
@click.option("--cpus", type=float, required=True)
@click.option("--memory", "memory_gb", type=int, required=True, help="GB of memory.")
@click.option("--start", default="now", show_default=True, help="`now` or `YYYY MM DD hh mm`.")
@click.option("--end", required=True, help="`N-day`, `N-week` or `YYYY MM DD hh mm`.")
@click.option("--image", help="Image reference (default: your profile's).")
@click.option("--command", "extra_command", help="Extra command for the container (default: your profile's).")
@pass_output
def book(out: Output, host, gpu_count, cpus, memory_gb, start, end, image, extra_command) -> None:
    """Book a host: the same rules and messages as the portal's booking form."""
    body = {
        "host": _pick_host(host),
        "start": start,
        "end": end,
        "cpus": cpus,
        "memory_gb": memory_gb,
        "gpu_count": gpu_count,
    }
    if image is not None:
        body["image"] = image
    if extra_command is not None:
        body["extra_command"] = extra_command
    made = client.post("reservations/", json=body)
    out.done(made, f"Booking successful! {_reservation_line(made)}")


def _jobs_or_none(params: dict | None = None) -> list[dict] | None:
    """The user's jobs, or None where the portal has no jobs API."""
    try:
        return client.all_pages("jobs/", params)
    except ApiError as error:
        if error.status == 404:
            return None
        raise


def _job_line(job: dict) -> str:
    line = (
        f"job #{job.get('id'):<5} {job.get('status', '?'):<10} submitted {_short(job.get('submitted_at'))}  "
        f"{job.get('command', '')}"
    )
    if job.get("status") == "queued":
        position = job.get("queue_position") or "-"
        line += f"\n    position {position}, planned start {_short(job.get('planned_start'))}"
        if job.get("waiting_for"):
            line += f", waiting: {job['waiting_for']}"
    return line


@cli.command(name="ls")
@click.option("--all", "show_all", is_flag=True, help="Everyone's bookings on the timeline (no commands).")
@click.option("--status", help="Only these statuses, comma-separated (default: live ones).")
@pass_output
def list_(out: Output, show_all: bool, status: str | None) -> None:
    """Your reservations and jobs; with --all, the timeline like the old `-ls`."""
    if show_all:
        timeline = client.get("timeline/")
        lines = []
        for host in timeline["hosts"]:
            lines.append(f"{host['name']}:")
            for gpu in host["gpus"]:
                for block in gpu["blocks"]:
                    own = " (you)" if block["own"] else ""
                    lines.append(
                        f"  GPU {gpu['index']}  {_short(block['start'])} -> {_short(block['end'])}  "
                        f"{block['username']}{own}"
                    )
            if not any(gpu["blocks"] for gpu in host["gpus"]):
                lines.append("  no GPU booked in the next two weeks")
        out.done(timeline, "\n".join(lines))
        return
    reservations = client.all_pages("reservations/", {"status": status or ",".join(LIVE)})
    jobs = _jobs_or_none()
    lines = [_reservation_line(row) for row in reservations] or ["No reservations."]
    if jobs:
        lines += [_job_line(job) for job in jobs]
    out.done({"reservations": reservations, "jobs": jobs or []}, "\n".join(lines))


def _reservation_action(name: str, help_text: str) -> None:
    @cli.command(name=name, help=help_text)
    @click.argument("reservation_id", type=int)
    @pass_output
    def command(out: Output, reservation_id: int) -> None:
        row = client.post(f"reservations/{reservation_id}/{name}/")
        out.done(row, f"{name.capitalize()}: {_reservation_line(row)}")


_reservation_action("cancel", "Cancel a reservation that has not started.")
_reservation_action("release", "Release a running reservation now (its container is removed).")
_reservation_action("restart", "Recreate the container of a running reservation (the old -rst).")


@cli.command()
@click.argument("reservation_id", type=int)
@click.option("--end", required=True, help="New end: `N-day`/`N-week` from the start, or `YYYY MM DD hh mm`.")
@pass_output
def extend(out: Output, reservation_id: int, end: str) -> None:
    """Move a reservation's end later, keeping its GPUs."""
    row = client.post(f"reservations/{reservation_id}/extend/", json={"end": end})
    out.done(row, f"Extended: {_reservation_line(row)}")


@cli.command()
@click.argument("reservation_id", type=int, required=False)
@click.option("--run", "run_it", is_flag=True, help="Run ssh instead of printing the command.")
@pass_output
def ssh(out: Output, reservation_id: int | None, run_it: bool) -> None:
    """The ssh command of your running reservation (or of RESERVATION_ID)."""
    if reservation_id is not None:
        row = client.get(f"reservations/{reservation_id}/")
    else:
        running = client.all_pages("reservations/", {"status": "running,starting"})
        if not running:
            raise ApiError("No reservation of yours is running now.", exit_code=client.EXIT_NOT_FOUND)
        row = running[0]
    command = row["ssh_command"]
    if run_it:
        program = shutil.which("ssh")
        if program is None:
            raise ApiError("ssh is not installed here.", exit_code=client.EXIT_ERROR)
        # No shell: the portal's command is split into arguments and run as they are.
        os.execv(program, shlex.split(command))  # noqa: S606
    out.done({"id": row["id"], "ssh_command": command}, command)


# Jobs --------------------------------------------------------------------------------------


@cli.group()
def jobs() -> None:
    """Batch jobs: submit, list, read logs, hold, release, cancel."""


@jobs.command(name="submit")
@click.option("--cpus", type=float, required=True)
@click.option("--memory", "memory_gb", type=int, required=True, help="GB of memory.")
@click.option("--gpus", "gpu_count", type=int, default=0, show_default=True)
@click.option("--time-limit", "time_limit_minutes", type=int, required=True, help="Minutes.")
@click.option("--image", help="Image reference (default: the lab's).")
@click.option("--host", help="Host name (default: any).")
@click.option("--dependency", "-d", help="Your jobs it waits for: afterok:12, afterany:12:13, afternotok:14.")
@click.argument("command", nargs=-1, required=True)
@pass_output
def jobs_submit(
    out: Output, cpus, memory_gb, gpu_count, time_limit_minutes, image, host, dependency, command
) -> None:
    """Queue COMMAND (give it after `--`) to run when capacity is free."""
    body = {
        "command": shlex.join(command),
        "cpus": cpus,
        "memory_gb": memory_gb,
        "gpu_count": gpu_count,
        "time_limit_minutes": time_limit_minutes,
    }
    if image:
        body["image"] = image
    if host:
        body["host"] = host
    if dependency:
        body["dependency"] = dependency
    job = client.post("jobs/", json=body)
    out.done(job, f"Submitted {_job_line(job)}")


@jobs.command(name="ls")
@click.option("--status", help="Only these statuses, comma-separated.")
@pass_output
def jobs_ls(out: Output, status: str | None) -> None:
    """Your jobs, newest first."""
    rows = _jobs_or_none({"status": status} if status else None)
    if rows is None:
        raise ApiError("This portal has no jobs API.", exit_code=client.EXIT_NOT_FOUND)
    out.done(rows, "\n".join(_job_line(job) for job in rows) or "No jobs.")


@jobs.command(name="logs")
@click.argument("job_id", type=int)
@click.option("--tail", type=int, default=100, show_default=True, help="Last N lines.")
@pass_output
def jobs_logs(out: Output, job_id: int, tail: int) -> None:
    """The last lines of a job's output."""
    response = client.request("GET", f"jobs/{job_id}/log/", params={"tail": tail})
    if response.headers.get("content-type", "").startswith("application/json"):
        body = response.json()
        text = (
            body
            if isinstance(body, str)
            else next(
                (body[key] for key in ("log", "text", "lines", "content") if key in body), json.dumps(body)
            )
        )
        if isinstance(text, list):
            text = "\n".join(text)
        out.done(body, text)
    else:
        out.done({"log": response.text}, response.text.rstrip("\n"))


@jobs.command(name="cancel")
@click.argument("job_id", type=int)
@pass_output
def jobs_cancel(out: Output, job_id: int) -> None:
    """Cancel a queued or running job."""
    job = client.post(f"jobs/{job_id}/cancel/")
    out.done(job, f"Cancelled {_job_line(job)}")


@jobs.command(name="hold")
@click.argument("job_id", type=int)
@pass_output
def jobs_hold(out: Output, job_id: int) -> None:
    """Hold a queued job: it does not start until released, and keeps its place."""
    job = client.post(f"jobs/{job_id}/hold/")
    out.done(job, f"Held {_job_line(job)}")


@jobs.command(name="release")
@click.argument("job_id", type=int)
@pass_output
def jobs_release(out: Output, job_id: int) -> None:
    """Release a held job: it waits again at its place in the queue."""
    job = client.post(f"jobs/{job_id}/release/")
    out.done(job, f"Released {_job_line(job)}")


# The waitlist ----------------------------------------------------------------------------------


def _waiting_line(row: dict) -> str:
    where = row.get("host") or "any host"
    hours = f"{row['duration_minutes'] / 60:g}h"
    if row["mode"] == "window":
        when = f"{_short(row['earliest_start'])} for {hours}"
    else:
        when = f"first {hours} from {_short(row['earliest_start'])}, by {_short(row['latest_start'])}"
    booked = f" -> reservation #{row['reservation_id']}" if row.get("reservation_id") else ""
    return (
        f"#{row['id']:<6} {where:<12} {when}  {row['status']:<9} "
        f"cpus={row['cpus']:g} memory={row['memory_gb']}G gpus={row['gpu_count']}{booked}"
    )


@cli.group()
def waitlist() -> None:
    """Bookings that did not fit, waiting to be booked when capacity frees up."""


@waitlist.command(name="add")
@click.option("--host", help="Host name (default: any host open to you).")
@click.option("--gpus", "gpu_count", type=int, default=0, show_default=True)
@click.option("--cpus", type=float, required=True)
@click.option("--memory", "memory_gb", type=int, required=True, help="GB of memory.")
@click.option("--start", default="now", show_default=True, help="`now` or `YYYY MM DD hh mm`.")
@click.option("--end", required=True, help="`N-day`, `N-week` or `YYYY MM DD hh mm`.")
@click.option(
    "--first-after",
    is_flag=True,
    help="Wait for the first window of this length from --start (default: exactly this window).",
)
@click.option("--latest-start", help="With --first-after: `N-day` from the start or `YYYY MM DD hh mm`.")
@click.option("--image", help="Image reference (default: your profile's).")
@click.option("--command", "extra_command", help="Extra command for the container (default: your profile's).")
@pass_output
def waitlist_add(
    out: Output, host, gpu_count, cpus, memory_gb, start, end, first_after, latest_start, image, extra_command
) -> None:
    """Wait for a booking: it holds nothing and is booked (you are told) when it fits."""
    if latest_start and not first_after:
        raise click.UsageError("--latest-start goes with --first-after.")
    body = {
        "host": host,
        "start": start,
        "end": end,
        "cpus": cpus,
        "memory_gb": memory_gb,
        "gpu_count": gpu_count,
        "mode": "first_after" if first_after else "window",
    }
    for key, value in (("latest_start", latest_start), ("image", image), ("extra_command", extra_command)):
        if value is not None:
            body[key] = value
    made = client.post("waitlist/", json=body)
    out.done(made, f"Waiting: {_waiting_line(made)}")


@waitlist.command(name="ls")
@pass_output
def waitlist_ls(out: Output) -> None:
    """Your waiting requests, waiting ones first."""
    rows = client.all_pages("waitlist/")
    out.done(rows, "\n".join(_waiting_line(row) for row in rows) or "Nothing is waiting.")


@waitlist.command(name="withdraw")
@click.argument("entry_id", type=int)
@pass_output
def waitlist_withdraw(out: Output, entry_id: int) -> None:
    """Stop waiting for a request."""
    row = client.post(f"waitlist/{entry_id}/withdraw/")
    out.done(row, f"Withdrawn: {_waiting_line(row)}")


# Requests for more -------------------------------------------------------------------------------


def _request_line(row: dict) -> str:
    note = f"  note: {row['note']}" if row.get("note") else ""
    return f"#{row['id']:<5} {row['summary']:<36} until {_short(row['ends_at'])}  {row['status']:<8}{note}"


@cli.group(name="request")
def request_group() -> None:
    """Ask for more before a deadline: a budget, caps at once, another profile, a boost."""


@request_group.command(name="add")
@click.option("--gpu-hours", "gpu_hours_per_week", help="A bigger budget: GPU-hours per week.")
@click.option("--gpus-at-once", help="Bigger caps at once: GPUs.")
@click.option("--cpus-at-once", help="Bigger caps at once: CPUs.")
@click.option("--memory-at-once", "memory_gb_at_once", help="Bigger caps at once: GiB of memory.")
@click.option("--profile", help="Another capability profile (its name).")
@click.option("--boost", is_flag=True, help="A fair-share priority boost.")
@click.option("--until", required=True, help="The last day it applies, YYYY-MM-DD.")
@click.option("--reason", required=True, help="Why you need it (a deadline, an experiment).")
@pass_output
def request_add(
    out: Output,
    gpu_hours_per_week,
    gpus_at_once,
    cpus_at_once,
    memory_gb_at_once,
    profile,
    boost,
    until,
    reason,
) -> None:
    """Send a request; a maintainer approves or denies it and you are told."""
    caps = {
        "gpus_at_once": gpus_at_once,
        "cpus_at_once": cpus_at_once,
        "memory_gb_at_once": memory_gb_at_once,
    }
    kinds = [
        kind
        for kind, asked in (
            ("budget", gpu_hours_per_week is not None),
            ("caps", any(value is not None for value in caps.values())),
            ("profile", profile is not None),
            ("boost", boost),
        )
        if asked
    ]
    if len(kinds) != 1:
        raise click.UsageError("Ask for one thing: --gpu-hours, the --*-at-once caps, --profile or --boost.")
    body = {"kind": kinds[0], "until": until, "reason": reason, "gpu_hours_per_week": gpu_hours_per_week}
    body |= {"profile": profile, **caps}
    made = client.post(
        "limit-requests/", json={key: value for key, value in body.items() if value is not None}
    )
    out.done(made, f"Sent: {_request_line(made)}")


@request_group.command(name="ls")
@pass_output
def request_ls(out: Output) -> None:
    """Your requests for more and their answers."""
    rows = client.all_pages("limit-requests/")
    out.done(rows, "\n".join(_request_line(row) for row in rows) or "No requests.")
