"""Jenkins builds from chat: the chat face of :mod:`bot.connectors.jenkins`.

Every command names a job the inventory allows in some environment (its
``environments.<env>.jenkins.jobs``); that environment is what the policy decides on. A job
that no environment allows is refused in ``check=``, before any request to Jenkins. A build's
parameters are checked against the job's own definitions, also before anything is
triggered. See docs/jenkins.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from errbot import BotPlugin

from bot.connectors.jenkins import (
    BuildHandle,
    BuildInfo,
    BuildProgress,
    JenkinsClient,
    JenkinsError,
    JobPlace,
    check_parameters,
    follow,
    jenkins_access,
)
from bot.plugin import (
    ActionContext,
    ActionFailed,
    Arg,
    Code,
    Outcome,
    Refusal,
    Risk,
    Table,
    Text,
    action,
)

InEnv = Annotated[str | None, Arg(after="in", help="the environment whose allow-list has the job")]
Job = Annotated[str, Arg(help="a job path such as team/app/deploy")]
TAIL_LINES = 30
LONG_LOG_CHARS = 4000  # a longer console log is attached whole as a file


def _place(values: Mapping[str, Any]) -> JobPlace:
    return jenkins_access().place(values["job"], values.get("env"))


def _client(place: JobPlace) -> JenkinsClient:
    return jenkins_access().client(place.server)


def _environment(plugin: Jenkins, values: Mapping[str, Any]) -> str:
    return _place(values).environment


def _check_job(plugin: Jenkins, values: Mapping[str, Any]) -> None:
    _client(_place(values))  # allowed (no request to Jenkins), and the token is readable


def _check_build(plugin: Jenkins, values: Mapping[str, Any]) -> None:
    place = _place(values)  # a job no environment allows stops here: nothing is sent
    try:
        info = _client(place).job(place.job)
    except JenkinsError as exc:
        raise Refusal(str(exc)) from None
    check_parameters(info, values["params"])


def _check_listing(plugin: Jenkins, values: Mapping[str, Any]) -> None:
    access = jenkins_access()
    if values.get("env") is not None:
        access.map.environment(values["env"])


def _clock(seconds: float) -> str:
    if seconds < 10:
        return f"{max(0.0, seconds):.1f}s"
    minutes, seconds = divmod(max(0, round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def _progress_text(job: str, progress: BuildProgress) -> str:
    if progress.build is None:
        return f"{job}: queued (queue item {progress.queue_id}): {progress.why}"
    build = progress.build
    text = f"{job} #{build.number} running {_clock(build.elapsed())}"
    if build.estimated > 0:
        text += f" of ~{_clock(build.estimated)}"
    if progress.stage:
        text += f", stage {progress.stage}"
    return f"{text} · {build.url}"


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def _log_blocks(
    ctx: ActionContext, client: JenkinsClient, job: str, number: int, lines: int
) -> list[Text | Code]:
    """The console's last lines, and the whole log as a file when it is long."""
    log = client.console_text(job, number)
    blocks: list[Text | Code] = [Code(_tail(log, lines))]
    name = f"{job.replace('/', '_')}-{number}.log"
    if len(log) > LONG_LOG_CHARS and ctx.attach(name, log, f"console of {job} #{number}"):
        blocks.append(Text(f"whole console log attached as {name}"))
    return blocks


def _build_table(build: BuildInfo) -> Table:
    state = build.result or "running"
    shown = [(name, value) for name, value in build.parameters]
    rows = [
        ("result", state),
        ("duration", _clock(build.elapsed())),
        ("link", build.url),
        *[(f"param {name}", value) for name, value in shown],
    ]
    return Table(("build", f"#{build.number}"), rows)


