"""A ZhianTec/Grow (R503) fingerprint module on a real pty, with fault scenarios.

The simulator is the device-side peer of :mod:`agent.drivers.sensor.grow`: it decodes
commands and encodes replies with the production codec
(:mod:`agent.drivers.sensor.grow_codec`) over a pseudo-terminal, so the agent opens the
slave side with pyserial exactly as it opens ``/dev/ttyUSB0``. A stable symlink
(:attr:`GrowSensorSimulator.path`, a :class:`~hardware_sim.link.PtyLink`) points at
the current slave; unplugging closes the pty and removes the link, replugging
creates a new pty behind the same link.

The line speed is checked: the simulator reads the termios speed the host set
on the slave and ignores bytes sent at any other rate, as a real UART would, so
the driver's baud negotiation is exercised.

``kesp-sim sensor --scenario NAME`` runs it stand-alone for a technician.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import queue
import select
import sys
import termios
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from agent.drivers.sensor.grow import AURA_FOR_GUIDANCE
from agent.drivers.sensor.grow_codec import (
    BAUD_UNIT,
    CHAR_FILE_BYTES,
    DATA_PACKET_SIZES,
    DEFAULT_ADDRESS,
    READY_BYTE,
    AuraLed,
    Confirmation,
    Decoded,
    ImageBits,
    Instruction,
    Packet,
    PacketId,
    PacketReader,
    Register,
    SystemParameters,
    pack_image,
    split_data,
)
from agent.drivers.sensor.types import Guidance, ProtocolError
from hardware_sim.fingers import (
    PressVariation,
    list_impressions,
    load_fvc,
    random_variation,
    render_press,
)
from hardware_sim.link import PtyLink

log = logging.getLogger(__name__)

_GUIDANCE_FOR_AURA = {led: g for g, led in AURA_FOR_GUIDANCE.items()}
_STATUS_PWD_VERIFIED = 0x0004
_STATUS_IMAGE_VALID = 0x0008
_WRITE_STALL_S = 2.0  # give up a reply the host has stopped reading
_GARBAGE = bytes(range(0x10, 0x10 + 23))  # never contains EF, so no false header


@dataclass(frozen=True)
class Scenario:
    """A named behaviour of the simulated module (faults are per reply transaction).

    ``*_every = N`` applies the fault to every N-th reply (ack plus any data
    packets of one command), so a driver that retries recovers.
    """

    name: str
    description: str
    no_finger: bool = False
    corrupt_every: int = 0
    garbage_every: int = 0
    drop_every: int = 0
    reply_delay_s: float = 0.0
    unplug_after: int = 0  # commands answered before the cable is pulled (0 = never)
    replug_after_s: float = 0.5
    # "ring": an R503; "refuse": an R307/AS608 answering AuraLedConfig with an
    # error; "silent": a clone that does not answer unknown instructions at all.
    led: Literal["ring", "refuse", "silent"] = "ring"
    baud: int = 57600  # power-on speed of the module
    fragment_max: int = 0  # > 0: replies written in random bursts of 1..N bytes
    image_bits: ImageBits = 4  # 8 models a module read over its USB interface
    password: int = 0


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("normal", "an R503 at 57600 baud that behaves"),
    Scenario("no-finger", "GenImg never sees a finger (dirty or broken glass)", no_finger=True),
    Scenario("bad-checksum", "every 3rd reply has one packet with a wrong checksum",
             corrupt_every=3),
    Scenario("garbage", "every 2nd reply is preceded by line noise", garbage_every=2),
    Scenario("dropped-bytes", "every 4th reply loses a byte from one packet", drop_every=4),
    Scenario("slow", "every reply comes 0.3 s late", reply_delay_s=0.3),
    Scenario("fragmented", "replies arrive in bursts of 1-64 bytes, as from a USB bridge",
             fragment_max=64),
    Scenario("unplug", "the cable is pulled after 8 commands and plugged back 1 s later",
             unplug_after=8, replug_after_s=1.0),
    Scenario("no-led", "an R307/AS608 without LED ring (AuraLedConfig refused)",
             led="refuse"),
    Scenario("baud-115200", "a module left at 115200 baud by an earlier integrator",
             baud=115200),
    Scenario("password", "a module protected by password 0x0000CAFE", password=0xCAFE),
)}


@dataclass
class _Module:
    """The simulated module's registers and buffers (what survives a command)."""

    baud: int
    password: int
    packet_size_code: int = 2  # 128 bytes, the factory default
    security_level: int = 3
    verified: bool = False
    image: NDArray[np.uint8] | None = None
    char_buffers: dict[int, bytes] = field(default_factory=dict)
    led: AuraLed | None = None


