"""docs/gpu.md: every command of the runbook, run offline as written, up to the point where weights or hub data are
needed, where it must stop with one `mrb: error:` line naming what is missing (and never load a model)."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest

from mrb import __version__
from mrb.cli import main
from mrb.rerankers.hf import TransformersReranker
from tests.tiny_models import artefact

ROOT = Path(__file__).resolve().parents[1]
RUNBOOK = ROOT / "docs" / "gpu.md"
NO_PACKS = "40 tasks have no candidate pack yet in {data}/packs: ArguAna{lite}, ClimateFEVER{lite}, CQADupStack{lite}"
NOT_MIRRORED = (
    "task 'ArguAna{lite}': mteb/arguana at revision c22ab2a51041ffd869aaddef7af8d8215647e41a is not in the mirror "
    "{data}/sources/mteb/arguana and HF_HUB_OFFLINE=1 forbids fetching it; run `mrb download --tasks ArguAna{lite}`"
)
HUB_OFF = "it is not in the local hub cache and the hub is off (HF_HUB_OFFLINE=1)"
# Each runbook command → what it does offline on a fresh machine: the exit code and the start of what it prints
# (the error line on stderr, else stdout). None: not an `mrb` command; checked on its own below.
OFFLINE = {
    "python3.11 -m venv .venv && . .venv/bin/activate": None,
    "pip install torch==2.14.1 torchvision==0.29.1": None,
    "pip install -e '.[vision,peft,plot]'": None,
    "mrb --version": (0, f"mrb {__version__}"),
    "export MRB_DATA_DIR=/scratch/mrb": None,
    "mrb candidates pull --tasks all --repo ORG/mrb-candidates": (
        2,
        f"mrb: error: cannot pull candidate packs from the hub dataset ORG/mrb-candidates: {HUB_OFF}: fetch it where the "
        "hub can be reached (the same `mrb candidates pull`, then copy {data}/packs here), or unset HF_HUB_OFFLINE",
    ),
    "mrb download --tasks all": (
        2,
        "mrb: error: task 'ArguAna': cannot fetch mteb/arguana at revision c22ab2a51041ffd869aaddef7af8d8215647e41a: "
        f"{HUB_OFF}: fetch it where the hub can be reached (`mrb download --tasks ArguAna`, then copy "
        "{data}/sources/mteb/arguana/c22ab2a51041ffd869aaddef7af8d8215647e41a here), or unset HF_HUB_OFFLINE",
    ),
    "torchrun --nproc-per-node 8 -m mrb candidates build --tasks all --batch-size 64": (
        2,
        "mrb: error: " + NOT_MIRRORED.replace("{lite}", ""),
    ),
    "mrb candidates build --tasks mrb-lite": (2, "mrb: error: " + NOT_MIRRORED.replace("{lite}", "-lite")),
    "mrb candidates verify --tasks all": (2, "mrb: error: task 'ArguAna' has no candidate pack yet"),
    "mrb candidates stats --tasks all": (2, "mrb: error: task 'ArguAna' has no candidate pack yet"),
    "mrb run --model gmr-7b --tasks all --dry-run": (2, "mrb: error: " + NO_PACKS.replace("{lite}", "")),
    "mrb run --model gmr-7b --tasks mrb-lite --output results-lite": (2, "mrb: error: " + NO_PACKS.replace("{lite}", "-lite")),
    "torchrun --nproc-per-node 8 -m mrb run --model gmr-7b --tasks all --output results": (
        2,
        "mrb: error: " + NO_PACKS.replace("{lite}", ""),
    ),
    "mrb report --results results": (2, "mrb: error: no results in results: leaderboard.parquet is missing"),
    'mrb report --results results --compare "first stage" gmr-7b': (
        2,
        "mrb: error: no results in results: leaderboard.parquet is missing",
    ),
    "mrb report --results results --format chart --output gmr-7b.png": (
        2,
        "mrb: error: no results in results: leaderboard.parquet is missing",
    ),
    "mrb run --model jina-reranker-m0 --trust-remote-code --fallback image-only --tasks all --output results": (
        2,
        "mrb: error: " + NO_PACKS.replace("{lite}", ""),
    ),
    "mrb run --model monoqwen2-vl --fallback image-only --tasks all --output results": (
        2,
        "mrb: error: " + NO_PACKS.replace("{lite}", ""),
    ),
}


def runbook_commands() -> list[str]:
    """The command lines of the runbook's bash blocks, in order (comments and blank lines dropped)."""
    blocks = re.findall(r"```bash\n(.*?)```", RUNBOOK.read_text(encoding="utf-8"), flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip() and not line.startswith("#")]


