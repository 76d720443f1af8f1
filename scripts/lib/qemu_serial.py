#!/usr/bin/env python3
"""Talks to the appliance's serial console on the unix socket of
`scripts/qemu-boot --serial-socket PATH`. Steps run in order:

  qemu_serial.py SOCKET [--timeout S] STEP...
    prompt REGEX   send Enter every 2 s until REGEX shows (default: a shell prompt)
    expect REGEX   wait until REGEX shows in what the console prints from now on
    send LINE      type LINE and Enter
    run CMD        (busybox sh) run CMD, print its output, fail if it exits non-zero
    shell CMD      (oxinvr shell) wait for its prompt, type CMD, print what it prints
                   up to the next prompt (line-editor redraws and ANSI codes removed)

Example: qemu_serial.py S --timeout 120 prompt '# $' run 'cat /proc/meminfo'
Exit status: 0, 1 (a run step's command failed), 2 (timeout; what was seen is on stderr).
The socket takes one client at a time; console output with no client connected
is only in --serial-log.
"""
import re
import socket
import sys
import time

SHELL_PROMPT = r"[#$] $"
OXINVR_PROMPT = r"oxinvr> "
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Console:
    def __init__(self, path, timeout):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        deadline = time.time() + 10
        while True:
            try:
                self.s.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        self.timeout = timeout
        self.buf = ""

    def write(self, text):
        self.s.sendall(text.encode())

    def _read(self, until):
        self.s.settimeout(max(0.05, min(1.0, until - time.time())))
        try:
            data = self.s.recv(65536)
        except socket.timeout:
            return
        if not data:
            raise EOFError("console socket closed (QEMU exited?)")
        self.buf += data.decode(errors="replace").replace("\r", "")

    def expect(self, regex, poke=None):
        """Waits for regex in the buffer; returns (text before, match). Consumes both."""
        rx = re.compile(regex, re.M)
        deadline = time.time() + self.timeout
        next_poke = 0
        while True:
            m = rx.search(self.buf)
            if m:
                before = self.buf[: m.start()]
                self.buf = self.buf[m.end():]
                return before, m
            now = time.time()
            if now > deadline:
                sys.stderr.write(f"qemu_serial: timeout waiting for {regex!r}; last output:\n{self.buf[-2000:]}\n")
                sys.exit(2)
            if poke is not None and now >= next_poke:
                self.write(poke)
                next_poke = now + 2
            self._read(deadline)

    def run(self, cmd):
        self.buf = ""
        # The marker is computed by the shell so the echoed command never matches it.
        self.write(f"{cmd}; echo \"@@$((40+2))@@ rc=$?\"\n")
        before, m = self.expect(r"@@42@@ rc=(\d+)\n")
        lines = before.split("\n")
        # Drop the echoed command line(s): everything up to the line that ends the input.
        for i, line in enumerate(lines):
            if '@@$((40+2))@@' in line:
                lines = lines[i + 1:]
                break
        return "\n".join(lines).rstrip("\n"), int(m.group(1))

    def shell(self, cmd):
        """One command of the UART shell (`oxinvr shell`): its output, without the
        echo. The line editor redraws the line per typed key ("oxinvr> s", "oxinvr>
        st", ...); the echo ends with the whole command and a newline."""
        self.expect(OXINVR_PROMPT, poke="\n")
        time.sleep(0.3)  # let the prompts the poke may have caused arrive
        self._read(time.time() + 0.2)
        self.buf = ""
        self.write(cmd + "\n")
        self.expect(re.escape(cmd) + r"(\x1b\[K)?\n")
        out, _ = self.expect(OXINVR_PROMPT)
        return ANSI.sub("", out).rstrip("\n")


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    path, rest = argv[1], argv[2:]
    timeout = 60.0
    if rest[:1] == ["--timeout"]:
        timeout, rest = float(rest[1]), rest[2:]
    con = Console(path, timeout)
    status = 0
    while rest:
        step = rest.pop(0)
        if step == "prompt":
            regex = rest.pop(0) if rest and rest[0] not in ("prompt", "expect", "send", "run", "shell") else SHELL_PROMPT
            con.expect(regex, poke="\n")
        elif step == "expect":
            con.expect(rest.pop(0))
        elif step == "send":
            con.write(rest.pop(0) + "\n")
        elif step == "run":
            out, rc = con.run(rest.pop(0))
            print(out)
            if rc:
                sys.stderr.write(f"qemu_serial: exit status {rc}\n")
                status = 1
        elif step == "shell":
            print(con.shell(rest.pop(0)))
        else:
            sys.exit(f"qemu_serial: unknown step {step!r}\n\n{__doc__}")
    sys.exit(status)


if __name__ == "__main__":
    main(sys.argv)
