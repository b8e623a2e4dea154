"""The submitit launchers (``launch/``) against fake SLURM commands: no cluster, no Ray, no training.

As in submitit's own tests, SLURM is faked -- here by executables on PATH rather than by patching
``subprocess``, so the launchers and submitit run unchanged: ``sinfo`` prints canned partitions in the
format it is asked for, ``sbatch`` records its arguments and the script it was given and prints
``Submitted batch job 1234`` (or refuses, on request), ``scancel`` records its call, and ``srun``,
``squeue``, ``sacct`` and ``scontrol`` fail if called at all. PATH holds nothing else, so no real SLURM
command on the machine can be reached. The end-to-end runs on a real cluster are in test_slurm.py.

Golden files: ``tests/golden/*.sbatch`` are the batch scripts the launchers generate, with the
run-specific parts replaced (``<TMP>``: the test's tmp folder, ``<PYTHON>``: the interpreter). After an
intended change to what is submitted, regenerate them and review the diff::

    HPCINV_UPDATE_GOLDEN=1 PYTHONPATH=. python -m pytest tests/test_launch.py -k golden -p no:cacheprovider
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from pathlib import Path

import pytest
import submitit

from hpcinv.config import ClusterConfig, SlurmConfig, TrainConfig, load_config
from launch import evaluate as launch_evaluate
from launch import generate as launch_generate
from launch import refine as launch_refine
from launch import train as launch_train
from tests.conftest import CONFIGS, ROOT, generate_small

GOLDEN = Path(__file__).resolve().parent / "golden"
STAGES = {"train": launch_train, "generate": launch_generate, "refine": launch_refine, "evaluate": launch_evaluate}

# One script for every fake command; its file name says which command it is, state.json beside the
# bin folder says how it behaves, and every call is appended to calls.jsonl there.
FAKE_COMMAND = r"""#!@PYTHON@ -IS
import json
import re
import sys
from pathlib import Path

