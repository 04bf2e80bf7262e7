"""Every mistake a user can make at the command line ends in one paragraph on stderr that names the
input and what to do, and exit status 1; never a traceback (SEQDNI_DEBUG=1 shows it)."""

from __future__ import annotations

import pytest
import torch
from helpers import ROOT, data_args, run_cli

from seqdni.cli import pipeline as pipeline_cli
from seqdni.cli import sample as sample_cli
from seqdni.cli import train as train_cli

SMOKE = str(ROOT / "configs/smoke.yaml")


def one_paragraph(capsys, main, args: list[str], *needles: str) -> str:
    """Run a CLI's `main(args)`; it must exit 1 with a single error paragraph holding each needle."""
    with pytest.raises(SystemExit) as exit_:
        main(args)
    err = capsys.readouterr().err
    assert exit_.value.code == 1, err[-2000:]
    assert "Traceback" not in err
    message = err[err.index("python -m seqdni."):]
    assert message.count("error:") == 1 and message.count("\n\n") == 0, message
    flat = " ".join(message.split())
    for needle in needles:
        assert needle in flat, (needle, flat)
    return flat


@pytest.mark.parametrize(("override", "needles"), [
    ("--data.batch_size=-1", ["data.batch_size must be positive, got -1"]),
    ("--model.unroll=5", ["data.window (16) must be a multiple of model.unroll (5)"]),
    ("--model.dni={\"discount\": 2.0}", ["model.dni.discount is γ in [0, 1], got 2.0"]),
    ("--data.window=4096", ["data.window (4096) is longer than each training stream", "lower data.window"]),
    ("--model.hidden_size=0", ["model.hidden_size must be positive, got 0"]),
    ("--model.dropout=1.5", ["model.dropout is the probability of zeroing a unit, in [0, 1); got 1.5"]),
    ("--model.lr=-1", ["model.lr must be 0 or more, got -1.0"]),
    ("--model.warmup_steps=-5", ["model.warmup_steps must be 0 or more, got -5"]),
    ("--trainer.max_time=abc", ["trainer.max_time is days:hours:minutes:seconds, DD:HH:MM:SS", "got 'abc'"]),
])
def test_a_bad_setting_is_one_paragraph_not_a_traceback(capsys, text_files, tmp_path, override, needles):
    one_paragraph(capsys, train_cli.main, ["--config", SMOKE, *data_args(text_files, tmp_path), override], *needles)


MODEL_KEYS = "`python -m seqdni.train --model.help seqdni.training.SeqModel` lists its keys"
DNI_KEYS = "`python -m seqdni.train --model.help seqdni.training.SeqModel --model.dni.help` lists its keys"
TRAINER_KEYS = "`python -m seqdni.train --help` lists every key"


@pytest.mark.parametrize(("override", "needles"), [
    (["--model.init_args.dni.lrr=1"], ["model.dni.lrr is not a setting of seqdni.engines.DNIOptions", DNI_KEYS]),
    (["--model.hiden_size=3"], ["model.hiden_size is not a setting of seqdni.training.SeqModel", MODEL_KEYS]),
    (["--model.dni.scale=x"], ["model.dni.scale must be a number, got 'x'", DNI_KEYS]),
    (["--model.dni.injection=shuffle"], ["model.dni.injection must be one of prediction, shuffled, none, "
                                         "got 'shuffle'", DNI_KEYS]),
    (["--model.lr_schedule=cosin"], ["model.lr_schedule must be one of constant, cosine, got 'cosin'", MODEL_KEYS]),
    (["--model.init_range=abc"], ["model.init_range must be a number or null, got 'abc'", MODEL_KEYS]),
    (["--model.dni=foo"], ["model.dni cannot be 'foo': it takes one of DNIOptions, null", MODEL_KEYS]),
    (["--trainer.max_epochs=abc"], ["trainer.max_epochs must be an integer or null, got 'abc'", TRAINER_KEYS]),
    (["--data.batch_size=two"], ["data.batch_size must be an integer, got 'two'",
                                 "--data.help seqdni.data.CharDataModule` lists its keys"]),
    (["--trainer.callbacks=[1]"], ["trainer.callbacks cannot be '[1]': it takes one of", TRAINER_KEYS]),
    (["--bogus", "3"], ["unrecognized arguments: --bogus 3", TRAINER_KEYS]),
])
def test_a_bad_argument_is_one_paragraph_that_names_the_full_key_not_the_usage(capsys, text_files, tmp_path,
                                                                                override, needles):
    """jsonargparse's own report is the whole usage (over a hundred lines) and a nested account of each
    type it tried; the command says which key, what it takes, what was given, and where to look."""
    flat = one_paragraph(capsys, train_cli.main, ["--config", SMOKE, *data_args(text_files, tmp_path), *override],
                         *needles)
    assert "usage:" not in flat and "Given value" not in flat


