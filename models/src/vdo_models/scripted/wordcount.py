"""The "command-line word-count tool" demo: like wc, standard library only."""

from __future__ import annotations

from vdo_models.scripted.demo import UNITTEST_COMMAND, Comment, Demo, Patch, matcher

_READ_EACH_FILE = """        try:
            text = read(path)
        except OSError as error:
            print(f"wordcount: {path}: {error.strerror or error}", file=sys.stderr)
            status = 1
            continue
        counts = count(text)
"""

_MISSING_FILE_TEST = """
    def test_a_missing_file_is_reported_and_the_others_still_counted(self) -> None:
        present = self.write("here.txt", "x y\\n")
        missing = str(self.folder / "missing.txt")
        result = self.run_tool(missing, present)
        self.assertEqual(result.returncode, 1)
        self.assertIn(f"wordcount: {missing}: No such file or directory", result.stderr)
        self.assertNotIn("Traceback", result.stderr)
        self.assertIn("here.txt", result.stdout)
"""

DEMO = Demo(
    name="wordcount",
    description="a command-line word-count tool",
    matches=matcher(r"word[\s_-]*counts?|\bwc\b"),
    plan={
        "summary": (
            "[scripted model] wordcount, a command-line tool like wc: prints the lines, words and "
            "characters of each file named (or of standard input), and a total for several "
            "files. Standard library only."
        ),
        "runtime": "python3",
        "files": ["wordcount.py", "sample.txt"],
        "dependencies": [],
        "steps": [
            "wordcount.py: count(text) -> Counts(lines, words, chars): newlines, runs of "
            "non-whitespace, characters",
            "wordcount.py: format_counts() aligns the numbers in columns as wc does",
            "wordcount.py: main() parses FILE arguments with argparse (with --help), reads each "
            "file as UTF-8 or standard input for none or '-', prints one line per file and a "
            "total for several",
            "sample.txt: a short text to run it on",
        ],
        "test_strategy": (
            "unittest, standard library only: count() on empty text, several lines, runs of "
            "whitespace, a last line without a newline and non-ASCII text; the command line run "
            "as a real process on files, on standard input, with --help and with several files. "
            "Tests live in tests/."
        ),
        "run_command": ["python3", "wordcount.py", "sample.txt"],
        "ready_check": {"kind": "output", "text": "138 sample.txt"},
    },
    build_files=("wordcount.py", "sample.txt"),
    test_files=("tests/test_wordcount.py",),
    test_command=UNITTEST_COMMAND,
    bug=(
        Patch(
            "wordcount.py",
            finished="words=len(text.split())",
            earlier='words=len(text.split(" "))',
        ),
    ),
    bug_comment=Comment(
        "wordcount.py",
        'count() splits on single spaces (text.split(" ")): newlines, tabs and runs of spaces '
        "are miscounted and empty text has one word. Split on any whitespace (text.split()).",
    ),
    before_review=(
        Patch(
            "wordcount.py",
            finished=_READ_EACH_FILE,
            earlier="        counts = count(read(path))\n",
        ),
        Patch("tests/test_wordcount.py", finished=_MISSING_FILE_TEST, earlier=""),
    ),
    review_comment=Comment(
        "wordcount.py",
        "A file that does not exist ends the run with a Python traceback and the other files "
        "are not counted. Catch OSError per file, print an error message such as "
        "'wordcount: FILE: No such file or directory' to standard error, go on with the other "
        "files and exit with status 1, as wc does.",
    ),
    approval=(
        "[scripted model] Approved. This is the built-in scripted model's fixed review of its "
        "own demo, not a real code review: wordcount counts like wc, handles standard input, "
        "several files and unreadable files, and its tests pass."
    ),
)
