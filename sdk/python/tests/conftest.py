"""Fixtures that run the REAL stack for the SDK's tests.

The Go binaries are built once per test session from the repository this
file is in; each test module gets its own cc-control (embedded broker,
real auth callout, its own data directory) on a free loopback port, and
tests start real cc-agent processes or a cc-swarm fleet on it. Every wait
polls the condition itself with a deadline; nothing sleeps hoping.
Processes are killed at teardown (a stopped agent is continued first).

Needs Go (``go`` on PATH, or $GO). The binaries can be given instead with
$CC_TEST_BIN (a directory holding cc-control, cc-agent, cc-swarm, cc-bench).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pytest
import pytest_asyncio

REPO = Path(__file__).resolve().parents[3]
BINARIES = ("cc-control", "cc-agent", "cc-swarm", "cc-bench")

# "No responders", from the broker (a status line) or from the control
# service for a machine that is not ONLINE (a Status header).
NO_RESPONDERS = (b"NATS/1.0 503", b"Status: 503")

# Deadlines: generous for a loaded 2-core CI machine; a wait ends as soon
# as its condition holds.
START_DEADLINE = 60.0
ONLINE_DEADLINE = 30.0
SWARM_DEADLINE = 180.0


def wait_for(what: str, cond: Callable[[], bool], deadline: float = ONLINE_DEADLINE, every: float = 0.05) -> None:
    """Polls cond until it holds; fails naming what after deadline seconds."""
    end = time.monotonic() + deadline
    while True:
        if cond():
            return
        if time.monotonic() > end:
            pytest.fail(f"waited {deadline:.0f}s for {what}")
        time.sleep(every)


async def async_wait_for(what: str, cond: Callable[[], bool], deadline: float = ONLINE_DEADLINE,
                         every: float = 0.02) -> None:
    """wait_for without blocking the event loop (cond must be cheap)."""
    end = time.monotonic() + deadline
    while not cond():
        if time.monotonic() > end:
            pytest.fail(f"waited {deadline:.0f}s for {what}")
        await asyncio.sleep(every)


@pytest.fixture(scope="session")
def bins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Go binaries, built once per session (or $CC_TEST_BIN)."""
    given = os.environ.get("CC_TEST_BIN")
    if given:
        d = Path(given)
        missing = [b for b in BINARIES if not (d / b).is_file()]
        if missing:
            pytest.exit(f"$CC_TEST_BIN={given} lacks {missing}; unset it to build them", 2)
        return d
    go = os.environ.get("GO") or shutil.which("go") or "/usr/local/go/bin/go"
    if not Path(go).exists() and shutil.which(go) is None:
        pytest.exit("the stack tests build the Go binaries: install Go, or set $GO or $CC_TEST_BIN", 2)
    out = tmp_path_factory.mktemp("bin")
    cmd = [go, "build", "-o", str(out) + os.sep] + [f"./cmd/{b}" for b in BINARIES]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        pytest.exit(f"{' '.join(cmd)} failed:\n{r.stderr}", 2)
    return out


