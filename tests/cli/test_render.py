"""cli/render.py: the text a person reads, from typed results (no store, no command run)."""

from __future__ import annotations

import json
from pathlib import Path

from interestgeo.cli.render import (
    accounts_text, audit_text, datasets_text, evaluation_text, ingest_json, ingest_text, results_json,
)
from interestgeo.eval.run import EvaluationRun
from interestgeo.ingest import IngestReport
from interestgeo.ingest.report import Reject

METRICS = {"acc@1": 0.25, "acc@5": 0.5, "acc@10": 0.75, "mrr": 0.4, "ndcg@10": 0.5}


def _report(rejected: int) -> IngestReport:
    rejects = [Reject(line=i + 2, reason=f"reason {i}", raw="x") for i in range(min(rejected, 5))]
    return IngestReport(dataset_id=1, dataset="d", rows_read=10 + rejected, rows_stored=10, rows_rejected=rejected,
                        duplicates_skipped=0, rejects=rejects, elapsed_s=0.5, events_per_s=20.0, already_loaded=False,
                        source="f.csv")


def test_ingest_text_shows_five_rejects_and_counts_the_rest() -> None:
    text = ingest_text(_report(8))
    assert text.splitlines()[0] == "f.csv -> dataset 'd' (id 1)"
    assert "rows read 18, stored 10, rejected 8, duplicates skipped 0" in text
    assert "line 6: reason 4" in text and "line 7" not in text
    assert text.splitlines()[-1] == "  ... 3 more rejects (see the store's rejects table)"


def test_ingest_json_is_the_report_alone_for_one_file_and_a_list_for_several() -> None:
    assert json.loads(ingest_json([_report(0)]))["rows_stored"] == 10
    several = json.loads(ingest_json([_report(0), (Path("bad.csv"), "bad.csv: the file is empty")]))
    assert several["files"][1] == {"source": "bad.csv", "error": "bad.csv: the file is empty"}


def test_evaluation_text_names_the_split_every_scorer_and_the_notes() -> None:
    results = {"next_venue": {"model": METRICS, "popular": METRICS}, "next_category": {"model": METRICS}}
    run = EvaluationRun(results, "test", 1234, 56, 7, notes=["no ablations"])
    lines = evaluation_text(run).splitlines()
    assert lines[0] == ("test split: 1,234 samples, ranked among 56 venues and 7 categories "
                        "(ties count against the target)")
    assert lines[2].split() == ["next_venue", "acc@1", "acc@5", "acc@10", "mrr", "ndcg@10"]
    assert lines[3].split() == ["model", "0.2500", "0.5000", "0.7500", "0.4000", "0.5000"]
    assert lines[-1] == "note: no ablations"
    assert json.loads(results_json({"next_venue": {"m": {"mrr": 1 / 3}}})) == {"next_venue": {"m": {"mrr": 0.333333}}}


def test_empty_admin_listings_say_so() -> None:
    assert accounts_text([]) == "no accounts: the dashboard runs in local single-user mode ([app] role)"
    assert datasets_text([]) == "no datasets loaded"
    assert audit_text([]) == "the audit log is empty"
    line = audit_text([{"at": "2026-12-01T10:00:00Z", "event": "login", "account": None, "ip": "1.2.3.4"}])
    assert line.split() == ["2026-12-01T10:00:00Z", "login", "-", "ip=1.2.3.4"]


def test_only_the_cli_prints_or_draws_progress_bars() -> None:
    """The core returns typed results and reports progress through callbacks (text.Progress)."""
    import ast

    package = Path(__file__).parents[2] / "interestgeo"
    offenders = []
    for path in sorted(package.rglob("*.py")):
        if path.is_relative_to(package / "cli"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            name = ""
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                name = "print()"
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "sys" \
                    and node.attr in ("stdout", "stderr"):
                name = f"sys.{node.attr}"
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                name = "tqdm" if any(m.split(".")[0] == "tqdm" for m in modules) else ""
            if name:
                offenders.append(f"{path.relative_to(package)}:{node.lineno} {name}")
    assert offenders == []
