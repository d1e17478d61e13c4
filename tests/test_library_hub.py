"""The adapter library over Hub repos, against the local Hub-compatible server of tests/hub_server.py:
repo ids, an author / tag listing through huggingface_hub, unreachable entries named and skipped,
and offline mode (cached repos work, listing is refused with a message that says why)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("huggingface_hub")

from metalora import hub  # noqa: E402
from metalora.errors import HubError  # noqa: E402
from metalora.library import AdapterLibrary, LibraryWarning, Support  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_hub import hf_env, local_network_only, make_adapter, server  # noqa: E402,F401  (fixtures)

SUPPORT = Support(["the pan heats evenly", "great knife, very sharp", "handle broke after a week", "rusted in a day"],
                  [1, 1, 0, 0], 2, ("negative", "positive"))


def _tag(folder: Path, family: str) -> Path:
    meta = json.loads((folder / "metalora.json").read_text())
    meta["scenario"]["family"] = family
    (folder / "metalora.json").write_text(json.dumps(meta))
    return folder


@pytest.fixture
def pushed(server, tmp_path):
    hub.push(_tag(make_adapter(tmp_path / "a", seed=1), "sentiment"), "org/kitchen")
    hub.push(_tag(make_adapter(tmp_path / "b", seed=2), "fraud"), "org/gift-cards")
    hub.push(make_adapter(tmp_path / "c", seed=3), "other/garden")
    return server


def test_hub_ids_and_an_unreachable_one(pushed, tmp_path):
    folder = tmp_path / "lib"
    folder.mkdir()
    with pytest.warns(LibraryWarning, match="org/missing.*not found"):
        lib = AdapterLibrary(folder, hub=["org/kitchen", "org/missing"], signatures=False)
    by = {e.name: e for e in lib.entries}
    assert set(by) == {"peft-default", "org/kitchen"}
    assert by["org/kitchen"].source["repo_id"] == "org/kitchen" and len(by["org/kitchen"].source["revision"]) == 40
    lib.save_config()
    again = AdapterLibrary(folder, signatures=False)  # the Hub sources were recorded in library.json
    assert "org/kitchen" in {e.name for e in again.entries}
    sel = again.select(SUPPORT, by="zero_step")
    assert sel.entries_scored == 2


def test_hub_author_and_tag_listing(pushed):
    lib = AdapterLibrary(hub_author="org", signatures=False)
    assert {e.name for e in lib.learned} == {"org/kitchen", "org/gift-cards"}
    lib = AdapterLibrary(hub_author="org", hub_tags=["fraud"], signatures=False)
    assert {e.name for e in lib.learned} == {"org/gift-cards"}
    lib = AdapterLibrary(hub_tags=["sentiment"], signatures=False)  # any author
    assert {e.name for e in lib.learned} == {"org/kitchen", "other/garden"}


def test_offline_mode(pushed, tmp_path, monkeypatch):
    hub.pull("org/kitchen")  # cached while online
    hf_env(monkeypatch, pushed.url, tmp_path / "hf_home", None, offline=True)
    with pytest.raises(HubError, match="offline mode is on.*HF_HUB_OFFLINE"):
        AdapterLibrary(hub_author="org", signatures=False)
    with pytest.warns(LibraryWarning, match="org/gift-cards.*offline mode is on"):
        lib = AdapterLibrary(hub=["org/kitchen", "org/gift-cards"], signatures=False)
    assert {e.name for e in lib.learned} == {"org/kitchen"}
