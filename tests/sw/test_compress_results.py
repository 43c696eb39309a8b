"""The results driver's rendering, target checks and merging, and one --quick run."""

import json

import torch

from zeroskip.experiments.results import main, merge_file, merge_results, render_markdown


def rec(model, method, kept=1.0, acc=0.9, ratio=4.0, **kw):
    r = {"model": model, "dataset": "fashion-mnist", "method": method,
         "params_kept_fraction": kept, "acc_dense": 0.9, "acc_final": acc, "acc_stored": acc,
         "compressed_bytes": int(1000 / ratio), "dense_bytes": 1000, "compression_ratio": ratio}
    r.update(kw)
    return r


def test_targets_are_judged_from_numbers():
    prog = []
    for seed, (pg, pu) in enumerate([(100, 200), (120, 150), (90, 95)]):
        sfx = "" if seed == 0 else f"-seed{seed}"
        prog += [rec("lenet-300-100", f"progressive-global{sfx}", kept=0.1, acc=0.89,
                     params=pg, floor_val=0.89, prog_seed=seed, seed=seed),
                 rec("lenet-300-100", f"progressive-uniform{sfx}", kept=0.2, acc=0.89,
                     params=pu, floor_val=0.89, prog_seed=seed, seed=seed)]
    recs = [rec("lenet-300-100", "dense"),
            rec("lenet-300-100", "prune-iterative-kd (Han 2015)", kept=0.079, acc=0.897),
            rec("lenet-300-100", "deep-compression (prune+share+huffman)", kept=0.079,
                acc=0.895, ratio=39.0), *prog,
            rec("lenet-5", "dense"),
            rec("lenet-5", "deep-compression (prune+share+huffman)", kept=0.07, acc=0.892,
                ratio=41.0),
            rec("lenet-5-bn", "slimming-bn-0.5 (Liu 2017)", kept=0.4, acc=0.897,
                channels_removed=0.5)]
    md = render_markdown({"records": recs, "extra": {"seconds": 1}})
    assert "**met**: lenet-300-100 pruned to at most 8%" in md
    assert "**NOT met**: lenet-300-100 overall compression at least 40x" in md
    assert "**met**: lenet-5 overall compression at least 40x" in md
    assert "**met**: lenet-300-100 progressive global" in md
    assert "fewer in 3 of 3" in md
    assert "**met**: lenet-5-bn network slimming removes at least 50%" in md
    assert md.count("| lenet-300-100 |") == 1 + 2 + len(prog)
    # one seed where global is not better: not met
    prog[-2]["params"] = 96
    md = render_markdown({"records": recs, "extra": {"seconds": 1}})
    assert "**NOT met**: lenet-300-100 progressive global" in md and "fewer in 2 of 3" in md
    recs[-1]["acc_final"] = 0.894       # 0.6 points loss
    md = render_markdown({"records": recs, "extra": {"seconds": 1}})
    assert "**NOT met**: lenet-5-bn network slimming" in md


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


def test_merge_from_bad_files_is_one_line(tmp_path, capsys):
    """A missing, garbled or foreign JSON file for ``--merge-from`` (or the results it merges
    into) is one error line and status 1, and the output folder is not written."""
    good = {"records": [rec("a", "dense")], "extra": {}}
    (tmp_path / "new.json").write_text(json.dumps(good))
    (tmp_path / "junk.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    out = tmp_path / "out"
    out.mkdir()
    cases = [(tmp_path / "missing.json", "does not exist"), (tmp_path / "junk.json", "not a"),
             (tmp_path / "list.json", "no 'records'")]
    for path, msg in cases:
        (out / "results.json").write_text(json.dumps(good))
        assert main(["--merge-from", str(path), "--out", str(out), "--no-plots"]) == 1
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    (out / "results.json").unlink()      # nothing to merge into
    assert main(["--merge-from", str(tmp_path / "new.json"), "--out", str(out)]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == []


def test_quick_run_records_baseline_seed_command_and_reuses_the_cache(tmp_path, monkeypatch):
    """``--quick`` end to end (digits MLP, pruning and progressive pruning over 3 seeds); the
    second run takes the baselines and the pruned model from the cache and gives the same
    records."""
    monkeypatch.setenv("ZEROSKIP_RESULTS_CACHE", str(tmp_path / "cache"))
    args = ["--quick", "--models", "lenet300", "--only", "han,progressive", "--no-plots",
            "--no-progress", "--threads", "1", "--export-dir", str(tmp_path / "export")]
    n_threads = torch.get_num_threads()
    try:
        assert main([*args, "--out", str(tmp_path / "a")]) == 0
        assert main([*args, "--out", str(tmp_path / "b")]) == 0
    finally:
        torch.set_num_threads(n_threads)
    a = json.loads((tmp_path / "a" / "results.json").read_text())
    b = json.loads((tmp_path / "b" / "results.json").read_text())
    methods = [r["method"] for r in a["records"]]
    assert methods[:3] == ["dense", "prune-iterative-kd (Han 2015)",
                           "deep-compression (prune+share+huffman)"]
    assert {"progressive-global-seed2", "progressive-uniform-seed1"} <= set(methods)
    base = a["extra"]["baselines"]["digits-mlp"]
    for r in a["records"]:
        assert r["command"].startswith("python -m zeroskip.experiments.results --quick")
        assert r["baseline"]["acc_test"] == r["acc_dense"]
        assert r["seed"] == r.get("prog_seed", 0)
    assert a["records"][0]["baseline"]["key"] == base["key"]
    # 3 baselines + 1 pruned model trained in the first run, all found in the second
    assert a["extra"]["cache"]["misses"] == 4 and a["extra"]["cache"]["hits"] == 0
    assert b["extra"]["cache"]["hits"] == 4 and b["extra"]["cache"]["misses"] == 0
    han = [r for r in a["records"] if r["method"].startswith("prune-")]
    han_b = [r for r in b["records"] if r["method"].startswith("prune-")]
    assert han[0]["acc_final"] == han_b[0]["acc_final"]
    assert han[0]["density"] == han_b[0]["density"]
    info = json.loads((tmp_path / "export" / "digits-mlp-pruned.json").read_text())
    sd = torch.load(tmp_path / "export" / "digits-mlp-pruned.pt", weights_only=True)
    kept = sum(int((v != 0).sum()) for k, v in sd.items() if k.endswith("weight"))
    assert kept == info["weights_kept"]
    assert info["acc_pruned_test"] == han[0]["acc_final"]
    md = (tmp_path / "a" / "results.md").read_text()
    assert "## Baselines" in md and base["key"][:12] in md
