"""A real single-node KRaft Kafka broker started from the Maven-resolved jars.

One manager serves the test fixture, the demo and ``dsgd kafka start|stop|status``: it formats the log
dir (``kafka.tools.StorageTool``), starts ``kafka.Kafka`` with a properties file rendered from
``conf/kafka-broker.properties.template``, waits until the port answers and an admin client lists
topics, records its PID, and stops the broker by that PID.

Example
-------
>>> with KafkaBroker(home="/tmp/kb", port=0) as broker:
...     broker.create_topic("events", partitions=2)
...     print(broker.bootstrap)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

from dsgd.core.paths import broker_jars_dir, conf_dir

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    """The broker could not be started, reached or stopped; the message says what to look at."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        return s.connect_ex((host, port)) == 0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child still answers kill(0); treat it as gone
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


class KafkaBroker:
    """Format, start, wait for, and stop one local KRaft broker.

    Parameters
    ----------
    home
        State folder: ``data/`` (log dirs), ``server.properties``, ``broker.pid``, ``broker.json``,
        ``broker.log``.
    host, port, controller_port
        Listen addresses; port 0 picks a free port.
    heap
        ``-Xmx`` of the broker JVM.
    jars_dir
        Folder with kafka_2.13 and its dependencies (default: ``.jars/kafka`` from build.sh).
    """

    def __init__(self, home: str | Path, *, host: str = "127.0.0.1", port: int = 0, controller_port: int = 0,
                 heap: str = "512m", jars_dir: str | Path | None = None, start_timeout_s: float = 60.0) -> None:
        self.home = Path(home).resolve()
        self.host = host
        self.port = port or free_port(host)
        self.controller_port = controller_port or free_port(host)
        if self.controller_port == self.port:
            self.controller_port = free_port(host)
        self.heap = heap
        self.jars_dir = Path(jars_dir) if jars_dir else broker_jars_dir()
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen | None = None

    @classmethod
    def from_config(cls, cfg, **kw) -> KafkaBroker:
        b = cfg.broker
        args = dict(host=b.host, port=b.port, controller_port=b.controller_port, heap=b.heap,
                    start_timeout_s=b.start_timeout_s)
        args.update(kw)
        return cls(b.home, **args)

    # ---- paths -------------------------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.home / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "broker.log"

    @property
    def state_file(self) -> Path:
        return self.home / "broker.json"

    def pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    # ---- lifecycle ---------------------------------------------------------------------------
    def _classpath(self) -> str:
        jars = sorted(self.jars_dir.glob("*.jar"))
        if not any(j.name.startswith("kafka_2.13") for j in jars):
            raise BrokerError(f"no Kafka broker jars in {self.jars_dir}; run ./build.sh to resolve them")
        return os.pathsep.join(str(j) for j in jars)

    def _java(self) -> str:
        java_home = os.environ.get("JAVA_HOME")
        java = Path(java_home, "bin", "java") if java_home else shutil.which("java")
        if not java:
            raise BrokerError("java not found: install a Java 17 JDK (e.g. apt-get install openjdk-17-jdk)")
        return str(java)

    def _write_properties(self) -> Path:
        template = (conf_dir() / "kafka-broker.properties.template").read_text()
        props = template.format(host=self.host, port=self.port, controller_port=self.controller_port,
                                log_dirs=self.home / "data")
        path = self.home / "server.properties"
        path.write_text(props)
        return path

    def _jvm(self, main: str, *args: str) -> list[str]:
        return [self._java(), f"-Xmx{self.heap}", "-Xms128m", "-XX:+UseG1GC", "-Djava.awt.headless=true",
                "-Dlog4j2.formatMsgNoLookups=true", "-cp", self._classpath(), main, *args]

    def start(self) -> KafkaBroker:
        """Format the storage (idempotent) and start the broker; return when it serves requests."""
        existing = self.pid()
        if existing and pid_alive(existing):
            raise BrokerError(f"a broker from {self.home} is already running (pid {existing}); "
                              "stop it first (dsgd kafka stop)")
        self.home.mkdir(parents=True, exist_ok=True)
        props = self._write_properties()
        cluster_file = self.home / "cluster.id"
        if not cluster_file.exists():
            cluster_file.write_text(_cluster_id())
        fmt = subprocess.run(
            self._jvm("kafka.tools.StorageTool", "format", "-t", cluster_file.read_text().strip(),
                      "-c", str(props), "--ignore-formatted"),
            capture_output=True, text=True, timeout=120)
        if fmt.returncode != 0:
            raise BrokerError(f"formatting the Kafka log dir failed:\n{fmt.stdout}\n{fmt.stderr}")
        logfh = self.log_file.open("ab")
        self.proc = subprocess.Popen(self._jvm("kafka.Kafka", str(props)), stdout=logfh,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        logfh.close()
        self.pid_file.write_text(str(self.proc.pid))
        self.state_file.write_text(json.dumps({"pid": self.proc.pid, "bootstrap": self.bootstrap,
                                               "controller_port": self.controller_port}))
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        log.info("kafka broker up at %s (pid %d)", self.bootstrap, self.proc.pid)
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise BrokerError(f"broker exited with code {self.proc.returncode}; see {self.log_file}:\n"
                                  + _tail(self.log_file))
            if port_open(self.host, self.port):
                try:
                    self.list_topics()
                    return
                except Exception:  # noqa: BLE001 - not ready yet
                    pass
            time.sleep(0.3)
        raise BrokerError(f"broker did not answer on {self.bootstrap} within {self.start_timeout_s}s; "
                          f"see {self.log_file}:\n" + _tail(self.log_file))

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the broker by its own PID (SIGTERM, then SIGKILL) and wait until its port is closed."""
        pid = self.proc.pid if self.proc is not None else self.pid()
        if pid and pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while pid_alive(pid) and time.monotonic() < deadline:
                if self.proc is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.proc.wait(timeout=0.2)
                else:
                    time.sleep(0.2)
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                if self.proc is not None:
                    self.proc.wait(timeout=10)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.wait(timeout=10)
        self.proc = None
        deadline = time.monotonic() + 10
        while port_open(self.host, self.port) and time.monotonic() < deadline:
            time.sleep(0.1)
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()

    def status(self) -> dict:
        pid = self.pid()
        alive = bool(pid and pid_alive(pid))
        return {"home": str(self.home), "pid": pid, "running": alive, "bootstrap": self.bootstrap,
                "port_open": port_open(self.host, self.port)}

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- admin -------------------------------------------------------------------------------
    def admin(self):
        from kafka.admin import KafkaAdminClient

        return KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="dsgd-admin",
                                request_timeout_ms=10000)

    def list_topics(self) -> list[str]:
        admin = self.admin()
        try:
            return admin.list_topics()
        finally:
            admin.close()

    def create_topic(self, name: str, partitions: int = 2) -> None:
        create_topic(self.bootstrap, name, partitions)


def create_topic(bootstrap: str, name: str, partitions: int = 2, timeout_s: float = 30.0) -> None:
    """Create a topic (replication 1) and wait until its partitions have leaders; existing is fine."""
    from kafka import KafkaConsumer
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="dsgd-admin", request_timeout_ms=10000)
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    finally:
        admin.close()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            parts = consumer.partitions_for_topic(name)
            if parts and len(parts) >= partitions:
                return
            time.sleep(0.2)
            consumer.close()
            consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    finally:
        consumer.close()
    raise BrokerError(f"topic {name} has no partition leaders after {timeout_s}s")


def _cluster_id() -> str:
    """A random KRaft cluster id (22 url-safe base64 characters) that does not start with "-": the
    storage tool's argument parser would read such an id as an option (as Kafka's own Uuid.randomUuid
    avoids too). Before this, 1 broker start in 64 failed with "argument -t: expected one argument"."""
    import base64

    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"