cmd, args = Path(sys.argv[0]).name, sys.argv[1:]
root = Path(sys.argv[0]).parent.parent
state = json.loads((root / "state.json").read_text())
calls = root / "calls.jsonl"
done = [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []
record = {"cmd": cmd, "argv": args}


def finish(code, out="", err=""):
    with calls.open("a") as f:
        f.write(json.dumps(record) + "\n")
    sys.stdout.write(out)
    sys.stderr.write(err)
    sys.exit(code)


if cmd == "sinfo":
    if state.get("sinfo_error"):
        finish(1, err=state["sinfo_error"] + "\n")
    fmt, header, rest = None, True, list(args)
    while rest:
        a = rest.pop(0)
        if a in ("-h", "--noheader"):
            header = False
        elif a in ("-o", "--format"):
            fmt = rest.pop(0)
        else:
            finish(1, err=f"fake sinfo: option {a!r} not faked\n")
    if fmt is None:
        finish(1, err="fake sinfo: only -o FORMAT output is faked\n")
    fields = {"P": ("PARTITION", 0), "D": ("NODES", 1), "a": ("AVAIL", 2)}
    unknown = [f for f in re.findall(r"%[.\d]*(\w)", fmt) if f not in fields]
    if unknown:
        finish(1, err=f"fake sinfo: field(s) {unknown} not faked\n")
    rows = [[fields[f][0] for f in "PDa"]] if header else []
    rows += state["partitions"]
    out = "".join(re.sub(r"%[.\d]*(\w)", lambda m: str(row[fields[m.group(1)][1]]), fmt) + "\n" for row in rows)
    finish(0, out=out)
if cmd == "sbatch":
    n = 1 + sum(c["cmd"] == "sbatch" for c in done)
    script = Path(args[-1]) if args else None
    record["script"] = script.read_text() if script and script.is_file() else None
    refuse = state.get("sbatch_refuse")
    if refuse and refuse.get("on_call") in (None, n):
        finish(1, err=f"sbatch: error: {refuse['message']}\n")
    finish(0, out=f"Submitted batch job {state['first_job_id'] + n - 1}\n")
if cmd == "scancel":
    finish(0)
finish(1, err=f"fake {cmd}: not expected to be called by a launcher on the login node\n")
"""

PARTITIONS = [["debug*", 2, "up"], ["gpu", 4, "up"], ["maint", 3, "down"]]


class FakeSlurm:
    """The fake commands' folder (``bin``, the whole PATH), their behaviour and the calls they got."""

    def __init__(self, root: Path):
        self.root, self.bin = root, root / "bin"
        self.bin.mkdir(parents=True)
        text = FAKE_COMMAND.replace("@PYTHON@", sys.executable)
        for cmd in ("sinfo", "sbatch", "srun", "scancel", "squeue", "sacct", "scontrol"):
            (self.bin / cmd).write_text(text)
            (self.bin / cmd).chmod(0o755)
        self.state: dict = {"partitions": PARTITIONS, "first_job_id": 1234}
        self.configure()

    def configure(self, **state) -> None:
        self.state.update(state)
        (self.root / "state.json").write_text(json.dumps(self.state))

    def refuse(self, message: str, on_call: int | None = None) -> None:
        """Make sbatch refuse (its ``on_call``-th call, or every call) with ``sbatch: error: MESSAGE``."""
        self.configure(sbatch_refuse={"message": message, "on_call": on_call})

    def calls(self, cmd: str | None = None) -> list[dict]:
        path = self.root / "calls.jsonl"
        found = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        return [c for c in found if cmd is None or c["cmd"] == cmd]


@pytest.fixture
def slurm(tmp_path, monkeypatch) -> FakeSlurm:
    fake = FakeSlurm(tmp_path / "fake-slurm")
    monkeypatch.setenv("PATH", str(fake.bin))  # nothing else: no real SLURM command can be reached
    monkeypatch.chdir(tmp_path)
    yield fake
    submitit.SlurmJob.watcher.clear()  # submitit's shared watcher of the jobs "submitted" here


def launch(capsys, stage: str, *argv: str) -> tuple[int, list[dict], str]:
    """``python -m launch.<stage> ARGV``, in this process: exit code, the JSON objects printed, stderr."""
    capsys.readouterr()
    code = STAGES[stage].main(list(argv))
    out, err = capsys.readouterr()
    objects, text, decoder = [], out.strip(), json.JSONDecoder()
    while text:
        obj, end = decoder.raw_decode(text)
        objects.append(obj)
        text = text[end:].strip()
    return code, objects, err


def one_error_line(code: int, out: list, err: str) -> str:
    """The single ``launch: error:`` line of a refused request (exit 2, nothing printed on stdout)."""
    assert code == 2 and out == [], (code, out, err)
    assert err.startswith("launch: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


def directives(script: str) -> dict[str, str | bool]:
    """The ``#SBATCH`` options of a batch script: ``{"time": "720", "exclusive": True, ...}``."""
    found: dict[str, str | bool] = {}
    for line in script.splitlines():
        if line.startswith("#SBATCH --"):
            key, sep, value = line.removeprefix("#SBATCH --").partition("=")
            assert key not in found, f"#SBATCH --{key} given twice"
            found[key] = value if sep else True
    return found


def normalise(text: str, tmp_path: Path) -> str:
    """Replace what differs from run to run: the interpreter and the test's tmp folder."""
    for python in {shlex.quote(sys.executable), sys.executable}:
        text = text.replace(python, "<PYTHON>")
    for tmp in {str(tmp_path.resolve()), str(tmp_path)}:
        text = text.replace(tmp, "<TMP>")
    return text


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("HPCINV_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} is missing: create it with HPCINV_UPDATE_GOLDEN=1 (see this module's docstring)"
    assert text == path.read_text(), f"{name} changed: if intended, regenerate with HPCINV_UPDATE_GOLDEN=1"


def submitted_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


TRAIN_ARGS = (
    str(CONFIGS / "cpu_fcnvmb_train.yaml"),
    "--partition=gpu",
    "--nodes=2",
    "--cpus-per-node=8",
    "--gpus-per-node=2",
    "--mem-gb=32",
    "--time=720",
    "--account=geo",
    "--qos=high",
    "--constraint=a100",
    "--setup=module load cuda/12.4",
    "--slurm=exclusive=true",
    "--max-timeouts=5",
    "--after=1200",  # the dataset is made by job 1200: its inputs are not checked here
    "scaling.num_workers=4",
    "scaling.use_gpu=true",
)

# One rank (fits the default one CPU per node); --after: the dataset is made by an earlier job, not checked here.
TINY_TRAIN = (str(CONFIGS / "tiny_train.yaml"), "scaling.num_workers=1", "--after=1")


def test_train_golden_sbatch_and_what_is_submitted(slurm, tmp_path, capsys):
    """The whole batch script of a two-node GPU training job, against tests/golden/train.sbatch."""
    logs = tmp_path / "logs"
    code, out, err = launch(capsys, "train", *TRAIN_ARGS, "--out", str(tmp_path / "run"), "--folder", str(logs))
    assert code == 0, err
    assert [c["cmd"] for c in slurm.calls()] == ["sinfo", "sbatch"]  # nothing else, no srun on the login node
    assert slurm.calls("sinfo")[0]["argv"] == ["-h", "-o", "%P|%D|%a"]
    (sbatch,) = slurm.calls("sbatch")
    assert re.fullmatch(r"<TMP>/logs/\.submission_file_[0-9a-f]{32}\.sh", normalise(sbatch["argv"][0], tmp_path))
    assert len(sbatch["argv"]) == 1  # every option is in the script
    check_golden("train.sbatch", normalise(sbatch["script"], tmp_path))

    # The report: one JSON object naming the job and its logs.
    logs = logs.resolve()
    assert out == [
        {
            "run_dir": str(tmp_path / "run"),
            "jobs": [
                {"job_id": "1234", "stdout": f"{logs}/1234/1234_0_log.out", "stderr": f"{logs}/1234/1234_0_log.err"}
            ],
            "folder": str(logs),
        }
    ]
    # What the job will run: the pickled StageJob of the train stage, with the requeue budget of --max-timeouts.
    assert [re.sub("[0-9a-f]{32}", "<UUID>", f) for f in submitted_files(logs)] == [
        ".submission_file_<UUID>.sh",  # submitit's link to 1234/1234_submission.sh
        "1234",
        "1234/1234_submission.sh",
        "1234/1234_submitted.pkl",
    ]
    assert (logs / "1234" / "1234_submission.sh").read_text() == sbatch["script"]
    delayed = submitit.core.utils.DelayedSubmission.load(logs / "1234" / "1234_submitted.pkl")
    job = delayed.function
    assert type(job).__name__ == "StageJob" and job.stage == "train"
    assert job.request.out == str((tmp_path / "run").resolve())
    assert job.request.config.scaling.num_workers == 4 and job.cluster.cluster_dir == str(logs / "ray")
    assert (delayed._timeout_min, delayed._timeout_countdown) == (720, 5)
    assert callable(job.checkpoint)  # submitit requeues the same call on USR2 / at the time limit


def test_requeue_signal_and_resources_reach_the_sbatch_lines(slurm, tmp_path, capsys):
    code, _, err = launch(capsys, "train", *TRAIN_ARGS, "--out", str(tmp_path / "run"), "--folder", str(tmp_path))
    assert code == 0, err
    script = slurm.calls("sbatch")[0]["script"]
    opts = directives(script)
    assert opts["signal"] == "USR2@120"  # submitit's handler pickles the call and requeues the job
    assert opts["open-mode"] == "append"  # a requeued attempt appends to the same logs
    assert opts["time"] == "720" and opts["partition"] == "gpu" and opts["dependency"] == "afterok:1200"
    assert (opts["nodes"], opts["ntasks-per-node"], opts["cpus-per-task"]) == ("2", "1", "8")  # one task per node
    assert opts["gpus-per-node"] == "2" and opts["mem"] == "32768M"
    assert (opts["account"], opts["qos"], opts["constraint"]) == ("geo", "high", "a100")
    assert opts["exclusive"] is True and opts["job-name"] == "hpcinv-train"
    assert opts["output"] == f"{tmp_path}/%j/%j_0_log.out" and opts["error"] == f"{tmp_path}/%j/%j_0_log.err"
    # --setup runs before the one srun that starts a task on every node.
    setup, command = script.split("# setup\n")[1].split("# command\n")
    assert setup.strip() == "module load cuda/12.4"
    (srun,) = [line for line in command.splitlines() if line.startswith("srun ")]
    assert srun.endswith(f"{shlex.quote(sys.executable)} -u -m submitit.core._submit {tmp_path}/%j")


def test_cpu_job_asks_for_no_gpu_and_the_defaults(slurm, tmp_path, capsys):
    code, _, err = launch(capsys, "train", *TINY_TRAIN, "--out", str(tmp_path / "run"))
    assert code == 0, err
    opts = directives(slurm.calls("sbatch")[0]["script"])
    assert not {"gpus-per-node", "gres", "mem", "account", "qos", "constraint", "exclusive"} & set(opts), opts
    assert opts["partition"] == "debug"  # the cluster's default (debug* in sinfo)
    defaults = SlurmConfig()
    assert (opts["nodes"], opts["cpus-per-task"], opts["time"]) == ("1", "2", "60")
    assert (defaults.nodes, defaults.cpus_per_node, defaults.time) == (1, 2, 60)
    assert opts["dependency"] == "afterok:1"
    assert opts["output"] == f"{tmp_path.resolve()}/slurm-logs/%j/%j_0_log.out"  # --folder's default, ./slurm-logs


def test_generate_golden_sbatch(slurm, tmp_path, capsys):
    """The batch script of a two-node generation job, against tests/golden/generate.sbatch."""
    code, out, err = launch(
        capsys,
        "generate",
        str(CONFIGS / "tiny.yaml"),
        "--out",
        str(tmp_path / "ds"),
        "--folder",
        str(tmp_path / "logs"),
        "--nodes=2",
        "--cpus-per-node=4",
        "--time=30",
        "--object-store-gb=0.5",
    )
    assert code == 0, err
    assert out[0]["out"] == str(tmp_path / "ds") and out[0]["jobs"][0]["job_id"] == "1234"
    check_golden("generate.sbatch", normalise(slurm.calls("sbatch")[0]["script"], tmp_path))
    assert not (tmp_path / "ds").exists()  # the job creates the dataset, not the login node


def test_generate_array_then_merge_after_it(slurm, tmp_path, capsys):
    logs = tmp_path / "logs"
    args = ["--out", str(tmp_path / "ds"), "--folder", str(logs), "--array", "3", "--nodes", "2"]
    code, out, err = launch(capsys, "generate", str(CONFIGS / "tiny.yaml"), *args)
    assert code == 0, err
    parts, merge = (directives(c["script"]) for c in slurm.calls("sbatch"))
    assert parts["array"] == "0-2%3" and parts["nodes"] == "2" and "dependency" not in parts
    assert parts["output"] == f"{logs}/%A_%a/%A_%a_0_log.out"  # a log folder per array task
    assert merge["dependency"] == "afterok:1234" and merge["nodes"] == "1" and "array" not in merge
    assert merge["job-name"] == "hpcinv-generate-merge"
    assert [j["job_id"] for j in out[0]["jobs"]] == ["1234_0", "1234_1", "1234_2", "1235"]
    pickles = [logs / f"1234_{i}" / f"1234_{i}_submitted.pkl" for i in range(3)]
    assert [submitit.core.utils.DelayedSubmission.load(p).function.request.part for p in pickles] == [
        (0, 3),
        (1, 3),
        (2, 3),
    ]
    assert (
        submitit.core.utils.DelayedSubmission.load(logs / "1235" / "1235_submitted.pkl").function.request.part is None
    )


def test_generate_array_with_restart_discards_once_on_the_login_node(slurm, tmp_path, capsys):
    """--restart with --array: another config's dataset is discarded before queueing; no part may discard."""
    ds, logs = generate_small(tmp_path / "ds", "dataset.n_samples=8", "dataset.shard_size=4"), tmp_path / "logs"
    args = ["--out", str(ds), "--folder", str(logs), "--array", "2"]
    line = one_error_line(*launch(capsys, "generate", str(CONFIGS / "tiny.yaml"), *args))
    assert "--restart to discard it" in line and not slurm.calls("sbatch")
    assert launch(capsys, "generate", str(CONFIGS / "tiny.yaml"), *args, "--restart")[0] == 0
    assert not list((ds / "shards").glob("*.h5"))  # the other config's shards are gone, once, here
    jobs = [submitit.core.utils.DelayedSubmission.load(p).function for p in sorted(logs.glob("*/*_submitted.pkl"))]
    assert len(jobs) == 3 and not any(job.request.restart for job in jobs)
    line = one_error_line(*launch(capsys, "generate", str(CONFIGS / "tiny.yaml"), *args, "--part", "0/2"))
    assert line == "launch: error: --part 0/2 and --array 2: give one of them (--array makes the parts)"


def test_generate_after_another_job_still_checks_its_physics_before_queueing(slurm, tmp_path, capsys):
    args = ["--out", str(tmp_path / "ds"), "--folder", str(tmp_path / "logs"), "--after", "77", "survey.f0_hz=200"]
    line = one_error_line(*launch(capsys, "generate", str(CONFIGS / "tiny.yaml"), *args))
    assert "grid too coarse for the wavelet" in line and not slurm.calls("sbatch")


def test_refused_merge_cancels_the_array(slurm, tmp_path, capsys):
    slurm.refuse("Batch job submission failed: Job violates accounting/QOS policy", on_call=2)
    args = ["--out", str(tmp_path / "ds"), "--folder", str(tmp_path / "logs"), "--array", "2"]
    line = one_error_line(*launch(capsys, "generate", str(CONFIGS / "tiny.yaml"), *args))
    reason = "Batch job submission failed: Job violates accounting/QOS policy"
    assert line == f"launch: error: sbatch refused the job: {reason}"
    assert slurm.calls("scancel") == [{"cmd": "scancel", "argv": ["1234"]}]  # no parts left without their merge


def test_refine_and_evaluate_submit_their_jobs(slurm, tmp_path, capsys):
    common_args = ["--folder", str(tmp_path / "logs"), "--after", "99", "--partition", "gpu"]
    code, out, err = launch(
        capsys,
        "refine",
        str(CONFIGS / "cpu_refine.yaml"),
        "--data",
        str(tmp_path / "ds"),
        "--init",
        "smooth",
        "--out",
        str(tmp_path / "refined"),
        "--nodes",
        "3",
        *common_args,
    )
    assert code == 0, err
    opts = directives(slurm.calls("sbatch")[0]["script"])
    assert (opts["job-name"], opts["nodes"], opts["dependency"]) == ("hpcinv-refine", "3", "afterok:99")
    code, out, err = launch(
        capsys, "evaluate", str(tmp_path / "run"), "--data", str(tmp_path / "ds"), "--out", str(tmp_path / "report"),
        *common_args,
    )  # fmt: skip
    assert code == 0, err
    opts = directives(slurm.calls("sbatch")[1]["script"])
    assert (opts["job-name"], opts["nodes"]) == ("hpcinv-evaluate", "1")  # one node, no Ray
    assert out[0]["jobs"][0]["job_id"] == "1235"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--partition", "nope"],
            "partition 'nope' does not exist on this cluster; partitions: ['debug', 'gpu', 'maint']",
        ),
        (["--nodes", "3"], "--nodes 3 is more than partition 'debug' has (2 nodes)"),
        (["--partition", "gpu", "--nodes", "5"], "--nodes 5 is more than partition 'gpu' has (4 nodes)"),
        (["--partition", "maint"], "partition 'maint' is down"),
        (["--nodes", "0"], "--nodes 0 is not valid: input should be greater than or equal to 1"),
        (["--time", "0"], "--time 0 is not valid: input should be greater than or equal to 1"),
        (["--slurm", "reservation"], "--slurm 'reservation' is not KEY=VALUE"),
        (
            ["--object-store-gb", "0.01"],
            "--object-store-gb 0.01 is not valid: input should be greater than or equal to 0.1",
        ),
        (["--join-timeout-s", "0"], "--join-timeout-s 0.0 is not valid: input should be greater than 0"),
    ],
)
def test_bad_requests_are_refused_before_anything_is_submitted(slurm, tmp_path, capsys, args, message):
    logs = tmp_path / "logs"
    run = ["--out", str(tmp_path / "run"), "--folder", str(logs)]
    line = one_error_line(*launch(capsys, "train", *TINY_TRAIN, *run, *args))
    assert message in line
    assert slurm.calls("sbatch") == [] and not logs.exists()


