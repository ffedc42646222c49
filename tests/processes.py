"""Helpers of the multi-process tests (several jax processes over loopback)."""
import socket
import subprocess


def free_port() -> int:
  """A TCP port on 127.0.0.1 that was free a moment ago (for the jax coordinator)."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def wait_all(procs: list[subprocess.Popen], timeout: float) -> list[str]:
  """Each process's combined output, in order; on a timeout every process is killed first."""
  logs = []
  for p in procs:
    try:
      logs.append(p.communicate(timeout=timeout)[0])
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
  return logs