@pytest.mark.parametrize("hint", [MODEL_KEYS, DNI_KEYS])
def test_the_help_a_bad_argument_points_to_lists_the_keys(capsys, hint):
    command = hint.split("`")[1].split()[3:]  # after `python -m seqdni.train`
    with pytest.raises(SystemExit) as done:
        train_cli.main(command)
    listed = capsys.readouterr().out
    assert done.value.code == 0
    assert ("--model.dni.lr " in listed) == (hint == DNI_KEYS) and ("--model.hidden_size" in listed) != (hint == DNI_KEYS)


def test_a_bad_value_in_a_config_file_is_named_by_its_key(capsys, text_files, tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text(f"base: {SMOKE}\nmodel: {{init_args: {{init_range: abc}}}}\n")
    one_paragraph(capsys, train_cli.main, ["--config", str(mine), *data_args(text_files, tmp_path)],
                  "model.init_range must be a number or null, got 'abc'")


def test_a_key_with_no_config_to_choose_its_class_is_said_so(capsys, text_files, tmp_path):
    one_paragraph(capsys, train_cli.main, ["--model.dni.scale=0.2", *data_args(text_files, tmp_path)],
                  "--model.dni.scale=0.2 is not an argument of lightning.LightningModule",
                  "give --config or its class_path before its keys")


def test_settings_given_before_or_after_the_config_win_over_it(capsys, text_files, tmp_path):
    """A config read after a setting would replace it (a run's config.yaml holds `ckpt_path: null`)."""
    for args in (["--model.hidden_size=7", "--config", SMOKE], ["--config", SMOKE, "--model.hidden_size=7"],
                 ["--ckpt_path=x.ckpt", "--model.hidden_size=7", "-c", SMOKE]):
        with pytest.raises(SystemExit):
            train_cli.main([*args, *data_args(text_files, tmp_path), "--print_config"])
        printed = capsys.readouterr().out
        assert "hidden_size: 7" in printed, args
        assert ("ckpt_path: x.ckpt" in printed) == ("--ckpt_path=x.ckpt" in args)


def test_a_missing_config_lists_the_shipped_ones_of_its_family(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    flat = one_paragraph(capsys, train_cli.main, ["--config", "configs/ptb-cpu/dni9.yaml"],
                         f"--config: no such file: {tmp_path / 'configs/ptb-cpu/dni9.yaml'}",
                         "nor among the shipped configs; ptb-cpu/ has")
    assert "dni8.yaml" in flat and "bptt8.yaml" in flat
    elsewhere = tmp_path / "other/configs/x.yaml"  # not under the working directory's configs/: no list
    assert "shipped" not in one_paragraph(capsys, train_cli.main, ["--config", str(elsewhere)], "no such file")
    mine = tmp_path / "mine.yaml"
    mine.write_text("base: nothere.yaml\n")
    one_paragraph(capsys, train_cli.main, ["--config", str(mine)],
                  f"--config {mine}: its base {tmp_path / 'nothere.yaml'} is not a file")


def test_a_config_that_is_not_yaml_is_named_with_its_line(capsys, tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text(f"base: {SMOKE}\nmodel: {{init_args: {{hidden_size: 3}}\n")  # one brace short
    one_paragraph(capsys, train_cli.main, ["--config", str(bad)], f"--config {bad} is not valid YAML",
                  f'in "{bad}", line 2')


def test_debug_keeps_jsonargparses_own_report(capsys, text_files, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        train_cli.main(["--config", SMOKE, *data_args(text_files, tmp_path), "--model.dni.scale=x", "--debug"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and 'Parser key "model"' in err and "usage:" in err


def test_data_files_that_hold_no_text_are_named(capsys, text_files, tmp_path):
    empty, binary = tmp_path / "empty.txt", tmp_path / "image.png"
    empty.write_text("")
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x81")
    args = ["--config", SMOKE, *data_args(text_files, tmp_path)]
    one_paragraph(capsys, train_cli.main, [*args, f"--data.train_files=[{empty}]"],
                  f"{empty} holds no text (it is the train split, data.train_files)")
    one_paragraph(capsys, train_cli.main, [*args, f"--data.train_files=[{binary}]"],
                  f"{binary} is not a UTF-8 text file")


def test_no_data_and_no_network_is_said_once_without_retries(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("SEQDNI_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    one_paragraph(capsys, train_cli.main, ["--config", SMOKE, f"--data.cache_dir={tmp_path / 'cache'}"],
                  "Penn Treebank not found", "HF_HUB_OFFLINE is set", "--data.data_dir DIR")


def test_a_missing_or_truncated_ckpt_path_is_named(capsys, text_files, tmp_path):
    args = ["--config", SMOKE, *data_args(text_files, tmp_path)]
    one_paragraph(capsys, train_cli.main, [*args, f"--ckpt_path={tmp_path / 'nope.ckpt'}"],
                  f"--ckpt_path not found: {tmp_path / 'nope.ckpt'}")
    cut = tmp_path / "cut.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, cut)
    cut.write_bytes(cut.read_bytes()[:300])
    one_paragraph(capsys, train_cli.main, [*args, f"--ckpt_path={cut}"], f"{cut} cannot be read as a checkpoint",
                  "truncated or corrupt")
    empty, text = tmp_path / "empty.ckpt", tmp_path / "text.ckpt"
    empty.write_bytes(b"")
    text.write_text("hi\n")  # torch.load's unpickler meets a byte it has no rule for: a KeyError
    for bad in (empty, text):
        flat = one_paragraph(capsys, train_cli.main, [*args, f"--ckpt_path={bad}"],
                             f"{bad} cannot be read as a checkpoint", "Give a .ckpt file written by seqdni.train")
        assert "weights_only" not in flat  # torch's advice to unpickle arbitrary code is not ours to give
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "latest.ckpt").write_bytes(b"")
    one_paragraph(capsys, sample_cli.main, ["--ckpt", str(folder.parent)],
                  f"{folder.parent} is a folder", f"such as {folder / 'latest.ckpt'}")


def test_an_output_folder_that_cannot_be_written_is_named(capsys, text_files, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # (root may write into read-only folders; nobody into a file)
    one_paragraph(capsys, train_cli.main, ["--config", SMOKE, *data_args(text_files, tmp_path),
                                           f"--trainer.default_root_dir={blocker / 'out'}"],
                  f"cannot write the run folder {blocker / 'out'}", "--trainer.default_root_dir DIR")


@pytest.mark.parametrize(("args", "needle"), [
    (["--temperature=0"], "--temperature must be > 0"),
    (["--length=-1"], "--length is the number of characters to generate, >= 0; got -1"),
    (["--top_k=0"], "--top_k must be at least 1"),
    (["--top_k=99"], "--top_k 99 exceeds the vocabulary"),
    (["--device=cuda:7"], "--device cuda:7: this machine has"),
    (["--device=tpu9"], "--device 'tpu9' is not a torch device"),
])
def test_sampling_arguments_out_of_range_are_named(capsys, args, needle):
    from legacy import LEGACY

    if args[0].startswith("--device=cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has the device")
    one_paragraph(capsys, sample_cli.main, ["--ckpt", str(LEGACY / "flat-bptt.ckpt"), *args], needle)


@pytest.mark.parametrize(("args", "needle"), [
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--ckpt", "x.ckpt", "--length=abc"], "length must be an integer, got 'abc'"),
    ([], "the following arguments are required: ckpt"),
])
def test_sampling_arguments_that_do_not_parse_are_one_paragraph(capsys, args, needle):
    flat = one_paragraph(capsys, sample_cli.main, args, needle, "`python -m seqdni.sample --help` lists every key")
    assert "usage:" not in flat


def test_sampling_a_missing_checkpoint_is_named(capsys, tmp_path):
    one_paragraph(capsys, sample_cli.main, ["--ckpt", str(tmp_path / "none.ckpt")], "checkpoint not found")


@pytest.mark.slow
def test_from_a_fresh_process_exit_1_without_traceback_and_debug_shows_it(text_files, tmp_path):
    args = ["--config", SMOKE, *data_args(text_files, tmp_path), "--data.batch_size=0"]
    res = run_cli("seqdni.train", args, cwd=tmp_path)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "python -m seqdni.train: error: data.batch_size must be positive, got 0" in res.stderr
    debug = run_cli("seqdni.train", [*args, "--debug"], cwd=tmp_path)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "data.batch_size must be positive" in debug.stderr


def test_sample_help_names_the_command_users_type(capsys):
    with pytest.raises(SystemExit) as exit_:
        sample_cli.main(["--help"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("usage: python -m seqdni.sample")


def test_the_pipeline_names_a_missing_or_recurrent_config(capsys):
    one_paragraph(capsys, pipeline_cli.main, ["--config", "configs/ff/nope.yaml", "--procs", "2"],
                  "--config configs/ff/nope.yaml is not a file here", "configs/ff/digits-dni.yaml")
    one_paragraph(capsys, pipeline_cli.main, ["--config", "configs/copy/dni2.yaml", "--procs", "2"],
                  "configs/copy/dni2.yaml is not a feed-forward config", "seqdni.training.SeqModel")


def test_a_run_stopped_by_sigterm_exits_143_and_says_how_to_go_on(capsys):
    """Lightning ends training on SIGTERM with a SystemExit of status 0; a grid script must not take
    the cut run for a finished one."""
    import pytest
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from seqdni.errors import reported

    def stopped():
        raise SIGTERMException

    with pytest.raises(SystemExit) as exit_info:
        reported(stopped, "seqdni.train", [])
    assert exit_info.value.code == 143
    assert "stopped by SIGTERM; resume from the run's latest checkpoint" in capsys.readouterr().err


def test_ckpt_path_last_is_refused_not_a_silent_fresh_run(capsys, text_files, tmp_path):
    """Lightning's `last` finds no last.ckpt in a seqdni run: it would warn and train from step 0."""
    one_paragraph(capsys, train_cli.main, ["--config", SMOKE, *data_args(text_files, tmp_path), "--ckpt_path=last"],
                  "--ckpt_path last names Lightning's last.ckpt", "checkpoints/latest.ckpt")


@pytest.mark.parametrize("flag", [["-c"], ["--config"], ["-c="], ["--config="]])
def test_the_config_alias_follows_bases_and_finds_shipped_configs(tmp_path, monkeypatch, flag):
    monkeypatch.chdir(tmp_path)  # no configs/ here: the shipped copy is found
    args = [flag[0] + "configs/ptb-cpu/dni8.yaml"] if flag[0].endswith("=") else [*flag, "configs/ptb-cpu/dni8.yaml"]
    chain = train_cli.expand_configs([*args, "--model.lr=1"])
    configs = chain[1:-1:2]
    assert chain[0::2][:-1] == ["--config"] * len(configs) and chain[-1] == "--model.lr=1"
    assert len(configs) >= 2 and configs[0].endswith("ptb-cpu.yaml")  # its base first, then its own keys
    assert "dni:" in configs[-1]
