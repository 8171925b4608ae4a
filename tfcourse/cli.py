"""The ``tfcourse`` command: the exercise bank and nbgrader-based grading for instructors and learners.

::

    tfcourse exercises                               list the exercise catalogue
    tfcourse get ID [--dir DIR] [--force]            write the student notebook ID.ipynb into the current folder
    tfcourse course init DIR                         create an nbgrader course folder for PyTorch notebooks
    tfcourse assign DIR NAME --exercises ID [ID ...] build, release and validate a problem set
                    [--duedate ISO8601 --late-penalty FRACTION]
    tfcourse grade DIR NAME --workers N              autograde every submission, feedback, grades-NAME.csv
                    [--students ID ...] [--force]    (unchanged submissions are skipped unless --force)
    tfcourse check NOTEBOOK.ipynb                    run a learner's notebook and show the visible tests' verdict
    tfcourse export gradescope DIR NAME -o ZIP       the assignment as a Gradescope autograder (same grader)
    tfcourse export canvas DIR NAME [--roster CSV]   the assignment's totals as a Canvas gradebook-import CSV
"""

from __future__ import annotations

import argparse
import shutil
import sys
import textwrap
from pathlib import Path

__all__ = ["main"]


def _table(headers: list[str], rows: list[list[str]], width: int | None = None) -> str:
    """A plain-text table that fits ``width`` columns (default: the terminal's): the last column wraps."""
    width = width or shutil.get_terminal_size((100, 24)).columns
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows, strict=True)]
    room = max(20, width - sum(widths[:-1]) - 2 * (len(widths) - 1))
    widths[-1] = min(widths[-1], room)

    def render(cells: list[str]) -> list[str]:
        *first, last = (str(c) for c in cells)
        wrapped = textwrap.wrap(last, widths[-1]) or [""]
        lead = "  ".join(x.ljust(w) for x, w in zip(first, widths, strict=False))
        blank = " " * len(lead)
        return [f"{lead if i == 0 else blank}  {part}".rstrip() for i, part in enumerate(wrapped)]

    lines = render(headers)
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines += render(row)
    return "\n".join(lines)


def _exercises(args: argparse.Namespace) -> int:
    from tfcourse.grading.catalogue import load_catalogue

    exercises = load_catalogue(args.catalogue)
    rows = [
        [e.id, str(e.chapter), e.title, str(len(e.parts)), f"{e.points:g}", str(e.minutes), e.difficulty]
        for e in sorted(exercises, key=lambda e: (e.chapter, e.id))
    ]
    print(_table(["id", "chapter", "title", "parts", "points", "minutes", "difficulty"], rows))
    print()
    print("get one:   tfcourse get ID            (writes ID.ipynb into this folder; open it in Jupyter)")
    print("check it:  tfcourse check ID.ipynb    (runs its visible tests; the grader also runs hidden ones)")
    return 0


def _backup_name(path: Path) -> Path:
    """The first free ``<stem>-backup-N.ipynb`` next to ``path``."""
    n = 1
    while (backup := path.with_name(f"{path.stem}-backup-{n}{path.suffix}")).exists():
        n += 1
    return backup


def _get(args: argparse.Namespace) -> int:
    try:
        from tfcourse.grading.catalogue import CatalogueError, load_catalogue, student_notebook
    except ModuleNotFoundError as error:
        print(f"tfcourse get: {error}; install the learner's tools: pip install 'tfcourse[exercises]'", file=sys.stderr)
        return 2
    try:
        exercises = load_catalogue(validate=False)
    except (CatalogueError, OSError) as error:
        print(f"tfcourse get: {error}", file=sys.stderr)
        return 2
    exercise = next((e for e in exercises if e.id == args.id), None)
    if exercise is None:
        known = "\n  ".join(f"{e.id:24} {e.title}" for e in sorted(exercises, key=lambda e: (e.chapter, e.id)))
        print(f"tfcourse get: no exercise {args.id!r}; the exercises are:\n  {known}", file=sys.stderr)
        return 2
    released = student_notebook(exercise.id)
    if not released.is_file():
        print(f"tfcourse get: the student notebook of {exercise.id} is missing ({released})", file=sys.stderr)
        return 2
    folder = Path(args.dir) if args.dir is not None else Path.cwd()
    target = folder / released.name
    content = released.read_bytes()
    folder.mkdir(parents=True, exist_ok=True)
    backup = None
    if args.force and target.exists():
        backup = _backup_name(target)
        target.rename(backup)  # even with --force, what the learner wrote is kept
    try:
        with open(target, "xb") as out:  # "x": never overwrites, even a file that appeared meanwhile
            out.write(content)
    except FileExistsError:
        print(
            f"tfcourse get: {target} already exists and was left as it is, so nothing you wrote is lost. To start "
            f"afresh, run `tfcourse get {exercise.id} --force` (your file is then kept as "
            f"{_backup_name(target).name}), or get a copy elsewhere with --dir.",
            file=sys.stderr,
        )
        return 2
    where = target if args.dir is not None else target.name
    print(f"wrote {where}: {exercise.title} ({len(exercise.parts)} parts, {exercise.points:g} points)")
    if backup is not None:
        print(f"your previous file is kept as {backup.name}")
    print(f"open it:   jupyter lab {where}")
    print(f"check it:  tfcourse check {where}")
    return 0


