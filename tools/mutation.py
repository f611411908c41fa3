"""Mutation testing of ka: how many planted defects the tests catch, per module (``nox -s mutation``).

    python tools/mutation.py [TARGET ...] [--changed [REF]] [--sample N | --all] [--seed S]
                             [--rerun {none,survived,all}] [--report-only] [--max-children K]

TARGET is a module (``ka.policy``), a file (``src/ka/policy.py``) or a folder (``src/ka/live``);
without one, the files this branch changed against ``main`` (``--changed REF`` picks another
base). Each module's mutants (mutmut 3: a small change to one function, e.g. ``<`` -> ``<=``) are
sampled: N per module (default 80) in an order fixed by the seed, the same sample on every
machine and Python. mutmut runs only the sampled mutants without a result yet (``--rerun`` for
more), each against the tests that call its function, subprocesses and the documentation's
examples included; results are kept in ``mutants/`` between runs.

The table counts per module: killed, timeout, survived (a surviving mutant is a defect the tests
would let through; one no test reaches counts as survived), equivalent (survivors listed in
tools/mutation_equivalents.json: changes no test can see, each with its reason; left out of the
score) and other (crashes, unchecked). Score = (killed + timeout) / (killed + timeout +
survived). Every survivor is printed with its diff, ready to be killed or listed as equivalent.

The sampling, the equivalents list and the table are plain functions (tests/unit/
test_mutation_tool.py); mutmut is imported only to enumerate and run mutants.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = Path("src")
PACKAGE = SOURCE / "ka"
MUTANTS = Path("mutants")
HOOKS = Path(__file__).resolve().parent / "mutation_hooks"
EQUIVALENTS = Path(__file__).resolve().parent / "mutation_equivalents.json"
DEFAULT_SAMPLE = 80
DEFAULT_SEED = 0

# mutmut's statuses (mutmut.stats.status_by_exit_code) folded into the table's columns.
CATEGORY_OF_STATUS = {
    "killed": "killed",
    "timeout": "timeout",
    "survived": "survived",
    "no tests": "survived",  # no test reaches the function: nothing would catch the defect
    "caught by type check": "killed",
    "segfault": "other",
    "suspicious": "other",
    "skipped": "other",
    "check was interrupted by user": "unchecked",
    "not checked": "unchecked",
}
COLUMNS = ("killed", "timeout", "survived", "equivalent", "other", "unchecked")


# -- which mutants ------------------------------------------------------------------------------


def module_of(path: Path) -> str:
    """``src/ka/live/procfs.py`` -> ``ka.live.procfs``; a package's ``__init__.py`` -> the package."""
    parts = list(path.relative_to(SOURCE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve_targets(targets: Iterable[str], root: Path = ROOT) -> list[Path]:
    """Source files (relative to ``root``) for modules, files and folders, sorted, each once.

    Raises ValueError naming a target that is none of those under ``src/ka``.
    """
    found: set[Path] = set()
    for target in targets:
        as_path = Path(target)
        if "/" not in target and not target.endswith(".py"):  # a dotted name: ka.live.procfs
            as_path = SOURCE / Path(*target.split("."))
            if (root / as_path.with_suffix(".py")).is_file():
                as_path = as_path.with_suffix(".py")
        full = (root / as_path).resolve()
        try:
            relative = full.relative_to((root / PACKAGE).resolve())
        except ValueError:
            raise ValueError(f"{target!r} is not a module, file or folder of ka under {PACKAGE}/") from None
        if full.is_dir():
            found.update(PACKAGE / relative / p.relative_to(full) for p in full.rglob("*.py"))
        elif full.is_file() and full.suffix == ".py":
            found.add(PACKAGE / relative)
        else:
            raise ValueError(f"{target!r} is not a module, file or folder of ka under {PACKAGE}/")
    return sorted(found)


def changed_files(base: str, root: Path = ROOT) -> list[Path]:
    """The Python files under src/ka this branch changed since it left ``base`` (commits and
    uncommitted edits alike), deleted files left out."""
    merge_base = _git(root, "merge-base", base, "HEAD").strip()
    names = _git(root, "diff", "--name-only", "--diff-filter=d", merge_base, "--", str(PACKAGE)).split()
    untracked = _git(root, "ls-files", "--others", "--exclude-standard", "--", str(PACKAGE)).split()
    return sorted({Path(n) for n in names + untracked if n.endswith(".py") and (root / n).is_file()})


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def sample(names: Iterable[str], size: int | None, seed: int) -> list[str]:
    """``size`` of ``names`` (all for None), chosen by the seed alone, in name order.

    Each name's place is the SHA-256 of seed and name, so the choice is the same on every Python
    and machine, and adding mutants elsewhere in a module never reshuffles the rest.
    """
    ordered = sorted(set(names), key=lambda name: hashlib.sha256(f"{seed}\0{name}".encode()).digest())
    return sorted(ordered if size is None else ordered[:size])


def function_of(mutant: str) -> str:
    """The function a mutant changes: ``ka.policy.xǁKeepAliveǁ__init____mutmut_3`` ->
    ``KeepAlive.__init__``, ``ka.units.x_seconds__mutmut_12`` -> ``seconds``."""
    mangled = mutant.rpartition("__mutmut_")[0].rpartition(".")[2]
    if mangled.startswith("xǁ"):
        cls, _, method = mangled[2:].partition("ǁ")
        return f"{cls}.{method}"
    if mangled.startswith("x_"):
        return mangled[2:]
    raise ValueError(f"{mutant!r} is not a mutmut mutant name")


# -- equivalent mutants ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """What a mutant does, in words that survive renumbering: its function and the lines it
    changes (stripped, one string each side, lines joined by newlines)."""

    module: str
    function: str
    before: str
    after: str

    def __str__(self) -> str:
        return f"{self.module}: {self.function}: {self.before!r} -> {self.after!r}"


@dataclass(frozen=True)
class Equivalent:
    """A mutant no test can tell from the original, and why (tools/mutation_equivalents.json)."""

    change: Change
    reason: str


def _squash(text: str) -> str:
    return "\n".join(" ".join(line.split()) for line in text.strip().splitlines())


def change_of(module: str, mutant: str, diff: str) -> Change:
    """A mutant's ``Change`` from its unified diff (``mutmut show``)."""
    before = [line[1:] for line in diff.splitlines() if line.startswith("-") and not line.startswith("---")]
    after = [line[1:] for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    return Change(module, function_of(mutant), _squash("\n".join(before)), _squash("\n".join(after)))


def load_equivalents(path: Path = EQUIVALENTS) -> list[Equivalent]:
    """The checked-in list; raises ValueError naming an entry without its fields or reason."""
    entries = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a JSON list of objects, not {type(entries).__name__}")
    out = []
    for i, entry in enumerate(entries):
        keys = ("module", "function", "before", "after", "reason")
        if not isinstance(entry, dict) or any(not isinstance(entry.get(k), str) for k in keys):
            raise ValueError(f"{path}: entry #{i} needs the string fields {', '.join(keys)}: {entry!r}")
        if not entry["reason"].strip():
            raise ValueError(f"{path}: entry #{i} ({entry['function']}) gives no reason")
        change = Change(entry["module"], entry["function"], _squash(entry["before"]), _squash(entry["after"]))
        out.append(Equivalent(change, entry["reason"]))
    return out


# -- the table ----------------------------------------------------------------------------------


@dataclass
class Tally:
    """One module's counts; ``score`` is None while nothing was detected or survived."""

    module: str
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COLUMNS, 0))

    def add(self, category: str) -> None:
        if category not in self.counts:
            raise ValueError(f"unknown category {category!r}: expected one of {', '.join(COLUMNS)}")
        self.counts[category] += 1

    @property
    def sampled(self) -> int:
        return sum(self.counts.values())

    @property
    def score(self) -> float | None:
        detected = self.counts["killed"] + self.counts["timeout"]
        judged = detected + self.counts["survived"]
        return detected / judged if judged else None


def categorize(status: str, equivalent: bool) -> str:
    """The table column of a mutant with mutmut status ``status``; a survivor listed as
    equivalent goes to ``equivalent`` (a killed one stays killed: the list is then wrong)."""
    try:
        category = CATEGORY_OF_STATUS[status]
    except KeyError:
        raise ValueError(f"unknown mutmut status {status!r}") from None
    return "equivalent" if equivalent and category == "survived" else category


def total(tallies: Sequence[Tally]) -> Tally:
    out = Tally("total")
    for tally in tallies:
        for column in COLUMNS:
            out.counts[column] += tally.counts[column]
    return out


def format_score(score: float | None) -> str:
    return "-" if score is None else f"{100 * score:.1f}%"


def format_table(tallies: Sequence[Tally]) -> str:
    """The per-module table, a total row when there is more than one module."""
    rows = list(tallies) + ([total(tallies)] if len(tallies) > 1 else [])
    header = ("module", "sampled", *COLUMNS, "score")
    cells = [header] + [
        (t.module, str(t.sampled), *(str(t.counts[c]) for c in COLUMNS), format_score(t.score)) for t in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# -- running mutmut -------------------------------------------------------------------------------


def enumerate_mutants(path: Path) -> list[str]:
    """Every mutant mutmut makes of one source file, by its full name (``ka.policy.x_...``)."""
    from mutmut.mutation.file_mutation import mutate_file_contents
    from mutmut.utils.format_utils import get_mutant_name

    mutated = mutate_file_contents(str(path), (ROOT / path).read_text(encoding="utf-8"))
    return sorted(get_mutant_name(path, name) for name in mutated.mutant_names)


def results_of(path: Path) -> dict[str, str]:
    """mutmut's status of each mutant of ``path`` it has generated (``not checked`` until run)."""
    from mutmut.stats import status_by_exit_code

    meta = ROOT / MUTANTS / f"{path}.meta"
    if not meta.exists():
        return {}
    codes: dict[str, int | None] = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
    return {name: status_by_exit_code[code] for name, code in codes.items()}


def diff_of(path: Path, mutant: str) -> str:
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    cwd = os.getcwd()
    os.chdir(ROOT)  # mutmut reads mutants/ relative to the working directory
    try:
        return str(get_diff_for_mutant(mutant, path=path))
    finally:
        os.chdir(cwd)


def run_mutmut(names: Sequence[str], max_children: int, niceness: int) -> int:
    """``mutmut run NAMES`` in the tree, subprocesses running the mutated code; leftovers of
    tests killed at their time limit are removed afterwards. Returns mutmut's exit code."""
    mutmut = Path(sys.executable).parent / "mutmut"
    work = Path(tempfile.mkdtemp(prefix="ka-mutation-"))
    hits = work / "hits"
    hits.mkdir()
    hits.chmod(0o1777)  # tests run ka as another user too (nobody): its calls count as well
    work.chmod(0o755)
    token = secrets.token_hex(8)
    env = dict(os.environ)
    # Exists before mutmut starts: a path missing at start-up is cached as no place to import
    # from, and ka would then come from the tree (or not at all) in mutmut's own process.
    (ROOT / MUTANTS / SOURCE).mkdir(parents=True, exist_ok=True)
    # Subprocesses (python -m ka, servers) import the mutated copy and see the active mutant
    # through MUTANT_UNDER_TEST, which mutmut sets in the environment they inherit.
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(HOOKS), str(ROOT / MUTANTS / SOURCE), env.get("PYTHONPATH", "")) if p
    )
    # The mutated modules are large (every mutant is a copy of its function): compiling them
    # again in each subprocess costs seconds, so their bytecode is cached in mutants/.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["KA_MUTATION_HITS"] = str(hits)
    env["KA_MUTATION_RUN"] = token
    command = ["nice", "-n", str(niceness), str(mutmut), "run", "--max-children", str(max_children), *names]
    stats = ROOT / MUTANTS / "mutmut-stats.json"
    mapped_before = stats.exists()
    try:
        code = subprocess.run(command, cwd=ROOT, env=env, check=False).returncode
        if code != 0 and not mapped_before and stats.exists():
            # The first run maps every test in mutmut's own process, then runs the clean tests
            # there too, among what the whole suite left behind (threads, descriptors); a second
            # run reads the mapping from disk and starts clean.
            print("mutation: the first run after the mapping failed; running once more")
            code = subprocess.run(command, cwd=ROOT, env=env, check=False).returncode
        if code != 0 and (work / "tests.log").exists():
            tail = (work / "tests.log").read_text(encoding="utf-8").splitlines()[-15:]
            print("mutation: the last tests pytest started or failed:\n  " + "\n  ".join(tail))
        return code
    finally:
        remove_leftovers(token, work / "pids")
        shutil.rmtree(work, ignore_errors=True)


