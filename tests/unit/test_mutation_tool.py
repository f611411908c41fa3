"""tools/mutation.py (``nox -s mutation``) without mutmut: the seeded sample, targets, the
equivalents list, and the table's arithmetic."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "mutation.py"

pytestmark = pytest.mark.skipif(not SCRIPT.exists(), reason="tools/ is not next to the tests")


@pytest.fixture(scope="module")
def mutation() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ka_mutation_tool", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


NAMES = [f"ka.policy.x_f{i // 7}__mutmut_{i % 7 + 1}" for i in range(200)]


def test_the_sample_is_fixed_by_the_seed(mutation: ModuleType) -> None:
    first = mutation.sample(NAMES, 80, seed=3)
    assert first == mutation.sample(list(reversed(NAMES)), 80, seed=3)  # input order plays no part
    assert len(first) == 80 and len(set(first)) == 80 and set(first) <= set(NAMES)
    assert first == sorted(first)
    assert mutation.sample(NAMES, 80, seed=4) != first
    assert mutation.sample(NAMES, None, seed=3) == sorted(NAMES)
    assert mutation.sample(NAMES[:10], 80, seed=3) == sorted(NAMES[:10])


def test_the_sample_is_the_same_on_every_python(mutation: ModuleType) -> None:
    # SHA-256 of "seed\0name" orders the names: no random module, whose algorithms may change.
    names = [f"ka.units.x_{f}__mutmut_{n}" for f, n in (("a", 1), ("a", 2), ("b", 1), ("c", 1))]
    assert mutation.sample(names, 2, seed=0) == ["ka.units.x_a__mutmut_1", "ka.units.x_b__mutmut_1"]
    assert mutation.sample(names, 2, seed=2) == ["ka.units.x_a__mutmut_2", "ka.units.x_c__mutmut_1"]
    assert mutation.sample(names, 2, seed=4) == ["ka.units.x_a__mutmut_2", "ka.units.x_b__mutmut_1"]


def test_new_mutants_do_not_reshuffle_the_sample(mutation: ModuleType) -> None:
    before = mutation.sample(NAMES, 40, seed=0)
    extra = [f"ka.policy.x_new__mutmut_{i}" for i in range(1, 30)]
    after = mutation.sample(NAMES + extra, 40, seed=0)
    # what stays of the old population was already chosen: a new mutant can only displace one
    assert set(after) - set(extra) <= set(before)
    assert len(set(before) - set(after)) == len(set(after) & set(extra))


def test_function_of_names_the_changed_function(mutation: ModuleType) -> None:
    assert mutation.function_of("ka.policy.xǁKeepAliveǁ__init____mutmut_3") == "KeepAlive.__init__"
    assert mutation.function_of("ka.units.x_seconds__mutmut_12") == "seconds"
    assert mutation.function_of("ka.live.procfs.x__ipv6__mutmut_1") == "_ipv6"
    with pytest.raises(ValueError, match=r"'ka\.units\.seconds' is not a mutmut mutant name"):
        mutation.function_of("ka.units.seconds")


def test_targets_are_modules_files_or_folders(mutation: ModuleType, tmp_path: Path) -> None:
    files = ("ka/__init__.py", "ka/policy.py", "ka/live/__init__.py", "ka/live/procfs.py", "ka/live/model.py")
    for name in files:
        (tmp_path / "src" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / name).write_text("")
    (tmp_path / "src" / "ka" / "_ka_c.pyx").write_text("")
    resolve = mutation.resolve_targets
    assert resolve(["ka.policy"], tmp_path) == [Path("src/ka/policy.py")]
    assert resolve(["src/ka/policy.py", "ka.policy"], tmp_path) == [Path("src/ka/policy.py")]
    live = [Path("src/ka/live/__init__.py"), Path("src/ka/live/model.py"), Path("src/ka/live/procfs.py")]
    assert resolve(["ka.live"], tmp_path) == live
    assert resolve(["src/ka/live"], tmp_path) == live
    assert resolve(["ka.live.procfs", "ka"], tmp_path)[0] == Path("src/ka/__init__.py")
    for bad in ("ka.nothing", "src/other.py", "src/ka/_ka_c.pyx", "/etc/passwd"):
        with pytest.raises(ValueError, match=f"{bad!r} is not a module, file or folder of ka under src/ka/"):
            resolve([bad], tmp_path)


def test_module_of_a_path(mutation: ModuleType) -> None:
    assert mutation.module_of(Path("src/ka/live/procfs.py")) == "ka.live.procfs"
    assert mutation.module_of(Path("src/ka/http/__init__.py")) == "ka.http"


DIFF = """\
--- src/ka/_ka_py.py
+++ src/ka/_ka_py.py
@@ -1,5 +1,5 @@
 def _apply_fd(fd, target, spec):
     if isinstance(target, socket.socket) and target.fileno() == fd:
         return _apply_sock(target, spec)
