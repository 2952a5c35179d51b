"""hpc/*.slurm as users run them, on a real single-node SLURM 22.05 cluster started by the tests.

The cluster comes from ``../shared/tools/local_slurm.sh`` (it installs Debian's slurmctld, slurmd and
munge when they are missing, then starts the daemons; ``local_slurm.sh stop`` stops them). The jobs
are the project's own ``hpc/levir.slurm``, submitted with sbatch from the repository root; only the
resources are overridden on the command line (one node, two CPU tasks, no GPU, the ``debug``
partition) and the config, data and log folder point into the test's temporary folder. Data: the
project's synthetic scenes in the LEVIR-CD layout, chipped at 32x32, and a tiny model.

Skipped, with the reason, when the cluster cannot be started here: not root, no
``../shared/tools/local_slurm.sh``, or SLURM missing and no apt-get to install it. A local cluster
that is already running is restarted with an empty queue, and stopped at the end.

Jobs are followed with ``scontrol show job`` every half second rather than ``sbatch --wait``, whose
polling interval grows 2 s, 8 s, 32 s (it would add up to half a minute to every job).
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
LOCAL_SLURM = ROOT.parent / "shared" / "tools" / "local_slurm.sh"
LEVIR = ROOT / "hpc" / "levir.slurm"
LAUNCH = ROOT / "hpc" / "launch.sh"
# what the local cluster can give: one node ("debug" partition), 2 CPUs, no GRES, no large --mem
RESOURCES = ["--nodes=1", "--ntasks=2", "--ntasks-per-node=2", "--gres=none", "--cpus-per-task=1",
             "--partition=debug", "--time=30"]
FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
            "DEADLINE", "PREEMPTED"}


def skip_reason():
    if os.geteuid() != 0:
        return "needs root: local_slurm.sh installs and starts munged, slurmctld and slurmd"
    if not LOCAL_SLURM.exists():
        return f"{LOCAL_SLURM} is absent"
    installed = all(shutil.which(tool) for tool in ("sbatch", "slurmctld", "slurmd", "munged"))
    if not installed and not shutil.which("apt-get"):
        return "SLURM is not installed and apt-get is unavailable to install it"
    return None


def job_env(**extra) -> dict:
    """The submitting shell's environment (sbatch hands it to the job) without SLURM's own variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_"))}
    env.update(HOROVOD_ARGS="--gloo", OMP_NUM_THREADS="1")
    if Path(sys.executable) != ROOT / ".venv" / "bin" / "python":  # pytest run from another environment
        env.update(PYTHON=sys.executable, HOROVODRUN=str(Path(sys.executable).parent / "horovodrun"))
    env.update(extra)
    return env