def _course_init(args: argparse.Namespace) -> int:
    from tfcourse.grading.course import init_course
    from tfcourse.grading.settings import Limits

    limits = Limits(timeout=args.timeout, memory_mb=args.memory_mb, max_output_lines=args.max_output_lines)
    config = init_course(args.dir, course_id=args.course_id, limits=limits, force=args.force, db_url=args.db)
    print(f"created {config}")
    if args.db is not None:
        from sqlalchemy.engine import make_url

        from tfcourse.grading.course import load_config

        url = load_config(args.dir).CourseDirectory.db_url
        print(f"gradebook: {make_url(url).render_as_string() if make_url(url).password else url}")
    print(f"limits: {limits.timeout} s per cell, {limits.memory_mb} MiB per kernel, {limits.max_output_lines} lines")
    return 0


def _assign(args: argparse.Namespace) -> int:
    from tfcourse.grading.assign import assign

    validation = assign(
        args.dir,
        args.name,
        args.exercises,
        force=args.force,
        check=not args.no_validate,
        workers=args.workers,
        duedate=args.duedate,
        late_penalty=args.late_penalty,
    )
    root = Path(args.dir).resolve()
    print(f"released {args.name} into {root / 'release' / args.name}")
    print(f"{validation.rule.describe()} (assignments/{args.name}.json)")
    if args.no_validate:
        return 0
    if validation.ok:
        print(f"validated {len(validation.checked)} notebooks: solutions pass every test, stubs pass none")
        return 0
    print("validation found problems:", *validation.problems, sep="\n  ", file=sys.stderr)
    return 1


