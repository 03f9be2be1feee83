"""Case results as JUnit XML, the report format CI systems read: one testsuite per cases file, one testcase per
case (classname the rule, name the case), a failure element holding the readable problems."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from itertools import groupby
from pathlib import Path

from agent.atomic_file import replace_atomically
from agent.rule_tests.runner import CaseResult


def junit_xml(results: list[CaseResult]) -> bytes:
    root = ET.Element("testsuites", name="falco-agent rules test", tests=str(len(results)),
                      failures=str(sum(not r.passed for r in results)))
    for file, group in groupby(results, key=lambda r: r.case.location.file):
        cases = list(group)
        suite = ET.SubElement(root, "testsuite", name=file, tests=str(len(cases)),
                              failures=str(sum(not r.passed for r in cases)),
                              time=f"{sum(r.elapsed_s for r in cases):.3f}")
        for result in cases:
            element = ET.SubElement(suite, "testcase", classname=result.case.rule, name=result.case.name,
                                    file=file, line=str(result.case.location.line), time=f"{result.elapsed_s:.3f}")
            if not result.passed:
                failure = ET.SubElement(element, "failure", message=result.problems[0])
                failure.text = "\n".join(result.problems)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def write_junit(path: Path, results: list[CaseResult]) -> None:
    replace_atomically(path, junit_xml(results))