def remove_leftovers(token: str, pids_file: Path) -> None:
    """End the processes of this run still alive (by pid: those whose environment carries the
    run's token), then delete the network namespaces and cgroups the run's pytest processes
    named after their pid (tests/netns.py, tests/adapters/test_cgroup.py)."""
    mine = [pid for pid in _pids_with_env("KA_MUTATION_RUN", token) if pid != os.getpid()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in mine:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        if mine and sig == signal.SIGTERM:
            time.sleep(1)
    if mine:
        print(f"mutation: ended {len(mine)} leftover process(es) of this run: {mine}")
    try:
        workers = {int(line) for line in pids_file.read_text().split()}
    except FileNotFoundError:
        return
    if shutil.which("ip"):
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
        for name in re.findall(r"^(ka-(\d+)-\S+)", listed, flags=re.MULTILINE):
            if int(name[1]) in workers:
                subprocess.run(["ip", "netns", "del", name[0]], capture_output=True, check=False)
                print(f"mutation: removed leftover network namespace {name[0]}")
    for pid in workers:
        for top in Path("/sys/fs/cgroup").glob(f"**/ka-test-{pid}.slice"):
            for directory in sorted(top.glob("**/"), key=lambda p: len(p.parts), reverse=True):
                try:
                    directory.rmdir()
                    print(f"mutation: removed leftover cgroup {directory}")
                except OSError:
                    pass


def _pids_with_env(key: str, value: str) -> list[int]:
    needle = f"{key}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


# -- the command ----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nox -s mutation --", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("targets", nargs="*", help="modules (ka.policy), files or folders under src/ka")
    parser.add_argument(
        "--changed",
        metavar="REF",
        nargs="?",
        const="main",
        help="the files this branch changed against REF (default main; also used without targets)",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--sample", type=int, default=DEFAULT_SAMPLE, help="mutants per module (default 80)")
    size.add_argument("--all", action="store_true", help="every mutant, no sample")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="the sample's seed (default 0)")
    parser.add_argument(
        "--rerun",
        choices=("none", "survived", "all"),
        default="none",
        help="run again the sampled mutants that have a result: none (default), survivors, all",
    )
    parser.add_argument("--report-only", action="store_true", help="run nothing: the table of kept results")
    parser.add_argument("--max-children", type=int, default=2, help="mutants tested at once (default 2)")
    parser.add_argument("--nice", type=int, default=15, help="niceness of the run (default 15)")
    parser.add_argument("--fail-under", type=float, help="exit 1 when a module scores below this percent")
    args = parser.parse_args(argv)
    if args.sample < 1:
        parser.error(f"--sample takes a positive number of mutants, not {args.sample}")

    os.chdir(ROOT)
    try:
        files = resolve_targets(args.targets)
    except ValueError as exc:
        parser.error(str(exc))
    if args.changed or not args.targets:
        files = sorted(set(files) | set(changed_files(args.changed or "main")))
    if not files:
        parser.error("no module to test: name one (ka.policy), or change one on this branch (--changed)")

    size_per_module = None if args.all else args.sample
    chosen = {path: sample(enumerate_mutants(path), size_per_module, args.seed) for path in files}
    if not args.report_only:
        wanted = {"none": {"not checked"}, "survived": {"not checked", "survived", "no tests"}, "all": None}
        statuses = wanted[args.rerun]
        listed = {e.change for e in load_equivalents()}
        to_run = []
        for path, names in chosen.items():
            known = results_of(path)
            for name in names:
                status = known.get(name, "not checked")
                if statuses is not None and status not in statuses:
                    continue
                # a survivor listed as equivalent stays one: --rerun survived skips it
                survivor = args.rerun == "survived" and status == "survived"
                if survivor and change_of(module_of(path), name, diff_of(path, name)) in listed:
                    continue
                to_run.append(name)
        sampled = sum(map(len, chosen.values()))
        print(f"mutation: {sampled} mutants sampled (seed {args.seed}), {len(to_run)} to run")
        if to_run:
            code = run_mutmut(to_run, args.max_children, args.nice)
            if code != 0:
                print(
                    f"mutation: mutmut exited {code}. Where it says a clean or stats run failed, a test "
                    "failed with no mutant active (often one that times something, on a loaded machine): "
                    "run again, or add debug = true to pyproject.toml's [tool.mutmut] to see which.",
                    file=sys.stderr,
                )
                return code
    return report(chosen, load_equivalents(), args.fail_under)


def report(chosen: dict[Path, list[str]], equivalents: list[Equivalent], fail_under: float | None) -> int:
    """Print the table, the survivors with their diffs, and equivalents entries that were killed."""
    listed = {e.change: e for e in equivalents}
    tallies = []
    survivors: list[tuple[str, Change, str]] = []
    stale: list[Equivalent] = []
    for path, names in chosen.items():
        module = module_of(path)
        tally = Tally(module)
        known = results_of(path)
        for name in names:
            status = known.get(name, "not checked")
            category = CATEGORY_OF_STATUS.get(status, "other")
            change = None
            if category in ("survived", "killed"):
                diff = diff_of(path, name)
                change = change_of(module, name, diff)
                if category == "survived" and change not in listed:
                    survivors.append((name, change, diff))
                elif category == "killed" and change in listed:
                    stale.append(listed[change])
            tally.add(categorize(status, change in listed))
        tallies.append(tally)
    print(format_table(tallies))
    for name, change, diff in survivors:
        print(f"\nsurvived: {name} ({change.function})\n{diff}")
    for entry in stale:
        print(f"\nlisted as equivalent but killed (remove it from {EQUIVALENTS.name}): {entry.change}")
    if fail_under is not None:
        low = [t for t in tallies if t.score is not None and 100 * t.score < fail_under]
        if low:
            print(f"\nbelow {fail_under}%: {', '.join(t.module for t in low)}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
