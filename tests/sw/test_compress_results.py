"""The results driver's rendering, target checks and merging (no training here)."""

import json

from zeroskip.experiments.results import main, merge_file, merge_results, render_markdown


def rec(model, method, kept=1.0, acc=0.9, ratio=4.0, **kw):
    r = {"model": model, "dataset": "fashion-mnist", "method": method,
         "params_kept_fraction": kept, "acc_dense": 0.9, "acc_final": acc, "acc_stored": acc,
         "compressed_bytes": int(1000 / ratio), "dense_bytes": 1000, "compression_ratio": ratio}
    r.update(kw)
    return r


def test_targets_are_judged_from_numbers():
    recs = [rec("lenet-300-100", "dense"),
            rec("lenet-300-100", "prune-iterative-kd (Han 2015)", kept=0.079, acc=0.897),
            rec("lenet-300-100", "deep-compression (prune+share+huffman)", kept=0.079,
                acc=0.895, ratio=34.0),
            rec("lenet-300-100", "progressive-global", kept=0.1, acc=0.89, params=100,
                floor=0.89),
            rec("lenet-300-100", "progressive-uniform", kept=0.2, acc=0.89, params=200,
                floor=0.89)]
    md = render_markdown({"records": recs, "extra": {"seconds": 1}})
    assert "**met**: lenet-300-100 pruned to at most 8%" in md
    assert "**NOT met**: lenet-300-100 overall compression at least 35x" in md
    assert "**met**: lenet-300-100 progressive global" in md
    assert md.count("| lenet-300-100 |") == len(recs)


H = {"round": 0, "params": 10, "acc": 0.9}


def test_merge(tmp_path):
    old = {"records": [rec("a", "dense"), rec("a", "x", acc=0.1), rec("a", "y")],
           "extra": {"seconds": 5, "progressive": {"a": {"global": []}}, "density": {"a": {}}}}
    new = {"records": [rec("a", "dense"), rec("a", "x", acc=0.5)],
           "extra": {"seconds": 2, "progressive": {"a": {"global": [H]}}}}
    m = merge_results(old, new, ["progressive"])
    assert [r["method"] for r in m["records"]] == ["dense", "x", "y"]
    assert m["records"][1]["acc_final"] == 0.5
    assert m["extra"]["progressive"]["a"]["global"] == [H] and "density" in m["extra"]
    assert m["extra"]["merged_runs"][0]["methods"] == ["x"]
    (tmp_path / "results.json").write_text(json.dumps(old))
    (tmp_path / "new.json").write_text(json.dumps(new))
    merge_file(str(tmp_path / "new.json"), str(tmp_path), plots=False)
    assert "The records x come from a later run" in (tmp_path / "results.md").read_text()


def test_cli_errors(capsys):
    assert main(["--models", "vgg"]) == 2
    assert main(["--only", "everything"]) == 2
    assert main(["--dataset", "fashion-mnist", "--data-path", "/nonexistent", "--models",
                 "lenet300"]) == 1
    assert "Fashion-MNIST not found" in capsys.readouterr().err