class Jenkins(BotPlugin):
    """Jenkins builds of the jobs the inventory allows."""

    @action(
        "jenkins.build",
        risk=Risk.CHANGE,
        target="job",
        environment=_environment,
        check=_check_build,
        timeout=6 * 3600,
    )
    def build(
        self,
        ctx: ActionContext,
        job: Job,
        env: InEnv = None,
        params: Annotated[dict[str, str], Arg(keywords=True)] = {},  # noqa: B006 - copied
    ) -> Outcome:
        """Trigger a build with NAME=value parameters and follow it to its result."""
        place = _place({"job": job, "env": env})
        client = _client(place)
        body = check_parameters(client.job(job), params)
        triggered = client.trigger(job, body)
        handle = BuildHandle(client, job, triggered.queue_id)
        ctx.on_cancel(handle.abort)  # !cancel: cancel the queue item or stop the build
        if triggered.merged:
            ctx.progress(
                f"{job}: merged into the identical queued build (queue item {handle.queue_id})"
            )
        build = follow(
            handle,
            wait=ctx.wait,
            report=lambda progress: ctx.progress(_progress_text(job, progress)),
            max_interval=jenkins_access().poll_interval,
        )
        summary = f"{job} #{build.number} {build.result} in {_clock(build.duration)}"
        if build.result == "SUCCESS":
            return Outcome(summary, Text(build.url))
        blocks = _log_blocks(ctx, client, job, build.number, TAIL_LINES)
        raise ActionFailed(summary, details=Outcome(summary, Text(build.url), *blocks))

    @action("jenkins.status", risk=Risk.READ, environment=_environment, check=_check_job)
    def status(
        self, ctx: ActionContext, job: Job, number: int | None = None, env: InEnv = None
    ) -> Outcome:
        """A job's last build, or one build: result, duration, link, parameters."""
        client = _client(_place({"job": job, "env": env}))
        if number is None:
            info = client.job(job)
            if info.last_build is None:
                queued = " (one is queued)" if info.in_queue else ""
                return Outcome(f"{job} has no builds yet{queued}", Text(info.url))
            number = info.last_build
        build = client.build(job, number)
        stage = ""
        if build.building:
            stages = client.stages(job, number) or []
            running = [s.name for s in stages if s.status == "IN_PROGRESS"]
            stage = f", stage {running[-1]}" if running else ""
        return Outcome(
            f"{job} #{build.number}: {build.result or 'running'}{stage}", _build_table(build)
        )

    @action("jenkins.console", risk=Risk.READ, environment=_environment, check=_check_job)
    def console(
        self,
        ctx: ActionContext,
        job: Job,
        number: int | None = None,
        env: InEnv = None,
        lines: int = TAIL_LINES,
    ) -> Outcome:
        """The last lines of a build's console log (the last build by default); the whole
        log is attached as a file when it is long."""
        client = _client(_place({"job": job, "env": env}))
        if number is None:
            number = client.job(job).last_build
            if number is None:
                return Outcome(f"{job} has no builds yet")
        blocks = _log_blocks(ctx, client, job, number, max(1, min(lines, 500)))
        return Outcome(f"console of {job} #{number}", *blocks)

    @action("jenkins.abort", risk=Risk.CHANGE, environment=_environment, check=_check_job)
    def abort(self, ctx: ActionContext, job: Job, number: int, env: InEnv = None) -> str:
        """Abort a running build."""
        client = _client(_place({"job": job, "env": env}))
        build = client.build(job, number)
        if not build.building:
            return f"{job} #{number} is not running ({build.result})"
        client.stop(job, number)
        return f"{job} #{number}: abort requested · {build.url}"

    @action("jenkins.jobs", risk=Risk.READ, check=_check_listing)
    def jobs(self, ctx: ActionContext, match: str = "", env: InEnv = None) -> Outcome:
        """The jobs you may build: the inventory's allow-lists matched against Jenkins."""
        access = jenkins_access()
        rows = []
        servers = {server for _, server, _ in access.map.allowed(env)}
        for server in sorted(servers):
            for summary in access.client(server).jobs():
                if match and match.lower() not in summary.path.lower():
                    continue
                try:
                    place = access.place(summary.path, env)
                except Refusal:
                    continue
                if place.server == server:
                    kind = "pipeline" if summary.pipeline else "job"
                    rows.append((summary.path, place.environment, server, kind, summary.color))
        title = f"{len(rows)} job(s) you may build" + (f" matching {match!r}" if match else "")
        return Outcome(title, Table(("job", "environment", "server", "kind", "status"), rows))

    @action("jenkins.queue", risk=Risk.READ, check=_check_listing)
    def queue(self, ctx: ActionContext, env: InEnv = None) -> Outcome:
        """What waits in the Jenkins queue for the allowed jobs, and why."""
        access = jenkins_access()
        rows = []
        for server in sorted({server for _, server, _ in access.map.allowed(env)}):
            for item in access.client(server).queue():
                try:
                    place = access.place(item.job, env)
                except Refusal:
                    continue
                if place.server == server:
                    rows.append((item.id, item.job, place.environment, item.why))
        return Outcome(
            f"{len(rows)} queued build(s)", Table(("item", "job", "environment", "why"), rows)
        )