class Cluster:
    def __init__(self, logs: Path):
        self.logs = logs
        self.jobs = []

    def submit(self, script, env, *options) -> int:
        result = subprocess.run(["timeout", "60", "sbatch", "--parsable", *RESOURCES, f"--output={self.logs}/%x-%j.out",
                                 *options, str(script)], cwd=ROOT, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        job = int(result.stdout.strip().split(";")[0])
        self.jobs.append(job)
        return job

    def info(self, job: int) -> dict:
        """JobState, Reason, Restarts, ExitCode, ... of ``scontrol show job`` (retried: slurmctld may be busy)."""
        for _ in range(10):
            result = subprocess.run(["timeout", "30", "scontrol", "-o", "show", "job", str(job)],
                                    capture_output=True, text=True)
            if result.returncode == 0:
                return dict(re.findall(r"(\w+)=(\S*)", result.stdout))
            time.sleep(1)
        raise AssertionError(f"scontrol show job {job}: {result.stderr}")

    def wait(self, job: int, timeout: float = 240, release_requeued: bool = False) -> dict:
        """Wait until ``job`` has ended; return its record.

        With ``release_requeued``, a requeued job starts after a few seconds instead of after SLURM's
        120 s credential lifetime (its BeginTime). Not at once: slurmd refuses a launch whose credential
        is from the same second as the requeue's kill ("Job credential revoked"; the job then fails).
        """
        deadline, pending_since = time.time() + timeout, None
        while time.time() < deadline:
            info = self.info(job)
            if info["JobState"] in FINISHED:
                return info
            if release_requeued and info["JobState"] == "PENDING" and info.get("Reason") == "BeginTime":
                pending_since = pending_since or time.time()
                if time.time() - pending_since > 2:
                    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], capture_output=True)
            time.sleep(0.5)
        subprocess.run(["scancel", str(job)])
        raise AssertionError(f"job {job} did not end within {timeout} s:\n{self.log(job)[-3000:]}")

    def log(self, job: int, name: str = "mantis-levir") -> str:
        path = self.logs / f"{name}-{job}.out"
        return path.read_text(errors="replace").replace("\r", "\n") if path.exists() else ""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    needs_install = not shutil.which("sbatch")
    tic = time.time()
    result = subprocess.run(["bash", str(LOCAL_SLURM)], capture_output=True, text=True, timeout=900)
    if needs_install and not shutil.which("sbatch"):
        pytest.skip(f"apt-get could not install SLURM: {(result.stdout + result.stderr)[-500:]}")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    print(f"\nlocal SLURM cluster up in {time.time() - tic:.1f} s ({'with' if needs_install else 'no'} apt install)")
    logs = tmp_path_factory.mktemp("logs")
    cluster = Cluster(logs)
    try:
        yield cluster
    finally:
        # running jobs outlive slurmd: end them first
        subprocess.run(["scancel", *map(str, cluster.jobs)], capture_output=True)
        for _ in range(60):
            if not subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout.strip():
                break
            time.sleep(0.5)
        subprocess.run(["bash", str(LOCAL_SLURM), "stop"], capture_output=True, timeout=120)


