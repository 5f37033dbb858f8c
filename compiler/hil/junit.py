"""JUnit XML for `hil --junit`, so CI systems show each input's check as a test."""

from __future__ import annotations

from xml.etree import ElementTree as ET


def junit_xml(suite: str, cases: list[tuple[str, str | None]], seconds: float) -> str:
    """cases: (name, failure message or None)."""
    failures = sum(1 for _, failure in cases if failure)
    root = ET.Element("testsuites")
    node = ET.SubElement(
        root, "testsuite", name=suite, tests=str(len(cases)), failures=str(failures), time=f"{seconds:.3f}"
    )
    for name, failure in cases:
        case = ET.SubElement(node, "testcase", classname=suite, name=name)
        if failure:
            ET.SubElement(case, "failure", message=failure).text = failure
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
