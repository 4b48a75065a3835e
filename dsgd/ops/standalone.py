"""A Spark standalone cluster on loopback (one master, N workers) and spark-submit command lines.

The same code runs under ``spark-submit`` on any cluster manager; this module starts a *real*
standalone cluster from the installed pyspark (``$SPARK_HOME/bin/spark-class``) so that the cluster
path can be run and tested on one machine: the tests, the docs and ``dsgd cluster start|stop|status``
use it. Every process it starts (master, workers, and the executors and Python workers below them) is
found through the process tree and stopped by its own PID; :meth:`StandaloneCluster.stop` waits until
none is left and the ports it listened on are closed.

Example
-------
>>> with StandaloneCluster("/tmp/spark-cluster", workers=2, cores=1, memory="1g") as cluster:
...     cmd = spark_submit_command(cluster.spark_home, cluster.master_url, "streaming/main.py",
...                                ["--conf", "prod.toml"], py_files=["dist/dsgd_pyfiles.zip"],
...                                jars=spark_jars())
...     subprocess.run(cmd, env=cluster.env(), check=True)

The ``--py-files`` zip is built by :func:`dsgd.ops.packaging.build_pyfiles_zip`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path

from dsgd.core.paths import spark_jars_dir
from dsgd.ops.kafka_broker import free_port, pid_alive, port_open
from dsgd.ops.processes import cmdline as _cmdline
from dsgd.ops.processes import process_tree, stop_pids

log = logging.getLogger(__name__)

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"


class ClusterError(RuntimeError):
    """The cluster could not be started, reached or stopped; the message says which log to read."""


def spark_jars(folder: str | Path | None = None) -> list[str]:
    """The jars to ship with ``--jars``: Delta and the Kafka connector resolved by build.sh."""
    folder = Path(folder) if folder else spark_jars_dir()
    jars = sorted(str(p.resolve()) for p in folder.glob("*.jar"))
    if not any("delta-spark" in j for j in jars):
        raise ClusterError(f"no Delta jars in {folder}; run ./build.sh to resolve them")
    return jars


def default_spark_home() -> Path:
    """``$SPARK_HOME`` if set, else the folder of the installed pyspark (it ships bin/ and jars/)."""
    if os.environ.get("SPARK_HOME"):
        return Path(os.environ["SPARK_HOME"])
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def spark_submit_command(spark_home: str | Path, master: str, app: str | Path, app_args: Sequence[str] = (),
                         *, py_files: Iterable[str | Path] = (), jars: Iterable[str | Path] = (),
                         archives: Iterable[str] = (), conf: dict[str, str] | None = None,
                         deploy_mode: str = "client") -> list[str]:
    """A ``spark-submit`` command line (nothing is resolved over the network: no ``--packages``)."""
    cmd = [str(Path(spark_home) / "bin" / "spark-submit"), "--master", master, "--deploy-mode", deploy_mode]
    if py_files := [str(p) for p in py_files]:
        cmd += ["--py-files", ",".join(py_files)]
    if jar_list := [str(j) for j in jars]:
        cmd += ["--jars", ",".join(jar_list)]
    if archive_list := list(archives):
        cmd += ["--archives", ",".join(archive_list)]
    for key, value in (conf or {}).items():
        cmd += ["--conf", f"{key}={value}"]
    return [*cmd, str(app), *app_args]


class StandaloneCluster:
    """Start, wait for, and stop a Spark standalone cluster on one host.

    Parameters
    ----------
    home
        State folder: ``cluster.json`` (PIDs and ports, read by ``dsgd cluster stop``), ``logs/``,
        ``work/worker-<i>`` (the workers' work dirs: application jars, executor logs), ``local/``
        (``SPARK_LOCAL_DIRS``), ``conf/`` (an empty ``SPARK_CONF_DIR``).
    workers, cores, memory
        Number of workers and the cores / memory each offers to executors.
    host
        Address everything binds to (loopback by default).
    spark_home
        A Spark distribution or the pyspark folder (default: ``$SPARK_HOME``, else the installed pyspark).
    master_port, webui_port
        0 picks free ports.
    python
        Python of the executors' workers (``PYSPARK_PYTHON``; default: this interpreter).
    daemon_memory
        Heap of the master and worker JVMs (``SPARK_DAEMON_MEMORY``).
    """

    def __init__(self, home: str | Path, *, workers: int = 2, cores: int = 1, memory: str = "1g",
                 host: str = "127.0.0.1", spark_home: str | Path | None = None, master_port: int = 0,
                 webui_port: int = 0, python: str | None = None, daemon_memory: str = "512m",
                 start_timeout_s: float = 120.0) -> None:
        if workers < 1 or cores < 1:
            raise ValueError(f"need workers >= 1 and cores >= 1, got workers={workers}, cores={cores}")
        self.home = Path(home).resolve()
        self.workers, self.cores, self.memory = workers, cores, memory
        self.host = host
        self.spark_home = Path(spark_home) if spark_home else default_spark_home()
        self.master_port = master_port or free_port(host)
        self.webui_port = webui_port or free_port(host)
        self.python = python or os.environ.get("PYSPARK_PYTHON") or _sys_executable()
        self.daemon_memory = daemon_memory
        self.start_timeout_s = start_timeout_s
        self.procs: list[subprocess.Popen] = []
        self.worker_ports: list[tuple[int, int]] = []  # (rpc port, web ui port)
        self._pids: list[int] = []

    # ---- addresses ----------------------------------------------------------------------------------
    @property
    def master_url(self) -> str:
        return f"spark://{self.host}:{self.master_port}"

    @property
    def webui_url(self) -> str:
        return f"http://{self.host}:{self.webui_port}"

    @property
    def state_file(self) -> Path:
        return self.home / "cluster.json"

    def ports(self) -> list[int]:
        """The ports the master and workers were told to listen on."""
        return [self.master_port, self.webui_port, *[p for pair in self.worker_ports for p in pair]]

    # ---- environment --------------------------------------------------------------------------------
    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for spark-class / spark-submit: SPARK_HOME, an empty SPARK_CONF_DIR, the Python."""
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update({
            "SPARK_HOME": str(self.spark_home),
            "SPARK_CONF_DIR": str(self.home / "conf"),
            "SPARK_LOCAL_IP": self.host,
            "SPARK_DAEMON_MEMORY": self.daemon_memory,
            "PYSPARK_PYTHON": self.python,
            "PYSPARK_DRIVER_PYTHON": self.python,
        })
        if not env.get("JAVA_HOME"):
            java = shutil.which("java")
            if java is None:
                raise ClusterError("java not found: install a Java 17 JDK (e.g. apt-get install openjdk-17-jdk)")
            env["JAVA_HOME"] = str(Path(java).resolve().parent.parent)
        env.update(extra or {})
        return env

    def _spark_class(self, main: str, *args: str) -> list[str]:
        script = self.spark_home / "bin" / "spark-class"
        if not script.exists():
            raise ClusterError(f"{script} not found: SPARK_HOME must be a Spark distribution or the pyspark folder")
        return [str(script), main, *args]

    def _launch(self, name: str, cmd: list[str], extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        logs = self.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with (logs / f"{name}.log").open("ab") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=self.env(extra_env), cwd=self.home, start_new_session=True)
        self.procs.append(proc)
        self._pids.append(proc.pid)
        self._write_state()
        return proc

    # ---- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> StandaloneCluster:
        """Start the master, then the workers; return when every worker is registered and ALIVE."""
        if self.state_file.exists():
            old = json.loads(self.state_file.read_text())
            if any(self._ours(p) for p in old.get("pids", [])):
                raise ClusterError(f"a cluster from {self.home} is already running (pids {old['pids']}); "
                                   "stop it first (dsgd cluster stop)")
        (self.home / "conf").mkdir(parents=True, exist_ok=True)
        try:
            self._launch("master", self._spark_class(
                MASTER_CLASS, "--host", self.host, "--port", str(self.master_port),
                "--webui-port", str(self.webui_port)))
            self._wait(lambda: self._master_state().get("status") == "ALIVE", "the master to answer", "master")
            for i in range(self.workers):
                rpc, ui = free_port(self.host), free_port(self.host)
                while ui == rpc or {rpc, ui} & set(self.ports()):
                    rpc, ui = free_port(self.host), free_port(self.host)
                self.worker_ports.append((rpc, ui))
                work = self.home / "work" / f"worker-{i}"
                local = self.home / "local" / f"worker-{i}"
                work.mkdir(parents=True, exist_ok=True)
                local.mkdir(parents=True, exist_ok=True)
                self._launch(f"worker-{i}", self._spark_class(
                    WORKER_CLASS, self.master_url, "--host", self.host, "--port", str(rpc),
                    "--webui-port", str(ui), "--cores", str(self.cores), "--memory", self.memory,
                    "--work-dir", str(work)), {"SPARK_LOCAL_DIRS": str(local)})
            self._wait(lambda: self.alive_workers() >= self.workers, f"{self.workers} workers to register",
                       "worker-0")
        except BaseException:
            self.stop()
            raise
        log.info("spark standalone cluster up at %s (ui %s, %d workers x %d cores, %s)", self.master_url,
                 self.webui_url, self.workers, self.cores, self.memory)
        return self

    def _wait(self, ready, what: str, logname: str) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise ClusterError(f"a cluster process exited with code {proc.returncode} while waiting for "
                                       f"{what}; see {self.home / 'logs'}:\n" + self.tail(logname))
            try:
                if ready():
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise ClusterError(f"timed out after {self.start_timeout_s}s waiting for {what}; see {self.home / 'logs'}:\n"
                           + self.tail(logname))

    def _master_state(self) -> dict:
        with urllib.request.urlopen(f"{self.webui_url}/json/", timeout=3) as resp:
            return json.loads(resp.read())

    def alive_workers(self) -> int:
        return sum(1 for w in self._master_state().get("workers", []) if w.get("state") == "ALIVE")

    def applications(self) -> dict[str, list[dict]]:
        """Active and completed applications as the master reports them."""
        state = self._master_state()
        return {"active": state.get("activeapps", []), "completed": state.get("completedapps", [])}

    def processes(self) -> list[int]:
        """Every live process of the cluster: master, workers, executors and their Python workers."""
        return process_tree(self._pids)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop workers (they kill their executors), then the master, then anything left, by PID; wait
        until no process of the tree is alive and the cluster's ports are closed."""
        pids = self._pids or [p for p in self._state_pids() if self._ours(p)]
        tree = process_tree(pids)
        workers = [p for p in pids if p in tree and WORKER_CLASS in _cmdline(p)]
        stop_pids(workers, timeout)
        stop_pids([p for p in pids if p in tree and p not in workers], timeout)  # the master
        stop_pids([p for p in tree if p not in pids], timeout)  # executors / python workers left over
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self.procs, self._pids = [], []
        deadline = time.monotonic() + 10
        while any(port_open(self.host, p) for p in self.ports()) and time.monotonic() < deadline:
            time.sleep(0.2)
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()

    def status(self) -> dict:
        pids = self._pids or [p for p in self._state_pids() if self._ours(p)]
        alive = process_tree(pids)
        out = {"home": str(self.home), "master_url": self.master_url, "webui": self.webui_url,
               "running": bool(alive), "processes": len(alive)}
        if alive:
            with contextlib.suppress(OSError, ValueError):
                out["alive_workers"] = self.alive_workers()
        return out

    def tail(self, name: str, n: int = 30) -> str:
        try:
            return "\n".join((self.home / "logs" / f"{name}.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    # ---- state file (for `dsgd cluster stop` from another process) ----------------------------------
    def _write_state(self) -> None:
        self.state_file.write_text(json.dumps({
            "pids": self._pids, "host": self.host, "master_port": self.master_port, "webui_port": self.webui_port,
            "worker_ports": self.worker_ports, "master_url": self.master_url}))

    def _state_pids(self) -> list[int]:
        try:
            return [int(p) for p in json.loads(self.state_file.read_text()).get("pids", [])]
        except (OSError, ValueError):
            return []

    def _ours(self, pid: int) -> bool:
        """A recorded PID is still one of our daemons (not a recycled PID)."""
        cmd = _cmdline(pid)
        return pid_alive(pid) and (MASTER_CLASS in cmd or WORKER_CLASS in cmd) and str(self.host) in cmd

    @classmethod
    def attach(cls, home: str | Path) -> StandaloneCluster:
        """The cluster recorded in ``home/cluster.json`` (started by another process)."""
        state_file = Path(home) / "cluster.json"
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError) as exc:
            raise ClusterError(f"no cluster recorded in {state_file}") from exc
        c = cls(home, host=state["host"], master_port=state["master_port"], webui_port=state["webui_port"])
        c.worker_ports = [tuple(p) for p in state.get("worker_ports", [])]  # type: ignore[misc]
        c._pids = [int(p) for p in state["pids"] if c._ours(int(p))]
        return c

    def __enter__(self) -> StandaloneCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _sys_executable() -> str:
    import sys

    return sys.executable
