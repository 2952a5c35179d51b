"""``python -m mantis``: parameter counts per model and fidelity."""
import pytest

from mantis import get_model, list_models
from mantis.__main__ import main
from mantis.summary import count_parameters


def _table(text):
    return [line.split() for line in text.strip().splitlines()]


def test_counts_of_every_fidelity(capsys):
    main(["ceecnetv1_tiny", "CIFAR_resnet_tiny", "--fidelity", "all"])
    side = get_model("ceecnetv1_tiny").size_multiple
    cd = {fidelity: count_parameters(get_model("ceecnetv1_tiny", fidelity=fidelity), *[(1, 3, side, side)] * 2)
          for fidelity in ("paper", "authors")}
    cifar = count_parameters(get_model("cifar_resnet_tiny"), (1, 3, 32, 32))
    assert cd["paper"] != cd["authors"]
    assert _table(capsys.readouterr().out) == [
        ["model", "paper", "authors"],
        ["ceecnetv1_tiny", f"{cd['paper']:,d}", f"{cd['authors']:,d}"],
        ["cifar_resnet_tiny", f"{cifar:,d}", "-"]]


def test_one_fidelity_by_default(capsys):
    main(["fractalresnet_tiny"])
    side = get_model("fractalresnet_tiny").size_multiple
    count = count_parameters(get_model("fractalresnet_tiny"), *[(1, 3, side, side)] * 2)
    assert _table(capsys.readouterr().out) == [["model", "paper"], ["fractalresnet_tiny", f"{count:,d}"]]


def test_unknown_name_is_one_line_and_status_2(capsys):
    with pytest.raises(SystemExit) as status:
        main(["ceecnetv9"])
    assert status.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        f"error: argument NAME: unknown model 'ceecnetv9' (registered: {', '.join(list_models())})")
