#!/usr/bin/env python3
"""Compares two JUnit reports of the Python SDK suite (scripts/sdk-python-suite.sh).

    compare.py REFERENCE.xml CANDIDATE.xml

Prints the counts of each run, then every test that passed on the reference server and did not
pass on the candidate, grouped by file, with the first line of the candidate's failure message.
"""

import sys
import xml.etree.ElementTree as ET
from collections import defaultdict


def outcomes(path: str) -> dict[str, tuple[str, str]]:
    """Maps `file::test` to (outcome, first line of the failure message)."""
    result = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = child.tag
                message = (child.get("message") or child.text or "").strip().splitlines()
                message = message[0][:160] if message else ""
                break
            if child.tag == "skipped":
                outcome = "skipped"
                message = (child.get("message") or "")[:160]
        result[name] = (outcome, message)
    return result


def counts(results: dict[str, tuple[str, str]]) -> str:
    tally: dict[str, int] = defaultdict(int)
    for outcome, _ in results.values():
        tally[outcome] += 1
    return ", ".join(f"{tally[k]} {k}" for k in ("passed", "failure", "error", "skipped"))


def main() -> None:
    reference_path, candidate_path = sys.argv[1], sys.argv[2]
    reference, candidate = outcomes(reference_path), outcomes(candidate_path)
    print(f"reference {reference_path}: {counts(reference)}")
    print(f"candidate {candidate_path}: {counts(candidate)}")
    passed_on_reference = {n for n, (o, _) in reference.items() if o == "passed"}
    both = sum(1 for n in passed_on_reference if candidate.get(n, ("missing", ""))[0] == "passed")
    print(f"of the {len(passed_on_reference)} that pass on the reference, {both} pass on the candidate")
    by_file: dict[str, list[str]] = defaultdict(list)
    for name in sorted(passed_on_reference):
        outcome, message = candidate.get(name, ("missing", ""))
        if outcome != "passed":
            module, test = name.split("::", 1)
            by_file[module].append(f"  {test}: {outcome} {message}")
    for module, lines in sorted(by_file.items()):
        print(f"{module} ({len(lines)})")
        print("\n".join(lines))
    newly = sorted(n for n, (o, _) in candidate.items() if o == "passed" and n not in passed_on_reference)
    if newly:
        print(f"pass on the candidate but not on the reference ({len(newly)}):")
        print("\n".join(f"  {n}" for n in newly))


if __name__ == "__main__":
    main()
