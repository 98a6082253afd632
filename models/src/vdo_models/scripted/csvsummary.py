"""The "CSV summary script" demo: per-column figures for a CSV file, standard library only."""

from __future__ import annotations

from vdo_models.scripted.demo import UNITTEST_COMMAND, Comment, Demo, Patch, matcher

_HEADER_CHECK = """    header = next(reader, None)
    if header is None:
        raise ValueError("the file is empty: there is no header row")
"""

_REPORTED_ERRORS = """    try:
        with open(args.file, encoding="utf-8-sig", newline="") as file:
            summary = summarise(file)
    except (OSError, ValueError, csv.Error) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        print(f"csvsummary: {args.file}: {reason}", file=sys.stderr)
        return 1
"""

_UNREPORTED_ERRORS = """    with open(args.file, encoding="utf-8-sig", newline="") as file:
        summary = summarise(file)
"""

_EMPTY_FILE_TEST = """
    def test_an_empty_file_is_an_error(self) -> None:
        with self.assertRaises(ValueError):
            summarise([])
"""

_ERROR_MESSAGE_TESTS = """
    def test_a_missing_file_is_reported_without_a_traceback(self) -> None:
        with tempfile.TemporaryDirectory() as folder:
            missing = str(Path(folder) / "missing.csv")
            result = self.run_tool(missing)
        self.assertEqual(result.returncode, 1)
        self.assertIn(f"csvsummary: {missing}: No such file or directory", result.stderr)
        self.assertNotIn("Traceback", result.stderr)

    def test_an_empty_file_is_reported_without_a_traceback(self) -> None:
        with tempfile.TemporaryDirectory() as folder:
            empty = Path(folder) / "empty.csv"
            empty.write_text("", encoding="utf-8")
            result = self.run_tool(str(empty))
        self.assertEqual(result.returncode, 1)
        self.assertIn("there is no header row", result.stderr)
        self.assertNotIn("Traceback", result.stderr)
"""

DEMO = Demo(
    name="csvsummary",
    description="a CSV summary script",
    matches=matcher(r"\bcsv\b", r"summar|statistic|\bstats?\b"),
    plan={
        "summary": (
            "[scripted model] csvsummary, a script that summarises each column of a CSV file: "
            "count, min, max and mean for numeric columns, count and distinct values for text "
            "columns. Standard library only (csv); a sample.csv to run it on."
        ),
        "runtime": "python3",
        "files": ["csvsummary.py", "sample.csv"],
        "dependencies": [],
        "steps": [
            "csvsummary.py: summarise_column() decides numeric (every non-empty cell is a "
            "finite number) or text, and computes its figures, leaving empty cells out",
            "csvsummary.py: summarise() reads the header row and the data rows with the csv "
            "module, padding short rows and skipping blank lines",
            "csvsummary.py: main() takes the file with argparse (with --help) and prints one "
            "line for the file and one per column",
            "sample.csv: a small sales table with text, numeric and empty cells",
        ],
        "test_strategy": (
            "unittest, standard library only: numeric columns compared as numbers, decimals and "
            "negative numbers, distinct text values, mixed and empty columns, short rows and "
            "quoted cells; the script run as a real process on sample.csv and with --help. "
            "Tests live in tests/."
        ),
        "run_command": ["python3", "csvsummary.py", "sample.csv"],
        "ready_check": {"kind": "output", "text": "sample.csv: 8 rows, 5 columns"},
    },
    build_files=("csvsummary.py", "sample.csv"),
    test_files=("tests/test_csvsummary.py",),
    test_command=UNITTEST_COMMAND,
    bug=(
        Patch(
            "csvsummary.py",
            finished="minimum=min(floats),\n        maximum=max(floats),",
            earlier="minimum=float(min(values)),\n        maximum=float(max(values)),",
        ),
    ),
    bug_comment=Comment(
        "csvsummary.py",
        'min and max are taken over the cells as text and converted afterwards, so "10" sorts '
        'before "9": for 9, 10 and 100 the minimum comes out as 10 and the maximum as 9. '
        "Take min() and max() of the parsed numbers.",
    ),
    before_review=(
        Patch("csvsummary.py", finished=_HEADER_CHECK, earlier="    header = next(reader)\n"),
        Patch("csvsummary.py", finished=_REPORTED_ERRORS, earlier=_UNREPORTED_ERRORS),
        Patch("tests/test_csvsummary.py", finished="import tempfile\n", earlier=""),
        Patch("tests/test_csvsummary.py", finished=_EMPTY_FILE_TEST, earlier=""),
        Patch("tests/test_csvsummary.py", finished=_ERROR_MESSAGE_TESTS, earlier=""),
    ),
    review_comment=Comment(
        "csvsummary.py",
        "An empty file stops the script with a StopIteration traceback and a missing file with "
        "a FileNotFoundError traceback. Report both with an error message on standard error "
        "('csvsummary: FILE: reason') and exit with status 1; summarise() should raise "
        "ValueError for a file without a header row.",
    ),
    approval=(
        "[scripted model] Approved. This is the built-in scripted model's fixed review of its "
        "own demo, not a real code review: csvsummary reads the file with the csv module, tells "
        "numeric from text columns, reports bad input clearly and its tests pass."
    ),
    approval_comments=(
        Comment(
            "csvsummary.py",
            "Numbers with thousands separators (1,234) are treated as text; fine for this demo.",
        ),
    ),
)