def write_config(folder: Path, root: Path, **train) -> Path:
    config = {
        "data": {"kind": "levircd", "root": str(root), "chip_size": 32, "stride": 32},
        "model": {"name": "fractalresnet_tiny"},
        "train": {"batch_size": 2, "depths": [0, 1], "patience": 100, "max_epochs": 2, "max_steps_per_epoch": 2,
                  **train},
        "output": {"run_dir": str(folder / "runs" / "tiny")},
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def epochs(run_dir: Path) -> list:
    return [row["epoch"] for row in json.loads((run_dir / "history.json").read_text())]


def error_lines(log: str) -> list:
    return [line for line in log.splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------ jobs
def test_levir_job_trains_with_two_horovod_ranks(cluster, scenes, tmp_path):
    config = write_config(tmp_path, scenes)
    job = cluster.submit(LEVIR, job_env(CONFIG=str(config)))
    info = cluster.wait(job)
    log = cluster.log(job)
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), log[-3000:]
    assert f"job {job} (restart 0)" in log and "2 Horovod ranks on" in log
    assert "mantis train: fractalresnet_tiny, 2 rank(s)" in log  # train.py: hvd.size() == SLURM_NTASKS == 2
    run_dir = tmp_path / "runs" / "tiny" / f"slurm-{job}"  # the config's run_dir, one folder per job id
    assert json.loads((run_dir / "checkpoints" / "latest.json").read_text())["epoch"] == 2
    assert (run_dir / "checkpoints" / "epoch_0002.params").exists()
    assert epochs(run_dir) == [1, 2]
    assert f"job {job} restart 0 ranks 2" in (run_dir / "slurm_jobs.txt").read_text()
    assert "[launch] training finished" in log


def test_requeued_job_resumes_from_its_checkpoint(cluster, scenes, tmp_path):
    """USR1 is what SLURM sends --signal=B:USR1@300 before the time limit; here it is sent once the
    first checkpoint exists. The job requeues itself, starts again under the same id, finds the same
    run dir and continues from its last complete epoch."""
    config = write_config(tmp_path, scenes, max_epochs=4)
    job = cluster.submit(LEVIR, job_env(CONFIG=str(config)))
    run_dir = tmp_path / "runs" / "tiny" / f"slurm-{job}"
    deadline = time.time() + 180
    while not (run_dir / "checkpoints" / "latest.json").exists():  # written last: a complete checkpoint
        assert time.time() < deadline and cluster.info(job)["JobState"] in ("PENDING", "RUNNING"), cluster.log(job)
        time.sleep(0.2)
    subprocess.run(["scancel", "--signal=USR1", "--batch", str(job)], check=True)
    info = cluster.wait(job, release_requeued=True)
    log = cluster.log(job)
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("COMPLETED", "0:0", "1"), log[-3000:]
    assert f"requeueing job {job}" in log and f"job {job} (restart 1)" in log  # one log, appended to
    resumed = re.findall(r"resumed from epoch (\d+)", log)
    assert len(resumed) == 1 and 1 <= int(resumed[0]) <= 4, log[-3000:]
    assert epochs(run_dir) == [1, 2, 3, 4]  # every epoch once
    first, second = log.split(f"job {job} (restart 1)")
    # train.py logs an epoch after its checkpoint (and model card): USR1 may land between the two
    logged = [int(e) for e in re.findall(r"epoch (\d+): lr", first)]
    assert not logged or int(resumed[0]) - 1 <= logged[-1] <= int(resumed[0]), log[-3000:]
    assert "resumed" not in first
    assert len((run_dir / "slurm_jobs.txt").read_text().splitlines()) == 2


def test_no_requeue_loop_before_the_first_checkpoint(cluster, scenes, tmp_path):
    """A USR1 that comes before this run wrote any checkpoint (a --time shorter than the signal's lead
    time, or an epoch longer than the time limit) would requeue forever: the job stops instead."""
    config = write_config(tmp_path, scenes)
    job = cluster.submit(LEVIR, job_env(CONFIG=str(config)))
    deadline = time.time() + 120
    while "[launch] config" not in cluster.log(job):
        assert time.time() < deadline and cluster.info(job)["JobState"] in ("PENDING", "RUNNING"), cluster.log(job)
        time.sleep(0.1)
    subprocess.run(["scancel", "--signal=USR1", "--batch", str(job)], check=True)
    info = cluster.wait(job)
    log = cluster.log(job)
    assert info["JobState"] == "FAILED" and info["Restarts"] == "0", log[-3000:]
    assert "error: USR1 (time limit near) before this run wrote a checkpoint: not requeueing" in log


def test_training_timeout_ends_a_job(cluster, scenes, tmp_path):
    """TRAIN_TIMEOUT (default: the job's time left) stops a training that runs too long or hangs."""
    config = write_config(tmp_path, scenes, max_epochs=1000)
    job = cluster.submit(LEVIR, job_env(CONFIG=str(config), TRAIN_TIMEOUT="12"))
    info = cluster.wait(job)
    log = cluster.log(job)
    assert (info["JobState"], info["ExitCode"]) == ("FAILED", "124:0"), log[-3000:]
    assert "error: training stopped by the timeout of 12 s" in log


# ------------------------------------------------------------------------------------ bad input
def test_missing_config_is_one_line(cluster, tmp_path):
    job = cluster.submit(LEVIR, job_env(CONFIG=str(tmp_path / "nope.yaml")))
    info = cluster.wait(job)
    assert (info["JobState"], info["ExitCode"]) == ("FAILED", "2:0")
    assert error_lines(cluster.log(job)) == [f"error: config {tmp_path / 'nope.yaml'} does not exist"]


def test_missing_dataset_is_one_line(cluster, tmp_path):
    config = write_config(tmp_path, tmp_path / "no_such_data")
    job = cluster.submit(LEVIR, job_env(CONFIG=str(config)))
    info = cluster.wait(job)
    assert (info["JobState"], info["ExitCode"]) == ("FAILED", "2:0")
    assert error_lines(cluster.log(job)) == [
        f"error: config {config}: data.root {tmp_path / 'no_such_data'} does not exist"]


def test_plain_srun_is_stopped_by_the_size_check(cluster, scenes, tmp_path):
    """`srun -n 2 python train.py` with a Gloo-only Horovod starts two independent size-1 worlds:
    train.py sees SLURM_NTASKS=2 but hvd.size()=1 and stops, each task with one line."""
    config = write_config(tmp_path, scenes)
    script = tmp_path / "srun.sh"
    script.write_text(f"#!/bin/bash\nsrun {job_env().get('PYTHON', ROOT / '.venv/bin/python')} train.py "
                      f"-c {config}\n")
    job = cluster.submit(script, job_env(), "--job-name=srun")
    info = cluster.wait(job)
    log = cluster.log(job, "srun")
    assert info["JobState"] == "FAILED" and info["ExitCode"] != "0:0", log
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and all("SLURM gave 2 tasks but Horovod sees 1 rank(s)" in e for e in errors), log
    assert "Traceback" not in log
    assert not (tmp_path / "runs" / "tiny" / "checkpoints").exists()


def test_world_from_slurm_variables(cluster, tmp_path, scenes):
    """SLURM_TASKS_PER_NODE's compressed form and a node range become horovodrun's -np and -H (dry run)."""
    config = write_config(tmp_path, scenes)
    env = job_env(CONFIG=str(config), MANTIS_DRY_RUN="1", SLURM_JOB_ID="77", SLURM_NTASKS="10",
                  SLURM_TASKS_PER_NODE="4(x2),2", SLURM_JOB_NODELIST="gpu[01-03]", SLURM_GPUS_ON_NODE="4",
                  TRAIN_TIMEOUT="0")
    result = subprocess.run(["bash", str(LAUNCH)], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "-np 10 -H gpu01:4,gpu02:4,gpu03:2 --gloo" in result.stdout
    assert f"--run-dir {tmp_path}/runs/tiny/slurm-77 --resume" in result.stdout


# -------------------------------------------------------------------- without a cluster (fake job)
@pytest.mark.parametrize("gpu_env", [{"SLURM_GPUS_ON_NODE": "2"}, {"CUDA_VISIBLE_DEVICES": "0,1"}])
def test_more_tasks_than_gpus_is_one_line(tmp_path, gpu_env):
    """Checked from SLURM's variables before anything starts (no cluster needed: a fake job)."""
    env = job_env(CONFIG=str(write_config(tmp_path, tmp_path)), SLURM_JOB_ID="1", SLURM_NTASKS="8",
                  SLURM_TASKS_PER_NODE="4(x2)", SLURM_JOB_NODELIST="gpu[01-02]", **gpu_env)
    result = subprocess.run(["bash", str(LAUNCH)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: 4 tasks on a node but 2 GPU(s) per node (SLURM_TASKS_PER_NODE=4(x2)): one Horovod rank per GPU, "
        "so ask for --ntasks-per-node=2 or more GPUs (--gres=gpu:4)"]


def fake_job(tmp_path: Path, config: dict, **extra) -> subprocess.CompletedProcess:
    """hpc/launch.sh with train_cifar.py in a fake one-node, two-task job, as a dry run (``extra`` overrides)."""
    if not shutil.which("scontrol"):
        pytest.skip("scontrol (SLURM) is not installed: the launch expands the node list with it")
    path = tmp_path / "cifar.yaml"
    path.write_text(yaml.safe_dump({"model": "cifar_resnet_tiny", "data_dir": str(tmp_path),
                                    "out_dir": str(tmp_path / "runs" / "cifar"), **config}))
    env = job_env(**{**dict(CONFIG=str(path), TRAIN_SCRIPT="train_cifar.py", MANTIS_DRY_RUN="1", SLURM_JOB_ID="78",
                            SLURM_NTASKS="2", SLURM_TASKS_PER_NODE="2", SLURM_JOB_NODELIST="node01",
                            TRAIN_TIMEOUT="0"), **extra})
    return subprocess.run(["bash", str(LAUNCH)], env=env, capture_output=True, text=True, timeout=120)


def test_cifar_job_runs_its_config_in_the_job_run_dir_and_resumes(tmp_path):
    """train_cifar.py takes train.py's launch path: the config as given, --run-dir <out_dir>/slurm-<job id>
    and --resume (a requeued job continues)."""
    result = fake_job(tmp_path, {})
    assert result.returncode == 0, result.stderr
    assert f"train_cifar.py -c {tmp_path / 'cifar.yaml'} --run-dir {tmp_path}/runs/cifar/slurm-78 --resume" \
        in result.stdout


@pytest.mark.parametrize("config, message", [
    ({"learning_rate": 0.1}, "unknown key 'learning_rate' (known: augment, batch_size, "),
    ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
    ({"data_dir": "{tmp}/no_cifar"}, "data_dir {tmp}/no_cifar does not exist"),
], ids=["key", "range", "data"])
def test_bad_cifar_config_is_one_line(tmp_path, config, message):
    config = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in config.items()}
    result = fake_job(tmp_path, config)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: config {tmp_path / 'cifar.yaml'}: {message.format(tmp=tmp_path)}"), line


def test_training_that_outlives_the_timeouts_sigterm_is_killed_and_reported_as_the_timeout(tmp_path):
    """A training that ignores the timeout's SIGTERM gets SIGKILL KILL_AFTER s later (timeout exits 137):
    the launch still reports the timeout, with its status 124."""
    stub = tmp_path / "horovodrun"
    stub.write_text("#!/bin/bash\ntrap '' TERM\nexec sleep 60\n")  # SIGTERM stays ignored across exec
    stub.chmod(0o755)
    result = fake_job(tmp_path, {}, MANTIS_DRY_RUN="0", TRAIN_TIMEOUT="1", KILL_AFTER="2", HOROVODRUN=str(stub),
                      SLURM_JOB_NODELIST="localhost")  # one local node: no ssh check
    assert result.returncode == 124, result.stderr
    assert "the training outlived the timeout's SIGTERM by 2 s and was killed" in result.stdout
    assert result.stderr.splitlines()[-1].startswith("error: training stopped by the timeout of 1 s")


def test_outside_slurm_is_one_line(tmp_path):
    env = job_env(CONFIG=str(write_config(tmp_path, tmp_path)))
    result = subprocess.run(["bash", str(LAUNCH)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["error: not inside a SLURM job: submit with sbatch (or run inside salloc)"]


def test_scripts_parse():
    for script in sorted((ROOT / "hpc").glob("*.slurm")) + [LAUNCH]:
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, f"{script}: {result.stderr}"


# ------------------------------------------------------------------------------------ predict.slurm
PREDICT = ROOT / "hpc" / "predict.slurm"
ARRAY_RESOURCES = ["--nodes=1", "--ntasks=1", "--cpus-per-task=1", "--partition=debug", "--time=30"]


def submit_region(env: dict, logs: Path) -> subprocess.CompletedProcess:
    """`bash hpc/predict.slurm` as a user runs it outside a job: it sizes and submits the array itself."""
    return subprocess.run(["bash", str(PREDICT), "--parsable", *ARRAY_RESOURCES, f"--output={logs}/%x-%A_%a.out"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def array_tasks(job: int) -> dict:
    """``{task id: JobState}`` of an array job (one ``scontrol -o`` line per task)."""
    result = subprocess.run(["timeout", "30", "scontrol", "-o", "show", "job", str(job)], capture_output=True,
                            text=True)
    tasks = {}
    for line in result.stdout.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if fields.get("ArrayTaskId", "").isdigit():
            tasks[int(fields["ArrayTaskId"])] = fields["JobState"]
    return tasks


def wait_array(job: int, count: int, timeout: float = 300) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        tasks = array_tasks(job)
        if len(tasks) == count and all(state in FINISHED for state in tasks.values()):
            return tasks
        time.sleep(0.5)
    subprocess.run(["scancel", str(job)])
    raise AssertionError(f"array job {job} did not end within {timeout} s: {array_tasks(job)}")


def test_predict_array_of_two_blocks_joins_them_and_a_killed_task_resumes(cluster, tmp_path):
    """One scene as 2 blocks of rows, a 2-task array sized from the manifest. Task 1 is killed (SIGKILL) while
    it predicts: task 0's block is kept, nothing is joined. Submitting again runs task 1 alone, which
    predicts its block and joins both: the outputs equal a single-process prediction of the whole scene."""
    from tests.utilities.tiny_models import save_checkpoint, tiny_network
    from utilities.data.synthetic import write_geotiff_scene

    scene = write_geotiff_scene(tmp_path / "scene", 512, 256, seed=7)
    model = save_checkpoint(tmp_path / "run", tiny_network(), epoch=1)
    manifest = tmp_path / "region.csv"
    manifest.write_text(f"date1,date2,out\n{scene['date1']},{scene['date2']},{tmp_path / 'out'}\n")
    options = "--block-rows 256 --window 32 --stride 8 --batch-size 8"
    env = job_env(MANIFEST=str(manifest), MODEL=str(model), PREDICT_ARGS=options)
    submitted = submit_region(env, cluster.logs)
    assert submitted.returncode == 0, submitted.stderr
    assert f"submitting the tasks 0-1 of {manifest}" in submitted.stdout
    job = int(submitted.stdout.splitlines()[-1].split(";")[0])
    cluster.jobs.append(job)
    log1 = cluster.logs / f"mantis-predict-{job}_1.out"
    deadline = time.time() + 180
    while "task 1: pair 1" not in (log1.read_text() if log1.exists() else ""):  # the model is loaded, predicting
        assert time.time() < deadline and array_tasks(job).get(1) in ("PENDING", "RUNNING", None), \
            log1.read_text() if log1.exists() else array_tasks(job)
        time.sleep(0.2)
    subprocess.run(["scancel", "--signal=KILL", f"{job}_1"], check=True)
    tasks = wait_array(job, 2)
    log0 = (cluster.logs / f"mantis-predict-{job}_0.out").read_text()
    assert tasks[0] == "COMPLETED" and tasks[1] != "COMPLETED", (tasks, log0, log1.read_text())
    assert "task 0: predicted block 1/2" in log0 and "1 block(s) of" in log0
    assert "joined" not in log1.read_text()
    assert not (tmp_path / "out" / "prediction.json").exists()

    again = submit_region(env, cluster.logs)  # only the killed task is submitted again
    assert again.returncode == 0, again.stderr
    assert f"submitting the tasks 1 of {manifest}" in again.stdout
    job2 = int(again.stdout.splitlines()[-1].split(";")[0])
    cluster.jobs.append(job2)
    assert wait_array(job2, 1) == {1: "COMPLETED"}
    log = (cluster.logs / f"mantis-predict-{job2}_1.out").read_text()
    assert "task 1: predicted block 2/2" in log and "joined the 2 blocks into" in log, log
    assert not (tmp_path / "out" / "blocks").exists()
    done = submit_region(env, cluster.logs)
    assert done.stdout.strip() == f"nothing to do: every task of {manifest} is complete"

    python = env.get("PYTHON", str(ROOT / ".venv" / "bin" / "python"))
    single = subprocess.run([python, "predict.py", "--model", str(model), "--date1", str(scene["date1"]), "--date2",
                             str(scene["date2"]), "--out", str(tmp_path / "single"), *options.split()[2:]],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr
    import rasterio

    from utilities.inference.tiled import OUTPUT_FILES
    for name in OUTPUT_FILES.values():
        with rasterio.open(tmp_path / "out" / name) as joined, rasterio.open(tmp_path / "single" / name) as whole:
            assert joined.read().tobytes() == whole.read().tobytes(), name


def test_predict_script_outside_an_array_is_one_line(tmp_path):
    env = job_env(MANIFEST=str(tmp_path / "region.csv"), MODEL=str(tmp_path), SLURM_JOB_ID="5")
    result = subprocess.run(["bash", str(PREDICT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: not a job array task: submit with 'bash hpc/predict.slurm', which sizes --array from the manifest"]
