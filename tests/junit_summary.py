"""Add up JUnit XML files from the host and guest pytest runs into one closing line.

Exits 1 when any test failed or errored, when a file is missing (that suite never ran, e.g. the
guest did not boot), or when a guest suite skipped or ran nothing.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def counts(path: Path) -> dict[str, int]:
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in suites:
        for key in total:
            total[key] += int(suite.get(key, 0))
    return total


def main(paths: list[str]) -> int:
    lines: list[str] = []
    ok = summarise([Path(p) for p in paths], lines)
    text = "\n".join(lines)
    print(text)
    (Path(paths[0]).parent / "summary.txt").write_text(text + "\n")
    return 0 if ok else 1


def summarise(paths: list[Path], lines: list[str]) -> bool:
    passed = failed = skipped = 0
    ok = True
    for path in paths:
        if not path.exists():
            lines.append(f"{path.stem}: no results (the suite did not run): counted as 1 failed")
            failed += 1
            continue
        c = counts(path)
        bad = c["failures"] + c["errors"]
        good = c["tests"] - bad - c["skipped"]
        lines.append(f"{path.stem}: {good} passed, {bad} failed, {c['skipped']} skipped")
        if path.stem.startswith("guest") and (c["skipped"] or c["tests"] == 0):
            lines.append(f"{path.stem}: a guest suite must run every test, not skip or run none")
            ok = False
        passed, failed, skipped = passed + good, failed + bad, skipped + c["skipped"]
    lines.append(f"total: {passed} passed, {failed} failed, {skipped} skipped")
    return ok and failed == 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