@dataclass
class Proc:
    """A process the stack started; its output goes to log."""

    name: str
    popen: "subprocess.Popen[bytes]"
    log: Path
    stopped: bool = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        """SIGSTOP: the process keeps its connections but answers nothing."""
        os.kill(self.pid, signal.SIGSTOP)
        self.stopped = True

    def cont(self) -> None:
        if self.stopped and self.alive():
            os.kill(self.pid, signal.SIGCONT)
        self.stopped = False

    def kill(self) -> None:
        if self.alive():
            self.cont()
            self.popen.kill()
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def tail(self, n: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""


@dataclass
class Agent:
    """A real cc-agent process serving machine id with key file key."""

    id: str
    key: Path
    labels: dict[str, str]
    args: list[str]
    proc: Optional[Proc] = None


@dataclass
class Stack:
    """A running cc-control (embedded broker) and what tests started on it."""

    bins: Path
    dir: Path
    url: str = ""
    control: Optional[Proc] = None
    procs: list[Proc] = field(default_factory=list)
    functions_dir: Path = field(default_factory=Path)

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def admin_key(self) -> Path:
        return self.data / "admin.nk"

    # --- processes -------------------------------------------------------

    def spawn(self, name: str, args: list[str]) -> Proc:
        log = self.dir / f"{name}.log"
        f = open(log, "ab")
        try:
            p = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 cwd=self.dir)
        finally:
            f.close()
        proc = Proc(name, p, log)
        self.procs.append(proc)
        return proc

    def start(self, extra: list[str]) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        self.functions_dir = self.dir / "functions.d"
        self.functions_dir.mkdir(exist_ok=True)
        self.control = self.spawn("cc-control", [
            str(self.bins / "cc-control"), "--data", str(self.data), "--listen", "127.0.0.1:0",
            "--functions-dir", str(self.functions_dir),
            # small audit logs: the space is reserved at start
            "--audit-max-bytes", "8MiB", "--audit-calls-max-bytes", "8MiB", "--audit-refused-max-bytes", "8MiB",
        ] + extra)
        ctl = self.control

        def banner() -> bool:
            if not ctl.alive():
                pytest.fail(f"cc-control exited with {ctl.popen.returncode}:\n{ctl.tail()}")
            for line in ctl.tail(1 << 20).splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[0] == "broker:" and parts[1].startswith("nats://"):
                    self.url = parts[1]
                    return True
            return False

        wait_for("cc-control to print its broker URL", banner, START_DEADLINE)
        # Ready when the admin can connect and the control API answers.
        wait_for("cc-control to answer whoami", lambda: self.bench_ok("whoami"), START_DEADLINE, every=0.1)

    def close(self) -> None:
        for p in reversed(self.procs):
            p.kill()

    # --- cc-bench --------------------------------------------------------

    def bench_run(self, *args: str, key: Optional[Path] = None) -> "subprocess.CompletedProcess[str]":
        cmd = [str(self.bins / "cc-bench"), "--json", "--server", self.url,
               "--key", str(key or self.admin_key), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)

    def bench_ok(self, *args: str) -> bool:
        return self.bench_run(*args).returncode == 0

    def bench(self, *args: str, key: Optional[Path] = None) -> list[dict[str, Any]]:
        """Runs cc-bench --json ARGS as the admin (or key); its JSON lines."""
        r = self.bench_run(*args, key=key)
        if r.returncode != 0:
            pytest.fail(f"cc-bench {' '.join(args)}: exit {r.returncode}: {r.stderr}")
        return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]

    def online(self) -> set[str]:
        r = self.bench_run("servers")
        if r.returncode != 0:
            return set()
        return {json.loads(line)["machine"] for line in r.stdout.splitlines() if line.strip()}

    def wait_online(self, *ids: str, deadline: float = ONLINE_DEADLINE) -> None:
        want = set(ids)
        wait_for(f"{sorted(want)} ONLINE", lambda: want <= self.online(), deadline, every=0.1)

    def wait_offline(self, *ids: str, deadline: float = ONLINE_DEADLINE) -> None:
        gone = set(ids)
        wait_for(f"{sorted(gone)} gone from ONLINE", lambda: not (gone & self.online()), deadline, every=0.1)

    # --- keys and registrations -----------------------------------------

    def new_key(self, name: str) -> tuple[Path, str]:
        """A fresh nkey seed file (user key, as agents and operators use)
        and its public key, made by cc-agent --print-key."""
        path = self.dir / "keys" / f"{name}.nk"
        path.parent.mkdir(exist_ok=True)
        r = subprocess.run([str(self.bins / "cc-agent"), "--print-key", "--id", "10.0.0.0_keygen", "--key", str(path)],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            pytest.fail(f"cc-agent --print-key: {r.stderr}")
        for line in r.stdout.splitlines():
            if line.startswith("key:"):
                return path, line.split()[1]
        pytest.fail(f"cc-agent --print-key printed no key: {r.stdout!r}")

    def add_operator(self, name: str, role: str = "viewer") -> Path:
        """Registers an operator with a fresh key; returns its seed file."""
        path, pub = self.new_key("op-" + name)
        self.bench("operators", "add", name, "--pubkey", pub, "--role", role)
        return path

    def agent(self, machine_id: str, labels: Optional[dict[str, str]] = None, register: bool = True,
              start: bool = True, extra: Optional[list[str]] = None) -> Agent:
        """A real cc-agent for machine_id: its key made, registered (accepted)
        with labels, started; waits until it is ONLINE."""
        key, pub = self.new_key("agent-" + machine_id)
        labels = dict(labels or {})
        if register:
            args = ["machines", "add", machine_id, "--pubkey", pub]
            for k, v in sorted(labels.items()):
                args += ["--label", f"{k}={v}"]
            self.bench(*args)
        a = Agent(machine_id, key, labels, [
            str(self.bins / "cc-agent"), "--server", self.url, "--id", machine_id, "--key", str(key),
            "--functions-dir", str(self.functions_dir), "--log-level", "warn",
        ] + list(extra or []))
        if start:
            self.start_agent(a)
        return a

    def start_agent(self, a: Agent, wait: bool = True) -> None:
        """(Re)starts a's process; with wait, until it is ONLINE."""
        a.proc = self.spawn("cc-agent-" + a.id, a.args)
        if wait:
            self.wait_online(a.id)

    def kill_agent(self, a: Agent, wait: bool = True) -> None:
        """SIGKILLs a's process; with wait, until it has left ONLINE."""
        if a.proc is not None:
            a.proc.kill()
        if wait:
            self.wait_offline(a.id)

    def swarm(self, n: int, prefix: str, labels: Optional[dict[str, str]] = None,
              deadline: float = SWARM_DEADLINE) -> Proc:
        """A cc-swarm fleet of n simulated agents, registered by cc-swarm itself
        with the admin key, machine ids 10.a.b.c_<prefix><i>, each labelled
        swarm=<prefix>; waits until all n are ONLINE."""
        args = [str(self.bins / "cc-swarm"), "--server", self.url, "--key", str(self.admin_key),
                "--agents", str(n), "--prefix", prefix]
        if labels:
            args += ["--labels", ",".join(f"{k}={v}" for k, v in sorted(labels.items()))]
        p = self.spawn("cc-swarm-" + prefix, args)

        def all_online() -> bool:
            if not p.alive():
                pytest.fail(f"cc-swarm exited with {p.popen.returncode}:\n{p.tail()}")
            r = self.bench_run("servers", "--where", f"swarm={prefix}")
            return r.returncode == 0 and sum(1 for line in r.stdout.splitlines() if line.strip()) >= n

        wait_for(f"{n} swarm agents ONLINE", all_online, deadline, every=0.25)
        return p

    def write_function(self, definition: dict[str, Any]) -> None:
        """An operators' function definition in the agents' (and the control
        service's) --functions-dir. Write it before starting the stack's
        control service when its role matters to viewers."""
        (self.functions_dir / f"{definition['name']}.json").write_text(json.dumps(definition))


def start_stack(bins: Path, d: Path, extra: Optional[list[str]] = None,
                functions: Optional[list[dict[str, Any]]] = None) -> Stack:
    s = Stack(bins, d)
    s.functions_dir = d / "functions.d"
    s.functions_dir.mkdir(parents=True, exist_ok=True)
    for f in functions or []:
        s.write_function(f)
    try:
        s.start(list(extra or []))
    except BaseException:
        s.close()
        raise
    return s


# An admin-only function that changes something (not read-only): a viewer
# may not call it. It runs /bin/true, so it changes nothing in fact.
ADMIN_FN = {"name": "restart-thing", "description": "admin only", "command": ["/bin/true"], "timeout": "10s"}
# A viewer function taking a typed, required argument (400s are the agent's).
ECHO_FN = {"name": "echo-count", "description": "echoes n", "command": ["/bin/echo", "{\"n\": {{n}}}"],
           "args": [{"name": "n", "type": "int", "required": True}], "role": "viewer", "read_only": True,
           "output": "json", "timeout": "10s"}


@pytest.fixture(scope="module")
def stack(bins: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """cc-control for this module's tests, with the definitions of ADMIN_FN
    and ECHO_FN in its (and the agents') --functions-dir."""
    s = start_stack(bins, tmp_path_factory.mktemp("stack"), functions=[ADMIN_FN, ECHO_FN])
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def agents(stack: Stack) -> Iterator[list[Agent]]:
    """Agents a test starts through this list are killed when it ends."""
    started: list[Agent] = []
    try:
        yield started
    finally:
        for a in started:
            if a.proc is not None:
                a.proc.kill()


@pytest.fixture(scope="module")
def viewer_key(stack: Stack) -> Path:
    """The seed file of an operator with role viewer."""
    return stack.add_operator("viewer1", "viewer")


@pytest_asyncio.fixture
async def wb(stack: Stack) -> AsyncIterator[Any]:
    """An AsyncWorkbench connected as the admin."""
    from commandcontrol import AsyncWorkbench

    c = await AsyncWorkbench.connect(stack.url, key_file=str(stack.admin_key))
    try:
        yield c
    finally:
        await c.close()


@pytest_asyncio.fixture
async def viewer_wb(stack: Stack, viewer_key: Path) -> AsyncIterator[Any]:
    """An AsyncWorkbench connected as a viewer."""
    from commandcontrol import AsyncWorkbench

    c = await AsyncWorkbench.connect(stack.url, key_file=str(viewer_key))
    try:
        yield c
    finally:
        await c.close()


class HoldingProxy:
    """A loopback TCP proxy between a client and the broker that can hold
    both directions once the broker sends a given byte string (as the Go
    tests' stacktest hooks hold a client's reader): the client sees
    nothing and sends nothing on until release(). It counts the times the
    client sent a given byte string."""

    def __init__(self, upstream: str) -> None:
        hostport = upstream.split("://", 1)[-1]
        host, port = hostport.rsplit(":", 1)
        self.up_host, self.up_port = host, int(port)
        self.server: Optional[asyncio.AbstractServer] = None
        self.url = ""
        self.trigger: Optional[tuple[bytes, ...]] = None
        self.triggered = asyncio.Event()
        self.released = asyncio.Event()
        self.released.set()
        self.count_what: Optional[bytes] = None
        self.counted = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> "HoldingProxy":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"nats://127.0.0.1:{port}"
        return self

    def hold_on(self, *trigger: bytes) -> None:
        """Hold both directions from the first broker message holding one of
        the byte strings trigger."""
        self.trigger = trigger
        self.triggered.clear()

    def release(self) -> None:
        self.trigger = None
        self.released.set()

    def count(self, what: bytes) -> None:
        self.count_what, self.counted = what, 0

    async def close(self) -> None:
        self.release()
        if self.server is not None:
            self.server.close()
        for w in self._writers:
            w.close()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        ur, uw = await asyncio.open_connection(self.up_host, self.up_port)
        self._writers += [cw, uw]
        self._tasks.append(asyncio.create_task(self._pipe(ur, cw, from_broker=True)))
        self._tasks.append(asyncio.create_task(self._pipe(cr, uw, from_broker=False)))

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, from_broker: bool) -> None:
        tail = b""
        try:
            while True:
                data = await r.read(65536)
                if not data:
                    break
                seen = tail + data
                if from_broker and self.trigger is not None and any(t in seen for t in self.trigger):
                    self.released.clear()
                    self.trigger = None
                    self.triggered.set()
                if not from_broker and self.count_what is not None:
                    self.counted += seen.count(self.count_what) - tail.count(self.count_what)
                tail = seen[-256:]
                await self.released.wait()
                w.write(data)
                await w.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            w.close()


@pytest_asyncio.fixture
async def proxy(stack: Stack) -> AsyncIterator[HoldingProxy]:
    p = await HoldingProxy(stack.url).start()
    try:
        yield p
    finally:
        await p.close()