def test_a_down_partition_names_the_ones_that_are_up(slurm, tmp_path, capsys):
    """A job sent to a down partition would pend until an administrator brings it up."""
    args = ["--out", str(tmp_path / "ds"), "--folder", str(tmp_path / "logs"), "--partition", "maint"]
    line = one_error_line(*launch(capsys, "generate", str(CONFIGS / "tiny.yaml"), *args))
    assert line == "launch: error: partition 'maint' is down; partitions up: ['debug', 'gpu']"
    assert slurm.calls("sbatch") == [] and not (tmp_path / "logs").exists()
    # The same when it is the cluster's default partition.
    slurm.configure(partitions=[["debug*", 2, "inact"], ["gpu", 4, "up"]])
    line = one_error_line(*launch(capsys, "generate", str(CONFIGS / "tiny.yaml"), *args[:4]))
    assert line == "launch: error: partition 'debug' is inact; partitions up: ['gpu']"


def test_no_default_partition_lists_the_partitions(slurm, tmp_path, capsys):
    slurm.configure(partitions=[["cpu", 2, "up"], ["gpu", 1, "up"]])
    args = ["--out", str(tmp_path / "ds"), "--folder", str(tmp_path / "logs")]
    line = one_error_line(*launch(capsys, "generate", str(CONFIGS / "tiny.yaml"), *args))
    assert line == "launch: error: the cluster has no default partition: give --partition, one of ['cpu', 'gpu']"


