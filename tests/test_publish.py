"""The published benchmark folder and the README numbers generated from it (vitedit.publish)."""

import json

import pandas as pd
import pytest

from vitedit import evidence, publish

from conftest import ROOT
from sweeputil import evidence_row


def _evidence_csv(folder):
    rows = []
    for seed in (42, 43, 44, 45):
        for method, fixed in (("a", 18), ("b", 4)):
            rows.append(
                evidence_row(
                    method,
                    seed,
                    fixed,
                    dataset="bloodmnist",
                    edit_errors_digest=str(seed),
                    ed_rest_errors=50,
                    ed_rest_wrong_to_correct=fixed // 2,
                    test_correct_to_wrong=3,
                    test_wrong_to_correct=4,
                )
            )
    folder.mkdir(parents=True, exist_ok=True)
    for name, table in evidence.tables(pd.DataFrame(rows)).items():
        table.to_csv(folder / f"{name}.csv", index=False)


def test_the_readme_block_is_generated_from_the_published_tables(tmp_path):
    assert publish.readme_block(tmp_path / "none") == publish.NOT_YET
    _evidence_csv(tmp_path / "pub")
    block = publish.readme_block(tmp_path / "pub")
    lines = [x for x in block.splitlines() if x.startswith("| bloodmnist")]
    # the confirmation seed (45) where there is one, chosen on the design seeds
    assert len(lines) == 2 and all("| confirmation 45 |" in x for x in lines)
    a = next(x for x in lines if "| a |" in x)
    assert "| 0.18 [" in a and "| 0.90 [" in a  # 9 of 50 unedited errors; 18 of 20 edited
    assert (
        "| fixes Test errors of the edited pairs | Test regression | FT-Val regression |" in block
    )
    assert "| 0.003 [" in a  # Test regression 3 of 900, in three digits
    # the paired tests' verdict on each group, as the report words it (no winner here)
    verdicts = block.split("Paired comparisons", 1)[1].splitlines()[1:]
    assert verdicts and all(v.startswith("- bloodmnist: ") for v in verdicts)
    assert any("edited errors: no winner: a has the highest figure" in v for v in verdicts)
    (tmp_path / "pub" / "evidence_winners.csv").write_text("\n")  # no comparison: empty table
    assert (
        publish.readme_block(tmp_path / "pub").split("\n\nPaired")[0]
        == block.split("\n\nPaired")[0]
    )
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{publish.README_START}\nold\n{publish.README_END}\nrest\n")
    publish.update_readme(readme, block)
    assert publish.readme_numbers(readme) == block
    assert readme.read_text().startswith("intro\n") and readme.read_text().endswith("rest\n")
    with pytest.raises(publish.PublishError, match="no .* block"):
        publish.update_readme(tmp_path / "pub" / "evidence.csv", block)


def test_the_readmes_numbers_are_what_the_published_tables_say():
    """Edit a figure in the README, or republish without regenerating it, and this fails."""
    readme = ROOT / "README.md"
    assert publish.README_START in readme.read_text()
    assert publish.readme_numbers(readme) == publish.readme_block(ROOT / "reports" / "benchmark")