def mrb_argv(command: str) -> list[str]:
    """The arguments `mrb` gets from a runbook line: `mrb …`, or `torchrun … -m mrb …` (whose torchrun flags must
    parse with the installed torch)."""
    words = shlex.split(command)
    if words[0] == "torchrun":
        from torch.distributed.run import get_args_parser

        parsed = get_args_parser().parse_args(words[1:])
        assert (parsed.module, parsed.training_script, parsed.nproc_per_node) == (True, "mrb", "8")
        return list(parsed.training_script_args)
    assert words[0] == "mrb", command
    return words[1:]


@pytest.fixture
def fresh_box(tmp_path, monkeypatch) -> Path:
    """A machine with MRB installed and nothing else: an empty data dir, no hub, no GPU; loading a model fails
    the test."""
    data = tmp_path / "data"
    monkeypatch.setenv("MRB_DATA_DIR", str(data))
    monkeypatch.chdir(tmp_path)

    def no_weights(self) -> None:
        raise AssertionError(f"{self.checkpoint} would have been loaded")

    monkeypatch.setattr(TransformersReranker, "ready", no_weights)
    return data


def test_every_runbook_command_has_an_offline_expectation() -> None:
    assert runbook_commands() == list(OFFLINE)


@pytest.mark.parametrize("command", [c for c, outcome in OFFLINE.items() if outcome is not None])
def test_runbook_command_offline(fresh_box, capsys, command) -> None:
    code, start = OFFLINE[command]  # type: ignore[misc]
    try:
        returned = main(mrb_argv(command))
    except SystemExit as exit_:  # --version
        returned = exit_.code
    out, err = capsys.readouterr()
    assert returned == code
    shown = err if code else out
    assert shown.startswith(start.replace("{data}", str(fresh_box))), shown
    if code:
        assert shown.count("\n") == 1 and "Traceback" not in shown  # one error line


def test_install_lines_name_real_extras_and_the_pinned_torch() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {"vision", "peft", "plot"} <= set(extras)
    pins = "pip install torch==2.14.1 torchvision==0.29.1"
    assert pins in runbook_commands()
    assert (
        pins in (ROOT / "README.md").read_text()
        and pins.replace("pip install", "pip install -q") in (ROOT / ".ci" / "run").read_text()
    )


def test_dry_run_with_packs_prints_the_plan_at_gmr_7bs_measured_rate(fresh_box, capsys, monkeypatch) -> None:
    """Once packs exist (here: the bundled mini ones), the runbook's dry run prints the plan on an H200."""
    monkeypatch.setattr("mrb.session.device_name", lambda reranker: "NVIDIA H200")
    assert main(["run", "--model", "gmr-7b", "--tasks", "mini", "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[-2:] == [
        "time: about 22 s at 73.4 pairs/s (measured for gmr-7b on an H200: docs/running.md)",
        "disk: about 185 KiB for the score cache and the result files",
    ]


def test_report_commands_run_as_written_on_results(tmp_path, tmp_path_factory, capsys, monkeypatch) -> None:
    """With results in results/ (a tiny stand-in checkpoint under the name gmr-7b, on mini), the report lines of
    the runbook run as written."""
    monkeypatch.chdir(tmp_path)
    checkpoint = str(artefact(tmp_path_factory, "qwen2_5_vl"))
    run = ["run", "--model", checkpoint, "--adapter", "qwen-vl-yes-no", "--name", "gmr-7b", "--tasks", "mini", "-q"]
    assert main([*run, "--min-pixels", "3136", "--max-pixels", "3136", "--output", "results"]) == 0
    capsys.readouterr()
    for command in (c for c in OFFLINE if c.startswith("mrb report")):
        assert main(mrb_argv(command)) == 0, command
        out = capsys.readouterr().out
        if "--compare" in command:
            assert out.startswith("## gmr-7b vs first stage: nDCG@10 (×100), paired randomisation test")
            assert "| ALL (5)" in out
        elif "--output" not in command:
            assert "| gmr-7b " in out
    assert (tmp_path / "gmr-7b.png").read_bytes().startswith(b"\x89PNG")