@pytest.mark.parametrize("existing", [False, True])
def test_sbatch_refusal_is_one_line_and_leaves_no_files(slurm, tmp_path, capsys, existing):
    logs = tmp_path / "logs"
    if existing:  # a folder shared with earlier jobs: theirs stay
        (logs / "1000").mkdir(parents=True)
        (logs / "1000" / "1000_0_log.out").write_text("an earlier job\n")
    slurm.refuse("Batch job submission failed: Invalid account or account/partition combination specified")
    args = ["--out", str(tmp_path / "run"), "--folder", str(logs), "--account", "nobody"]
    line = one_error_line(*launch(capsys, "train", *TINY_TRAIN, *args))
    assert line == (
        "launch: error: sbatch refused the job: Batch job submission failed: "
        "Invalid account or account/partition combination specified"
    )
    assert len(slurm.calls("sbatch")) == 1
    assert submitted_files(logs) == (["1000", "1000/1000_0_log.out"] if existing else [])
    assert logs.exists() == existing


@pytest.mark.parametrize("missing", ["sinfo", "srun", "sbatch"])
def test_slurm_commands_missing_from_path(slurm, tmp_path, capsys, missing):
    (slurm.bin / missing).unlink()
    args = ["--out", str(tmp_path / "run"), "--folder", str(tmp_path / "logs")]
    line = one_error_line(*launch(capsys, "train", *TINY_TRAIN, *args))
    assert line.startswith(f"launch: error: SLURM's commands are not on PATH (missing: {missing}): ")
    assert "submit from a login node of the cluster" in line and "slurm/local-cluster.sh up" in line
    assert slurm.calls("sbatch") == [] and not (tmp_path / "logs").exists()


