"""Regenerate the README's result tables from the results JSON files that runs wrote.

Each table sits between ``<!-- BEGIN:<name> -->`` and ``<!-- END:<name> -->`` markers in README.md; figures are never
typed by hand. Usage::

    python scripts/readme_tables.py            # rewrite README.md in place
    python scripts/readme_tables.py --check    # exit 1 if README.md is out of date
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> (results file under results/, "module:function" rendering it as markdown)
TABLES = {
    "lsms-demo": ("lsms_demo.json", "lsms.demo:results_markdown"),
    "lsms-ablation": ("lsms_ablation.json", "lsms.demo:ablation_markdown"),
    "carzero-demo": ("carzero_demo.json", "carzero.demo:markdown"),
    "brgsa-demo": ("brgsa_demo.json", "brgsa.demo:markdown"),
    "brgsa-ablation": ("brgsa_ablation.json", "brgsa.demo:ablation_markdown"),
    "brgsa-reference": ("brgsa_reference_metrics.json", "brgsa.metrics:results_markdown"),
}


def render(name: str) -> str | None:
    """The markdown of table ``name``, or None when its results file or renderer does not exist yet."""
    filename, target = TABLES[name]
    path = ROOT / "results" / filename
    if not path.is_file():
        return None
    module, function = target.split(":")
    try:
        renderer = getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError):
        return None
    results = json.loads(path.read_text())
    if isinstance(results.get("benchmark"), dict) and results["benchmark"].get("frozen_spec") is False:
        raise SystemExit(f"{path} was made on a benchmark generated with another specification than the frozen one; "
                         "its figures cannot go into the README")
    body = renderer(results)
    source = f"<sub>Generated from `results/{filename}` by `python scripts/readme_tables.py`.</sub>"
    return f"{body.rstrip()}\n\n{source}\n"


def update(text: str) -> str:
    """Replace every marked section of ``text`` whose results exist."""
    for name in TABLES:
        table = render(name)
        if table is None:
            continue
        pattern = re.compile(rf"(<!-- BEGIN:{name} -->\n).*?(<!-- END:{name} -->)", re.DOTALL)
        text = pattern.sub(lambda match, table=table: match.group(1) + table + match.group(2), text)
    return text


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if README.md is not up to date")
    options = parser.parse_args(argv)
    readme = ROOT / "README.md"
    current = readme.read_text(encoding="utf-8")
    updated = update(current)
    if options.check:
        if updated != current:
            print("README.md tables are out of date: run python scripts/readme_tables.py", file=sys.stderr)
            return 1
        return 0
    readme.write_text(updated, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
