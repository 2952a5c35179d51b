"""The model registry: a leaf module, case-insensitive names, overrides and their error messages."""
import ast
from pathlib import Path

import pytest

from mantis import get_model, list_models, model_parameters, registry


@pytest.fixture
def empty_registry(monkeypatch):
    """The registry with no entry (the real entries come back after the test)."""
    monkeypatch.setattr(registry, "_MODELS", {})


def _factory(width: int = 1, depth: int = 2, **kwargs):
    return dict(width=width, depth=depth, **kwargs)


def test_registry_imports_nothing_of_mantis():
    tree = ast.parse(Path(registry.__file__).read_text())
    imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and
                (node.level or (node.module or "").split(".")[0] == "mantis")]
    imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
                 if alias.name.split(".")[0] == "mantis"]
    assert not imported


def test_names_are_lower_cased_at_registration(empty_registry):
    registry.register_model("My_Net_tiny", _factory, width=3)
    assert list_models() == ["my_net_tiny"] and list_models(tiny=True) == ["my_net_tiny"]
    assert list_models(tiny=False) == []
    assert get_model("MY_NET_TINY", depth=5) == dict(width=3, depth=5)
    with pytest.raises(ValueError, match=r"^model 'my_net_tiny' is already registered$"):
        registry.register_model("my_NET_tiny", _factory)


def test_model_parameters_are_the_factory_keywords(empty_registry):
    registry.register_model("net", _factory, width=3)
    assert model_parameters("NET") == ["width", "depth"]


def test_unknown_model_error_names_the_choices():
    message = f"unknown model 'ceecnetv9'; registered models: {', '.join(list_models())}"
    for call in (get_model, model_parameters):
        with pytest.raises(ValueError) as error:
            call("ceecnetv9")
        assert str(error.value) == message
    assert "ceecnetv1_d6nf32" in list_models() and "cifar_resnet_tiny" in list_models()


def test_every_registered_name_is_lower_case():
    assert all(name == name.lower() for name in list_models())