def test_sinfo_failing_names_the_controller(slurm, tmp_path, capsys):
    slurm.configure(
        sinfo_error="sinfo: error: fetch_config: DNS SRV lookup failed\n"
        "slurm_load_partitions: Unable to contact slurm controller (connect failure)"
    )
    args = ["--out", str(tmp_path / "run"), "--folder", str(tmp_path / "logs")]
    line = one_error_line(*launch(capsys, "train", *TINY_TRAIN, *args))  # one line, however many sinfo printed
    assert line == (
        "launch: error: sinfo failed, is the SLURM controller up? sinfo: error: fetch_config: DNS SRV lookup failed; "
        "slurm_load_partitions: Unable to contact slurm controller (connect failure)"
    )


@pytest.mark.parametrize("template", ["generate.sbatch", "train.sbatch"])
def test_sbatch_templates_hold_the_launchers_defaults(template):
    """One table of SLURM defaults: slurm/*.sbatch ask for what python -m launch.* asks for by default."""
    lines = dict(
        line.removeprefix("#SBATCH --").split("=", 1)
        for line in (ROOT / "slurm" / template).read_text().splitlines()
        if line.startswith("#SBATCH --") and "=" in line
    )
    d = SlurmConfig()
    assert lines["nodes"] == str(d.nodes) and lines["cpus-per-task"] == str(d.cpus_per_node)
    assert lines["time"] == str(d.time) and lines["signal"] == f"B:USR2@{d.signal_delay_s}"
    assert "#SBATCH --requeue" in (ROOT / "slurm" / template).read_text()


def test_a_job_pickled_by_an_earlier_hpcinv_still_runs_its_stage(tmp_path):
    """A job queued by an older hpcinv (one class per stage; before that, the cluster's folder and object
    store as two attributes) unpickles into the StageJob of its stage, and stays one when requeued."""
    import pickle

    from hpcinv.jobs import StageJob, TrainJob

    cfg = load_config(TrainConfig, TINY_TRAIN[0])
    job = TrainJob.__new__(TrainJob)
    job.__dict__ = {
        "cfg": cfg,
        "run_dir": str(tmp_path / "run"),
        "cluster_dir": str(tmp_path / "ray"),
        "object_store_gb": 0.5,
    }
    again = pickle.loads(pickle.dumps(job))
    assert isinstance(again, StageJob) and again.stage == "train" and again.request.config == cfg
    assert again.cluster == ClusterConfig(cluster_dir=str(tmp_path / "ray"), object_store_gb=0.5)
    assert again.request.out == str(tmp_path / "run") and not hasattr(again, "cluster_dir")
    # a requeue pickles the job again: it is a StageJob now, and comes back the same
    requeued = pickle.loads(pickle.dumps(again))
    assert type(requeued) is StageJob and requeued.__dict__ == again.__dict__
