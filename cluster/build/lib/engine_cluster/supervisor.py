"""One `engine serve` process, started and stopped by its process id."""
import os
import re
import signal
import subprocess
import time


class EngineProcess:
    """Starts `engine serve ARGS --port 0 --exit-with-parent` on `host` and waits for its port."""

    def __init__(self, engine, args, host="127.0.0.1", timeout=300):
        self.proc = subprocess.Popen(
            [engine, "serve", "--host", host, "--port", "0", "--exit-with-parent", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.host = host
        deadline = time.time() + timeout
        self.port = None
        self.log = []
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.log.append(line.rstrip())
            m = re.search(r"listening on http://[^:]+:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
        if self.port is None:
            self.stop()
            raise RuntimeError("engine serve did not start: " + " | ".join(self.log[-5:]))
        # keep draining its output so the pipe never fills
        import threading
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for line in self.proc.stdout:
            self.log.append(line.rstrip())
            del self.log[:-200]

    @property
    def url(self):
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def stop(self, timeout=30):
        """SIGTERM (graceful), SIGKILL after `timeout`; returns the exit status."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode
