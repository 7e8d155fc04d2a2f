"""``check``: everything ``apply`` needs, checked now, without triggering anything."""

from __future__ import annotations

import click

from runbook.cli.shared import (
    metrics_dir_option,
    plan_files,
    state_dir_option,
    stdout,
    target_options,
)


@click.command()
@click.argument("plan_path", metavar="PLAN", shell_complete=plan_files)
@target_options
@state_dir_option
@metrics_dir_option("Check that the metrics can be written there")
@click.option(
    "--notify",
    is_flag=True,
    help="Also POST a test message to every webhook of the plan (never a ping).",
)
def check(
    plan_path: str,
    api_url: str | None,
    token_file: str | None,
    token_command: str | None,
    state_dir: str | None,
    metrics_dir: str | None,
    notify: bool,
) -> int:
    """Check now what apply will need at 2 a.m., every problem in one pass: the plan,
    the state dir and the journal, the plan's lock, the metrics dir, every webhook and
    ping variable, the API's URL, proxy and CA, a token from the token source, and the
    token put to the API. Nothing is triggered: the token is tried with a poll of an
    execution that cannot exist.

    Exit 0 when all holds (warnings keep 0); else the code of the first kind of problem
    found, in the order 2, 3, 4, 5.
    """
    from runbook import check as checks
    from runbook.process import collector_paused
    from runbook.text import plural

    with collector_paused():
        plan, findings = checks.check(
            plan_path,
            api_url=api_url,
            token_file=token_file,
            token_command=token_command,
            state_dir=state_dir,
            metrics_dir=metrics_dir,
            notify=notify,
        )
    out = stdout()
    width = max(len(f.what) for f in findings)
    for finding in findings:
        label = {"ok": "ok", "warning": "warning", "problem": "PROBLEM"}[finding.level]
        lines = finding.text.replace("\nrunbook: ", "\n").splitlines() or [""]
        out.write(f"{label:<8} {finding.what:<{width}}  {lines[0]}\n")
        for line in lines[1:]:
            out.write(f"{'':<8} {'':<{width}}  {line}\n")
    code = checks.exit_code(findings)
    problems = sum(f.level == "problem" for f in findings)
    if problems:
        out.write(f"{problems} of {len(findings)} checks found a problem (exit {code})\n")
    else:
        warnings = sum(f.level == "warning" for f in findings)
        noted = f" ({plural(warnings, 'warning')})" if warnings else ""
        out.write(
            f"All {len(findings)} checks passed{noted}: plan {plan.name!r} is ready to apply\n"
        )
    return code