class GrowSensorSimulator:
    """A simulated Grow module behind a pty; see the module docstring.

    Use as a context manager, or call :meth:`start` / :meth:`stop`. The finger
    is controlled with :meth:`press` and :meth:`lift`; :attr:`led` /
    :attr:`guidance` show what the host last put on the LED ring.
    """

    def __init__(self, scenario: Scenario | str = "normal", link: str | Path | None = None,
                 seed: int = 0, address: int = DEFAULT_ADDRESS) -> None:
        self.scenario = SCENARIOS[scenario] if isinstance(scenario, str) else scenario
        self._link = PtyLink(link, prefix="kesp-grow-", name="ttyGROW", nonblocking=True)
        self.address = address
        self.rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._finger: NDArray[np.uint8] | None = None
        self._module = _Module(baud=self.scenario.baud, password=self.scenario.password)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._requests: queue.Queue[tuple[Callable[[], None], threading.Event]] = queue.Queue()
        self._replies = 0
        self.commands = 0
        self.presses = 0
        self.captures = 0
        self.last_variation: PressVariation | None = None
        self.protocol_errors = 0

    # --- finger -------------------------------------------------------------------

    def press(self, image: NDArray[np.uint8], dpi: int,
              variation: PressVariation | None = None,
              rng: np.random.Generator | None = None) -> PressVariation:
        """Put a finger on the glass: ``image`` as seen through a random (or given) press.

        ``rng`` (default: the simulator's own stream) draws the press; a caller that
        wants a press to look the same whatever came before passes its own.
        """
        rng = rng if rng is not None else self.rng
        var = variation if variation is not None else random_variation(rng)
        seen = render_press(image, dpi, var, rng)
        with self._lock:
            self._finger = seen
            self.presses += 1
            self.last_variation = var
        return var

    def lift(self) -> None:
        """Take the finger off the glass."""
        with self._lock:
            self._finger = None

    @property
    def finger_present(self) -> bool:
        """Whether a finger is on the glass."""
        with self._lock:
            return self._finger is not None

    @property
    def finger_image(self) -> NDArray[np.uint8] | None:
        """A copy of what the glass sees now (the 8-bit image before 4-bit transfer)."""
        with self._lock:
            return None if self._finger is None else self._finger.copy()

    @property
    def led(self) -> AuraLed | None:
        """The last LED ring setting the host sent (None before any)."""
        with self._lock:
            return self._module.led

    @property
    def guidance(self) -> Guidance | None:
        """The :class:`Guidance` the last LED setting stands for (None if none/unknown)."""
        led = self.led
        return _GUIDANCE_FOR_AURA.get(led) if led is not None else None

    @property
    def baud(self) -> int:
        """The module's current UART speed."""
        return self._module.baud

    @property
    def path(self) -> str:
        """The stable symlink the host opens; it survives unplug/replug."""
        return str(self._link.path)

    @property
    def plugged(self) -> bool:
        """Whether the pty currently exists."""
        return self._link.plugged

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> GrowSensorSimulator:
        """Create the pty and serve it from a daemon thread."""
        if self._thread is not None:
            raise RuntimeError("simulator already started")
        self._plug()
        self._thread = threading.Thread(target=self._serve, name="grow-sim", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and remove the pty and the link."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            self._link.close()

    def __enter__(self) -> GrowSensorSimulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def unplug(self) -> None:
        """Pull the cable: the pty closes (host I/O fails with EIO) and the link disappears."""
        self._on_serving_thread(self._unplug_now)

    def replug(self) -> None:
        """Plug back: a new pty behind the same link; the module powers up (sends ``55``)."""
        self._on_serving_thread(self._plug)

    def _on_serving_thread(self, action: Callable[[], None]) -> None:
        # File descriptors are only opened and closed by the serving thread, so
        # it never selects on a descriptor number another open has reused.
        thread = self._thread
        if thread is None or threading.current_thread() is thread or not thread.is_alive():
            action()
            return
        done = threading.Event()
        self._requests.put((action, done))
        if not done.wait(5.0):
            raise RuntimeError("simulator thread did not answer")

    def power_blip(self) -> None:
        """The module resets but the USB bridge stays: state lost, port unchanged."""
        def blip() -> None:
            m = self._module
            with self._lock:
                m.verified, m.image, m.led = False, None, None
                m.char_buffers.clear()
            self._write(bytes([READY_BYTE]))

        self._on_serving_thread(blip)

    def _plug(self) -> None:
        with self._lock:
            if not self._link.plug():
                return
            m = self._module
            m.verified, m.image, m.led = False, None, None
            m.char_buffers.clear()
        # A real module announces power-up with a lone 0x55; drivers must skip it.
        self._write(bytes([READY_BYTE]))

    def _unplug_now(self) -> None:
        with self._lock:
            self._link.unplug()

    # --- serving -----------------------------------------------------------------------

    def _host_speed_matches(self) -> bool:
        expected = getattr(termios, f"B{self._module.baud}", None)
        if expected is None:
            return True  # a rate termios cannot name: trust the host
        master = self._link.master
        if master is None:
            return False
        try:
            attrs = termios.tcgetattr(master)
        except termios.error:
            return False
        return bool(attrs[5] == expected)

    def _serve(self) -> None:
        reader = PacketReader()
        while not self._stop.is_set():
            while not self._requests.empty():
                action, done = self._requests.get_nowait()
                action()
                reader.clear()
                done.set()
            master = self._link.master
            if master is None:
                time.sleep(0.02)
                continue
            try:
                ready, _, _ = select.select([master], [], [], 0.05)
                if not ready:
                    continue
                data = os.read(master, 4096)
            except (OSError, ValueError):
                reader.clear()
                time.sleep(0.01)  # unplugged under our feet
                continue
            if not self._host_speed_matches():
                reader.clear()  # framing errors: a UART at the wrong speed hears noise
                continue
            reader.feed(data)
            while True:
                try:
                    pkt = reader.next_packet()
                except ProtocolError as exc:
                    self.protocol_errors += 1
                    log.info("sim: bad frame from host: %s", exc)
                    self._reply([Packet.ack(Confirmation.RECEIVE_ERROR, address=self.address)])
                    continue
                if pkt is Decoded.NEED_MORE:
                    break
                self._handle(pkt)

    def _handle(self, pkt: Packet) -> None:
        if pkt.pid is not PacketId.COMMAND or not pkt.payload:
            self._reply([Packet.ack(Confirmation.RECEIVE_ERROR, address=self.address)])
            return
        if pkt.address != self.address:
            return  # another module's packet: a real module stays silent
        self.commands += 1
        instr, params = pkt.payload[0], pkt.payload[1:]
        baud_after: int | None = None
        replies: list[Packet]
        m = self._module
        if m.password and not m.verified and instr not in (Instruction.VFY_PWD,
                                                           Instruction.GET_ECHO):
            replies = [self._ack(Confirmation.MUST_VERIFY_PASSWORD)]
        elif instr == Instruction.VFY_PWD and len(params) == 4:
            m.verified = int.from_bytes(params, "big") == m.password
            replies = [self._ack(Confirmation.OK if m.verified else Confirmation.WRONG_PASSWORD)]
        elif instr == Instruction.GET_ECHO:
            replies = [self._ack(Confirmation.HANDSHAKE_OK)]
        elif instr == Instruction.READ_SYS_PARA:
            status = (_STATUS_PWD_VERIFIED if m.verified else 0) | (
                _STATUS_IMAGE_VALID if m.image is not None else 0)
            sp = SystemParameters(status, 0x0009, 200, m.security_level, self.address,
                                  m.packet_size_code, m.baud // BAUD_UNIT)
            replies = [self._ack(Confirmation.OK, sp.to_bytes())]
        elif instr == Instruction.SET_SYS_PARA and len(params) == 2:
            reg, value = params
            if reg == Register.BAUD and 1 <= value <= 12:
                baud_after = value * BAUD_UNIT
                replies = [self._ack(Confirmation.OK)]
            elif reg == Register.PACKET_SIZE and value < len(DATA_PACKET_SIZES):
                m.packet_size_code = value
                replies = [self._ack(Confirmation.OK)]
            elif reg == Register.SECURITY_LEVEL and 1 <= value <= 5:
                m.security_level = value
                replies = [self._ack(Confirmation.OK)]
            else:
                replies = [self._ack(Confirmation.BAD_REGISTER)]
        elif instr == Instruction.GEN_IMG:
            with self._lock:
                finger = None if self.scenario.no_finger else self._finger
            if finger is None:
                replies = [self._ack(Confirmation.NO_FINGER)]
            else:
                m.image = finger
                self.captures += 1
                replies = [self._ack(Confirmation.OK)]
        elif instr == Instruction.UP_IMAGE:
            if m.image is None:
                replies = [self._ack(Confirmation.IMAGE_UPLOAD_FAILED)]
            else:
                size = DATA_PACKET_SIZES[m.packet_size_code]
                replies = [self._ack(Confirmation.OK),
                           *split_data(pack_image(m.image, self.scenario.image_bits), size,
                                      self.address)]
        elif instr == Instruction.IMG2TZ and len(params) == 1 and params[0] in (1, 2):
            if m.image is None:
                replies = [self._ack(Confirmation.NO_VALID_IMAGE)]
            elif float(m.image.std()) < 8.0:
                replies = [self._ack(Confirmation.IMAGE_MESSY)]
            else:
                # The module's char file is vendor-proprietary; the simulator
                # fills it with a digest of the image, enough for UpChar tests.
                digest = np.frombuffer(m.image.tobytes(), dtype=np.uint8)[:CHAR_FILE_BYTES]
                m.char_buffers[params[0]] = digest.tobytes()
                replies = [self._ack(Confirmation.OK)]
        elif instr == Instruction.UP_CHAR and len(params) == 1:
            buf = m.char_buffers.get(params[0])
            if buf is None:
                replies = [self._ack(Confirmation.UPLOAD_FAILED)]
            else:
                size = DATA_PACKET_SIZES[m.packet_size_code]
                replies = [self._ack(Confirmation.OK), *split_data(buf, size, self.address)]
        elif instr == Instruction.AURA_LED_CONFIG and len(params) == 4:
            if self.scenario.led == "silent":
                return
            if self.scenario.led == "refuse":
                replies = [self._ack(Confirmation.RECEIVE_ERROR)]
            else:
                try:
                    led = AuraLed.from_params(params)
                except ProtocolError:
                    replies = [self._ack(Confirmation.RECEIVE_ERROR)]
                else:
                    with self._lock:
                        m.led = led
                    replies = [self._ack(Confirmation.OK)]
        elif instr == Instruction.SOFT_RESET:
            m.verified, m.image = False, None
            self._reply([self._ack(Confirmation.OK)])
            self._write(bytes([READY_BYTE]))
            return
        else:
            replies = [self._ack(Confirmation.RECEIVE_ERROR)]
        self._reply(replies)
        if baud_after is not None:
            m.baud = baud_after
        sc = self.scenario
        if sc.unplug_after and self.commands == sc.unplug_after:
            self._unplug_now()
            if not self._stop.wait(sc.replug_after_s):
                self._plug()

    def _ack(self, code: Confirmation, data: bytes = b"") -> Packet:
        return Packet.ack(code, data, self.address)

    def _reply(self, packets: list[Packet]) -> None:
        """Send one reply transaction, applying the scenario's faults to it."""
        self._replies += 1
        n, sc = self._replies, self.scenario
        frames = [p.to_bytes() for p in packets]
        victim = int(self.rng.integers(len(frames)))
        if sc.corrupt_every and n % sc.corrupt_every == 0:
            f = bytearray(frames[victim])
            f[-1] ^= 0x5A
            frames[victim] = bytes(f)
        if sc.drop_every and n % sc.drop_every == 0:
            f = bytearray(frames[victim])
            del f[int(self.rng.integers(2, len(f)))]
            frames[victim] = bytes(f)
        if sc.garbage_every and n % sc.garbage_every == 0:
            frames.insert(0, _GARBAGE[: int(self.rng.integers(1, len(_GARBAGE)))])
        if sc.reply_delay_s and self._stop.wait(sc.reply_delay_s):
            return
        data = b"".join(frames)
        if sc.fragment_max:
            # A USB-serial bridge hands bytes over in small bursts with gaps.
            i = 0
            while i < len(data) and not self._stop.is_set():
                n = int(self.rng.integers(1, sc.fragment_max + 1))
                self._write(data[i : i + n])
                i += n
                time.sleep(0.0005 if n > 8 else 0.0)
        else:
            self._write(data)

    def _write(self, data: bytes) -> None:
        """Write to the master without blocking forever on a host that stopped reading."""
        view = memoryview(data)
        deadline = time.monotonic() + _WRITE_STALL_S
        while view and not self._stop.is_set() and time.monotonic() < deadline:
            master = self._link.master
            if master is None:
                return
            try:
                n = os.write(master, view)
                view = view[n:]
                deadline = time.monotonic() + _WRITE_STALL_S
            except BlockingIOError:
                with contextlib.suppress(OSError, ValueError):
                    select.select([], [master], [], 0.05)
            except OSError as exc:
                if exc.errno in (errno.EIO, errno.EBADF):
                    return  # unplugged while writing
                raise


# --- stand-alone -------------------------------------------------------------------------


def _voter_loop(sim: GrowSensorSimulator, fingers: Path, db: str, hold_s: float,
                stop: threading.Event) -> None:
    """A scripted voter: press, react to the ring, lift, next voter."""
    impressions = list_impressions(fingers, db)
    while not stop.is_set():
        finger, imp = impressions[int(sim.rng.integers(len(impressions)))]
        image, dpi = load_fvc(fingers, db, finger, imp)
        for _attempt in range(3):
            sim.press(image, dpi)
            print(f"voter presses {db}/{finger}_{imp}", flush=True)
            deadline = time.monotonic() + hold_s
            while time.monotonic() < deadline and not stop.is_set():
                if sim.guidance in (Guidance.ACCEPTED, Guidance.REFUSED, Guidance.RETRY):
                    break
                time.sleep(0.05)
            outcome = sim.guidance
            sim.lift()
            if outcome is not Guidance.RETRY:
                break
            stop.wait(0.5)
        stop.wait(2.0)


COMMANDS_HELP = ("press [DB FINGER IMPRESSION] | lift | unplug | plug | blip | status | "
                 "help | quit")


def handle_command(sim: GrowSensorSimulator, line: str, fingers: Path | None,
                   db: str = "DB1_B") -> str | None:
    """One technician command typed while the simulator runs; None means quit."""
    words = line.split()
    if not words:
        return ""
    cmd, rest = words[0].lower(), words[1:]
    if cmd == "quit":
        return None
    if cmd == "press":
        if fingers is None:
            return "press needs --fingers FVC_DIR"
        try:
            if len(rest) == 3:
                set_, finger, imp = rest[0], int(rest[1]), int(rest[2])
            elif not rest:
                impressions = list_impressions(fingers, db)
                set_ = db
                finger, imp = impressions[int(sim.rng.integers(len(impressions)))]
            else:
                return "usage: press [DB FINGER IMPRESSION]"
            image, dpi = load_fvc(fingers, set_, finger, imp)
        except (ValueError, OSError) as exc:
            return f"cannot press: {exc}"
        var = sim.press(image, dpi)
        return (f"pressed {set_}/{finger}_{imp}: shift {var.dx:+.0f},{var.dy:+.0f} px, "
                f"{var.angle_deg:+.0f} deg, pressure {var.pressure:.2f}, "
                f"contact {var.contact:.2f}")
    actions = {"lift": sim.lift, "unplug": sim.unplug, "plug": sim.replug,
               "blip": sim.power_blip}
    if cmd in actions:
        actions[cmd]()
        return f"{cmd}: done"
    if cmd == "status":
        return (f"plugged={sim.plugged} finger={sim.finger_present} baud={sim.baud} "
                f"guidance={sim.guidance.value if sim.guidance else '-'} "
                f"commands={sim.commands} captures={sim.captures}")
    return f"commands: {COMMANDS_HELP}"


def cli_main(argv: list[str]) -> int:
    """``kesp-sim sensor``: serve a simulated module, taking technician commands on stdin."""
    ap = argparse.ArgumentParser(prog="kesp-sim sensor", description=__doc__.split("\n")[0],
                                 epilog=f"stdin commands: {COMMANDS_HELP}")
    ap.add_argument("--scenario", default="normal", choices=sorted(SCENARIOS))
    ap.add_argument("--link", help="stable symlink to create (default: a temporary path)")
    ap.add_argument("--fingers", type=Path, help="FVC 2002 folder (press command, --voter)")
    ap.add_argument("--voter", action="store_true",
                    help="run a scripted voter that presses fingers and reacts to the ring")
    ap.add_argument("--db", default="DB1_B", help="FVC set used by press and the voter")
    ap.add_argument("--hold", type=float, default=4.0, help="seconds a voter keeps pressing")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--duration", type=float, default=0.0,
                    help="stop after N s, ignoring stdin (0 = run until quit/EOF+Ctrl-C)")
    ap.add_argument("--list-scenarios", action="store_true")
    args = ap.parse_args(argv)
    if args.list_scenarios:
        for s in SCENARIOS.values():
            print(f"{s.name:<14} {s.description}")
        return 0
    if args.voter and args.fingers is None:
        ap.error("--voter needs --fingers")
    stop = threading.Event()
    with GrowSensorSimulator(args.scenario, link=args.link, seed=args.seed) as sim:
        print(f"sensor simulator ({sim.scenario.name}) at {sim.path} -> "
              f"{os.path.realpath(sim.path)}", flush=True)
        voter = None
        if args.voter:
            voter = threading.Thread(target=_voter_loop,
                                     args=(sim, args.fingers, args.db, args.hold, stop),
                                     daemon=True)
            voter.start()
        try:
            if args.duration > 0:
                stop.wait(args.duration)
            else:
                for line in sys.stdin:
                    reply = handle_command(sim, line, args.fingers, args.db)
                    if reply is None:
                        break
                    if reply:
                        print(reply, flush=True)
                else:
                    # stdin closed (a service, a pipe): keep serving until killed.
                    while not stop.wait(3600):
                        pass
        except KeyboardInterrupt:
            pass
        finally:
            stop.set()
            if voter is not None:
                voter.join(timeout=2)
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(sys.argv[1:]))