def test_a_sweep_without_its_tables_is_refused_before_anything_is_written(tmp_path):
    (tmp_path / "sw").mkdir()
    (tmp_path / "sw" / "evidence.csv").write_text("x\n")
    with pytest.raises(publish.PublishError, match="no evidence_pairs.csv.*collect"):
        publish.publish(tmp_path / "sw", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_provenance_reads_the_sweeps_own_records(tmp_path):
    log = [
        {
            "command": "vitedit-sweep run params/sweeps/benchmark.yaml --parallel 2",
            "started": "2026-12-03T10:00:00",
            "finished": "2026-12-03T11:00:00",
            "load_before": [0.1, 0.2, 0.3],
            "load_after": [2.0, 2.0, 1.9],
            "shared_seconds": 600.0,
            "experiments_seconds": 3000.0,
            "seconds": 3600.0,
        }
    ]
    (tmp_path / "sweep_log.json").write_text(json.dumps(log))
    summary = pd.DataFrame(
        {"method": ["a", "a", "b"], "status": ["ok"] * 3, "job_seconds": [1.0, 2.0, 5.0]}
    )
    shared = pd.DataFrame({"train_minutes": [10.0, 12.5]})
    p = publish.provenance(tmp_path, summary, shared)
    (inv,) = p["invocations"]
    assert inv["command"].startswith("vitedit-sweep run") and inv["load_before"] == [0.1, 0.2, 0.3]
    assert p["wall_seconds"] == 3600.0 and p["machine"]["cpus"] > 0
    assert p["phases"]["experiments, job-seconds per method"] == {"a": 3.0, "b": 5.0}
    assert p["phases"]["base training, minutes (sum over seeds)"] == 22.5
    assert len(p["published_at_commit"].split("+")[0]) == 40


def test_a_datasets_provenance_holds_only_what_ran_it(tmp_path):
    cmd = "vitedit-sweep run params/sweeps/benchmark.yaml --datasets {} --parallel 2"
    log = [
        {"command": cmd.format("retinamnist"), "seconds": 100.0},
        {"command": cmd.format("bloodmnist organamnist"), "seconds": 7000.0},
        {"command": "vitedit-sweep run params/sweeps/benchmark.yaml", "seconds": 5.0},
        {
            "command": "vitedit-sweep run b.yaml --datasets=retinamnist --sweep-dir /tmp/bob's",
            "seconds": 1,
        },
        {"command": cmd.format("bloodmnist") + " --datasets retinamnist", "seconds": 2.0},
        {"command": "vitedit-sweep run b.yaml", "datasets": ["bloodmnist"], "seconds": 3.0},
    ]
    (tmp_path / "sweep_log.json").write_text(json.dumps(log))
    summary = pd.DataFrame(
        {
            "dataset": ["retinamnist", "bloodmnist", "bloodmnist"],
            "method": ["a", "a", "b"],
            "status": ["ok"] * 3,
            "job_seconds": [1.0, 2.0, 5.0],
        }
    )
    shared = pd.DataFrame({"dataset": ["retinamnist", "bloodmnist"], "train_minutes": [1.0, 30.0]})
    blood = publish.provenance(tmp_path, summary, shared, "bloodmnist")
    assert [i["seconds"] for i in blood["invocations"]] == [7000.0, 5.0, 3.0]
    assert blood["wall_seconds"] == 7008.0 and blood["experiments"] == {"total": 2, "ok": 2}
    assert blood["phases"]["experiments, job-seconds per method"] == {"a": 2.0, "b": 5.0}
    assert blood["phases"]["base training, minutes (sum over seeds)"] == 30.0
    retina = publish.provenance(tmp_path, summary, shared, "retinamnist")
    assert retina["wall_seconds"] == 108.0 and retina["experiments"]["total"] == 1


def _sweep(folder, dataset, fixed_a):
    """A benchmark sweep folder over one dataset: its tables and page (no runs)."""
    rows = [
        evidence_row(m, s, f, dataset=dataset, edit_errors_digest=str(s))
        for s in (42, 43, 44, 45)
        for m, f in (("a", fixed_a), ("b", 4))
    ]
    folder.mkdir(parents=True)
    for name, table in evidence.tables(pd.DataFrame(rows)).items():
        table.to_csv(folder / f"{name}.csv", index=False)
    pd.DataFrame({"dataset": [dataset], "method": ["a"]}).to_csv(folder / "budget.csv", index=False)
    (folder / "benchmark.html").write_text(f"<html>{dataset}</html>")
    return folder


def test_publishing_one_dataset_keeps_the_others(tmp_path, monkeypatch):
    def context(sweep_dir):
        ds = pd.read_csv(sweep_dir / "evidence.csv").dataset.iloc[0]
        summary = pd.DataFrame({"method": ["a"], "status": ["ok"], "job_seconds": [1.0]})
        base = pd.DataFrame({"dataset": [ds], "seed": [42], "test_acc": [0.9]})
        return {"base": base, "summary": summary, "shared_records": pd.DataFrame()}

    monkeypatch.setattr(publish.benchmark, "context", context)
    out = tmp_path / "pub"
    publish.publish(_sweep(tmp_path / "retina", "retinamnist", 18), out)
    publish.publish(_sweep(tmp_path / "blood", "bloodmnist", 18), out)
    for f in (*publish.TABLES, "base_models.csv"):
        assert set(pd.read_csv(out / f).dataset) == {"retinamnist", "bloodmnist"}, f
    index = (out / "README.md").read_text()  # the folder's own page names both, with their pages
    assert "[benchmark_retinamnist.html](benchmark_retinamnist.html)" in index
    assert (
        "| bloodmnist | [benchmark_bloodmnist.html]" in index
        and "(reports/benchmark/)" not in index
    )
    assert publish.readme_block(out).replace("(reports/benchmark/)", "(.)") in index
    prov = json.loads((out / "provenance.json").read_text())["datasets"]
    assert prov["retinamnist"]["page"] == "benchmark_retinamnist.html"
    assert (out / "benchmark_retinamnist.html").read_text() == "<html>retinamnist</html>"
    # published again, a dataset's rows are replaced, not added to
    before = pd.read_csv(out / "evidence.csv")
    publish.publish(_sweep(tmp_path / "retina2", "retinamnist", 10), out)
    after = pd.read_csv(out / "evidence.csv")
    assert len(after) == len(before)
    blood = [t[t.dataset == "bloodmnist"].reset_index(drop=True) for t in (before, after)]
    pd.testing.assert_frame_equal(*blood)
    retina = after[(after.dataset == "retinamnist") & (after.method == "a")]
    assert (retina.efficacy[retina.n_seeds > 0] == 0.5).all()  # 10 of 20: the new sweep's


def test_a_page_another_dataset_points_to_stays_and_other_versions_are_not_mixed(
    tmp_path, monkeypatch
):
    def context(sweep_dir):
        ds = sorted(set(pd.read_csv(sweep_dir / "evidence.csv").dataset))
        summary = pd.DataFrame({"method": ["a"], "status": ["ok"], "job_seconds": [1.0]})
        base = pd.DataFrame({"dataset": ds, "seed": 42, "test_acc": 0.9})
        return {"base": base, "summary": summary, "shared_records": pd.DataFrame()}

    monkeypatch.setattr(publish.benchmark, "context", context)
    both = _sweep(tmp_path / "both", "retinamnist", 18)
    b = _sweep(tmp_path / "b", "bloodmnist", 18)
    for f in publish.TABLES:  # one sweep over both datasets
        pd.concat([pd.read_csv(both / f), pd.read_csv(b / f)]).to_csv(both / f, index=False)
    out = tmp_path / "pub"
    publish.publish(both, out)
    page = publish.page_name({"retinamnist", "bloodmnist"})
    publish.publish(_sweep(tmp_path / "retina", "retinamnist", 10), out)
    prov = json.loads((out / "provenance.json").read_text())["datasets"]
    assert prov["bloodmnist"]["page"] == page and (out / page).is_file()  # still pointed to
    publish.publish(_sweep(tmp_path / "blood", "bloodmnist", 10), out)
    assert not (out / page).is_file()  # nobody points to it any more
    # rows of another version (a column this one does not have) are refused before anything is
    # written
    ev = pd.read_csv(out / "evidence.csv")
    ev.rename(columns={"efficacy": "fix_rate_old"}).to_csv(out / "evidence.csv", index=False)
    before = (out / "provenance.json").read_text()
    with pytest.raises(publish.PublishError, match="other columns.*republish bloodmnist"):
        publish.publish(_sweep(tmp_path / "retina2", "retinamnist", 10), out)
    assert (out / "provenance.json").read_text() == before
    # a column this version adds (e.g. the cross-fit figure) stays empty in the kept rows
    ev.drop(columns=["efficacy"]).to_csv(out / "evidence.csv", index=False)
    publish.publish(_sweep(tmp_path / "retina3", "retinamnist", 10), out)
    ev = pd.read_csv(out / "evidence.csv")
    assert ev[ev.dataset == "bloodmnist"].efficacy.isna().all()
    assert ev[ev.dataset == "retinamnist"].efficacy.notna().all()


def test_a_sliced_scan_datasets_rows_come_with_their_distribution_shift_note(tmp_path):
    """OrganAMNIST's slices come from few CT scans, Test from other scans than FT-Val: its README
    rows say so, and no equivalence verdict is drawn from its (too narrow) intervals."""

    def block(dataset):
        rows = [
            evidence_row(
                m,
                s,
                f,
                dataset=dataset,
                edit_errors_digest=str(s),
                test_total=20000,
                test_correct_before=18000,
                test_correct_to_wrong=3,
                test_wrong_to_correct=4,
            )
            for s in (42, 45, 46)
            for m, f in (("a", 20), ("b", 4))
        ]
        pub = tmp_path / dataset
        pub.mkdir()
        for name, table in evidence.tables(pd.DataFrame(rows)).items():
            table.to_csv(pub / f"{name}.csv", index=False)
        return publish.readme_block(pub)

    organ, blood = block("organamnist"), block("bloodmnist")
    assert "| organamnist |" in organ and "distribution-shift case" in organ
    assert "McNemar p-value on it treats slices of one scan as independent" in organ
    assert "(equivalent to none)" in blood  # the same figures on another dataset: a verdict
    assert "(equivalent to none)" not in organ and "distribution-shift" not in blood


def test_a_pilot_published_elsewhere_leaves_the_readmes_numbers_alone(tmp_path, monkeypatch):
    """The README quotes reports/benchmark/: ``--out`` elsewhere (a pilot) does not rewrite its
    block from the pilot's tables; the default folder does."""

    def context(sweep_dir):
        base = pd.DataFrame({"dataset": ["retinamnist"], "seed": [42], "test_acc": [0.5]})
        summary = pd.DataFrame({"method": ["a"], "status": ["ok"], "job_seconds": [1.0]})
        return {"base": base, "summary": summary, "shared_records": pd.DataFrame()}

    monkeypatch.setattr(publish.benchmark, "context", context)
    written = []
    monkeypatch.setattr(publish, "update_readme", lambda readme, block: written.append(readme))
    sweep = _sweep(tmp_path / "retina", "retinamnist", 18)
    assert publish.main([str(sweep), "--out", str(tmp_path / "pilot")]) == 0
    assert (tmp_path / "pilot" / "evidence.csv").is_file() and written == []
    monkeypatch.setattr(publish, "published_dir", lambda: tmp_path / "pub")
    assert publish.main([str(sweep)]) == 0
    assert (tmp_path / "pub" / "evidence.csv").is_file() and len(written) == 1