-    if fd < 0:  # what the kernel answers for a negative descriptor
+    if fd < 1:  # what the kernel answers for a negative descriptor
         return _BAD_FD, Option.KEEPALIVE"""


def test_a_change_is_its_function_and_lines(mutation: ModuleType) -> None:
    change = mutation.change_of("ka._ka_py", "ka._ka_py.x__apply_fd__mutmut_9", DIFF)
    assert change == mutation.Change(
        "ka._ka_py",
        "_apply_fd",
        "if fd < 0: # what the kernel answers for a negative descriptor",
        "if fd < 1: # what the kernel answers for a negative descriptor",
    )
    # the header lines (--- / +++) are not part of it; a removed line alone gives an empty side
    removal = "--- a\n+++ a\n@@ -1 +1 @@\n-    x = 1\n     y = 2"
    assert mutation.change_of("m", "m.x_f__mutmut_1", removal) == mutation.Change("m", "f", "x = 1", "")


def test_equivalents_match_whatever_the_spacing(mutation: ModuleType, tmp_path: Path) -> None:
    listed = tmp_path / "equivalents.json"
    entry = {
        "module": "ka._ka_py",
        "function": "_apply_fd",
        "before": "if fd < 0:   # what the kernel answers for a negative descriptor",
        "after": "if fd  < 1: # what the kernel answers for a negative descriptor",
        "reason": "an example",
    }
    listed.write_text(json.dumps([entry]))
    [equivalent] = mutation.load_equivalents(listed)
    assert equivalent.reason == "an example"
    assert equivalent.change == mutation.change_of("ka._ka_py", "ka._ka_py.x__apply_fd__mutmut_9", DIFF)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"entries": []}, "expected a JSON list of objects, not dict"),
        ([{"module": "m", "function": "f", "before": "a", "after": "b"}], "entry #0 needs the string fields"),
        (
            [{"module": "m", "function": "f", "before": "a", "after": "b", "reason": " "}],
            r"entry #0 \(f\) gives no reason",
        ),
    ],
)
def test_a_bad_equivalents_file_is_named(
    mutation: ModuleType, tmp_path: Path, content: object, message: str
) -> None:
    listed = tmp_path / "equivalents.json"
    listed.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=message):
        mutation.load_equivalents(listed)


def test_the_checked_in_equivalents_load(mutation: ModuleType) -> None:
    for equivalent in mutation.load_equivalents():
        assert equivalent.change.module.startswith("ka") and equivalent.change.function
        assert equivalent.change.before != equivalent.change.after, equivalent


def test_statuses_fall_into_columns(mutation: ModuleType) -> None:
    categorize = mutation.categorize
    assert categorize("killed", equivalent=False) == "killed"
    assert categorize("no tests", equivalent=False) == "survived"  # nothing reaches the code
    assert categorize("survived", equivalent=True) == "equivalent"
    assert categorize("killed", equivalent=True) == "killed"  # a listed mutant that dies stays killed
    assert categorize("timeout", equivalent=False) == "timeout"
    assert categorize("segfault", equivalent=False) == "other"
    assert categorize("not checked", equivalent=False) == "unchecked"
    with pytest.raises(ValueError, match="unknown mutmut status 'sleepy'"):
        categorize("sleepy", equivalent=False)


def _tally(mutation: ModuleType, module: str, **counts: int) -> object:
    tally = mutation.Tally(module)
    for column, n in counts.items():
        for _ in range(n):
            tally.add(column)
    return tally


def test_the_score_leaves_equivalent_and_unjudged_mutants_out(mutation: ModuleType) -> None:
    tally = _tally(mutation, "ka.units", killed=70, timeout=2, survived=3, equivalent=4, other=1)
    assert tally.sampled == 80  # type: ignore[attr-defined]
    assert tally.score == pytest.approx(72 / 75)  # type: ignore[attr-defined]
    assert _tally(mutation, "m", equivalent=2, unchecked=1).score is None  # type: ignore[attr-defined]
    assert _tally(mutation, "m", survived=1).score == 0.0  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="unknown category 'dead'"):
        mutation.Tally("m").add("dead")


def test_the_table_has_a_row_per_module_and_a_total(mutation: ModuleType) -> None:
    units = _tally(mutation, "ka.units", killed=78, survived=1, equivalent=1)
    procfs = _tally(mutation, "ka.live.procfs", killed=60, timeout=4, survived=16)
    lines = mutation.format_table([units, procfs]).splitlines()
    assert lines[0].split() == [
        "module",
        "sampled",
        "killed",
        "timeout",
        "survived",
        "equivalent",
        "other",
        "unchecked",
        "score",
    ]
    assert set(lines[1]) <= {"-", " "}
    assert lines[2].split() == ["ka.units", "80", "78", "0", "1", "1", "0", "0", "98.7%"]
    assert lines[3].split() == ["ka.live.procfs", "80", "60", "4", "16", "0", "0", "0", "80.0%"]
    assert lines[4].split() == ["total", "160", "138", "4", "17", "1", "0", "0", "89.3%"]
    assert len(mutation.format_table([units]).splitlines()) == 3  # one module: no total row
    assert mutation.format_score(None) == "-"
