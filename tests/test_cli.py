"""rapsam-info: numbers on stdout, one-line errors with a non-zero exit."""

from __future__ import annotations

import re

import pytest

from rapsam.cli import info_main
from rapsam.complexity import model_cost, padded_size


def test_info_prints_parameters_and_both_counts(capsys) -> None:
    assert info_main(["rapsam_tiny", "--size", "64x96"]) == 0
    out = capsys.readouterr().out
    assert "input 64x96" in out
    total = re.search(r"^total\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", out, re.MULTILINE)
    assert total is not None and float(total.group(1)) == pytest.approx(0.123, abs=1e-3)


def test_info_pads_to_a_multiple_of_32(capsys) -> None:
    assert info_main(["rapsam_tiny", "--size", "80x100"]) == 0
    assert "input 96x128 (padded from 80x100" in capsys.readouterr().out
    assert padded_size(800, 1333) == (800, 1344)


def test_info_unknown_model_is_one_line_error(capsys) -> None:
    assert info_main(["rapsam_nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown model 'rapsam_nope'; valid names:") and "\n" not in err


def test_info_bad_size_exits_with_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        info_main(["rapsam_tiny", "--size", "big"])
    assert exit_info.value.code == 2
    assert "size must look like 800x1333" in capsys.readouterr().err


def test_cost_components_add_up(tiny_model) -> None:
    rows = {row.name: row for row in model_cost(tiny_model, (64, 64))}
    parts = [rows[name] for name in ("backbone", "neck", "head")]
    assert rows["total"].params == sum(p.params for p in parts) == 123_116
    assert rows["total"].macs_all == sum(p.macs_all for p in parts)
    # only the neck holds deformable convs; the paper's counter leaves them out
    assert rows["neck"].macs_paper < rows["neck"].macs_all
    assert rows["backbone"].macs_paper == rows["backbone"].macs_all


@pytest.mark.slow
def test_paper_gmacs_are_a_constant_factor_of_ours() -> None:
    """At 1344x800, R18, R50 and EdgeNeXt-S all count 14.5-15.5% above the paper's table (see README)."""
    import rapsam

    for name, paper in (("rapsam_r18", 60.5), ("rapsam_r50", 123.0), ("rapsam_edgenext_s", 44.0)):
        total = model_cost(rapsam.build_model(name), (800, 1344))[-1]
        assert 1.14 < total.macs_paper / 1e9 / paper < 1.16, name