def _grade(args: argparse.Namespace) -> int:
    from tfcourse.grading.grade import grade, summarise
    from tfcourse.grading.sandbox import SandboxUnavailable

    if args.unsafe:
        print(
            "WARNING: --unsafe: submissions run without the grading sandbox, with your rights; a hostile one can "
            "read the gradebook and hidden tests and change any file you can",
            file=sys.stderr,
        )
    try:
        rows = grade(
            args.dir,
            args.name,
            workers=args.workers,
            deadline=args.deadline,
            feedback=not args.no_feedback,
            only=args.students,
            progress=not args.quiet,
            force=args.force,
            unsafe=args.unsafe,
        )
    except SandboxUnavailable as error:
        print(f"tfcourse grade: {error}", file=sys.stderr)
        return 2
    summarise(rows)
    hint = " (--force re-grades them)" if rows.skipped else ""
    print(f"\ngraded {len(rows.graded)}, skipped {len(rows.skipped)} unchanged since their last grading{hint}")
    print(f"\nwrote {Path(args.dir).resolve() / f'grades-{args.name}.csv'}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from tfcourse.grading.learner import LearnerProcess
    from tfcourse.grading.sandbox import Isolation

    # Your own notebook on your own machine: a separate process, as in grading, but no sandbox around it.
    # Launched first, so that its imports overlap ours.
    isolation = Isolation(memory_mb=args.memory_mb, unsafe=True)
    launched = LearnerProcess(isolation).launch()

    from nbgrader.preprocessors import ClearHiddenTests

    from tfcourse.grading.catalogue import CatalogueError, load_catalogue
    from tfcourse.grading.runner import read_notebook, release_version, restore_locked_cells, run_notebook
    from tfcourse.grading.settings import Limits

    path = Path(args.notebook)
    try:
        nb = read_notebook(path)
    except (ValueError, OSError) as error:
        print(f"cannot check {path}: {error}", file=sys.stderr)
        launched.close()
        return 2
    restored: list[str] = []
    try:
        exercise = next((e for e in load_catalogue(validate=False) if e.id == path.stem), None)
    except (CatalogueError, OSError):
        exercise = None
    if exercise is not None and exercise.notebook.is_file():
        # As the grader does: locked cells (setup, tests) come from the original, whatever the file holds.
        restored = restore_locked_cells(nb, release_version(read_notebook(exercise.notebook)))
    nb, _ = ClearHiddenTests(enforce_metadata=False).preprocess(nb, {})  # visible tests only
    limits = Limits(timeout=args.timeout, memory_mb=args.memory_mb)
    result = run_notebook(nb, limits, isolation=isolation, launched=launched)
    rows = [[p.grade_id, f"{p.score:g} / {p.max_score:g}", p.reason] for p in result.parts]
    rows.append(["total", f"{result.score:g} / {result.max_score:g}", ""])
    print(f"{path.name} (visible tests; the grader also runs hidden ones)")
    print(
        "checked as the grader checks (your code in a separate process, the tests outside it), but without the "
        "grading sandbox; your score is decided when your submission is graded"
    )
    print(_table(["part", "points", "feedback"], rows))
    if restored:
        print(f"\nnote: locked cells {', '.join(restored)} were restored from the original, as the grader does")
    for error in result.other_errors:
        print(f"error outside the tests: {error}")
    return 0 if result.parts and result.score >= result.max_score else 1


def _export_canvas(args: argparse.Namespace) -> int:
    from tfcourse.grading.lms import canvas_csv

    grades = Path(args.dir) / f"grades-{args.name}.csv"
    if not grades.is_file():
        raise FileNotFoundError(f"no {grades}; run `tfcourse grade {args.dir} {args.name}` first")
    out = args.output or Path(args.dir) / f"canvas-{args.name}.csv"
    unknown = canvas_csv(grades, out, column=args.column or args.name, roster=args.roster)
    print(f"wrote {out}")
    if unknown:
        print(f"not in the roster (written with their id as SIS Login ID): {', '.join(unknown)}", file=sys.stderr)
    return 0


def _export_gradescope(args: argparse.Namespace) -> int:
    from tfcourse.grading.gradescope import export

    done = export(
        args.dir,
        args.name,
        args.output,
        wheel=args.wheel,
        unsafe=args.unsafe,
        repository=args.repository,
        ref=args.ref,
        hidden_visibility=args.hidden_visibility,
    )
    for warning in done.warnings:
        print(f"note: {warning}", file=sys.stderr)
    if args.unsafe:
        print(
            "WARNING: --unsafe: where Gradescope's container cannot make the grading sandbox, submissions run "
            "without it, as root: a hostile one can then read the hidden tests and the course secret and forge "
            "its own results",
            file=sys.stderr,
        )
    print(f"wrote {done.path.resolve()}: {', '.join(done.notebooks)}; tfcourse from {done.install}")
    print("it holds the hidden tests and the course secret: upload it to Gradescope, share it with no one else")
    return 0


def _parser() -> argparse.ArgumentParser:
    from tfcourse.grading.settings import Limits

    defaults = Limits()
    parser = argparse.ArgumentParser(prog="tfcourse", description="Exercises and grading for the tfcourse course.")
    commands = parser.add_subparsers(dest="command", required=True)

    listing = commands.add_parser("exercises", help="list the exercise catalogue")
    listing.add_argument("--catalogue", type=Path, default=None, help="catalogue file (default: the bank's)")
    listing.set_defaults(run=_exercises)

    get = commands.add_parser("get", help="write an exercise's student notebook into the current folder")
    get.add_argument("id", help="exercise id, e.g. ch04-masks (tfcourse exercises lists them)")
    get.add_argument("--dir", type=Path, default=None, help="the folder to write into (default: the current one)")
    get.add_argument(
        "--force",
        action="store_true",
        help="replace an existing ID.ipynb with a fresh copy (the old file is kept as ID-backup-N.ipynb)",
    )
    get.set_defaults(run=_get)

    course = commands.add_parser("course", help="manage a course folder").add_subparsers(dest="action", required=True)
    init = course.add_parser("init", help="create an nbgrader course folder suited to PyTorch notebooks")
    init.add_argument("dir", type=Path)
    init.add_argument("--course-id", default="tfcourse")
    init.add_argument("--timeout", type=int, default=defaults.timeout, help="seconds per cell")
    init.add_argument("--memory-mb", type=int, default=defaults.memory_mb, help="kernel address-space limit")
    init.add_argument("--max-output-lines", type=int, default=defaults.max_output_lines)
    init.add_argument("--force", action="store_true", help="overwrite an existing nbgrader_config.py")
    init.add_argument(
        "--db",
        default=None,
        metavar="URL",
        help="the gradebook's database URL, e.g. postgresql://grader@dbhost/course (default: SQLite, "
        "gradebook.db in DIR); the schema is created on first use",
    )
    init.set_defaults(run=_course_init)

    assign = commands.add_parser("assign", help="compose, release and validate a problem set from the bank")
    assign.add_argument("dir", type=Path)
    assign.add_argument("name", help="assignment name")
    assign.add_argument("--exercises", nargs="+", required=True, metavar="ID", help="exercise ids from the catalogue")
    assign.add_argument("--force", action="store_true", help="replace an existing assignment source")
    assign.add_argument("--no-validate", action="store_true", help="skip running the source and release")
    assign.add_argument("--workers", type=int, default=2, help="parallel validation processes")
    assign.add_argument(
        "--duedate",
        default=None,
        metavar="ISO8601",
        help="due date and time, e.g. 2026-12-10T23:59:00 (UTC unless it has a timezone such as +01:00)",
    )
    assign.add_argument(
        "--late-penalty",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="fraction of a notebook's points lost per started day late, never below 0 (default 0: none)",
    )
    assign.set_defaults(run=_assign)

    grade = commands.add_parser("grade", help="autograde all submissions in parallel and export grades")
    grade.add_argument("dir", type=Path)
    grade.add_argument("name", help="assignment name")
    grade.add_argument("--workers", type=int, default=2, help="parallel grading processes")
    grade.add_argument("--deadline", type=float, default=None, help="seconds one student's grading may take")
    grade.add_argument("--students", nargs="+", default=None, help="grade only these students")
    grade.add_argument("--no-feedback", action="store_true", help="skip the HTML feedback")
    grade.add_argument("--quiet", action="store_true", help="no progress bar")
    grade.add_argument("--force", action="store_true", help="re-grade submissions unchanged since their last grading")
    grade.add_argument(
        "--unsafe",
        action="store_true",
        help="grade without the sandbox where none can be made (submissions run with your rights)",
    )
    grade.set_defaults(run=_grade)

    check = commands.add_parser("check", help="run a notebook and show the verdict of its visible tests")
    check.add_argument("notebook", type=Path)
    check.add_argument("--timeout", type=int, default=defaults.timeout, help="seconds per cell")
    check.add_argument("--memory-mb", type=int, default=defaults.memory_mb, help="kernel address-space limit")
    check.set_defaults(run=_check)

    exporting = commands.add_parser("export", help="export an assignment for a grading platform")
    platforms = exporting.add_subparsers(dest="platform", required=True)
    gradescope = platforms.add_parser(
        "gradescope", help="a Gradescope autograder zip that grades as `tfcourse grade` does"
    )
    gradescope.add_argument("dir", type=Path, help="the course folder")
    gradescope.add_argument("name", help="assignment name")
    gradescope.add_argument("-o", "--output", type=Path, default=Path("autograder.zip"), help="the zip to write")
    gradescope.add_argument(
        "--wheel", type=Path, default=None, help="embed this tfcourse wheel instead of installing from the repository"
    )
    gradescope.add_argument("--repository", default=None, help="git repository to install tfcourse from")
    gradescope.add_argument("--ref", default=None, help="git commit or tag to install (default: the one running now)")
    gradescope.add_argument(
        "--hidden-visibility",
        default="after_published",
        choices=["after_published", "after_due_date", "hidden", "visible"],
        help="when students see the parts that have hidden tests (default: after_published; visible shows them at "
        "once, so that resubmitting can probe the hidden tests)",
    )
    gradescope.add_argument(
        "--unsafe",
        action="store_true",
        help="grade without the sandbox where the container cannot make one (submissions then run as root)",
    )
    gradescope.set_defaults(run=_export_gradescope)
    canvas = platforms.add_parser("canvas", help="a Canvas gradebook-import CSV of the assignment's totals")
    canvas.add_argument("dir", type=Path, help="the course folder")
    canvas.add_argument("name", help="assignment name (its grades-NAME.csv is read)")
    canvas.add_argument("-o", "--output", type=Path, default=None, help="the CSV to write (default: canvas-NAME.csv)")
    canvas.add_argument("--column", default=None, help='the Canvas column: a title, or "Title (canvas id)"')
    canvas.add_argument("--roster", type=Path, default=None, help="Canvas's gradebook export, to match students")
    canvas.set_defaults(run=_export_canvas)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tfcourse`` console script; returns the exit status."""
    # nbformat -> jsonschema imports rfc3987_syntax when it is installed, which compiles a grammar at import
    # (about 3 s on 2 cores, most of `tfcourse check`); nothing here validates IRIs, so skip it.
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except (FileNotFoundError, FileExistsError, KeyError, ValueError, RuntimeError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"tfcourse {args.command}: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
